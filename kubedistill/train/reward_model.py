"""Stage `reward_models`: RV and CD regressors distilled from the judge's scores.

The judge scores each CoT's *reasoning verbosity* (RV) and *cognitive difficulty* (CD) from 0 to 9
(``Sample.rv``, ``Sample.cd``). Calling the judge inside an RL loop is too slow and too costly, so
each score is distilled into a small regressor: a base language model with a one-output linear head
(``AutoModelForSequenceClassification``, ``num_labels=1``, ``problem_type="regression"``, mean squared
error on the score / 9 ∈ [0, 1]). GRPO then uses them as ``f_RV`` and ``f_CD``
(kubedistill/train/rewards.py).

The regressor reads one text, :data:`TEMPLATE` filled with the problem and the CoT (the sample's full
text, ``<think>…</think>`` and answer included — the form the student's completions take), truncated
to ``max_length`` tokens (the end is kept: a CoT's length and its conclusion matter most for RV).

Problems are split (by a hash of the problem id, so CoTs of one problem never straddle the split) into
train and held-out; on the held-out CoTs the stage reports MAE (on the [0, 1] scale; ``mae_points`` on
the judge's 0-9 scale), Spearman's rank correlation, and the MAE of always predicting the training
mean (``mae_baseline``: a regressor must beat it). Samples without a score for a head are skipped for
that head and counted.

Each regressor is saved as a model directory (transformers-loadable) with ``kubedistill_reward.json``
describing what it predicts; :func:`load_scorer` turns it back into ``f(problem, cot) -> [0, 1]``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from kubedistill.core.config import reference
from kubedistill.core.errors import NoTrainingDataError
from kubedistill.core.records import Problem, Sample, StageStats
from kubedistill.train.common import (
    MLflowStageCallback,
    TrainingConfig,
    fingerprint,
    history,
    is_main_process,
    last_checkpoint,
    load_tokenizer,
    model_kwargs,
    save_trained,
    torch_setup,
    training_arguments,
)

STAGE = "reward_models"
Head = Literal["rv", "cd"]
SCALE = 9.0  # the judge's scores are 0..9
META_FILE = "kubedistill_reward.json"

#: What the regressor reads: the problem, then the CoT as produced (think block + answer).
TEMPLATE = "Problem:\n{problem}\n\nSolution:\n{cot}"

DESCRIPTIONS = {
    "rv": "reasoning verbosity: how long and detailed the chain of thought is (judge score 0-9, divided by 9)",
    "cd": "cognitive difficulty: how hard the reasoning is to follow (judge score 0-9, divided by 9)",
}


class RewardModelConfig(TrainingConfig):
    """Regressor hyper-parameters (defaults suit a GPU run; tests and CPU recipes override them)."""

    base_model: str = reference("model", "tiny-qwen3", description="model reference (see kubedistill/models/)")
    heads: list[Head] = Field(default_factory=lambda: ["rv", "cd"], min_length=1)
    weight_decay: float = 0.0
    epochs: float = Field(default=2.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs")
    per_device_batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=4096, ge=16)
    eval_fraction: float = Field(default=0.1, gt=0, lt=1, description="share of problems held out")
    split_seed: int = 0
    template: str = Field(default=TEMPLATE, description="input text; fields {problem} and {cot}")

    @field_validator("template")
    @classmethod
    def _template_fields(cls, v: str) -> str:
        if "{problem}" not in v or "{cot}" not in v:
            raise ValueError("template needs {problem} and {cot}")
        return v

    @field_validator("heads")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("heads must be distinct")
        return v


def render(template: str, problem: str, cot: str) -> str:
    return template.replace("{problem}", problem).replace("{cot}", cot)


def held_out(problem_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic split by problem: True for about ``fraction`` of the problem ids."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def train_reward_models(
    samples: Sequence[Sample],
    cfg: RewardModelConfig,
    *,
    problems: Sequence[Problem],
    models: str | Path,
) -> tuple[dict[str, Path], StageStats]:
    """Stage `reward_models`: one regressor per head in ``cfg.heads`` (``rv``, ``cd``), trained on the
    judge's 0-9 scores of ``samples`` (divided by 9), into ``models/<head>``.

    Returns the model directories by head and the stats: ``<head>.mae`` (the [0, 1] scale),
    ``.mae_points`` (0-9), ``.mae_baseline``, ``.spearman`` on the held-out problems. Samples of unknown
    problems, empty or unscored CoTs are dropped with a reason. A head whose directory already holds a
    regressor trained with the same settings on the same data is not trained again (a killed run resumes
    head by head). Raises :class:`~kubedistill.core.errors.NoTrainingDataError` when no CoT has a score."""
    from kubedistill.models import resolve_model

    torch_setup()
    out_root = Path(models)
    stats = StageStats(stage=STAGE, n_in=len(samples))
    t0 = time.perf_counter()
    by_id = {p.id: p for p in problems}
    usable: list[tuple[Sample, Problem]] = []
    for s in samples:
        p = by_id.get(s.problem_id)
        if p is None:
            stats.reject("unknown_problem", f"no problem {s.problem_id!r}", record={"sample_id": s.id})
        elif not s.text.strip():
            stats.reject("empty_cot", "no text", record={"sample_id": s.id})
        elif all(getattr(s, h) is None for h in cfg.heads):
            stats.reject("no_score", f"no {' / '.join(cfg.heads)} score", record={"sample_id": s.id})
        else:
            usable.append((s, p))
    stats.n_out = len(usable)
    split = _split({p.id for _, p in usable}, cfg)
    base = resolve_model(cfg.base_model)
    dirs: dict[str, Path] = {}
    for head in cfg.heads:
        rows = {"train": [], "eval": []}  # type: dict[str, list[dict[str, Any]]]
        for s, p in usable:
            score = getattr(s, head)
            if score is None:
                continue
            part = "eval" if p.id in split else "train"
            rows[part].append({"text": render(cfg.template, p.problem, s.text.strip()), "label": score / SCALE})
        skipped = sum(1 for s, _ in usable if getattr(s, head) is None)
        info = {"train": len(rows["train"]), "eval": len(rows["eval"]), "skipped_no_score": skipped}
        if not rows["train"]:
            stats.info[head] = {**info, "skipped": "no scored CoTs to train on"}
            continue
        dirs[head], metrics = _train_head(head, rows, cfg, base, out_root / head)
        stats.info[head] = {**info, **{k: v for k, v in metrics.items() if not isinstance(v, float)}}
        for k, v in metrics.items():
            if isinstance(v, float) and math.isfinite(v):
                stats.metrics[f"{head}.{k}"] = v
    if not dirs:
        raise NoTrainingDataError(
            f"reward_models: no CoT has a {' or '.join(cfg.heads)} score ({len(samples)} sample(s) in, "
            f"dropped: {dict(stats.dropped)}); run the judge's RV/CD scoring first"
        )
    stats.info["base_model"] = cfg.base_model
    stats.info["template"] = cfg.template
    stats.info["held_out_problems"] = len(split)
    stats.elapsed_s = time.perf_counter() - t0
    return dirs, stats


def _split(problem_ids: set[str], cfg: RewardModelConfig) -> set[str]:
    held = {pid for pid in problem_ids if held_out(pid, cfg.eval_fraction, cfg.split_seed)}
    if not held and len(problem_ids) >= 2:  # small sets: hold out at least one problem
        held = {min(problem_ids, key=lambda pid: hashlib.sha256(f"{cfg.split_seed}:{pid}".encode()).digest())}
    if held == problem_ids:
        held = set()
    return held


def _train_head(
    head: str, rows: dict[str, list[dict[str, Any]]], cfg: RewardModelConfig, base: Path, final: Path
) -> tuple[Path, dict[str, Any]]:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    data = ([part, r["text"], r["label"]] for part in ("train", "eval") for r in rows[part])
    run_id = fingerprint([head, cfg.model_dump(mode="json"), str(base)], data)
    meta_path = final / META_FILE
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == run_id:
            return final, dict(meta["metrics"], resumed=True)
    tokenizer = load_tokenizer(base)
    tokenizer.truncation_side = "left"  # keep the end of long CoTs

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        enc = tokenizer(batch["text"], truncation=True, max_length=cfg.max_length)
        enc["labels"] = [float(x) for x in batch["label"]]
        return enc

    train_ds = Dataset.from_list(rows["train"]).map(encode, batched=True, remove_columns=["text", "label"])
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, problem_type="regression", **model_kwargs(cfg)
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    work = final.with_name(final.name + ".work")
    args = TrainingArguments(
        weight_decay=cfg.weight_decay,
        **training_arguments(cfg, output_dir=work, rows=len(train_ds), epochs=cfg.epochs, max_steps=cfg.max_steps),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[MLflowStageCallback(f"reward_models.{head}")],
    )
    resume = last_checkpoint(work)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    losses = history(trainer.state.log_history)
    metrics: dict[str, Any] = {
        "train_loss": float(result.training_loss),
        "steps": float(trainer.state.global_step),
        "n_train": float(len(rows["train"])),
        "n_eval": float(len(rows["eval"])),
    }
    if losses:
        metrics["first_loss"], metrics["last_loss"] = losses[0], losses[-1]
    if rows["eval"]:
        labels = [r["label"] for r in rows["eval"]]
        # Trainer.predict: works however the model is placed (one device, DDP, ZeRO-3 shards)
        eval_ds = Dataset.from_list(rows["eval"]).map(encode, batched=True, remove_columns=["text", "label"])
        logits = trainer.predict(eval_ds).predictions
        preds = [min(1.0, max(0.0, float(v))) for v in logits.reshape(-1)[: len(labels)]]
        mean = sum(r["label"] for r in rows["train"]) / len(rows["train"])
        metrics["mae"] = sum(abs(a - b) for a, b in zip(preds, labels, strict=True)) / len(labels)
        metrics["mae_points"] = metrics["mae"] * SCALE
        metrics["mae_baseline"] = sum(abs(mean - b) for b in labels) / len(labels)
        rho = spearman(preds, labels)
        if rho is None:
            metrics["spearman_undefined"] = "constant predictions or labels on the held-out split"
        else:
            metrics["spearman"] = rho
    else:
        metrics["eval_skipped"] = "fewer than 2 problems: no held-out split"
    meta = {
        "head": head,
        "predicts": DESCRIPTIONS[head],
        "output_range": [0.0, 1.0],
        "scale": SCALE,
        "template": cfg.template,
        "max_length": cfg.max_length,
        "truncation_side": "left",
        "base_model": cfg.base_model,
        "fingerprint": run_id,
        "metrics": metrics,
    }
    save_trained(trainer, final, extra_files={META_FILE: json.dumps(meta, indent=2)})
    if is_main_process():
        shutil.rmtree(work, ignore_errors=True)
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return final, metrics


def _predict(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int) -> list[float]:
    """Predictions clipped to [0, 1], in the order of ``texts`` (batched by length)."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [0.0] * len(texts)
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            ).to(device)
            values = model(**enc).logits[:, 0].float().clamp(0.0, 1.0).tolist()
            for i, v in zip(idx, values, strict=True):
                out[i] = float(v)
    return out


