"""The MLflow model registry: students and reward models registered with their scores, and the
evaluation gate that makes a registered student ``champion`` only when its scores pass.

``register`` points the ``candidate`` alias at every new version; :func:`promote` then checks the
version's metrics against a :class:`GateConfig` and, when it passes, moves the ``champion`` alias to it — the
alias the deploy step serves (``models:/NAME@champion``). Every decision is written on the version as
tags (``kubedistill.gate``: passed / failed, ``kubedistill.gate.reasons``), so the registry shows why a
candidate was or was not promoted.

    promote("kubedistill-student", "7", metrics,
            {"metric": "student.heldout.accuracy", "min": 0.3, "beat_base_by": 0.0})

Metric names are those ``register`` logs: ``<label>.<benchmark>.<key>`` with label ``student`` or ``base``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from kubedistill import tracking as tr
from kubedistill.core.config import StrictModel, validate_config


class GateConfig(StrictModel):
    """When a candidate may become champion. Every check that is set must pass."""

    metric: str = Field(default="student.heldout.accuracy", description="the score to judge (higher is better)")
    min: float | None = Field(default=None, description="the score must be at least this")
    beat_base_by: float | None = Field(
        default=None, description="score - base score must be at least this (0.0: no worse than the base student)"
    )
    base_metric: str | None = Field(default=None, description="default: `metric` with its `student.` made `base.`")
    beat_champion_by: float | None = Field(
        default=None, description="score - the current champion's score must be at least this (if there is one)"
    )
    alias: str = Field(default="champion", description="the alias a passing version gets")

    def base_name(self) -> str:
        if self.base_metric:
            return self.base_metric
        head, _, rest = self.metric.partition(".")
        return f"base.{rest}" if head == "student" and rest else f"base.{self.metric}"


class RegisterConfig(StrictModel):
    """Where the trained student goes in the MLflow model registry."""

    name: str = Field(default="kubedistill-student", description="MLflow registered model name")
    aliases: list[str] = Field(default_factory=lambda: ["candidate"])
    gate: GateConfig | None = Field(
        default=None, description="evaluation gate: a passing student also becomes `champion` (None: no promotion)"
    )


class RewardRegisterConfig(StrictModel):
    """Where the distilled reward models go in the MLflow model registry."""

    name: str = Field(
        default="kubedistill-reward", description="registered as <name>-rv and <name>-cd in the MLflow registry"
    )
    aliases: list[str] = Field(default_factory=lambda: ["candidate"])


class GateResult(StrictModel):
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    score: float | None = None


def check_gate(
    metrics: Mapping[str, float],
    gate: GateConfig | Mapping[str, Any],
    champion_metrics: Mapping[str, float] | None = None,
) -> GateResult:
    """Judge ``metrics`` against ``gate``; ``champion_metrics`` are the current champion's (if any)."""
    g = gate if isinstance(gate, GateConfig) else validate_config(GateConfig, dict(gate), "gate")
    reasons: list[str] = []
    score = metrics.get(g.metric)
    if score is None:
        return GateResult(passed=False, reasons=[f"{g.metric} is not among the version's metrics"])
    score = float(score)
    ok = True
    if g.min is not None:
        if score >= g.min:
            reasons.append(f"{g.metric}={score:.4g} >= min {g.min:g}")
        else:
            ok = False
            reasons.append(f"{g.metric}={score:.4g} < min {g.min:g}")
    if g.beat_base_by is not None:
        base = metrics.get(g.base_name())
        if base is None:
            ok = False
            reasons.append(f"{g.base_name()} is missing (evaluate with compare_base: true)")
        elif score - float(base) >= g.beat_base_by:
            reasons.append(f"beats base {float(base):.4g} by {score - float(base):.4g} >= {g.beat_base_by:g}")
        else:
            ok = False
            reasons.append(f"beats base {float(base):.4g} by {score - float(base):.4g} < {g.beat_base_by:g}")
    if g.beat_champion_by is not None and champion_metrics is not None:
        champ = champion_metrics.get(g.metric)
        if champ is not None:
            margin = score - float(champ)
            if margin >= g.beat_champion_by:
                reasons.append(f"beats champion {float(champ):.4g} by {margin:.4g} >= {g.beat_champion_by:g}")
            else:
                ok = False
                reasons.append(f"beats champion {float(champ):.4g} by {margin:.4g} < {g.beat_champion_by:g}")
    return GateResult(passed=ok, reasons=reasons, score=score)


def _client(tracking_uri: str | None) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from kubedistill.tracking import resolve_tracking_uri

    return mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))


def version_metrics(client: Any, model_name: str, version: str) -> dict[str, float]:
    """The metrics of the run that registered ``model_name`` version ``version``."""
    mv = client.get_model_version(model_name, str(version))
    if not mv.run_id:
        return {}
    return {k: float(v) for k, v in client.get_run(mv.run_id).data.metrics.items()}


