"""Stage `dpo`: preference optimisation of the SFT student on (verified CoT, corrupted CoT) pairs.

Each :class:`~kubedistill.core.records.PreferencePair` becomes a conversational preference row: the prompt
is rebuilt from the problem exactly as for SFT (``problem_messages(problem, prompt)``), ``chosen`` and
``rejected`` are assistant turns. Training is TRL's ``DPOTrainer`` with ``ref_model=None`` (the
reference is a frozen copy of the starting model — the SFT student — or, with LoRA, the base weights
with the adapter disabled).

**Per-pair beta.** DPO's loss for a pair is ``-log σ(β·Δ)`` with ``Δ = (log π(y_w|x) - log π_ref(y_w|x))
- (log π(y_l|x) - log π_ref(y_l|x))``. TRL takes one β for all pairs; CogPO-style training gives each
pair its own (``PreferencePair.beta``: a subtle corruption = a hard pair gets a different margin).
:class:`PerPairBetaDPOTrainer` carries each pair's β through the collator as a ``beta`` tensor and, for
the duration of one loss computation, replaces the trainer's scalar β by that tensor, so every place
where TRL 1.16's loss uses β (``β·Δ`` for sigmoid / hinge / robust / sigmoid_norm, ``1/(2β)`` for IPO,
and the logged rewards ``β·log-ratio``) uses the pair's own β. Pairs without one use ``cfg.beta``;
with all betas equal the loss is TRL's, exactly (tested).

Pairs longer than ``max_length`` tokens (prompt + the longer completion) are dropped with reason
``too_long`` rather than truncated: a corruption near the end of a CoT would be cut away, leaving two
identical sequences.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from kubedistill.core.config import reference
from kubedistill.core.errors import NoTrainingDataError
from kubedistill.core.records import PreferencePair, Problem, StageStats
from kubedistill.train.common import (
    LoraConfig,
    MLflowStageCallback,
    TrainingConfig,
    fingerprint,
    history,
    is_main_process,
    last_checkpoint,
    load_tokenizer,
    model_kwargs,
    peft_config,
    save_trained,
    torch_setup,
    training_arguments,
    work_root,
)

STAGE = "dpo"
log = logging.getLogger(__name__)

#: TRL 1.16 loss types whose β enters per pair (no sorting or batch-level terms): per-pair β is exact.
LossType = Literal["sigmoid", "hinge", "ipo", "robust", "sigmoid_norm"]


class DPOConfig(TrainingConfig):
    """DPO hyper-parameters (defaults suit a GPU run after SFT; tests and CPU recipes override them)."""

    base_model: str = reference(
        "model", "tiny-qwen3", description="the SFT student (a model directory or reference); train_dpo can override"
    )
    beta: float = Field(default=0.1, gt=0, description="DPO beta for pairs without their own")
    loss_type: LossType = "sigmoid"
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5, description="for the robust loss")
    learning_rate: float = Field(default=5e-7, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs")
    per_device_batch_size: int = Field(default=4, ge=1, description="pairs per device and step")
    gradient_accumulation_steps: int = Field(default=4, ge=1)
    max_length: int = Field(default=8192, ge=16, description="prompt + completion tokens; longer pairs are dropped")
    precompute_ref_log_probs: bool = Field(
        default=False, description="score the reference once before training (no reference model in memory)"
    )
    lora: LoraConfig | None = None
    prompt: str = reference("prompt", "generate")
    min_pairs: int = Field(default=1, ge=1, description="fewest usable pairs worth a DPO run")
    too_few_pairs: Literal["fail", "skip"] = Field(
        default="fail",
        description="with fewer than min_pairs usable pairs: fail, or skip (the input model passes through "
        "unchanged; the stats say `skipped`)",
    )


def dpo_rows(
    pairs: Sequence[PreferencePair], problems: Sequence[Problem], stats: StageStats, cfg: DPOConfig
) -> list[dict[str, Any]]:
    """Conversational preference rows ``{prompt, chosen, rejected, beta, pair_id}``."""
    from kubedistill.prompts import problem_messages

    by_id = {p.id: p for p in problems}
    rows = []
    for pair in pairs:
        p = by_id.get(pair.problem_id)
        if p is None:
            stats.reject("unknown_problem", f"no problem {pair.problem_id!r}", record={"pair_id": pair.id})
            continue
        if pair.chosen.strip() == pair.rejected.strip():
            stats.reject("identical", "chosen and rejected are the same text", record={"pair_id": pair.id})
            continue
        rows.append(
            {
                "prompt": problem_messages(p, cfg.prompt),
                "chosen": [{"role": "assistant", "content": pair.chosen}],
                "rejected": [{"role": "assistant", "content": pair.rejected}],
                "beta": float(pair.beta if pair.beta is not None else cfg.beta),
                "own_beta": pair.beta is not None,
                "pair_id": pair.id,
            }
        )
    return rows


def _token_length(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


class _BetaCollator:
    """TRL's preference collator plus each pair's β as a float tensor ``beta`` (one per pair)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.inner(examples)
        batch["beta"] = torch.tensor([float(e["beta"]) for e in examples], dtype=torch.float32)
        return batch


