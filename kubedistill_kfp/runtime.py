"""What runs inside a KFP component: KFP's artifacts and parameters in, :func:`kubedistill.runner.run_stage` out.

Every component (kubedistill_kfp/components) has the body ``run_component("<stage>", locals())``. This
module turns its arguments into what the runner takes — artifact paths by port (a list for collected
artifacts, the metadata of an input Metrics artifact), the config and tracking dicts, plain parameters —
and writes the stage's metrics to its output Metrics artifact. It imports no KFP: the artifacts are the
executor's objects (``.path``, ``.metadata``, ``.log_metric``).

With shared storage (``$KUBEDISTILL_STORAGE``: the cluster's PVC, or the run folder of a local run) model
outputs are written there and large outputs moved there, each filed under its content digest, and the
KFP artifact is a small reference that the next component resolves to the path (kubedistill_kfp/storage.py);
a train stage with a ``work_dir`` parameter left empty keeps its checkpoints under ``<storage>/work``,
keyed by its inputs, so a retried task resumes.

On a cluster (``KUBEDISTILL_ON_CLUSTER`` set by the cluster config, or ``KFP_POD_NAME`` set by KFP's
launcher) a tracked stage refuses a tracking store that lives inside its pod (a SQLite file, a path, a
localhost URL): its runs and registered models would vanish with the pod.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubedistill.core.errors import UserError
from kubedistill.runner import run_stage
from kubedistill.stages import stage
from kubedistill_kfp.storage import Storage, input_key, read_ref, resolve, size_of, write_ref


def on_cluster(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a task of a pipeline run on a cluster (not kfp.local, not the CLI)."""
    env = os.environ if environ is None else environ
    return bool(env.get("KUBEDISTILL_ON_CLUSTER") or env.get("KFP_POD_NAME"))


def check_tracking_store(tracking: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> None:
    """On a cluster, refuse (``UserError``, exit 2, one line) a tracking store that lives inside the pod."""
    env = os.environ if environ is None else environ
    if not on_cluster(env) or (tracking or {}).get("enabled") is False:
        return
    uri = env.get("MLFLOW_TRACKING_URI") or (tracking or {}).get("tracking_uri")
    from kubedistill_kfp.cluster import check_tracking_uri

    if not uri:
        raise UserError(
            "MLFLOW_TRACKING_URI is not set in this pod, so MLflow would write a SQLite file that vanishes with it: "
            "compile with --cluster-config (tracking.uri)"
        )
    try:
        check_tracking_uri(uri)
    except ValueError as e:
        raise UserError(f"tracking URI {e}") from None


def run_component(name: str, args: Mapping[str, Any]) -> Any:
    """Run stage ``name`` with a component's arguments (its ``locals()``); returns the stage's value for
    a component that returns one (``register``: the model URI), else None."""
    spec = stage(name)
    if spec.tracked:
        check_tracking_store(args.get("tracking"))
    store = Storage.from_env()
    paths: dict[str, Any] = {}
    identities: dict[str, Any] = {}
    for port in spec.inputs:
        value = args.get(port.name)
        if value is None:
            continue
        if port.many:
            paths[port.name] = [resolve(a.path) for a in value]
            identities[port.name] = [_identity(a) for a in value]
        elif port.type == "Metrics":
            paths[port.name] = dict(value.metadata) if getattr(value, "metadata", None) else value.path
        else:
            paths[port.name] = resolve(value.path)
            identities[port.name] = _identity(value)
    metrics_artifact = None
    staged: dict[str, Path] = {}
    for port in spec.outputs:
        if port.name == "metrics":
            metrics_artifact = args[port.name]
        elif store is not None and port.type == "Model":
            staged[port.name] = paths[port.name] = store.staging(name, port.name)
        else:
            paths[port.name] = args[port.name].path
    params = {p.name: args[p.name] for p in spec.params if p.name in args}
    config = args.get(spec.config_param) if spec.config else None
    if store is not None and "work_dir" in {p.name for p in spec.params} and not params.get("work_dir"):
        key = input_key(name, config, params, identities)
        params["work_dir"] = str(store.work_dir(name, key))
    try:
        result = run_stage(
            name,
            config=config,
            tracking=args.get("tracking") if spec.tracked else None,
            paths=paths,
            params=params,
        )
    except BaseException:
        for path in staged.values():
            store.discard(path)  # type: ignore[union-attr]
        raise
    if store is not None:
        for port in spec.outputs:
            if port.name == "metrics":
                continue
            artifact = args[port.name]
            if port.name in staged:
                _store(store, staged[port.name], artifact)
            elif port.type in ("Dataset", "Model") and size_of(artifact.path) > store.inline_limit:
                _store(store, artifact.path, artifact)
    if metrics_artifact is not None:
        log_metrics(metrics_artifact, result.metrics)
    return result.value if spec.returns is not None else None


def _identity(artifact: Any) -> str:
    ref = read_ref(artifact.path)
    return f"sha256:{ref.sha256}" if ref is not None else str(getattr(artifact, "uri", "") or artifact.path)


def _store(store: Storage, path: str | Path, artifact: Any) -> None:
    ref = store.commit(path)
    write_ref(artifact.path, ref)
    metadata = getattr(artifact, "metadata", None)
    if isinstance(metadata, dict):
        metadata.update({"stored_at": ref.path, "sha256": ref.sha256, "bytes": ref.bytes})


def log_metrics(artifact: Any, values: Mapping[str, float]) -> None:
    """Log ``values`` on a KFP Metrics artifact, and write them to its file too: kfp.local's cache treats
    an output artifact without a file as missing (and would re-run the task every time), and downstream
    tasks read the file."""
    for k, v in values.items():
        artifact.log_metric(k, v)
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(dict(values), indent=2, sort_keys=True))


def run_preflight(pipeline: str, args: Mapping[str, Any]) -> tuple[Any, ...]:
    """The body of a pipeline's preflight component (its ``locals()``): merge the UI form into the section
    parameters (:func:`kubedistill.recipes.form_sections`), validate each section, then run every check of
    :func:`kubedistill.preflight.run_preflight` in this pod. Returns the sections as merged, in the
    component's output order (``checked_<section>`` ..., then ``base_model`` and ``loop_settings`` where the
    component has them);
    raises ``PreflightFailed`` (exit 2) naming every problem."""
    from kubedistill.preflight import Crd
    from kubedistill.preflight import run_preflight as checks
    from kubedistill.recipes import BASE_MODEL_OF, FORMS, form_sections, validate_sections

    form_names = {f.name for f in FORMS.get(pipeline, ())}  # args: the component's locals()
    sections = {k: v for k, v in args.items() if k.endswith("_config") or k == "tracking"}
    form = {k: v for k, v in args.items() if k in form_names}
    merged = form_sections(pipeline, sections, form)
    checked = validate_sections(pipeline, merged)
    tracking = merged.get("tracking") or {}
    check_tracking_store(tracking)
    uri = None
    if tracking.get("enabled", True):
        uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking.get("tracking_uri")
    crds = [
        Crd(**{k: v for k, v in c.items() if k != "when"})
        for c in args.get("crds") or []
        if not c.get("when") or args.get(c["when"])
    ]
    for line in checks(checked, tracking_uri=uri, crds=crds):
        print(f"preflight: {line}")
    values: list[Any] = [merged[name] for name in sections]
    if pipeline in BASE_MODEL_OF:
        param, key = BASE_MODEL_OF[pipeline]
        values.append(str(getattr(checked[param], key)))
    if "loop_sections" in args:
        values.append({name: merged[name] for name in args["loop_sections"]})
    return tuple(values)
