from __future__ import annotations

import random

from kubedistill.core.records import Problem, Sample
from kubedistill.cot.pairs import PairsConfig, corrupt_conclusion, corrupt_drop_step, corrupt_number, make_pairs

COT = (
    "<think>\nWe need 12 + 30 + 5.\nFirst, 12 + 30 = 42.\nThen 42 + 5 = 47.\nSo the total is 47.\n</think>\n\n"
    "The answer is \\boxed{47}."
)


def _sample(i: int = 0, difficulty: str | None = "medium", correct: bool | None = True) -> Sample:
    return Sample(
        problem_id="p",
        teacher="t",
        temperature=0.6,
        sample_index=i,
        text=COT,
        difficulty=difficulty,
        correct=correct,
    )


PROBLEM = Problem(id="p", problem="What is 12 + 30 + 5?", answer="47", source="t")


def test_number_corruption_changes_one_late_number_by_the_magnitude() -> None:
    reasoning = "We need 12 + 30 + 5.\nFirst, 12 + 30 = 42.\nThen 42 + 5 = 47.\nSo the total is 47."
    new, answer, mag, detail = corrupt_number(reasoning, "\\boxed{47}", 0.5, random.Random(0))
    old_lines, new_lines = reasoning.splitlines(), new.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
    assert len(changed) == 1 and changed[0] >= 2  # a late step
    assert answer == "\\boxed{47}" and 0 < mag <= 1 and "->" in detail


def test_drop_step_never_drops_the_last_step() -> None:
    reasoning = "\n".join(f"step {i}" for i in range(10))
    new, _, mag, _ = corrupt_drop_step(reasoning, "a", 0.5, random.Random(1))
    assert new.splitlines()[-1] == "step 9" and len(new.splitlines()) < 10 and 0 < mag < 1
    assert corrupt_drop_step("one. two.", "a", 0.5, random.Random(1)) is None


def test_conclusion_corruption() -> None:
    _, answer, mag, _ = corrupt_conclusion("r", "The answer is \\boxed{47}.", 1.0, random.Random(0))
    assert answer in ("The answer is \\boxed{94}.", "The answer is \\boxed{0}.") and mag == 1.0
    assert corrupt_conclusion("r", "The answer is \\boxed{x+1}.", 1.0, random.Random(0)) is None


def test_make_pairs_records_kind_magnitude_and_checks_wrong_answers() -> None:
    samples = [_sample(0), _sample(1, difficulty="hard"), _sample(2, correct=False), _sample(3, difficulty=None)]
    cfg = PairsConfig(pairs_per_sample=3, per_pair_beta=True, seed=0)
    pairs, stats = make_pairs(samples, cfg, problems=[PROBLEM])
    assert stats.dropped == {"not_in_difficulties": 1, "not_correct": 1}
    # sample 3 is unlabelled: counted as medium
    assert {p.chosen_sample_id for p in pairs} == {"p::t::t0.6::0", "p::t::t0.6::3"}
    assert len(pairs) == 6 and len({p.id for p in pairs}) == 6
    for p in pairs:
        assert p.chosen.startswith("<think>") and p.rejected != p.chosen
        assert p.corruption in ("number", "drop_step", "wrong_conclusion") and 0 <= p.magnitude <= 1
        assert p.beta is not None and 0.05 <= p.beta <= 0.5
        if p.corruption == "wrong_conclusion":
            assert "\\boxed{47}" not in p.rejected
    # subtler corruption, larger beta
    by_mag = sorted(pairs, key=lambda p: p.magnitude)
    assert by_mag[0].beta >= by_mag[-1].beta
    again, _ = make_pairs(samples, cfg, problems=[PROBLEM])
    assert [p.model_dump() for p in again] == [p.model_dump() for p in pairs]  # deterministic


def test_a_cots_pairs_do_not_depend_on_the_shard_or_order_it_is_in() -> None:
    """The slow-thinking pipeline makes pairs in each shard of its ParallelFor: the union over the shards
    must be what one run over every CoT makes (each CoT draws from its own seeded generator)."""
    from kubedistill.core.sharding import shard_key, shard_of

    problems = [
        Problem(id=f"q{k}", problem=f"What is 12 + 30 + {k}?", answer=str(42 + k), source="t") for k in range(12)
    ]
    samples = [
        Sample(
            problem_id=f"q{k}",
            teacher="t",
            temperature=0.6,
            sample_index=k % 3,
            text=COT.replace("+ 5", f"+ {k}").replace("47", str(42 + k)),
            difficulty="medium",
            correct=True,
        )
        for k in range(12)
    ]
    cfg = PairsConfig(pairs_per_sample=2, seed=7)
    whole, _ = make_pairs(samples, cfg, problems=problems)
    parts = []
    for i in range(3):
        mine = [s for s in reversed(samples) if shard_of(shard_key(s), 3) == i]
        got, _ = make_pairs(mine, cfg, problems=problems)
        parts += got
    assert len(whole) > 12
    assert sorted(p.model_dump_json() for p in parts) == sorted(p.model_dump_json() for p in whole)
    other, _ = make_pairs(samples, cfg.model_copy(update={"seed": 8}), problems=problems)
    assert sorted(p.model_dump_json() for p in other) != sorted(p.model_dump_json() for p in whole)
