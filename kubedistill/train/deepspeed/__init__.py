"""DeepSpeed ZeRO configs shipped with kubedistill (package data), for multi-GPU training.

``zero2`` (optimizer states + gradients sharded), ``zero3`` (+ parameters sharded) and
``zero3_offload`` (ZeRO-3 with parameters and optimizer states in CPU memory; DeepSpeed's CPU AdamW).
Values set to ``"auto"`` are filled by the Hugging Face Trainer from the training arguments (batch
sizes, gradient accumulation and clipping, learning rate, bf16) and the model (bucket sizes), so one
file serves every trainer. Each trainer's ``deepspeed`` setting takes one of these names or a path.
See docs/training.md for the launch command lines.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

NAMES = ("zero2", "zero3", "zero3_offload")


def config_path(name_or_path: str) -> str:
    """The file of a shipped config (``zero2``, ``zero3``, ``zero3_offload``) or an existing path."""
    if name_or_path in NAMES:
        return str(resources.files(__package__).joinpath(f"{name_or_path}.json"))
    p = Path(name_or_path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"DeepSpeed config {name_or_path!r}: give one of {', '.join(NAMES)} or a JSON file")
    return str(p)


def load_config(name_or_path: str) -> dict[str, Any]:
    return json.loads(Path(config_path(name_or_path)).read_text())
