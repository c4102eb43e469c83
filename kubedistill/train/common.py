"""What the four trainers (SFT, DPO, reward models, GRPO) share: the settings every trainer has, the
TrainingArguments built from them, LoRA, the MLflow callback, checkpoints, processes, and saving.

Where transformers / accelerate provide a piece, it is theirs: ``MLflowCallback`` (subclassed only to
prefix metric names with the stage and to log into the stage's own run), ``get_last_checkpoint``, and
accelerate's ``PartialState`` for "am I the main process" and barriers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from kubedistill.core.config import StrictModel, reference


class LoraConfig(StrictModel):
    """LoRA adapters (peft): rank ``r``, ``alpha``, ``dropout``, the modules that get one. The trained
    adapter is merged into the model before it is saved."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainingConfig(StrictModel):
    """Settings every trainer shares: optimisation, precision, memory, multi-GPU, logging, checkpoints.

    Each trainer's config extends it (and may change a default: DPO's learning rate is lower)."""

    learning_rate: float = Field(default=1e-5, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1, description="share of the steps spent warming up")
    per_device_batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    gradient_checkpointing: bool = False
    bf16: bool | None = Field(default=None, description="None: on when a GPU supports it")
    deepspeed: str | None = reference(
        "deepspeed",
        None,
        description="DeepSpeed ZeRO config: zero2, zero3, zero3_offload (shipped) or a JSON path; GPU runs only",
    )
    attn_implementation: str | None = Field(
        default=None, description="sdpa, eager, flash_attention_2, ...; None: the model's default (sdpa)"
    )
    seed: int = 0
    logging_steps: int = 5
    save_steps: int | None = Field(default=None, ge=1, description="checkpoint every N steps (resumable)")


def torch_setup() -> Any:
    """Import torch with every core of the machine in use; returns the module."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch


def use_bf16(cfg: TrainingConfig) -> bool:
    import torch

    if cfg.bf16 is not None:
        return cfg.bf16
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def model_kwargs(cfg: TrainingConfig) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments: dtype (bf16 or fp32) and the attention implementation."""
    import torch

    kw: dict[str, Any] = {"dtype": torch.bfloat16 if use_bf16(cfg) else torch.float32}
    if cfg.attn_implementation:
        kw["attn_implementation"] = cfg.attn_implementation
    return kw


def training_arguments(
    cfg: TrainingConfig,
    *,
    output_dir: str | Path,
    rows: int,
    epochs: float,
    max_steps: int | None,
    rows_per_example: int = 1,
) -> dict[str, Any]:
    """Keyword arguments every trainer's ``TrainingArguments`` (TRL's ``SFTConfig`` / ``DPOConfig`` /
    ``GRPOConfig`` included) takes from ``cfg``: optimisation, precision, DeepSpeed, checkpoints, CPU;
    logging every ``cfg.logging_steps`` steps but at least once per epoch of ``rows`` training rows
    (``rows_per_example``: GRPO's completions per prompt). Reporting is ours (:class:`MLflowStageCallback`)."""
    import torch

    per_step = cfg.per_device_batch_size * cfg.gradient_accumulation_steps
    steps_per_epoch = max(1, math.ceil(rows * rows_per_example / per_step))
    deepspeed = None
    if cfg.deepspeed is not None:
        from kubedistill.train.deepspeed import config_path

        deepspeed = config_path(cfg.deepspeed)
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": epochs,
        "max_steps": max_steps or -1,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_steps": cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
        "per_device_train_batch_size": cfg.per_device_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "logging_steps": max(1, min(cfg.logging_steps, steps_per_epoch)),
        "disable_tqdm": False,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "bf16": use_bf16(cfg),
        "deepspeed": deepspeed,
        "seed": cfg.seed,
        "save_strategy": "steps" if cfg.save_steps else "no",
        "save_steps": cfg.save_steps or 500,
        "save_total_limit": 2,
        "report_to": [],
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
    }


def peft_config(lora: LoraConfig | None, task_type: str = "CAUSAL_LM") -> Any:
    """peft's ``LoraConfig`` for ``lora`` (None: full fine-tuning)."""
    if lora is None:
        return None
    import peft

    return peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
    )


