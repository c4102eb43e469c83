"""Container images the components run on, set at compile time.

    kubedistill compile --image-registry registry.example.com/ml --image-tag 0.1.0
    kubedistill compile --image base=registry.example.com/ml/kubedistill-base@sha256:... --image train=...

Each image is ``$KUBEDISTILL_IMAGE_<NAME>`` when set (a full reference: CI pins digests this way), else
``$KUBEDISTILL_IMAGE_REGISTRY/kubedistill-<name>:$KUBEDISTILL_IMAGE_TAG`` (default ``ghcr.io/kubedistill``
and the package version). ``kubedistill compile`` sets these variables before this module is imported.

base  — CPU stages (collect, generate, judge, verify, register, report, deploy) and the MLflow server:
        images/base/Dockerfile
train — CUDA + torch + DeepSpeed trainers: images/train/Dockerfile
serve — vLLM, for evaluation: images/serve/Dockerfile
"""

from __future__ import annotations

import os

from kubedistill import __version__

REGISTRY = os.environ.get("KUBEDISTILL_IMAGE_REGISTRY", "ghcr.io/kubedistill").rstrip("/")
TAG = os.environ.get("KUBEDISTILL_IMAGE_TAG", __version__)


def _image(name: str) -> str:
    return os.environ.get(f"KUBEDISTILL_IMAGE_{name.upper()}") or f"{REGISTRY}/kubedistill-{name}:{TAG}"


BASE_IMAGE = _image("base")
TRAIN_IMAGE = _image("train")
SERVE_IMAGE = _image("serve")

_BY_ROLE = {"cpu": BASE_IMAGE, "teacher_bound": BASE_IMAGE, "train": TRAIN_IMAGE, "serve": SERVE_IMAGE}


def image_for(role: str) -> str:
    """The image a component of ``role`` (kubedistill/stages.py) runs on."""
    return _BY_ROLE[role]
