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


# ------------------------------------------------------------------------------ identity and reading


def test_a_sample_id_is_derived_from_its_key_fields_and_checked_when_given() -> None:
    key = {"problem_id": "p1", "teacher": "qwq", "temperature": 1.0, "sample_index": 3, "text": "x"}
    assert Sample.model_validate(key).id == "p1::qwq::t1::3"
    assert Sample.model_validate({**key, "id": ""}).id == "p1::qwq::t1::3"
    assert Sample.model_validate({**key, "id": "p1::qwq::t1::3"}).id == "p1::qwq::t1::3"
    with pytest.raises(ValueError, match=r"does not match its key fields: expected 'p1::qwq::t1::3'"):
        Sample.model_validate({**key, "id": "p1::qwq::t1::4"})
    rw = {**key, "teacher": "rewriter", "rewritten_from": "p1::qwq::t1::3"}
    assert Sample.model_validate(rw).id == "p1::qwq::t1::3::rw"
    with pytest.raises(ValueError, match=r"<rewritten_from>::rw"):
        Sample.model_validate({**rw, "id": "p1::rewriter::t1::3"})


def test_completeness_of_a_cot() -> None:
    s = Sample(problem_id="p", teacher="t", temperature=0.6, sample_index=0, text="<think>a</think> 1")
    assert s.complete  # no finish reason recorded (an imported CoT): judged by its text
    assert s.model_copy(update={"finish_reason": "stop"}).complete
    assert s.model_copy(update={"finish_reason": "eos_token"}).complete
    for bad in ("length", "content_filter", "abort"):
        assert not s.model_copy(update={"finish_reason": bad}).complete
    assert not s.model_copy(update={"text": " \n\t"}).complete


def test_rows_are_streamed_with_their_raw_form(tmp_path: Path) -> None:
    from kubedistill.core.records import iter_rows

    p = tmp_path / "rows.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n[1, 2]\n{"b": "caf\xe9"}\n{broken\n')
    rows = list(iter_rows(p))
    assert [r.where for r in rows] == ["rows.jsonl:1", "rows.jsonl:3", "rows.jsonl:4", "rows.jsonl:5"]
    assert rows[0].ok and rows[0].value == {"a": 1}
    assert rows[1].ok and rows[1].value == [1, 2] and rows[1].text == "[1, 2]"
    assert rows[2].reason == "invalid_encoding" and rows[2].text == '{"b": "caf\\xe9"}'
    assert "byte 0xe9 at line 4, column 11" in (rows[2].error or "")
    assert rows[3].reason == "invalid_json" and rows[3].text == "{broken"


def test_duplicate_ids_are_refused_naming_the_first(tmp_path: Path) -> None:
    p = tmp_path / "problems.jsonl"
    rows = [_problem(), _problem(), _problem(answer="3"), _problem(id="p2")]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = StageStats(stage="t")
    got = read_records(p, Problem, stats=stats)
    assert [x.id for x in got] == ["p1", "p2"] and got[0].answer == "2"  # the first one is kept
    details = [r.detail for r in stats.rejects]
    assert details == [
        "id 'p1' was already read at problems.jsonl:1 (the same record)",
        "id 'p1' was already read at problems.jsonl:1 (a different record; the first one is kept)",
    ]
    assert read_records(p, Problem, stats=StageStats(stage="t"), unique_ids=False)[1].id == "p1"


def test_a_parquet_row_with_a_broken_json_column_is_a_reject(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [
            {"id": "p1", "problem": "1+1?", "source": "t", "metadata": "{}"},
            {"id": "p2", "problem": "2+2?", "source": "t", "metadata": "{not json"},
        ]
    ).replace_schema_metadata({b"kubedistill.json_columns": b'["metadata"]'})
    pq.write_table(table, tmp_path / "p.parquet")
    stats = StageStats(stage="t")
    assert [x.id for x in read_records(tmp_path / "p.parquet", Problem, stats=stats)] == ["p1"]
    assert stats.rejects[0].reason == "invalid_json" and "column 'metadata'" in stats.rejects[0].detail


def test_written_records_lose_known_secret_values_and_rejects_are_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubedistill.core.records import Reject, write_rejects

    monkeypatch.setenv("OPENAI_API_KEY", "sk-known-value-123456")
    p = Problem.model_validate(_problem(problem="say sk-known-value-123456 and Bearer abcdefghijk"))
    write_records(tmp_path / "o.jsonl", [p])
    text = (tmp_path / "o.jsonl").read_text()
    assert "sk-known-value-123456" not in text and "Bearer abcdefghijk" in text  # data: known values only
    write_rejects(tmp_path / "r.jsonl", [Reject(stage="t", reason="x", detail="HTTP 401: Bearer abcdefghijk")])
    assert "abcdefghijk" not in (tmp_path / "r.jsonl").read_text()  # diagnostics: patterns too