def load_tokenizer(base: str | Path) -> Any:
    """The model's tokenizer, with its EOS token as the pad token when it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def history(log_history: Sequence[dict[str, Any]], key: str = "loss") -> list[float]:
    """The values of ``key`` over a trainer's ``state.log_history`` (one per logging step)."""
    return [float(h[key]) for h in log_history if key in h]


def fingerprint(header: Any, rows: Iterable[Any]) -> str:
    """A short content hash of a training run (its settings and data): checkpoints belong to one such
    pair, so a changed recipe or data set never resumes from another's."""
    h = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode())
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` in ``run_dir`` (transformers' ``get_last_checkpoint``), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(run_dir).is_dir():
        return None
    found = get_last_checkpoint(str(run_dir))
    return Path(found) if found else None


def is_main_process() -> bool:
    """True in the one process (of a torchrun / accelerate launch) that writes files and logs."""
    from accelerate import PartialState

    return bool(PartialState().is_main_process)


def wait_for_everyone() -> None:
    """A barrier across the processes of a launch (nothing in one process)."""
    from accelerate import PartialState

    PartialState().wait_for_everyone()


_CALLBACK: Any = None


def MLflowStageCallback(prefix: str) -> Any:
    """transformers' ``MLflowCallback``, logging into the stage's active MLflow run with every metric
    prefixed (``sft.medium.loss``). It logs no params (the stage logs its config) and never starts or
    ends a run of its own; without an active run (tracking off) it logs nothing."""
    global _CALLBACK
    if _CALLBACK is None:
        from transformers.integrations import MLflowCallback

        class _StageCallback(MLflowCallback):
            def __init__(self, prefix: str) -> None:
                super().__init__()
                self.prefix = prefix

            def setup(self, args: Any, state: Any, model: Any) -> None:
                self._initialized = True  # no params, no run of our own: the stage has both
                self._async_log = False

            def on_log(
                self, args: Any, state: Any, control: Any, logs: Any = None, model: Any = None, **kw: Any
            ) -> None:
                if not logs or self._ml_flow.active_run() is None:
                    return
                prefixed = {f"{self.prefix}.{k}": v for k, v in logs.items()}
                super().on_log(args, state, control, logs=prefixed, model=model, **kw)

        _CALLBACK = _StageCallback
    return _CALLBACK(prefix)


def save_trained(
    trainer: Any,
    out: Path,
    *,
    lora_base: str | Path | None = None,
    dtype: Any = None,
    model_class: str = "AutoModelForCausalLM",
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write ``trainer``'s model and tokenizer to ``out`` atomically, however training was launched.

    One process or several (torchrun / accelerate), DeepSpeed ZeRO-3 included: every rank takes part in
    ``trainer.save_model`` (which gathers sharded weights) and only the main process writes ``out``.
    With LoRA, ``lora_base`` is the model the adapter was trained on: the adapter is merged into it, so
    the result is always a plain model directory (transformers- and vLLM-loadable)."""
    import transformers

    acc = trainer.accelerator
    main = acc.is_main_process
    tmp = out.with_name(out.name + ".tmp")
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    adapter = tmp / "adapter"
    trainer.save_model(str(adapter if lora_base is not None else tmp))
    acc.wait_for_everyone()
    if main:
        if lora_base is not None:
            from peft import PeftModel

            cls = getattr(transformers, model_class)
            merged = PeftModel.from_pretrained(cls.from_pretrained(lora_base, dtype=dtype), adapter).merge_and_unload()
            merged.save_pretrained(tmp)
            shutil.rmtree(adapter)
        trainer.processing_class.save_pretrained(tmp)
        (tmp / "training_args.bin").unlink(missing_ok=True)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    acc.wait_for_everyone()
    return out


def work_root(model: str | Path, work_dir: str | Path | None, stage: str | None = None) -> Path:
    """Where a trainer keeps its checkpoints: ``<work_dir>/<stage>`` (a shared volume on the cluster: one
    folder per stage beside the others), else ``<model>.work`` beside the output."""
    if work_dir:
        return Path(work_dir) / stage if stage else Path(work_dir)
    out = Path(model)
    return out.with_name(out.name + ".work")