def promote(
    model_name: str,
    version: str | int,
    metrics: Mapping[str, float] | None,
    gate: GateConfig | Mapping[str, Any],
    *,
    tracking_uri: str | None = None,
) -> bool:
    """Set the gate's alias (``champion``) on ``model_name`` ``version`` if ``metrics`` pass ``gate``.

    ``metrics`` None: read the version's own (those ``register`` logged). Returns whether it was
    promoted. The decision and its reasons are tagged on the version either way; a failing candidate
    leaves the current champion where it is."""
    g = gate if isinstance(gate, GateConfig) else validate_config(GateConfig, dict(gate), "gate")
    client = _client(tracking_uri)
    version = str(version)
    mv = client.get_model_version(model_name, version)  # raises if there is no such version
    if metrics is None:
        metrics = version_metrics(client, model_name, version)
    champion_metrics = None
    if g.beat_champion_by is not None:
        try:
            champ = client.get_model_version_by_alias(model_name, g.alias)
        except Exception:  # no champion yet
            champ = None
        if champ is not None and str(champ.version) != version:
            champion_metrics = version_metrics(client, model_name, champ.version)
    result = check_gate(metrics, g, champion_metrics)
    client.set_model_version_tag(model_name, mv.version, "kubedistill.gate", "passed" if result.passed else "failed")
    client.set_model_version_tag(model_name, mv.version, "kubedistill.gate.reasons", "; ".join(result.reasons)[:5000])
    if result.passed:
        client.set_registered_model_alias(model_name, g.alias, mv.version)
    return result.passed


# ------------------------------------------------------------------------------------------ registry