def test_repeated_ids_name_where_the_first_copy_was_also_after_the_first_repeat(tmp_path) -> None:
    """The ids read are kept as hashes (memory); the first copy's location is found when a repeat is met,
    for every repeat of the file, with bad rows counted in the row positions."""
    import json

    from kubedistill.core.records import Problem, Reject, iter_records

    def p(i: int, answer: str = "1") -> str:
        return json.dumps({"id": f"p{i}", "problem": f"{i}+1?", "answer": answer, "source": "s"}) + "\n"

    f = tmp_path / "problems.jsonl"
    f.write_text(p(0) + "not json\n" + p(1) + p(0) + p(2) + p(1, "7") + p(2) + p(3))
    out = list(iter_records(f, Problem))
    kept = [r.id for r in out if not isinstance(r, Reject)]
    assert kept == ["p0", "p1", "p2", "p3"]
    dups = [(r.where, r.detail) for r in out if isinstance(r, Reject) and r.reason == "duplicate_id"]
    assert dups == [
        ("problems.jsonl:4", "id 'p0' was already read at problems.jsonl:1 (the same record)"),
        (
            "problems.jsonl:6",
            "id 'p1' was already read at problems.jsonl:3 (a different record; the first one is kept)",
        ),
        ("problems.jsonl:7", "id 'p2' was already read at problems.jsonl:5 (the same record)"),
    ]


def test_repeated_ids_are_found_after_the_id_index_settles_into_sorted_columns(tmp_path) -> None:
    """Past 8,192 ids the duplicate-id index merges into sorted numpy columns: repeats of ids read long
    before (settled) and just before (recent) are both rejects naming the first copy."""
    import json

    from kubedistill.core.records import Problem, Reject, iter_records

    def p(i: int, answer: str = "1") -> str:
        return json.dumps({"id": f"p{i}", "problem": f"{i}+1?", "answer": answer, "source": "s"}) + "\n"

    f = tmp_path / "problems.jsonl"
    f.write_text("".join(p(i) for i in range(30_000)) + p(5) + p(29_999, "2") + p(30_000) + p(12_345))
    out = list(iter_records(f, Problem))
    assert sum(1 for r in out if not isinstance(r, Reject)) == 30_001
    dups = [(r.where, r.detail) for r in out if isinstance(r, Reject)]
    assert dups == [
        ("problems.jsonl:30001", "id 'p5' was already read at problems.jsonl:6 (the same record)"),
        (
            "problems.jsonl:30002",
            "id 'p29999' was already read at problems.jsonl:30000 (a different record; the first one is kept)",
        ),
        ("problems.jsonl:30004", "id 'p12345' was already read at problems.jsonl:12346 (the same record)"),
    ]


def test_record_index_looks_problems_up_by_id_from_the_file(tmp_path) -> None:
    """RecordIndex: the records of a JSONL file by id, read back on demand (a BOM, blank lines, bad rows
    and repeated ids as iter_records has them: rejects, the first copy kept); a missing id is a KeyError;
    gzipped JSONL and Parquet fall back to a dict with the same contents."""
    import gzip
    import json

    from kubedistill.core.records import Problem, RecordIndex, Reject, read_records, records_index, write_records

    def p(i: int, answer: str = "1") -> str:
        return json.dumps({"id": f"p{i}", "problem": f"{i}+1?", "answer": answer, "source": "s"}) + "\n"

    text = "\ufeff" + p(0) + "\n" + "not json\n" + p(1) + p(0, "9") + "".join(p(i) for i in range(2, 3000)) + "[1]\n"
    f = tmp_path / "problems.jsonl"
    f.write_text(text, encoding="utf-8")
    refused: list[Reject] = []
    index = RecordIndex(f, Problem, stage="verify", on_reject=refused.append, cache=4)
    assert [(r.reason, r.where) for r in refused] == [
        ("invalid_json", "problems.jsonl:3"),
        ("duplicate_id", "problems.jsonl:5"),
        ("invalid_record", "problems.jsonl:3004"),
    ]
    assert len(index) == 3000 and "p2999" in index and "p3000" not in index and "p0" in index
    assert index["p0"].answer == "1"  # the first copy
    assert index["p1234"] == Problem(id="p1234", problem="1234+1?", answer="1", source="s")
    assert index.get("nope") is None and index.get(5) is None  # type: ignore[call-overload]
    assert list(index)[:3] == ["p0", "p1", "p2"]
    want = {r.id: r for r in read_records(f, Problem, stats=StageStats(stage="t"))}
    assert dict(index.items()) == want
    gz = tmp_path / "problems.jsonl.gz"
    gz.write_bytes(gzip.compress(text.encode("utf-8")))
    pq = tmp_path / "problems.parquet"
    write_records(pq, list(want.values()))
    for other in (gz, pq):
        fallback = records_index(other, Problem)
        assert isinstance(fallback, dict) and fallback == want
    assert isinstance(records_index(f, Problem), RecordIndex)


def test_the_id_index_finds_every_id_it_settled_and_no_other() -> None:
    """_SeenIds: 100,000 ids through several merges (sorted columns, bit filter rebuilt at each doubling):
    each found with its row and its record's 24-bit digest; as many ids never added are not found."""
    import random

    from kubedistill.core.records import _SeenIds

    rng = random.Random(0)
    keys = list({rng.getrandbits(64) for _ in range(200_000)})[:200_000]
    seen = _SeenIds()
    for i, k in enumerate(keys[:100_000]):
        assert seen.get(k) is None
        seen.add(k, i, k ^ 0xABCDEF)
    assert seen.keys is not None and len(seen.keys) + len(seen.recent) == 100_000
    assert all(seen.get(k) == (i, (k ^ 0xABCDEF) & 0xFFFFFF) for i, k in enumerate(keys[:100_000]))
    assert not any(seen.get(k) is not None for k in keys[100_000:])