class RewardScorer:
    """A trained regressor as a scoring function: ``scorer(problem, cot) -> float`` in [0, 1] and
    ``scorer.score_many(problems, cots)`` (batched). ``meta`` is its ``kubedistill_reward.json``."""

    def __init__(self, model_dir: str | Path, *, device: str | None = None, batch_size: int = 16) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model_dir = Path(model_dir)
        meta_path = self.model_dir / META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.model_dir} is not a kubedistill reward model (no {META_FILE})")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.head: str = self.meta["head"]
        self.template: str = self.meta["template"]
        self.max_length: int = int(self.meta["max_length"])
        self.batch_size = batch_size
        # one GPU per process under torchrun / accelerate: this process's own
        self.device = device or (
            f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
        )
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.tokenizer.truncation_side = self.meta.get("truncation_side", "left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).to(self.device).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def __call__(self, problem: str, cot: str) -> float:
        return self.score_many([problem], [cot])[0]

    def score_many(self, problems: Sequence[str], cots: Sequence[str], batch_size: int | None = None) -> list[float]:
        if len(problems) != len(cots):
            raise ValueError("one problem per CoT")
        texts = [render(self.template, p, c) for p, c in zip(problems, cots, strict=True)]
        return _predict(self.model, self.tokenizer, texts, self.max_length, batch_size or self.batch_size)

    def __repr__(self) -> str:
        return f"RewardScorer({self.head!r}, {str(self.model_dir)!r})"


def load_scorer(model_dir: str | Path, **kwargs: Any) -> RewardScorer:
    """``f(problem, cot) -> [0, 1]`` from a directory written by :func:`train_reward_models`."""
    return RewardScorer(model_dir, **kwargs)
