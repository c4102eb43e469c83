"""Compile the pipelines to KFP YAML (``kubedistill compile``): one file per pipeline, for the Kubeflow UI
or ``kubedistill submit``; with a cluster config, every task carries its role's pod settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from kubedistill.core.errors import UserError

IMAGE_NAMES = ("base", "train", "serve")


def compile_all(
    output_dir: str | Path,
    *,
    image_registry: str | None = None,
    image_tag: str | None = None,
    images: Mapping[str, str] | None = None,
    names: list[str] | None = None,
    cluster_config: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write one YAML per pipeline (``<name>.yaml``), ready to upload in the Kubeflow UI.

    ``images`` maps an image (``base``, ``train``, ``serve``) to a full reference, e.g. a digest from
    the CI build (``registry.example.com/ml/kubedistill-train@sha256:...``); the others are
    ``<image_registry>/kubedistill-<name>:<image_tag>`` (components/images.py).

    With ``cluster_config`` (examples/cluster.yaml) every task gets its role's cluster settings —
    resources, GPUs, node selectors, tolerations, the storage PVC, the MLflow server and object store,
    secrets as environment variables (by name: no secret value ever lands in a file; each file is
    checked) — and each file is checked against the fields the config's ``kfp_version`` server reads
    (kubedistill_kfp/versions.py): ``ClusterConfigError`` names any it cannot. Without one, ``log`` is
    told that the tasks then have no MLflow server to log to on a cluster (they refuse to run there)."""
    say = log or (lambda line: print(line, file=sys.stderr))
    images = dict(images or {})
    unknown = sorted(set(images) - set(IMAGE_NAMES))
    if unknown:
        raise UserError(f"--image {unknown[0]}=...: the images are {', '.join(IMAGE_NAMES)}")
    if "kubedistill_kfp.components.images" in sys.modules and (image_registry or image_tag or images):
        raise UserError("set the images before the components are imported (use a fresh process)")
    if image_registry:
        os.environ["KUBEDISTILL_IMAGE_REGISTRY"] = image_registry
    if image_tag:
        os.environ["KUBEDISTILL_IMAGE_TAG"] = image_tag
    for name, ref in images.items():
        os.environ[f"KUBEDISTILL_IMAGE_{name.upper()}"] = ref
    from kfp import compiler

    from kubedistill_kfp import cluster, versions

    cfg = cluster.load_cluster_config(cluster_config) if cluster_config else None
    if cfg is None:
        say(
            "compiled without --cluster-config: fine for the Kubeflow UI of a test cluster, but the tasks get no "
            "MLflow server, storage PVC or secrets, and a tracked stage refuses to run on a cluster without one"
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    from kubedistill_kfp.pipelines import PIPELINES, pipeline_function

    for name in names or list(PIPELINES):
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(cluster.build_pipeline(pipeline_function(name), cfg), package_path=str(path))
        cluster.check_no_secret_values(path)
        if cfg is not None:
            unreadable = versions.check_compiled(path, cfg.kfp_version)
            if unreadable:
                more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
                raise cluster.ClusterConfigError(
                    f"{path}: KFP {cfg.kfp_version} cannot read {unreadable[0]}{more}: raise kfp_version or drop "
                    "the setting"
                )
        written.append(path)
    return written


def parse_images(values: list[str] | None) -> dict[str, str]:
    """``["train=reg/kubedistill-train@sha256:..."]`` -> ``{"train": "reg/...@sha256:..."}`` (``UserError``
    for a malformed value or an unknown image)."""
    images: dict[str, str] = {}
    for value in values or []:
        name, sep, ref = value.partition("=")
        if not sep or not ref.strip() or any(c.isspace() for c in ref):
            raise UserError(f"--image {value!r}: give NAME=REFERENCE, e.g. train=registry/kubedistill-train@sha256:...")
        if name not in IMAGE_NAMES:
            raise UserError(f"--image {value!r}: the images are {', '.join(IMAGE_NAMES)}")
        images[name] = ref.strip()
    return images