_TRAINER: Any = None


def per_pair_beta_trainer_class() -> Any:
    """``DPOTrainer`` whose β is per pair when the batch has a ``beta`` tensor (see module docstring)."""
    global _TRAINER
    if _TRAINER is not None:
        return _TRAINER
    from trl import DPOTrainer

    class PerPairBetaDPOTrainer(DPOTrainer):
        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if self._signature_columns is not None and "beta" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "beta"]

        def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
            # precompute_ref_log_probs batches come from our collator too: β is not a model input
            return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "beta"})

        def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
            beta = inputs.pop("beta", None)
            if beta is None:
                return super()._compute_loss(model, inputs, return_outputs)
            unsupported = set(self.loss_types) - {"sigmoid", "hinge", "ipo", "robust", "sigmoid_norm"}
            if unsupported:
                raise ValueError(f"per-pair beta is not defined for loss types {sorted(unsupported)}")
            scalar = self.beta
            self.beta = beta.to(self.accelerator.device, dtype=torch_float32())
            try:
                return super()._compute_loss(model, inputs, return_outputs)
            finally:
                self.beta = scalar

    _TRAINER = PerPairBetaDPOTrainer
    return PerPairBetaDPOTrainer


def torch_float32() -> Any:
    import torch

    return torch.float32


