"""Task-aware re-sampling across the merged corpus (imported and generated CoTs) in `select`, by domain,
by source and by both, and the funnel per source: stage metrics `source.<src>.n_in/n_out`, summed over
shards, and the report's "Funnel by source" table."""

from __future__ import annotations

import pytest

from kubedistill.core.config import ConfigError
from kubedistill.core.records import Problem, Sample, cot_source
from kubedistill.core.sharding import merge_metrics
from kubedistill.cot.select import SelectConfig, select
from kubedistill.report import RunSummary, by_source_from_metrics, funnel_from_metrics, markdown
from kubedistill.runner import stage_metrics


def _corpus() -> tuple[list[Problem], list[Sample]]:
    problems = [Problem(id=f"m{i}", problem=f"math {i}", source="s", domain="math") for i in range(12)] + [
        Problem(id=f"c{i}", problem=f"code {i}", source="s", domain="code") for i in range(6)
    ]
    samples = []
    for p in problems:
        # an imported R1 CoT and a newly generated QwQ one of every problem
        samples.append(
            Sample(problem_id=p.id, teacher="deepseek-r1", temperature=0.6, sample_index=0, text="x", correct=True,
                   rv=2, cd=2, metadata={"imported_from": "openr1-math"})
        )  # fmt: skip
        samples.append(
            Sample(problem_id=p.id, teacher="qwq-endpoint", temperature=0.6, sample_index=0, text="y", correct=True,
                   rv=3, cd=3)
        )  # fmt: skip
    return problems, samples


def test_cot_source_is_the_dataset_else_the_teacher() -> None:
    _, samples = _corpus()
    assert [cot_source(s) for s in samples[:2]] == ["openr1-math", "qwq-endpoint"]


def test_mix_by_domain_sets_the_share_of_each_domain() -> None:
    problems, samples = _corpus()
    cfg = SelectConfig(per_problem=2, target_size=12, mix={"math": 0.5, "code": 0.5})
    out, stats = select(samples, cfg, problems=problems)
    domain = {p.id: p.domain for p in problems}
    assert len(out) == 12 and sum(domain[s.problem_id] == "code" for s in out) == 6
    assert stats.info["mix"]["groups"]["code"] == {"available": 12, "weight": 0.5, "selected": 6, "shortfall": 0}
    assert stats.dropped == {"over_mix_quota": 24}
    assert stats.n_in == stats.n_out + sum(stats.dropped.values())
    assert len({s.problem_id for s in out}) == 12  # the problem-covering order: one CoT per problem first
    with pytest.raises(ConfigError, match="needs the problems"):
        select(samples, cfg)


def test_mix_by_source_and_by_domain_and_source() -> None:
    problems, samples = _corpus()
    out, stats = select(
        samples, SelectConfig(per_problem=2, mix_by="source", mix={"openr1-math": 3, "qwq-endpoint": 1})
    )
    by = {src: sum(cot_source(s) == src for s in out) for src in ("openr1-math", "qwq-endpoint")}
    assert by == {"openr1-math": 18, "qwq-endpoint": 6}  # no target: the largest set with exactly 3:1
    assert stats.metrics["source.openr1-math.n_in"] == 18 and stats.metrics["source.qwq-endpoint.n_out"] == 6

    cfg = SelectConfig(
        per_problem=2, target_size=4, mix_by="domain_source", mix={"code/openr1-math": 1, "math/qwq-endpoint": 1}
    )
    out, stats = select(samples, cfg, problems=problems)
    assert sorted(f"{s.problem_id[0]}/{cot_source(s)}" for s in out) == ["c/openr1-math"] * 2 + ["m/qwq-endpoint"] * 2
    assert stats.dropped["not_in_mix"] == 18  # math/openr1-math and code/qwq-endpoint CoTs
    assert set(stats.info["mix"]["groups"]) == {
        "code/openr1-math",
        "code/qwq-endpoint",
        "math/openr1-math",
        "math/qwq-endpoint",
    }


def test_funnel_by_source_is_summed_over_shards_and_reported() -> None:
    _, samples = _corpus()
    half = len(samples) // 2
    parts = [
        select(samples[:half], SelectConfig(per_problem=2))[1],
        select(samples[half:], SelectConfig(per_problem=2))[1],
    ]
    merged = merge_metrics([stage_metrics(s) for s in parts])
    assert merged["source.openr1-math.n_in"] == 18 and merged["source.qwq-endpoint.n_out"] == 18
    collect = {"n_in": 20, "n_out": 18, "source.openr1-math.n_in": 20, "source.openr1-math.n_out": 18,
               "source.openr1-math.cots_in": 40, "source.openr1-math.cots_out": 36}  # fmt: skip
    metrics = {"collect": collect, "select": merged}
    by = by_source_from_metrics(metrics)
    assert by["collect"]["openr1-math"] == {"n_in": 20, "n_out": 18, "cots_in": 40, "cots_out": 36}
    assert by["select"]["qwq-endpoint"] == {"n_in": 18, "n_out": 18}
    md = markdown(RunSummary(pipeline="p", funnel=funnel_from_metrics(metrics), by_source=by))
    assert "## Funnel by source" in md
    assert "| collect | openr1-math | 20 | 18 | 40 | 36 |" in md
    assert "| select | qwq-endpoint | 18 | 18 | — | — |" in md


def test_a_cot_whose_problem_is_missing_is_said_so_not_filed_as_outside_the_mix() -> None:
    """`select --problems` with a problems file that lacks some CoTs' problems (another run's, a typo):
    those CoTs are `no_problem` rejects naming the id, not `not_in_mix` for a domain called "unknown"."""
    problems, samples = _corpus()
    cfg = SelectConfig(per_problem=2, target_size=12, mix={"math": 0.5, "code": 0.5})
    out, stats = select(samples, cfg, problems=[p for p in problems if p.id != "c0"])
    assert stats.dropped["no_problem"] == 2 and "not_in_mix" not in stats.dropped
    (r, _) = [r for r in stats.rejects if r.reason == "no_problem"]
    assert "problem 'c0' is not in the problems file" in r.detail
    assert all(s.problem_id != "c0" for s in out) and stats.n_in == stats.n_out + sum(stats.dropped.values())
    # a domain that really is outside the mix stays not_in_mix
    _, only_math = select(samples, SelectConfig(per_problem=2, mix={"math": 1.0}), problems=problems)
    assert only_math.dropped == {"not_in_mix": 12}
