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

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from kubedistill.core.config import ConfigError, StrictModel, reference
from kubedistill.core.errors import NoTrainingDataError
from kubedistill.core.records import Problem, StageStats
from kubedistill.train.common import (
    LoraConfig,
    MLflowStageCallback,
    TrainingConfig,
    fingerprint,
    history,
    last_checkpoint,
    load_tokenizer,
    model_kwargs,
    peft_config,
    save_trained,
    torch_setup,
    training_arguments,
    work_root,
)

STAGE = "grpo"


class IntervalConfig(StrictModel):
    """Target interval [low, high] of a distilled score (on the reward model's [0, 1] scale: a judge
    score s of 0-9 is s/9) and the weight λ of its penalty in the reward."""

    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)
    weight: float = Field(default=1.0, ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> IntervalConfig:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        return self


class GRPOConfig(TrainingConfig):
    """GRPO hyper-parameters (defaults suit a GPU run; tests and CPU recipes override them)."""

    base_model: str = reference("model", "tiny-qwen3", description="the student to improve (SFT or DPO output)")
    prompt: str = reference("prompt", "generate")
    learning_rate: float = Field(default=1e-6, gt=0)
    lr_scheduler_type: str = "constant"
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs")
    per_device_batch_size: int = Field(default=8, ge=1, description="completions per device and step")
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
    rv: IntervalConfig = Field(
        default_factory=lambda: IntervalConfig(low=3 / 9, high=6 / 9),
        description="target reasoning verbosity (used when an RV reward model is given)",
    )
    cd: IntervalConfig = Field(
        default_factory=lambda: IntervalConfig(low=3 / 9, high=7 / 9),
        description="target cognitive difficulty (used when a CD reward model is given)",
    )
    verifier_workers: int = Field(default=2, ge=1, description="parallel sandboxes for code answers")
    verifier_timeout_s: float = Field(default=10.0, gt=0)
    reward_model_batch_size: int = Field(default=16, ge=1)
    use_vllm: bool = Field(default=False, description="GPU rollouts with vLLM (TRL's integration)")
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = Field(default=0.3, gt=0, le=1, description="colocate mode")
    vllm_server_base_url: str | None = Field(default=None, description="server mode: a `trl vllm-serve` URL")
    lora: LoraConfig | None = None

    @model_validator(mode="after")
    def _groups_fit(self) -> GRPOConfig:
        if (self.per_device_batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ValueError(
                f"per_device_batch_size x gradient_accumulation_steps "
                f"({self.per_device_batch_size} x {self.gradient_accumulation_steps}) must be a multiple of "
                f"num_generations ({self.num_generations})"
            )
        return self


RewardFunction = Callable[..., list[float | None]]


def build_reward_functions(
    cfg: GRPOConfig,
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
        interval: IntervalConfig = getattr(cfg, head)
        funcs.append(IntervalReward(head, scorer.score_many, interval.low, interval.high, problems))
        weights.append(interval.weight)
    return funcs, weights


def reward_model_heads(reward_models: str | Path | Mapping[str, str | Path] | None) -> dict[str, str]:
    """``{"rv": dir, "cd": dir}`` from a directory written by ``train_reward_models`` (its ``rv/`` and
    ``cd/``) or from a mapping as it is; ``{}`` for None. Raises ``ConfigError`` for a directory that holds
    neither, ``ValueError`` for an unknown head."""
    if reward_models is None or reward_models == "":
        return {}
    if isinstance(reward_models, Mapping):
        heads = {str(k): str(v) for k, v in reward_models.items()}
    else:
        root = Path(reward_models)
        heads = {h: str(root / h) for h in ("rv", "cd") if (root / h).is_dir()}
        if not heads:
            raise ConfigError(f"grpo: {root} holds no rv/ or cd/ reward model")
    unknown = sorted(set(heads) - {"rv", "cd"})
    if unknown:
        raise ValueError(f"grpo: unknown reward model heads {unknown} (use rv, cd)")
    return heads


def train_grpo(
    problems: Sequence[Problem],
    cfg: GRPOConfig,
    *,
    model: str | Path,
    reward_models: str | Path | Mapping[str, str | Path] | None = None,
    base_model: str | Path | None = None,
    work_dir: str | Path | None = None,
    extra_rewards: Sequence[tuple[RewardFunction, float]] = (),
) -> tuple[Path, StageStats]:
    """Stage `grpo`: GRPO of ``base_model`` (default ``cfg.base_model``) on ``problems`` into the model
    directory ``model``.

    ``reward_models`` is a directory from ``train_reward_models`` (its ``rv/`` and ``cd/``) or a mapping
    ``{"rv": dir, "cd": dir}``; a head that is absent has its term off. ``extra_rewards`` adds TRL-style
    reward functions with their weights (e.g. a length penalty). Metrics: ``train_loss``, ``steps`` and
    first / last / mean of the reward terms, the clipped ratio, KL and entropy. Trainer checkpoints in
    ``<work_dir>/grpo`` (default ``<model>.work``; ``save_steps``) make a killed run resumable. Raises
    :class:`~kubedistill.core.errors.NoTrainingDataError` without problems."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from kubedistill.models import resolve_model
    from kubedistill.prompts import problem_messages
    from kubedistill.train.reward_model import load_scorer
    from kubedistill.verifiers import method_for

    torch_setup()
    final = Path(model)
    root = work_root(final, work_dir, STAGE)
    stats = StageStats(stage=STAGE, n_in=len(problems))
    t0 = time.perf_counter()
    reward_models = reward_model_heads(reward_models)
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
    tokenizer = load_tokenizer(base)
    run_dir = root / fingerprint(
        [cfg.model_dump(mode="json"), str(base), reward_models], ([r["prompt"], r["problem_id"]] for r in rows)
    )
    vllm: dict[str, Any] = {}
    if cfg.use_vllm:
        vllm = {"use_vllm": True, "vllm_mode": cfg.vllm_mode}
        if cfg.vllm_mode == "colocate":
            vllm["vllm_gpu_memory_utilization"] = cfg.vllm_gpu_memory_utilization
        elif cfg.vllm_server_base_url:
            vllm["vllm_server_base_url"] = cfg.vllm_server_base_url
    args = trl.GRPOConfig(
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
        **vllm,
        **training_arguments(
            cfg,
            output_dir=run_dir,
            rows=len(rows),
            rows_per_example=cfg.num_generations,
            epochs=cfg.epochs,
            max_steps=cfg.max_steps,
        ),
    )
    trainer = trl.GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(base, **model_kwargs(cfg)),
        reward_funcs=funcs,
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora),
        callbacks=[MLflowStageCallback(STAGE)],
    )
    resume = last_checkpoint(run_dir)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    log_history = trainer.state.log_history
    stats.n_out = len(by_id)
    stats.metrics["train_loss"] = float(result.training_loss)
    stats.metrics["steps"] = float(trainer.state.global_step)
    tokens = history(log_history, "num_tokens")
    if tokens:
        stats.metrics["num_tokens"] = tokens[-1]  # prompt + completion tokens trained on (TRL's count)
    names = ["reward", "completions/clipped_ratio", "completions/mean_length", "kl", "entropy"]
    names += [f"rewards/{getattr(fn, '__name__', type(fn).__name__)}/mean" for fn in funcs]
    series: dict[str, list[float]] = {}
    for name in names:
        values = history(log_history, name)
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
    save_trained(trainer, final, lora_base=base if cfg.lora is not None else None, dtype=model_kwargs(cfg)["dtype"])
    stats.elapsed_s = time.perf_counter() - t0
    return final, stats
