"""MLflow: one run per stage, a run per pipeline, and the model registry.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (on the cluster: the tracking server, credentials
from a Kubernetes Secret); otherwise from the config; otherwise a local SQLite store
``./mlflow.db`` with artifacts beside it in ``./mlartifacts`` — MLflow's own local convention.

Secrets never reach MLflow: params go through :func:`safe_params` (keys that look like credentials are
left out; every value is redacted: known secret values, credentials in URLs, bearer tokens), and the
stats and rejects logged as artifacts are the files the runner wrote through the same redaction step
(kubedistill/core/secrets.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubedistill.core.config import StrictModel

if TYPE_CHECKING:
    from kubedistill.core.records import StageStats


class TrackingConfig(StrictModel):
    """MLflow: the tracking URI comes from MLFLOW_TRACKING_URI, else this, else a local SQLite store."""

    tracking_uri: str | None = None
    experiment: str = "kubedistill"
    enabled: bool = True


def resolve_tracking_uri(explicit: str | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or explicit
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """For a local SQLite store, artifacts live beside the database (absolute, so every process — a
    kfp.local task, a CLI call from another directory — writes to the same place)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def setup(experiment: str, tracking_uri: str | None = None) -> str:
    """Point MLflow at the store and make sure ``experiment`` exists. Returns the experiment id."""
    # No usage telemetry from our runs (and no outbound calls on air-gapped clusters).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is not None:
        exp_id = exp.experiment_id
    else:
        root = _artifact_root(uri)
        try:
            exp_id = mlflow.create_experiment(
                experiment, artifact_location=f"{root}/{_slug(experiment)}" if root else None
            )
        except Exception:  # another process created it first
            found = mlflow.get_experiment_by_name(experiment)
            if found is None:
                raise
            exp_id = found.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "default"


def safe_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten ``params`` to ``a.b.c: str`` for MLflow: keys that look like credentials are left out and
    every value is redacted (:func:`kubedistill.core.secrets.redact`: ``http://u:p@h/v1`` is logged as
    ``http://***@h/v1``)."""
    from kubedistill.core.secrets import is_secret_name, known_secrets, redact

    secrets = known_secrets()
    out: dict[str, str] = {}

    def walk(obj: Any, key: str) -> None:
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                if is_secret_name(str(k)):  # (max_tokens is no secret; api_key_env names a variable)
                    continue
                walk(v, f"{key}.{k}" if key else str(k))
            return
        if isinstance(obj, list | tuple) and obj and all(isinstance(x, Mapping) for x in obj):
            for i, x in enumerate(obj):
                walk(x, f"{key}.{i}")
            return
        text = json.dumps(obj, default=str) if not isinstance(obj, str) else obj
        out[redact(key, secrets)] = redact(text, secrets)[:6000]  # MLflow caps param values

    walk(params, prefix)
    return out


@contextlib.contextmanager
def stage_run(
    stage: str,
    *,
    experiment: str = "kubedistill",
    tracking_uri: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    enabled: bool = True,
) -> Iterator[Any]:
    """An MLflow run for one stage; yields the active run (None when tracking is off)."""
    if not enabled:
        yield None
        return
    import mlflow

    setup(experiment, tracking_uri)
    from kubedistill.core.secrets import redact

    all_tags = {"kubedistill.stage": stage, **{k: redact(str(v)) for k, v in (tags or {}).items()}}
    if os.environ.get("KFP_RUN_ID"):
        all_tags["kfp.run_id"] = os.environ["KFP_RUN_ID"]
    with mlflow.start_run(run_name=stage, tags=all_tags) as run:
        if params:
            p = safe_params(params)
            # log_params takes at most 100 per call
            items = list(p.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i : i + 100]))
        yield run


def log_stage_stats(stats: StageStats, artifacts: Mapping[str, Path] | None = None) -> None:
    """Log a stage's counts and metrics to the active run, and its stats/rejects files as artifacts."""
    import mlflow

    metrics = {"n_in": stats.n_in, "n_out": stats.n_out, "n_dropped": stats.n_dropped}
    metrics.update({f"dropped.{k}": v for k, v in stats.dropped.items()})
    metrics.update(stats.metrics)
    metrics["elapsed_s"] = stats.elapsed_s
    mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()})
    from kubedistill.core.records import write_json

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "stats.json"
        write_json(p, stats)  # masked, as every stats file
        mlflow.log_artifact(str(p))
    for name, path in (artifacts or {}).items():
        if path and Path(path).exists():
            mlflow.log_artifact(str(path), artifact_path=name)


def metric_key(k: str) -> str:
    # MLflow allows alphanumerics, underscores, dashes, periods, spaces, colons and slashes.
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", k)


def resolve_registered(uri: str, tracking_uri: str | None = None) -> tuple[str, str, str]:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` → (name, version, artifact source URI), from the
    registry at ``tracking_uri`` (default: :func:`resolve_tracking_uri`). Raises ``UserError`` (exit 2)
    when the registry does not hold it."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    store = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient()
    body = uri.removeprefix("models:/")
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, version = body.partition("/")
            mv = client.get_model_version(name, version)
    except Exception as e:
        from kubedistill.core.errors import UserError
        from kubedistill.core.secrets import mask_url

        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"{uri}: not found in the MLflow registry at {mask_url(store)} ({why})") from None
    return mv.name, str(mv.version), f"models:/{mv.name}/{mv.version}"
