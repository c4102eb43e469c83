"""GRPO with our rewards on the tiny model: real rollouts and optimiser steps, a learnable toy reward rises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubedistill.core.records import Problem, Sample
from kubedistill.train.grpo import GRPOConfig, IntervalConfig, build_reward_functions, train_grpo
from kubedistill.train.reward_model import RewardModelConfig, train_reward_models

pytestmark = pytest.mark.integration


def _problems(n: int = 8) -> list[Problem]:
    return [Problem(id=f"p{i}", problem=f"What is {i} + {i}?", answer=str(2 * i), source="t") for i in range(n)]


class DigitShare:
    """Toy learnable reward: the share of digits among the completion's characters. It also records
    how TRL called it (the columns of a whole per-process batch)."""

    __name__ = "digit_share"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        self.calls.append({"prompts": prompts, "completions": completions, **columns})
        texts = [c[0]["content"] for c in completions]
        return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]


def _reward_model(tiny_model: Path, tmp_path: Path, problems: list[Problem]) -> Path:
    samples = [
        Sample(
            problem_id=p.id,
            teacher="t",
            temperature=0.6,
            sample_index=0,
            text=f"<think>{'step ' * i}</think>\\boxed{{{p.answer}}}",
            rv=i % 10,
        )
        for i, p in enumerate(problems)
    ]
    cfg = RewardModelConfig(base_model=str(tiny_model), heads=["rv"], max_steps=2, max_length=64)
    dirs, _ = train_reward_models(samples, cfg, problems=problems, models=tmp_path / "rm")
    return dirs["rv"]


def test_reward_functions_and_weights_follow_the_config() -> None:
    problems = {p.id: p for p in _problems(2)}

    class Scorer:
        def score_many(self, problems: list[str], cots: list[str]) -> list[float]:
            return [0.5] * len(cots)

    cfg = GRPOConfig(format_weight=0.5, rv=IntervalConfig(low=0.1, high=0.2, weight=3.0))
    funcs, weights = build_reward_functions(cfg, problems)
    assert [f.__name__ for f in funcs] == ["format", "accuracy"] and weights == [0.5, 1.0]  # no RM: terms off
    funcs, weights = build_reward_functions(cfg, problems, {"rv": Scorer()})
    assert [f.__name__ for f in funcs] == ["format", "accuracy", "rv"] and weights == [0.5, 1.0, 3.0]
    out = funcs[2](prompts=[[]], completions=[[{"role": "assistant", "content": "x"}]], problem_id=["p0"])
    assert out == [pytest.approx(-0.3)]  # f = 0.5, H = 0.2
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPOConfig(per_device_batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match="low"):
        IntervalConfig(low=0.6, high=0.5)


def test_grpo_trains_with_our_rewards_and_a_learnable_reward_rises(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    problems = _problems()
    rm_dir = _reward_model(tiny_model, tmp_path, problems)
    toy = DigitShare()
    cfg = GRPOConfig(
        base_model=str(tiny_model),
        learning_rate=2e-2,
        per_device_batch_size=16,
        num_generations=4,
        max_completion_length=12,
        max_steps=14,
        logging_steps=1,
        seed=0,
    )
    model_dir, stats = train_grpo(
        problems,
        cfg,
        model=tmp_path / "grpo",
        reward_models={"rv": rm_dir},
        extra_rewards=[(toy, 1.0)],
    )
    m = stats.metrics
    assert m["steps"] == 14
    assert stats.info["reward_functions"] == ["format", "accuracy", "rv", "digit_share"]
    # TRL called the reward functions with the whole batch: several prompts, their columns aligned
    call = toy.calls[0]
    assert len(call["completions"]) == 16 and len(set(call["problem_id"])) == 4
    for prompt, pid, text in zip(call["prompts"], call["problem_id"], call["problem"], strict=True):
        assert prompt[-1]["role"] == "user" and text in prompt[-1]["content"]
        assert text == next(p.problem for p in problems if p.id == pid)
    assert {"trainer_state", "log_metric", "completion_ids"} <= set(call)
    # every term was computed and logged; the truncation share is reported
    for name in ("format", "accuracy", "rv", "digit_share"):
        assert f"rewards.{name}.mean.last" in m
    assert m["rewards.rv.mean.mean"] <= 0.0  # an interval penalty is never positive
    assert 0.0 <= m["completions.clipped_ratio.mean"] <= 1.0
    assert m["completions.mean_length.mean"] <= 12
    # the learnable reward rises over the steps
    share = stats.info["history"]["rewards/digit_share/mean"]
    assert len(share) == 14
    assert sum(share[-4:]) / 4 > sum(share[:4]) / 4 + 0.05, share
    # real optimiser steps: the saved model reloads and differs from the base
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    trained = AutoModelForCausalLM.from_pretrained(model_dir)
    diff = sum((a - b).abs().sum().item() for a, b in zip(base.parameters(), trained.parameters(), strict=True))
    assert diff > 0
    out = trained.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=2, do_sample=False)
    assert out.shape[1] >= 4
