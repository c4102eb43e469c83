"""Stage `sft`: supervised fine-tuning of the student on verified CoTs, with a curriculum.

DistilQwen2.5-R1 trains first on *medium* CoTs, then adds the *hard* ones. Each curriculum stage is a
TRL ``SFTTrainer`` run that continues from the previous stage's weights. The student learns the
completion only (prompt-completion rows; the prompt is masked out of the loss).

With ``packing=True`` the CoTs of a stage are packed into rows of ``max_length`` tokens
(kubedistill/train/packing.py): no padding, position ids restarting per CoT, and no attention across
CoTs, so a packed batch computes exactly what the CoTs would alone (tested), at a fraction of the cost
of padded batches when CoT lengths vary (benchmarks/sft_packing.py, docs/training.md).

The output is a model directory (transformers + vLLM loadable; LoRA adapters are merged). Finished
curriculum stages and trainer checkpoints in ``work_dir`` (on the cluster: a PVC) make a killed run
resumable: run it again with the same ``work_dir``.

This module also holds what every trainer here shares: :class:`TrainingRuntime` (GPU / DeepSpeed /
logging settings), the MLflow logging callback and the model-loading helpers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from kubedistill.config import StrictModel
from kubedistill.errors import NoTrainingDataError
from kubedistill.records import Difficulty, Problem, Sample, StageStats
from kubedistill.train.packing import PackingAttention

STAGE = "sft"


class CurriculumStage(StrictModel):
    name: str
    difficulties: list[Difficulty] = Field(min_length=1, description="which CoTs this stage trains on")
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs")


class LoraSettings(StrictModel):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainingRuntime(StrictModel):
    """Settings every trainer shares: precision, memory, multi-GPU, logging, checkpoints."""

    gradient_checkpointing: bool = False
    bf16: bool | None = Field(default=None, description="None: on when a GPU supports it")
    deepspeed: str | None = Field(
        default=None,
        description="DeepSpeed ZeRO config: zero2, zero3, zero3_offload (shipped) or a JSON path; GPU runs only",
    )
    attn_implementation: str | None = Field(
        default=None, description="sdpa, eager, flash_attention_2, ...; None: the model's default (sdpa)"
    )
    seed: int = 0
    logging_steps: int = 5
    save_steps: int | None = Field(default=None, ge=1, description="checkpoint every N steps (resumable)")


class SFTSettings(TrainingRuntime):
    """SFT hyper-parameters (defaults suit a GPU run; the CPU recipes override them)."""

    base_model: str = Field(default="tiny-qwen3", description="model reference (see kubedistill/models.py)")
    curriculum: list[CurriculumStage] = Field(
        default_factory=lambda: [
            CurriculumStage(name="medium", difficulties=["medium"]),
            CurriculumStage(name="hard", difficulties=["medium", "hard"]),
        ]
    )
    learning_rate: float = Field(default=1e-5, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    per_device_batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=4096, ge=16)
    packing: bool = Field(
        default=False,
        description="pack CoTs into rows of max_length tokens, without cross-attention (docs/training.md); "
        "per_device_batch_size then counts rows",
    )
    packing_attention: PackingAttention = Field(
        default="auto",
        description="packed layout: auto (flash: native varlen; sdpa: per-CoT SDPA; eager: 4-D mask), varlen, "
        "block_mask",
    )
    lora: LoraSettings | None = None
    prompt: str = "generate"
    unlabelled_as: Difficulty = Field(default="medium", description="difficulty assumed for unlabelled CoTs")


def _torch_setup() -> Any:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch


def _bf16(cfg: TrainingRuntime) -> bool:
    import torch

    if cfg.bf16 is not None:
        return cfg.bf16
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _deepspeed(cfg: TrainingRuntime) -> str | None:
    if cfg.deepspeed is None:
        return None
    from kubedistill.train.deepspeed import config_path

    return config_path(cfg.deepspeed)


def _runtime_args(cfg: TrainingRuntime) -> dict[str, Any]:
    """TrainingArguments common to every trainer (precision, DeepSpeed, CPU, logging: we log ourselves)."""
    import torch

    return {
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "bf16": _bf16(cfg),
        "deepspeed": _deepspeed(cfg),
        "seed": cfg.seed,
        "save_strategy": "steps" if cfg.save_steps else "no",
        "save_steps": cfg.save_steps or 500,
        "save_total_limit": 2,
        "report_to": [],
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
    }


def _model_kwargs(cfg: TrainingRuntime) -> dict[str, Any]:
    import torch

    kw: dict[str, Any] = {"dtype": torch.bfloat16 if _bf16(cfg) else torch.float32}
    if cfg.attn_implementation:
        kw["attn_implementation"] = cfg.attn_implementation
    return kw


def _loss_history(log_history: Sequence[dict[str, Any]], key: str = "loss") -> list[float]:
    return [float(h[key]) for h in log_history if key in h]


class _MlflowLogCallback:
    """Forward trainer logs (loss, lr, grad norm) to the active MLflow run, prefixed by the stage."""

    def __new__(cls, prefix: str) -> Any:
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_log(
                self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
            ) -> None:
                import mlflow

                if not logs or mlflow.active_run() is None:
                    return
                metrics = {f"{prefix}.{k}": float(v) for k, v in logs.items() if isinstance(v, int | float)}
                if metrics:
                    mlflow.log_metrics(metrics, step=int(state.global_step))

        return Callback()


def train_sft(
    samples: Sequence[Sample],
    cfg: SFTSettings,
    *,
    problems: Sequence[Problem],
    model_dir: str | Path,
    work_dir: str | Path | None = None,
) -> tuple[Path, StageStats]:
    """Train the student through the curriculum into ``model_dir``; returns it and the stats."""
    from kubedistill.models import resolve_model
    from kubedistill.train.data import sft_rows

    _torch_setup()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    final = Path(model_dir)
    work_root = Path(work_dir) if work_dir else final.with_name(final.name + ".work")
    stats = StageStats(stage=STAGE, n_in=len(samples))
    t0 = time.perf_counter()
    rows = sft_rows(samples, problems, stats, cfg.prompt)
    if not rows:
        raise NoTrainingDataError(
            f"sft: no CoTs to train on ({len(samples)} sample(s) in, {stats.n_dropped} unusable: "
            f"{dict(stats.dropped)}); if verify kept none, see its rejects — the teacher may be too weak for these "
            "problems"
        )
    for r in rows:
        if r["difficulty"] not in ("easy", "medium", "hard"):
            r["difficulty"] = cfg.unlabelled_as
    # Checkpoints belong to one (config, data) pair: a changed recipe or data set never resumes from them.
    ckpt_root = work_root / _fingerprint(cfg, rows)
    base = resolve_model(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_path: str | Path = base
    used: set[str] = set()
    history: dict[str, Any] = {}
    for i, stage in enumerate(cfg.curriculum):
        stage_rows = [r for r in rows if r["difficulty"] in stage.difficulties]
        done_dir = ckpt_root / f"{i}-{stage.name}" / "final"
        if (done_dir / "config.json").exists():  # finished before a restart
            model_path = done_dir
            used.update(r["sample_id"] for r in stage_rows)
            history[stage.name] = json.loads((done_dir / "kubedistill_stage.json").read_text())
            continue
        if not stage_rows:
            history[stage.name] = {"rows": 0, "skipped": "no CoTs of these difficulties"}
            continue
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in stage_rows])
        stage_dir = ckpt_root / f"{i}-{stage.name}"
        args = SFTConfig(
            output_dir=str(stage_dir),
            num_train_epochs=stage.epochs,
            max_steps=stage.max_steps or -1,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler_type,
            warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
            per_device_train_batch_size=cfg.per_device_batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            max_length=cfg.max_length,
            packing=False,  # ours (kubedistill/train/packing.py), not TRL's padding-free path
            logging_steps=cfg.logging_steps,
            disable_tqdm=False,
            **_runtime_args(cfg),
        )
        model = AutoModelForCausalLM.from_pretrained(model_path, **_model_kwargs(cfg))
        original_attn = model.config._attn_implementation
        peft_config = None
        if cfg.lora is not None:
            from peft import LoraConfig

            peft_config = LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=cfg.lora.target_modules,
                task_type="CAUSAL_LM",
            )
        common = {
            "model": model,
            "args": args,
            "train_dataset": ds,
            "processing_class": tokenizer,
            "peft_config": peft_config,
            "callbacks": [_MlflowLogCallback(f"sft.{stage.name}")],
        }
        collator = None
        if cfg.packing:
            from kubedistill.train.packing import PackedCollator, choose_layout

            mode, mask_dtype = choose_layout(model, cfg.packing_attention)
            collator = PackedCollator(pad_token_id=tokenizer.pad_token_id, mode=mode, mask_dtype=mask_dtype)
            trainer = packed_sft_trainer_class()(data_collator=collator, **common)
        else:
            trainer = SFTTrainer(**common)
        seqs = _sequence_stats(trainer.train_dataset, cfg.max_length, packed=cfg.packing)
        per_step = cfg.per_device_batch_size * cfg.gradient_accumulation_steps
        steps_per_epoch = math.ceil(len(trainer.train_dataset) / per_step)
        trainer.args.logging_steps = max(1, min(cfg.logging_steps, steps_per_epoch))
        resume = _last_checkpoint(stage_dir)
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        from kubedistill.train.packing import restore_attention

        restore_attention(model, original_attn)
        losses = _loss_history(trainer.state.log_history)
        history[stage.name] = {
            "rows": len(stage_rows),
            "steps": int(trainer.state.global_step),
            "train_loss": float(result.training_loss),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "resumed_from": str(resume) if resume else None,
            **seqs,
        }
        if collator is not None and collator.processed_tokens:
            history[stage.name]["useful_token_fraction"] = collator.real_tokens / collator.processed_tokens
        save_trained(
            trainer,
            done_dir,
            lora_base=model_path if cfg.lora is not None else None,
            dtype=_model_kwargs(cfg)["dtype"],
            extra_files={"kubedistill_stage.json": json.dumps(history[stage.name])},
        )
        model_path = done_dir
        used.update(r["sample_id"] for r in stage_rows)
        del trainer, model
    if model_path == base:
        raise NoTrainingDataError("no curriculum stage had CoTs to train on (check the difficulties in sft.curriculum)")
    if _is_main_process():
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(model_path, final, ignore=shutil.ignore_patterns("kubedistill_stage.json"))
    _wait_for_everyone()
    stats.n_out = len(used)
    unused = len(rows) - len(used)
    if unused:
        stats.dropped["not_in_curriculum"] = unused
    stats.elapsed_s = time.perf_counter() - t0
    stats.info["curriculum"] = history
    stats.info["base_model"] = cfg.base_model
    for name, h in history.items():
        for k in (
            "train_loss",
            "first_loss",
            "last_loss",
            "steps",
            "cut_at_max_length",
            "packing_fill",
            "useful_token_fraction",
        ):
            if h.get(k) is not None:
                stats.metrics[f"{name}.{k}"] = float(h[k])
    return final, stats


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


def _is_main_process() -> bool:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _wait_for_everyone() -> None:
    """A barrier when several processes train together (no-op in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _sequence_stats(dataset: Any, max_length: int, *, packed: bool) -> dict[str, Any]:
    """Sequence counts of a prepared training set: CoTs cut at ``max_length`` are counted, never hidden."""
    if packed:
        lengths = [n for row in dataset["seq_lengths"] for n in row]
        out: dict[str, Any] = {"packed_rows": len(dataset), "packing_fill": sum(lengths) / (len(dataset) * max_length)}
    else:
        lengths = [len(ids) for ids in dataset["input_ids"]]
        out = {}
    out.update(
        sequences=len(lengths),
        tokens=sum(lengths),
        max_tokens=max(lengths, default=0),
        cut_at_max_length=sum(1 for n in lengths if n >= max_length),
    )
    return out


_PACKED_TRAINER: Any = None


def packed_sft_trainer_class() -> Any:
    """``SFTTrainer`` whose datasets are tokenized by TRL (completion-only labels, truncation to
    ``max_length``) and then packed by :func:`kubedistill.train.packing.pack_dataset`; pass a
    :class:`~kubedistill.train.packing.PackedCollator` as ``data_collator``."""
    global _PACKED_TRAINER
    if _PACKED_TRAINER is not None:
        return _PACKED_TRAINER
    from trl import SFTTrainer

    from kubedistill.train.packing import pack_dataset

    class PackedSFTTrainer(SFTTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):  # type: ignore[no-untyped-def]
            prepared = super()._prepare_dataset(dataset, processing_class, args, False, formatting_func, dataset_name)
            return pack_dataset(prepared, args.max_length)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            mask = inputs.get("attention_mask")
            before = self._total_train_tokens
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if mask is not None and mask.dim() == 4 and self.model.training:
                # TRL counts tokens as attention_mask.sum(): with a 4-D mask that counts attended pairs
                self._total_train_tokens = before + int(inputs["input_ids"].numel())
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return out

    _PACKED_TRAINER = PackedSFTTrainer
    return PackedSFTTrainer


def _fingerprint(cfg: SFTSettings, rows: Sequence[dict[str, Any]]) -> str:
    import hashlib

    h = hashlib.sha256(cfg.model_dump_json().encode())
    for r in rows:
        h.update(json.dumps([r["prompt"], r["completion"], r["difficulty"]], sort_keys=True).encode())
    return h.hexdigest()[:16]


def _last_checkpoint(stage_dir: Path) -> Path | None:
    if not stage_dir.exists():
        return None
    ckpts = sorted(
        (p for p in stage_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    return ckpts[-1] if ckpts else None
