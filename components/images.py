"""Container images the components run on: one registry and tag for all, set at compile time.

    KUBEDISTILL_IMAGE_REGISTRY=registry.example.com/ml KUBEDISTILL_IMAGE_TAG=0.1.0 kubedistill compile
    (or: kubedistill compile --image-registry ... --image-tag ...)

base  — CPU stages (collect, generate, judge, verify, register): images/base/Dockerfile
train — CUDA + DeepSpeed trainers: images/train/Dockerfile
serve — vLLM, for evaluation and serving: images/serve/Dockerfile
"""

from __future__ import annotations

import os

from kubedistill import __version__

REGISTRY = os.environ.get("KUBEDISTILL_IMAGE_REGISTRY", "ghcr.io/kubedistill").rstrip("/")
TAG = os.environ.get("KUBEDISTILL_IMAGE_TAG", __version__)

BASE_IMAGE = f"{REGISTRY}/kubedistill-base:{TAG}"
TRAIN_IMAGE = f"{REGISTRY}/kubedistill-train:{TAG}"
SERVE_IMAGE = f"{REGISTRY}/kubedistill-serve:{TAG}"

_BY_ROLE = {"cpu": BASE_IMAGE, "teacher_bound": BASE_IMAGE, "train": TRAIN_IMAGE, "serve": SERVE_IMAGE}


def image_for(role: str) -> str:
    """The image a component of ``role`` (kubedistill/stages.py) runs on."""
    return _BY_ROLE[role]