def register_student(
    model_dir: str | Path,
    name: str,
    *,
    aliases: Sequence[str] = ("candidate",),
    experiment: str = "kubedistill",
    tracking_uri: str | None = None,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> tuple[str, str]:
    """Log a Hugging Face model directory as an MLflow model (see serve/mlflow_model.py), register it
    under ``name`` and point ``aliases`` at the new version. Returns (version, "models:/NAME/VERSION")."""
    from mlflow.models import infer_signature

    from kubedistill.serve.mlflow_model import HFChatModel

    return _register_model_dir(
        model_dir,
        name,
        HFChatModel(),
        infer_signature(["What is 1 + 1?"], ["2"], params={"max_new_tokens": 256}),
        stage="register",
        aliases=aliases,
        experiment=experiment,
        tracking_uri=tracking_uri,
        metrics=metrics,
        params=params,
        tags=tags,
        description=description,
    )


def register_reward_model(
    model_dir: str | Path,
    name: str,
    *,
    aliases: Sequence[str] = ("candidate",),
    experiment: str = "kubedistill",
    tracking_uri: str | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Register a distilled RV / CD regressor (a pyfunc: rows ``{problem, cot}`` -> score in [0, 1]);
    ``resolve_model("models:/NAME@ALIAS")`` gives back its directory, for GRPO."""
    import pandas as pd
    from mlflow.models import infer_signature

    from kubedistill.train.reward_pyfunc import RewardScorerModel

    example = pd.DataFrame([{"problem": "What is 1 + 1?", "cot": "<think>1 + 1 = 2</think> 2"}])
    return _register_model_dir(
        model_dir,
        name,
        RewardScorerModel(),
        infer_signature(example, [0.5]),
        stage="register_reward_model",
        aliases=aliases,
        experiment=experiment,
        tracking_uri=tracking_uri,
        metrics=metrics,
        tags=tags,
    )


def _register_model_dir(
    model_dir: str | Path,
    name: str,
    python_model: Any,
    signature: Any,
    *,
    stage: str,
    aliases: Sequence[str],
    experiment: str,
    tracking_uri: str | None,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> tuple[str, str]:
    import mlflow

    tr.setup(experiment, tracking_uri)
    with mlflow.start_run(run_name=f"register-{name}", tags={"kubedistill.stage": stage, **(tags or {})}):
        if params:
            mlflow.log_params(tr.safe_params(params))
        if metrics:
            mlflow.log_metrics({tr.metric_key(k): float(v) for k, v in metrics.items()})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            artifacts={"hf_model": str(model_dir)},
            signature=signature,
            pip_requirements=["kubedistill", "transformers", "torch"],
        )
    client = mlflow.MlflowClient()
    mv = mlflow.register_model(info.model_uri, name, tags=dict(tags or {}))
    if description:
        client.update_model_version(name, mv.version, description=description)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version), f"models:/{name}/{mv.version}"


# ------------------------------------------------------------------------------------------ stages


_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def model_dir_problem(model: str | Path) -> str | None:
    """Why ``model`` is not a model directory transformers and vLLM can load (None when it is): it must
    be a directory with a ``config.json`` that is a JSON object naming its ``model_type``, and weights
    (``*.safetensors`` or ``pytorch_model*.bin``)."""
    p = Path(model)
    if not p.exists():
        return f"{p}: no such directory"
    if not p.is_dir():
        return f"{p}: is a file, not a model directory (config.json, weights, tokenizer)"
    cfg = p / "config.json"
    if not cfg.is_file():
        return f"{p}: is not a model directory (no config.json)"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{cfg}: is not valid JSON ({e})"
    if not isinstance(data, dict) or not data.get("model_type"):
        return f"{cfg}: names no model_type (not a transformers model config)"
    if not any(any(p.glob(g)) for g in _WEIGHTS):
        return f"{p}: holds no weights (*.safetensors or pytorch_model*.bin)"
    return None


def read_results(results: str | Path) -> dict[str, float]:
    """The scores of an evaluation results directory (``results.json``: ``{label: {benchmark: {metric:
    value}}}``) as flat metrics ``<label>.<benchmark>.<metric>``. Raises ``UserError`` (exit 2) when the
    directory or its results.json is missing or not of that shape."""
    from kubedistill.core.errors import UserError
    from kubedistill.core.files import BadFileError, read_text

    p = Path(results)
    if not p.is_dir():
        why = "no such directory" if not p.exists() else "is not a directory"
        raise UserError(f"register: --results {p}: {why}")
    try:
        data = json.loads(read_text(p / "results.json", what="results.json"))
    except BadFileError as e:
        raise UserError(f"register: {e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"register: {p / 'results.json'}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"register: {p / 'results.json'}: not evaluation results ({{label: {{benchmark: scores}}}})")
    metrics: dict[str, float] = {}
    for label, by_bench in data.items():
        for bench, r in by_bench.items():
            if not isinstance(r, dict):
                continue
            for k, v in r.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    metrics[f"{label}.{bench}.{k}".replace("@", "_at_")] = float(v)
    return metrics


def register(cfg: RegisterConfig, *, model: str | Path, results: str | Path | None = None, tracking: Any = None) -> str:
    """Stage `register`: the student's model directory ``model`` as a new version of ``cfg.name``, with
    ``cfg.aliases`` and the scores in ``results/results.json`` (``<label>.<benchmark>.<metric>``) as the
    version's metrics. Returns ``models:/NAME/VERSION``.

    Everything is checked before MLflow is touched: ``UserError`` (exit 2) when ``model`` is not a model
    directory (:func:`model_dir_problem`), when ``results`` is given but holds no readable results.json,
    and when tracking is off (``--no-tracking``): registering *is* writing to MLflow."""
    from kubedistill.core.errors import UserError

    if tracking is None:
        raise UserError(
            "register: tracking is off (--no-tracking), and registering a model writes to the MLflow registry; "
            "drop --no-tracking (--tracking-uri picks the store)"
        )
    why = model_dir_problem(model)
    if why:
        raise UserError(f"register: {why}")
    metrics = read_results(results) if results else {}
    tcfg = tracking
    _, uri = register_student(
        model,
        cfg.name,
        aliases=cfg.aliases,
        experiment=tcfg.experiment,
        tracking_uri=tcfg.tracking_uri,
        metrics=metrics,
    )
    return uri


def register_reward_models(cfg: RewardRegisterConfig, *, models: str | Path, tracking: Any = None) -> str:
    """Stage `register_reward_models`: each head in ``models/`` (``rv/``, ``cd/``) as ``<name>-<head>``,
    with its held-out MAE / Spearman; returns the ``models:/NAME/VERSION`` URIs, comma-separated. Raises
    ``ConfigError`` (exit 2) when ``models`` holds neither head."""
    from kubedistill.core.config import ConfigError
    from kubedistill.core.errors import UserError

    if tracking is None:
        raise UserError(
            "register: tracking is off, and registering a model writes to the MLflow registry; turn tracking on"
        )
    tcfg = tracking
    for head in ("rv", "cd"):
        d = Path(models) / head
        why = model_dir_problem(d) if d.exists() else None
        if why:
            raise UserError(f"register: {why}")
        if d.is_dir() and not (d / "kubedistill_reward.json").is_file():
            raise UserError(f"register: {d}: no kubedistill_reward.json (not a reward model from `reward-models`)")
    uris = []
    for head in ("rv", "cd"):
        d = Path(models) / head
        if not d.is_dir():
            continue
        meta = json.loads((d / "kubedistill_reward.json").read_text())
        metrics = {k: float(v) for k, v in meta.get("metrics", {}).items() if isinstance(v, int | float)}
        _, uri = register_reward_model(
            d,
            f"{cfg.name}-{head}",
            aliases=cfg.aliases,
            experiment=tcfg.experiment,
            tracking_uri=tcfg.tracking_uri,
            metrics=metrics,
            tags={"kubedistill.reward_head": head},
        )
        uris.append(uri)
    if not uris:
        raise ConfigError(f"register: {models} holds no rv/ or cd/ reward model")
    return ",".join(uris)


def promote_uri(gate: GateConfig, *, model_uri: str) -> bool:
    """Stage `promote`: move the gate's alias (``champion``) to ``models:/NAME/VERSION`` if the version's
    registered scores pass ``gate``. Raises ``UserError`` (exit 2) for another kind of URI."""
    from kubedistill.core.errors import UserError

    if not model_uri.startswith("models:/") or model_uri.count("/") != 2:
        raise UserError(f"promote needs models:/NAME/VERSION (got {model_uri!r})")
    name, version = model_uri.removeprefix("models:/").split("/")
    return promote(name, version, None, gate)
