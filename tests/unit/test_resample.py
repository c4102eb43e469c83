"""Task-aware re-sampling (proportions, determinism, shortfall reporting) and the hold-out split."""

from __future__ import annotations

from collections import Counter

import pytest

from kubedistill.core.records import Problem, StageStats
from kubedistill.data.collect import split_holdout
from kubedistill.data.resample import largest_remainder, quotas, resample


def _pool(math: int, code: int, science: int) -> list[Problem]:
    out = []
    for domain, n in (("math", math), ("code", code), ("science", science)):
        out += [Problem(id=f"{domain}-{i}", problem=f"{domain} problem {i}", domain=domain, source=f"src-{domain}")
                for i in range(n)]  # fmt: skip
    return out


MIX = {"math": 0.5, "code": 0.3, "science": 0.2}


def test_size_and_mix_give_exact_proportions_deterministically() -> None:
    pool = _pool(400, 300, 200)
    stats = StageStats(stage="t")
    out = resample(pool, MIX, 100, seed=7, stats=stats)
    assert Counter(p.domain for p in out) == {"math": 50, "code": 30, "science": 20}
    assert stats.dropped == {"resampled_out": 800}
    assert stats.rejects == []  # left-out rows are counted, not written as rejects
    assert [p.id for p in resample(pool, MIX, 100, seed=7, stats=StageStats(stage="t"))] == [p.id for p in out]
    other = resample(pool, MIX, 100, seed=8, stats=StageStats(stage="t"))
    assert {p.id for p in other} != {p.id for p in out}
    positions = [pool.index(p) for p in out]
    assert positions == sorted(positions)  # input order kept
    assert stats.info["resample"]["groups"]["code"] == {"available": 300, "weight": 0.3, "selected": 30, "shortfall": 0}


def test_adding_a_domain_does_not_change_another_domains_picks() -> None:
    a = resample(_pool(100, 50, 0), {"math": 0.5, "code": 0.5}, 40, seed=1, stats=StageStats(stage="t"))
    b = resample(
        _pool(100, 50, 60), {"math": 0.4, "code": 0.4, "science": 0.2}, 50, seed=1, stats=StageStats(stage="t")
    )
    assert [p.id for p in a if p.domain == "math"] == [p.id for p in b if p.domain == "math"]


def test_shortfall_takes_all_and_is_reported() -> None:
    pool = _pool(400, 10, 200)
    stats = StageStats(stage="t")
    out = resample(pool, MIX, 100, seed=0, stats=stats)
    assert Counter(p.domain for p in out) == {"math": 50, "code": 10, "science": 20}
    assert stats.info["resample"]["shortfall"] == {"code": 20}
    assert stats.info["resample"]["groups"]["code"]["shortfall"] == 20

    filled = StageStats(stage="t")
    out = resample(pool, MIX, 100, seed=0, stats=filled, fill_shortfall=True)
    counts = Counter(p.domain for p in out)
    assert sum(counts.values()) == 100 and counts["code"] == 10
    assert counts["math"] > 50 and counts["science"] > 20
    assert filled.info["resample"]["shortfall"] == {"code": 20}  # still reported


def test_without_size_the_largest_exact_mix_is_taken() -> None:
    stats = StageStats(stage="t")
    out = resample(_pool(400, 60, 200), MIX, None, seed=0, stats=stats)
    assert Counter(p.domain for p in out) == {"math": 100, "code": 60, "science": 40}
    assert stats.info["resample"]["shortfall"] == {}
    # a mix domain with no problems at all does not empty the output: its quota is reported missing
    stats = StageStats(stage="t")
    out = resample(_pool(100, 60, 0), MIX, None, seed=0, stats=stats)
    assert Counter(p.domain for p in out) == {"math": 100, "code": 60}
    assert stats.info["resample"]["shortfall"] == {"science": 40}


def test_domains_outside_the_mix_are_left_out_and_by_source_works() -> None:
    pool = _pool(10, 10, 10)
    stats = StageStats(stage="t")
    out = resample(pool, {"math": 1.0}, None, seed=0, stats=stats)
    assert {p.domain for p in out} == {"math"} and stats.dropped["resampled_out"] == 20
    by_src = resample(pool, {"src-code": 1, "src-science": 1}, 8, seed=0, stats=StageStats(stage="t"), by="source")
    assert Counter(p.source for p in by_src) == {"src-code": 4, "src-science": 4}


def test_no_mix_means_no_change_or_a_uniform_sample() -> None:
    pool = _pool(5, 5, 5)
    stats = StageStats(stage="t")
    assert resample(pool, None, None, seed=0, stats=stats) == pool and stats.dropped == {}
    stats = StageStats(stage="t")
    assert len(resample(pool, None, 6, seed=0, stats=stats)) == 6 and stats.dropped == {"resampled_out": 9}
    stats = StageStats(stage="t")
    assert len(resample(pool, None, 20, seed=0, stats=stats)) == 15
    assert stats.info["resample"]["shortfall"] == {"*": 5}


def test_quota_helpers() -> None:
    assert largest_remainder(10, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) == {"a": 4, "b": 3, "c": 3}
    take, short = quotas({"a": 3}, {"a": 1, "b": 1}, 10)
    assert take == {"a": 3, "b": 0} and short == {"a": 2, "b": 5}
    with pytest.raises(ValueError):
        quotas({"a": 3}, {"a": 0}, 10)


def test_split_holdout_is_deterministic_stratified_and_complete() -> None:
    pool = _pool(60, 30, 10)
    train, held = split_holdout(pool, 0.1, None, seed=3)
    assert len(held) == 10 and Counter(p.domain for p in held) == {"math": 6, "code": 3, "science": 1}
    assert sorted(p.id for p in train + held) == sorted(p.id for p in pool)
    assert split_holdout(pool, 0.1, None, seed=3) == (train, held)
    assert split_holdout(pool, 0.1, None, seed=4)[1] != held
    assert len(split_holdout(pool, 0.5, 7, seed=3)[1]) == 7
    assert split_holdout(pool, 0.0, None, seed=3) == (pool, [])
    with pytest.raises(ValueError):
        split_holdout(pool, 1.0, None, seed=3)
