"""Compile the pipelines to KFP YAML (``kubedistill compile``): one file per pipeline, for the Kubeflow UI
or ``kubedistill submit``; with a cluster config, every task carries its role's pod settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kubedistill.core.errors import UserError


def compile_all(
    output_dir: str | Path,
    *,
    image_registry: str | None = None,
    image_tag: str | None = None,
    names: list[str] | None = None,
    cluster_config: str | Path | None = None,
) -> list[Path]:
    """Write one YAML per pipeline (``<name>.yaml``), ready to upload in the Kubeflow UI.

    With ``cluster_config`` (examples/cluster.yaml) every task gets its role's cluster settings —
    resources, GPUs, node selectors, tolerations, the PVC, secrets as environment variables (by name:
    no secret value ever lands in the file; each file is checked)."""
    if "kubedistill_kfp.components.images" in sys.modules and (image_registry or image_tag):
        raise UserError("set the image registry/tag before the components are imported (use a fresh process)")
    if image_registry:
        os.environ["KUBEDISTILL_IMAGE_REGISTRY"] = image_registry
    if image_tag:
        os.environ["KUBEDISTILL_IMAGE_TAG"] = image_tag
    from kfp import compiler

    from kubedistill_kfp import cluster

    cfg = cluster.load_cluster_config(cluster_config) if cluster_config else None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    from kubedistill_kfp.pipelines import PIPELINES, pipeline_function

    for name in names or list(PIPELINES):
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(cluster.build_pipeline(pipeline_function(name), cfg), package_path=str(path))
        cluster.check_no_secret_values(path)
        written.append(path)
    return written
