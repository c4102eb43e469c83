"""What runs inside a KFP component: KFP's artifacts and parameters in, :func:`kubedistill.runner.run_stage` out.

Every component (kubedistill_kfp/components) has the body ``run_component("<stage>", locals())``. This
module turns its arguments into what the runner takes — artifact paths by port (a list for collected
artifacts, the metadata of an input Metrics artifact), the config and tracking dicts, plain parameters —
and writes the stage's metrics to its output Metrics artifact. It imports no KFP: the artifacts are the
executor's objects (``.path``, ``.metadata``, ``.log_metric``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubedistill.runner import run_stage
from kubedistill.stages import stage


def run_component(name: str, args: Mapping[str, Any]) -> Any:
    """Run stage ``name`` with a component's arguments (its ``locals()``); returns the stage's value for
    a component that returns one (``register``: the model URI), else None."""
    spec = stage(name)
    paths: dict[str, Any] = {}
    for port in spec.inputs:
        value = args.get(port.name)
        if value is None:
            continue
        if port.many:
            paths[port.name] = [a.path for a in value]
        elif port.type == "Metrics":
            paths[port.name] = dict(value.metadata) if getattr(value, "metadata", None) else value.path
        else:
            paths[port.name] = value.path
    metrics_artifact = None
    for port in spec.outputs:
        if port.name == "metrics":
            metrics_artifact = args[port.name]
        else:
            paths[port.name] = args[port.name].path
    result = run_stage(
        name,
        config=args.get(spec.config_param) if spec.config else None,
        tracking=args.get("tracking") if spec.tracked else None,
        paths=paths,
        params={p.name: args[p.name] for p in spec.params if p.name in args},
    )
    if metrics_artifact is not None:
        log_metrics(metrics_artifact, result.metrics)
    return result.value if spec.returns is not None else None


def log_metrics(artifact: Any, values: Mapping[str, float]) -> None:
    """Log ``values`` on a KFP Metrics artifact, and write them to its file too: kfp.local's cache treats
    an output artifact without a file as missing (and would re-run the task every time), and downstream
    tasks read the file."""
    for k, v in values.items():
        artifact.log_metric(k, v)
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(dict(values), indent=2, sort_keys=True))
