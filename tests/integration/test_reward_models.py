"""RV / CD regressors: real training steps on the tiny model, held-out metrics, reload as scorers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubedistill.core.records import Problem, Sample
from kubedistill.train.reward_model import (
    META_FILE,
    RewardModelConfig,
    held_out,
    load_scorer,
    spearman,
    train_reward_models,
)

pytestmark = pytest.mark.integration


def test_spearman_and_split_helpers() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254)  # ties get average ranks
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    share = sum(held_out(f"p{i}", 0.2) for i in range(2000)) / 2000
    assert 0.17 < share < 0.23 and held_out("p1", 0.2) == held_out("p1", 0.2)


def _data(n: int = 48) -> tuple[list[Problem], list[Sample]]:
    """A learnable task: verbose CoTs (the word 'slowly' repeated) score RV 8, terse ones RV 1;
    CD follows 'hard' the same way. Every 4th CoT has no CD score."""
    problems = [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=str(i + 1), source="t") for i in range(n)]
    samples = []
    for i in range(n):
        verbose, hard = i % 2 == 0, i % 3 == 0
        body = ("slowly " * 12 if verbose else "") + ("hard " * 6 if hard else "") + f"{i} + 1 = {i + 1}"
        samples.append(
            Sample(
                problem_id=f"p{i}",
                teacher="t",
                temperature=0.6,
                sample_index=0,
                text=f"<think>\n{body}\n</think>\n\n\\boxed{{{i + 1}}}",
                rv=8 if verbose else 1,
                cd=None if i % 4 == 3 else (7 if hard else 2),
            )
        )
    samples.append(samples[0].model_copy(update={"id": "unscored", "rv": None, "cd": None}))
    samples.append(samples[0].model_copy(update={"id": "orphan", "problem_id": "nope"}))
    return problems, samples


def test_reward_models_learn_report_held_out_metrics_and_reload(tiny_model: Path, tmp_path: Path) -> None:
    problems, samples = _data()
    cfg = RewardModelConfig(
        base_model=str(tiny_model),
        learning_rate=3e-3,
        epochs=8,
        per_device_batch_size=8,
        max_length=128,
        eval_fraction=0.25,
        logging_steps=1,
    )
    dirs, stats = train_reward_models(samples, cfg, problems=problems, models=tmp_path / "rm")
    assert set(dirs) == {"rv", "cd"}
    assert stats.dropped == {"no_score": 1, "unknown_problem": 1}
    assert stats.n_in == stats.n_out + 2
    assert stats.info["cd"]["skipped_no_score"] == 12  # every 4th CoT has no CD score
    assert stats.info["rv"]["train"] + stats.info["rv"]["eval"] == 48
    assert stats.info["rv"]["eval"] > 0
    m = stats.metrics
    for head in ("rv", "cd"):
        assert m[f"{head}.last_loss"] < m[f"{head}.first_loss"]  # it learns
        assert 0.0 <= m[f"{head}.mae"] <= 1.0
        assert m[f"{head}.mae_points"] == pytest.approx(9 * m[f"{head}.mae"])
    # the verbose/terse signal is learnable: RV beats the constant baseline and ranks the held-out CoTs
    assert m["rv.mae"] < m["rv.mae_baseline"]
    assert m["rv.spearman"] > 0.5

    meta = json.loads((dirs["rv"] / META_FILE).read_text())
    assert meta["head"] == "rv" and meta["output_range"] == [0.0, 1.0] and "{cot}" in meta["template"]
    scorer = load_scorer(dirs["rv"])
    verbose = "<think>\n" + "slowly " * 12 + "2 + 1 = 3\n</think>\n\n\\boxed{3}"
    terse = "<think>\n2 + 1 = 3\n</think>\n\n\\boxed{3}"
    one = scorer("What is 2 + 1?", verbose)
    many = scorer.score_many(["What is 2 + 1?"] * 3, [verbose, terse, verbose])
    assert 0.0 <= one <= 1.0 and all(0.0 <= x <= 1.0 for x in many)
    assert many[0] == pytest.approx(one, abs=1e-5) and many[2] == pytest.approx(one, abs=1e-5)  # batching
    assert many[0] > many[1]  # verbose scores higher

    # same settings, same data: the saved heads are reused, not retrained
    _, again = train_reward_models(samples, cfg, problems=problems, models=tmp_path / "rm")
    assert again.info["rv"]["resumed"] is True and again.metrics["rv.mae"] == m["rv.mae"]


def test_reward_models_refuse_data_without_scores(tiny_model: Path, tmp_path: Path) -> None:
    problems, samples = _data(4)
    unscored = [s.model_copy(update={"rv": None, "cd": None}) for s in samples]
    with pytest.raises(ValueError, match="no CoT has a rv or cd score"):
        train_reward_models(unscored, RewardModelConfig(base_model=str(tiny_model)), problems=problems, models=tmp_path)