def build_dpo_trainer(
    rows: Sequence[dict[str, Any]],
    cfg: DPOConfig,
    *,
    base: str | Path,
    output_dir: str | Path,
    per_pair_beta: bool = True,
    callbacks: Sequence[Any] = (),
) -> Any:
    """The (per-pair-β) DPO trainer over preference rows, ready to ``train()``."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    tokenizer = load_tokenizer(base)
    columns = ["prompt", "chosen", "rejected"] + (["beta"] if per_pair_beta else [])
    ds = Dataset.from_list([{k: r[k] for k in columns} for r in rows])
    args = trl.DPOConfig(
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        label_smoothing=cfg.label_smoothing,
        max_length=cfg.max_length,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        **training_arguments(cfg, output_dir=output_dir, rows=len(rows), epochs=cfg.epochs, max_steps=cfg.max_steps),
    )
    kwargs: dict[str, Any] = {
        "model": AutoModelForCausalLM.from_pretrained(base, **model_kwargs(cfg)),
        "ref_model": None,
        "args": args,
        "train_dataset": ds,
        "processing_class": tokenizer,
        "peft_config": peft_config(cfg.lora),
        "callbacks": list(callbacks),
    }
    if not per_pair_beta:
        return trl.DPOTrainer(**kwargs)
    collator = _BetaCollator(
        DataCollatorForPreference(
            pad_token_id=tokenizer.pad_token_id, max_length=cfg.max_length, truncation_mode=args.truncation_mode
        )
    )
    return per_pair_beta_trainer_class()(data_collator=collator, **kwargs)


def train_dpo(
    pairs: Sequence[PreferencePair],
    cfg: DPOConfig,
    *,
    problems: Sequence[Problem],
    model: str | Path,
    base_model: str | Path | None = None,
    work_dir: str | Path | None = None,
) -> tuple[Path, StageStats]:
    """Stage `dpo`: DPO of ``base_model`` (default ``cfg.base_model``: the SFT student; a directory or a
    model reference) on preference ``pairs`` of ``problems``, into the model directory ``model``.

    Pairs longer than ``max_length`` tokens are dropped (``too_long``). Metrics: ``train_loss``, ``steps``,
    first / last loss, ``rewards.accuracies`` / ``.margins`` / ``.chosen`` / ``.rejected`` (last logged).
    Trainer checkpoints in ``<work_dir>/dpo`` (default ``<model>.work``; ``save_steps``) make a killed run
    resumable. Raises :class:`~kubedistill.core.errors.NoTrainingDataError` (exit 2) with fewer than
    ``min_pairs`` usable pairs, unless ``too_few_pairs: skip`` (the input model passes through)."""
    from kubedistill.models import resolve_model

    torch_setup()
    final = Path(model)
    root = work_root(final, work_dir, STAGE)
    stats = StageStats(stage=STAGE, n_in=len(pairs))
    t0 = time.perf_counter()
    base = resolve_model(str(base_model) if base_model is not None else cfg.base_model)
    rows = dpo_rows(pairs, problems, stats, cfg)
    tokenizer = load_tokenizer(base)
    kept = []
    for r in rows:
        longest = max(
            _token_length(tokenizer, r["prompt"] + r["chosen"]), _token_length(tokenizer, r["prompt"] + r["rejected"])
        )
        if longest > cfg.max_length:
            stats.reject(
                "too_long", f"{longest} tokens > max_length {cfg.max_length}", record={"pair_id": r["pair_id"]}
            )
        else:
            kept.append(r)
    rows = kept
    if len(rows) < cfg.min_pairs:
        why = f"{len(rows)} usable pairs < min_pairs {cfg.min_pairs} ({len(pairs)} in, dropped: {dict(stats.dropped)})"
        if cfg.too_few_pairs == "fail":
            raise NoTrainingDataError(f"dpo: {why}; set dpo.too_few_pairs: skip to pass the model through untrained")
        log.warning("dpo: skipped, %s: the input model passes through unchanged", why)
        if is_main_process():
            tmp = final.with_name(final.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            if Path(base).is_dir():
                shutil.copytree(base, tmp)
            else:  # a hub id
                from transformers import AutoModelForCausalLM

                AutoModelForCausalLM.from_pretrained(base).save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        stats.n_out = 0
        stats.metrics["skipped"] = 1.0
        stats.info.update(skipped=why, base_model=str(base))
        stats.elapsed_s = time.perf_counter() - t0
        return final, stats
    run_dir = root / fingerprint(
        [cfg.model_dump(mode="json"), str(base)], ([r["prompt"], r["chosen"], r["rejected"], r["beta"]] for r in rows)
    )
    trainer = build_dpo_trainer(rows, cfg, base=base, output_dir=run_dir, callbacks=[MLflowStageCallback(STAGE)])
    resume = last_checkpoint(run_dir)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    log_history = trainer.state.log_history
    losses = history(log_history)
    stats.n_out = len(rows)
    stats.metrics.update(
        {
            "train_loss": float(result.training_loss),
            "steps": float(trainer.state.global_step),
        }
    )
    if losses:
        stats.metrics["first_loss"], stats.metrics["last_loss"] = losses[0], losses[-1]
    for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "num_tokens"):
        values = history(log_history, key)
        if values:
            stats.metrics[key.replace("/", ".")] = values[-1]
    betas = [r["beta"] for r in rows]
    stats.info.update(
        base_model=str(base),
        loss_type=cfg.loss_type,
        beta_default=cfg.beta,
        per_pair_beta={"min": min(betas), "max": max(betas), "pairs_with_own": sum(r["own_beta"] for r in rows)},
        resumed_from=str(resume) if resume else None,
    )
    save_trained(trainer, final, lora_base=base if cfg.lora is not None else None, dtype=model_kwargs(cfg)["dtype"])
    stats.elapsed_s = time.perf_counter() - t0
    return final, stats
