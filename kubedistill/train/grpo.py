"""Stage `grpo`: reinforcement learning of the student with verifiable and distilled rewards.

TRL's ``GRPOTrainer`` samples ``num_generations`` completions per problem, scores each with

    R = w_format·R_format + w_accuracy·R_accuracy + λ_RV·R_RV + λ_CD·R_CD

(kubedistill/train/rewards.py defines every term; ``R_RV``/``R_CD`` are interval penalties on the
predictions of the RV/CD reward models from kubedistill/train/reward_model.py and are off when that
reward model is not given) and takes a clipped policy-gradient step on the group-normalised advantages.
The weights go to TRL as ``reward_weights``, so TRL logs every term on its own
(``rewards/<name>/mean``) and sums them with ``nansum`` (an accuracy of ``None`` — "cannot tell" —
adds nothing).

Reasoning completions are long: ``max_completion_length`` defaults to 4096 (TRL's 512 cuts most CoTs;
a truncated completion has no answer, so its accuracy is 0 and its format 0). The share of completions
that hit the limit is logged (``completions/clipped_ratio``) and reported in the stats; raise the limit
when it is high, or set ``mask_truncated_completions`` to leave them out of the loss.

Rollouts: plain ``generate`` here (CPU); on GPUs set ``use_vllm=True`` and ``vllm_mode`` =
``colocate`` (vLLM shares the training GPUs; ``vllm_gpu_memory_utilization`` bounds its share) or
``server`` (a ``trl vllm-serve`` process on other GPUs at ``vllm_server_base_url``). See
docs/training.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from kubedistill.config import StrictModel
from kubedistill.errors import NoTrainingDataError
from kubedistill.records import Problem, StageStats
from kubedistill.train.sft import (
    LoraSettings,
    TrainingRuntime,
    _last_checkpoint,
    _loss_history,
    _MlflowLogCallback,
    _model_kwargs,
    _runtime_args,
    _torch_setup,
    save_trained,
)

STAGE = "grpo"


class IntervalSettings(StrictModel):
    """Target interval [low, high] of a distilled score (on the reward model's [0, 1] scale: a judge
    score s of 0-9 is s/9) and the weight λ of its penalty in the reward."""

    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)
    weight: float = Field(default=1.0, ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> IntervalSettings:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        return self


class GRPOSettings(TrainingRuntime):
    """GRPO hyper-parameters (defaults suit a GPU run; tests and CPU recipes override them)."""

    base_model: str = Field(default="tiny-qwen3", description="the student to improve (SFT or DPO output)")
    prompt: str = "generate"
    learning_rate: float = Field(default=1e-6, gt=0)
    lr_scheduler_type: str = "constant"
    warmup_ratio: float = 0.0
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs")
    per_device_batch_size: int = Field(default=8, ge=1, description="completions per device and step")
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    num_generations: int = Field(default=8, ge=2, description="completions per problem (the GRPO group)")
    max_completion_length: int = Field(default=4096, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    beta: float = Field(default=0.0, ge=0, description="KL coefficient (0: no reference model)")
    epsilon: float = Field(default=0.2, gt=0, description="clipping range of the policy ratio")
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    mask_truncated_completions: bool = False
    format_weight: float = Field(default=1.0, ge=0)
    accuracy_weight: float = Field(default=1.0, ge=0)
    rv: IntervalSettings = Field(
        default_factory=lambda: IntervalSettings(low=3 / 9, high=6 / 9),
        description="target reasoning verbosity (used when an RV reward model is given)",
    )
    cd: IntervalSettings = Field(
        default_factory=lambda: IntervalSettings(low=3 / 9, high=7 / 9),
        description="target cognitive difficulty (used when a CD reward model is given)",
    )
    verifier_workers: int = Field(default=2, ge=1, description="parallel sandboxes for code answers")
    verifier_timeout_s: float = Field(default=10.0, gt=0)
    reward_model_batch_size: int = Field(default=16, ge=1)
    use_vllm: bool = Field(default=False, description="GPU rollouts with vLLM (TRL's integration)")
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = Field(default=0.3, gt=0, le=1, description="colocate mode")
    vllm_server_base_url: str | None = Field(default=None, description="server mode: a `trl vllm-serve` URL")
    lora: LoraSettings | None = None

    @model_validator(mode="after")
    def _groups_fit(self) -> GRPOSettings:
        if (self.per_device_batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ValueError(
                f"per_device_batch_size x gradient_accumulation_steps "
                f"({self.per_device_batch_size} x {self.gradient_accumulation_steps}) must be a multiple of "
                f"num_generations ({self.num_generations})"
            )
        return self


RewardFunction = Callable[..., list[float | None]]


def build_reward_functions(
    cfg: GRPOSettings,
    problems: Mapping[str, Problem],
    scorers: Mapping[str, Any] | None = None,
) -> tuple[list[RewardFunction], list[float]]:
    """The reward functions and their weights: format, accuracy, and RV / CD when a scorer (an object
    with ``score_many(problems, cots)``, e.g. :class:`~kubedistill.train.reward_model.RewardScorer`) is
    given for them."""
    from kubedistill.train.rewards import AccuracyReward, FormatReward, IntervalReward

    funcs: list[RewardFunction] = [
        FormatReward(problems),
        AccuracyReward(problems, workers=cfg.verifier_workers, timeout_s=cfg.verifier_timeout_s),
    ]
    weights = [cfg.format_weight, cfg.accuracy_weight]
    for head in ("rv", "cd"):
        scorer = (scorers or {}).get(head)
        if scorer is None:
            continue
        interval: IntervalSettings = getattr(cfg, head)
        funcs.append(IntervalReward(head, scorer.score_many, interval.low, interval.high, problems))
        weights.append(interval.weight)
    return funcs, weights


def train_grpo(
    problems: Sequence[Problem],
    cfg: GRPOSettings,
    *,
    model_dir: str | Path,
    work_dir: str | Path | None = None,
    reward_models: Mapping[str, str | Path] | None = None,
    base_model: str | Path | None = None,
    extra_rewards: Sequence[tuple[RewardFunction, float]] = (),
) -> tuple[Path, StageStats]:
    """GRPO from ``base_model`` (default ``cfg.base_model``) on ``problems`` into ``model_dir``.

    ``reward_models`` maps ``"rv"`` / ``"cd"`` to directories written by ``train_reward_models``; a head
    that is absent has its term off. ``extra_rewards`` adds TRL-style reward functions with their
    weights (e.g. a length penalty). Trainer checkpoints in ``work_dir`` (``save_steps``) make a killed
    run resumable."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from kubedistill.cot.generate import problem_messages
    from kubedistill.models import resolve_model
    from kubedistill.train.reward_model import load_scorer
    from kubedistill.verifiers import method_for

    _torch_setup()
    final = Path(model_dir)
    work_root = Path(work_dir) if work_dir else final.with_name(final.name + ".work")
    stats = StageStats(stage=STAGE, n_in=len(problems))
    t0 = time.perf_counter()
    unknown = sorted(set(reward_models or {}) - {"rv", "cd"})
    if unknown:
        raise ValueError(f"grpo: unknown reward model heads {unknown} (use rv, cd)")
    by_id: dict[str, Problem] = {}
    for p in problems:
        if p.id in by_id:
            stats.reject("duplicate", f"problem id {p.id!r} given twice", record={"problem_id": p.id})
            continue
        by_id[p.id] = p
    if not by_id:
        raise NoTrainingDataError("grpo: no problems to train on")
    base = resolve_model(str(base_model) if base_model is not None else cfg.base_model)
    scorers = {
        head: load_scorer(path, batch_size=cfg.reward_model_batch_size) for head, path in (reward_models or {}).items()
    }
    funcs, weights = build_reward_functions(cfg, by_id, scorers)
    for fn, w in extra_rewards:
        funcs.append(fn)
        weights.append(w)
    rows = [
        {"prompt": problem_messages(p, cfg.prompt), "problem_id": p.id, "problem": p.problem} for p in by_id.values()
    ]
    ds = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    run_dir = work_root / _fingerprint(cfg, base, rows, reward_models)
    vllm: dict[str, Any] = {}
    if cfg.use_vllm:
        vllm = {"use_vllm": True, "vllm_mode": cfg.vllm_mode}
        if cfg.vllm_mode == "colocate":
            vllm["vllm_gpu_memory_utilization"] = cfg.vllm_gpu_memory_utilization
        elif cfg.vllm_server_base_url:
            vllm["vllm_server_base_url"] = cfg.vllm_server_base_url
    steps_per_epoch = max(
        1, len(rows) * cfg.num_generations // (cfg.per_device_batch_size * cfg.gradient_accumulation_steps)
    )
    args = GRPOConfig(
        output_dir=str(run_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        mask_truncated_completions=cfg.mask_truncated_completions,
        reward_weights=weights,
        logging_steps=max(1, min(cfg.logging_steps, steps_per_epoch)),
        disable_tqdm=False,
        **vllm,
        **_runtime_args(cfg),
    )
    model = AutoModelForCausalLM.from_pretrained(base, **_model_kwargs(cfg))
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
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_MlflowLogCallback(STAGE)],
    )
    resume = _last_checkpoint(run_dir)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    history = trainer.state.log_history
    stats.n_out = len(by_id)
    stats.metrics["train_loss"] = float(result.training_loss)
    stats.metrics["steps"] = float(trainer.state.global_step)
    names = ["reward", "completions/clipped_ratio", "completions/mean_length", "kl", "entropy"]
    names += [f"rewards/{getattr(fn, '__name__', type(fn).__name__)}/mean" for fn in funcs]
    series: dict[str, list[float]] = {}
    for name in names:
        values = _loss_history(history, name)
        if values:
            series[name] = values
            key = name.replace("/", ".")
            stats.metrics[f"{key}.first"] = values[0]
            stats.metrics[f"{key}.last"] = values[-1]
            stats.metrics[f"{key}.mean"] = sum(values) / len(values)
    methods: dict[str, int] = {}
    for p in by_id.values():
        m = method_for(p)
        methods[m] = methods.get(m, 0) + 1
    stats.info.update(
        base_model=str(base),
        reward_functions=[getattr(fn, "__name__", type(fn).__name__) for fn in funcs],
        reward_weights=weights,
        reward_models={k: str(v) for k, v in (reward_models or {}).items()},
        verifier_methods=methods,
        max_completion_length=cfg.max_completion_length,
        history=series,  # per logging step
        resumed_from=str(resume) if resume else None,
    )
    save_trained(trainer, final, lora_base=base if cfg.lora is not None else None, dtype=_model_kwargs(cfg)["dtype"])
    stats.elapsed_s = time.perf_counter() - t0
    return final, stats


def _fingerprint(
    cfg: GRPOSettings, base: Path, rows: Sequence[dict[str, Any]], reward_models: Mapping[str, Any] | None
) -> str:
    import hashlib

    h = hashlib.sha256(
        json.dumps(
            [cfg.model_dump(mode="json"), str(base), {k: str(v) for k, v in (reward_models or {}).items()}],
            sort_keys=True,
        ).encode()
    )
    for r in rows:
        h.update(json.dumps([r["prompt"], r["problem_id"]], sort_keys=True).encode())
    return h.hexdigest()[:16]
