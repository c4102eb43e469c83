from __future__ import annotations

import pytest

from kubedistill.core.records import Sample
from kubedistill.cot.select import SelectConfig, Window, select


def _s(pid: str, i: int, rv: int | None, cd: int | None, correct: bool | None = True) -> Sample:
    return Sample(
        problem_id=pid,
        teacher="t",
        temperature=0.6,
        sample_index=i,
        text="x",
        rv=rv,
        cd=cd,
        correct=correct,
    )


def test_windows_inclusive_at_both_ends_and_reasons_recorded() -> None:
    samples = [
        _s("a", 0, 2, 2),
        _s("a", 1, 4, 5),
        _s("a", 2, 5, 2),
        _s("a", 3, 2, 6),
        _s("b", 0, None, 3),
        _s("b", 1, 1, 1, correct=False),
    ]
    cfg = SelectConfig(rv=Window(low=2, high=4), cd=Window(low=2, high=5), profile=None, per_problem=5)
    out, stats = select(samples, cfg)
    assert {s.id for s in out} == {"a::t::t0.6::0", "a::t::t0.6::1"}  # 2..4 and 2..5 inclusive
    assert stats.dropped == {"rv_out_of_window": 1, "cd_out_of_window": 1, "unscored": 1, "not_correct": 1}
    assert stats.n_in == stats.n_out + stats.n_dropped


def test_per_problem_keeps_the_best_fitting() -> None:
    # small profile: rv 0-4 (centre 2), cd 0-5 (centre 2.5)
    samples = [_s("a", 0, 4, 5), _s("a", 1, 2, 2), _s("a", 2, 2, 3), _s("a", 3, 0, 0)]
    out, stats = select(samples, SelectConfig(per_problem=2))
    assert [s.id for s in out] == ["a::t::t0.6::1", "a::t::t0.6::2"]
    assert stats.dropped == {"over_per_problem": 2}


def test_target_size_spreads_over_problems_deterministically() -> None:
    samples = [_s(p, i, 2, 2) for p in "abcdef" for i in range(3)]
    out1, stats = select(samples, SelectConfig(per_problem=3, target_size=8, seed=3))
    out2, _ = select(samples, SelectConfig(per_problem=3, target_size=8, seed=3))
    assert [s.id for s in out1] == [s.id for s in out2]
    assert len(out1) == 8 and len({s.problem_id for s in out1}) == 6  # every problem once before any twice
    assert stats.dropped["over_target"] == 10
    out3, _ = select(samples, SelectConfig(per_problem=3, target_size=8, seed=4))
    assert [s.id for s in out3] != [s.id for s in out1]


def test_profiles_and_validation() -> None:
    assert SelectConfig(profile="large").windows()[0].high == 9
    with pytest.raises(ValueError, match="unknown profile"):
        SelectConfig(profile="huge")
    with pytest.raises(ValueError, match="above high"):
        Window(low=5, high=3)
    with pytest.raises(ValueError, match="give both"):
        SelectConfig(profile=None, rv=Window(low=0, high=3))
