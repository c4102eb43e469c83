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

What every trainer shares (settings, TrainingArguments, LoRA, MLflow, checkpoints) is in
kubedistill/train/common.py.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from kubedistill.core.config import StrictModel, reference
from kubedistill.core.errors import NoTrainingDataError
from kubedistill.core.records import Difficulty, Problem, Sample, StageStats
from kubedistill.train.common import (
    LoraConfig,
    MLflowStageCallback,
    TrainingConfig,
    fingerprint,
    is_main_process,
    last_checkpoint,
    load_tokenizer,
    model_kwargs,
    peft_config,
    save_trained,
    torch_setup,
    training_arguments,
    wait_for_everyone,
    work_root,
)
from kubedistill.train.common import history as history_of
from kubedistill.train.packing import PackingAttention

STAGE = "sft"


class CurriculumStage(StrictModel):
    name: str
    difficulties: list[Difficulty] = Field(min_length=1, description="which CoTs this stage trains on")
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs")


class SFTConfig(TrainingConfig):
    """SFT hyper-parameters (defaults suit a GPU run; the CPU recipes override them)."""

    base_model: str = reference("model", "tiny-qwen3", description="model reference (see kubedistill/models/)")
    curriculum: list[CurriculumStage] = Field(
        default_factory=lambda: [
            CurriculumStage(name="medium", difficulties=["medium"]),
            CurriculumStage(name="hard", difficulties=["medium", "hard"]),
        ]
    )
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
    lora: LoraConfig | None = None
    prompt: str = reference("prompt", "generate")
    unlabelled_as: Difficulty = Field(default="medium", description="difficulty assumed for unlabelled CoTs")


def train_sft(
    samples: Sequence[Sample],
    cfg: SFTConfig,
    *,
    problems: Sequence[Problem],
    model: str | Path,
    work_dir: str | Path | None = None,
) -> tuple[Path, StageStats]:
    """Stage `sft`: train ``cfg.base_model`` through the curriculum on ``samples`` (verified CoTs of
    ``problems``) into the model directory ``model``; returns it and the stats.

    Samples of unknown problems, truncated or empty CoTs are dropped with a reason; metrics per curriculum
    stage (``<stage>.train_loss``, ``.steps``, ``.cut_at_max_length``, ...). Checkpoints live in
    ``work_dir`` (default ``<model>.work``), one folder per (config, data): run again to resume. Raises
    :class:`~kubedistill.core.errors.NoTrainingDataError` (exit 2) when no CoT is usable."""
    from kubedistill.models import resolve_model
    from kubedistill.train.data import sft_rows

    torch_setup()
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    final = Path(model)
    root = work_root(final, work_dir)
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
    ckpt_root = root / fingerprint(
        cfg.model_dump(mode="json"), ([r["prompt"], r["completion"], r["difficulty"]] for r in rows)
    )
    base = resolve_model(cfg.base_model)
    tokenizer = load_tokenizer(base)
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
        args = trl.SFTConfig(
            max_length=cfg.max_length,
            packing=False,  # ours (kubedistill/train/packing.py), not TRL's padding-free path
            **training_arguments(
                cfg, output_dir=stage_dir, rows=len(stage_rows), epochs=stage.epochs, max_steps=stage.max_steps
            ),
        )
        net = AutoModelForCausalLM.from_pretrained(model_path, **model_kwargs(cfg))
        original_attn = net.config._attn_implementation
        common = {
            "model": net,
            "args": args,
            "train_dataset": ds,
            "processing_class": tokenizer,
            "peft_config": peft_config(cfg.lora),
            "callbacks": [MLflowStageCallback(f"sft.{stage.name}")],
        }
        collator = None
        if cfg.packing:
            from kubedistill.train.packing import PackedCollator, choose_layout

            mode, mask_dtype = choose_layout(net, cfg.packing_attention)
            collator = PackedCollator(pad_token_id=tokenizer.pad_token_id, mode=mode, mask_dtype=mask_dtype)
            trainer = packed_sft_trainer_class()(data_collator=collator, **common)
        else:
            trainer = trl.SFTTrainer(**common)
        if len(trainer.train_dataset) == 0:  # TRL drops rows whose completion the truncation leaves empty
            raise NoTrainingDataError(
                f"sft: curriculum stage {stage.name!r}: none of its {len(stage_rows)} CoT(s) is left after "
                f"tokenising at max_length={cfg.max_length} (the prompt alone may fill it: raise sft.max_length)"
            )
        seqs = _sequence_stats(trainer.train_dataset, cfg.max_length, packed=cfg.packing)
        per_step = cfg.per_device_batch_size * cfg.gradient_accumulation_steps
        steps_per_epoch = math.ceil(len(trainer.train_dataset) / per_step)  # packed rows: fewer than CoTs
        trainer.args.logging_steps = max(1, min(cfg.logging_steps, steps_per_epoch))
        resume = last_checkpoint(stage_dir)
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        from kubedistill.train.packing import restore_attention

        restore_attention(net, original_attn)
        losses = history_of(trainer.state.log_history)
        tokens_seen = history_of(trainer.state.log_history, "num_tokens")  # TRL's running count
        history[stage.name] = {
            "rows": len(stage_rows),
            "steps": int(trainer.state.global_step),
            "train_loss": float(result.training_loss),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "resumed_from": str(resume) if resume else None,
            "num_tokens": tokens_seen[-1] if tokens_seen else None,
            **seqs,
        }
        if collator is not None and collator.processed_tokens:
            history[stage.name]["useful_token_fraction"] = collator.real_tokens / collator.processed_tokens
        save_trained(
            trainer,
            done_dir,
            lora_base=model_path if cfg.lora is not None else None,
            dtype=model_kwargs(cfg)["dtype"],
            extra_files={"kubedistill_stage.json": json.dumps(history[stage.name])},
        )
        model_path = done_dir
        used.update(r["sample_id"] for r in stage_rows)
        del trainer, net
    if model_path == base:
        raise NoTrainingDataError("no curriculum stage had CoTs to train on (check the difficulties in sft.curriculum)")
    if is_main_process():
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(model_path, final, ignore=shutil.ignore_patterns("kubedistill_stage.json"))
    wait_for_everyone()
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
            "num_tokens",
        ):
            if h.get(k) is not None:
                stats.metrics[f"{name}.{k}"] = float(h[k])
    return final, stats


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
