from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubedistill.core.records import (
    Problem,
    RecordsError,
    Sample,
    StageStats,
    read_records,
    write_records,
)


def _problem(**kw):
    base = {"id": "p1", "problem": "What is 1+1?", "answer": "2", "domain": "math", "source": "test"}
    base.update(kw)
    return base


def test_problem_accepts_code_tests_of_both_kinds() -> None:
    f = Problem.model_validate(
        _problem(
            domain="code",
            answer=None,
            tests={
                "kind": "functional",
                "code": "def check(candidate):\n    assert candidate(1) == 2",
                "entry_point": "inc",
            },
        )
    )
    s = Problem.model_validate(
        _problem(domain="code", answer=None, tests={"kind": "stdio", "cases": [{"input": "1\n", "output": "2\n"}]})
    )
    assert f.tests is not None and f.tests.kind == "functional"
    assert s.tests is not None and s.tests.kind == "stdio"


def test_numeric_answer_kept_as_text_and_unknown_keys_kept_in_metadata() -> None:
    p = Problem.model_validate(_problem(answer=42, level=3))
    assert p.answer == "42"
    assert p.metadata == {"level": 3}


def test_jsonl_roundtrip_and_invalid_rows_become_rejects(tmp_path: Path) -> None:
    path = tmp_path / "problems.jsonl"
    lines = [
        json.dumps(_problem(id="ok1")),
        "{not json",
        json.dumps(_problem(id="empty", problem="   ")),
        json.dumps({"id": "nosrc", "problem": "x"}),  # missing source
        json.dumps(_problem(id="badtype", domain="poetry")),
        json.dumps([1, 2]),
        "",
        json.dumps(_problem(id="ok2", choices=["a", "b"], answer="B")),
    ]
    path.write_text("\n".join(lines) + "\n")
    stats = StageStats(stage="collect")
    got = read_records(path, Problem, stage="collect", stats=stats)
    assert [p.id for p in got] == ["ok1", "ok2"]
    assert stats.dropped == {"invalid_json": 1, "invalid_record": 4}
    reasons = {r.where: r.detail for r in stats.rejects}
    assert "invalid JSON" in reasons["problems.jsonl:2"]
    assert "problem text is empty" in reasons["problems.jsonl:3"]
    assert "field 'source'" in reasons["problems.jsonl:4"]
    assert "field 'domain'" in reasons["problems.jsonl:5"]
    # the raw bad record is kept for the user to fix
    assert stats.rejects[1].record["id"] == "empty"


def test_read_without_stats_raises_listing_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(_problem()) + "\n{oops\n")
    with pytest.raises(RecordsError, match=r"1 invalid row\(s\): p.jsonl:2"):
        read_records(path, Problem)


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match="no such file"):
        read_records(tmp_path / "nope.jsonl", Problem)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(RecordsError, match="unknown records format"):
        read_records(tmp_path / "x.csv", Problem)


def _sample(i: int) -> Sample:
    return Sample(
        id=Sample.make_id("p1", "t", 0.6, i),
        problem_id="p1",
        teacher="t",
        temperature=0.6,
        sample_index=i,
        text="<think>a</think> \\boxed{2}",
        reasoning="a",
        final_answer="2",
        finish_reason="stop",
        metadata={"nested": {"k": [1, 2]}},
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_samples_roundtrip(tmp_path: Path, suffix: str) -> None:
    samples = [_sample(0), _sample(1)]
    samples[1].correct = True
    samples[1].difficulty = "hard"
    samples[1].rv = 7
    path = tmp_path / f"s{suffix}"
    assert write_records(path, samples) == 2
    back = read_records(path, Sample)
    assert back == samples


def test_parquet_problems_with_tests_roundtrip(tmp_path: Path) -> None:
    p = Problem.model_validate(
        _problem(domain="code", answer=None, tests={"kind": "stdio", "cases": [{"input": "1", "output": "1"}]})
    )
    q = Problem.model_validate(_problem(id="p2"))
    write_records(tmp_path / "p.parquet", [p, q])
    assert read_records(tmp_path / "p.parquet", Problem) == [p, q]


def test_sample_scores_are_bounded() -> None:
    with pytest.raises(ValueError):
        Sample(problem_id="p", teacher="t", temperature=0.6, sample_index=0, text="", rv=10)


def test_write_is_atomic_no_partial_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"

    class Boom:
        def __iter__(self):
            yield {"a": 1}
            raise RuntimeError("disk full")

    from kubedistill.core.records import write_jsonl

    with pytest.raises(RuntimeError):
        write_jsonl(path, Boom())
    assert not path.exists()
    assert list(tmp_path.iterdir()) == [] or all(p.name.startswith(".") for p in tmp_path.iterdir())
