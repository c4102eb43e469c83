"""verify and select stream: the runner hands them the input as a RecordStream (read lazily, again for a
second pass), writes their output as it is produced and their rejects as they come. Same records, same
counts and same rejects as the in-memory path; bad rows and repeated ids still rejects; shards filter
the stream; and the memory a run allocates does not grow with the CoTs' text."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from kubedistill.core.records import Problem, RecordStream, Reject, Sample, StageStats, read_records
from kubedistill.cot.select import SelectConfig, select
from kubedistill.cot.verify import VerifyConfig, verify_samples
from kubedistill.runner import run_stage

NO_TRACKING = {"enabled": False}


def _sample(pid: str, i: int, answer: int, **kw: object) -> Sample:
    text = kw.pop("text", f"<think>\nwork for {pid}\n</think>\n\nThe answer is $\\boxed{{{answer}}}$.")
    return Sample(problem_id=pid, teacher="t", temperature=0.6, sample_index=i, text=text, **kw)  # type: ignore[arg-type]


def _files(tmp_path: Path) -> tuple[Path, Path, list[Sample]]:
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": f"p{k}", "problem": f"{k}+1?", "answer": str(k + 1), "source": "s"}) + "\n"
            for k in range(6)
        )
    )
    samples = [_sample(f"p{k}", i, k + 1 + (i == 1)) for k in range(6) for i in range(2)]  # index 1 is wrong
    samples.append(_sample("p0", 2, 1, text="<think>\ncut off", finish_reason="length"))
    path = tmp_path / "samples.jsonl"
    lines = [s.model_dump_json() for s in samples]
    lines.insert(3, "{not json")
    lines.append(samples[0].model_dump_json())  # an id already read
    path.write_text("\n".join(lines) + "\n")
    return problems, path, samples


def test_verify_streams_in_chunks_with_the_same_result(tmp_path: Path) -> None:
    problems, path, samples = _files(tmp_path)
    out = tmp_path / "verified.jsonl"
    result = run_stage(
        "verify",
        config={"chunk_size": 3},
        paths={"samples": path, "problems": problems, "verified": out},
        tracking=NO_TRACKING,
    )
    stats = result.stats
    assert stats is not None
    got = read_records(out, Sample)
    assert [s.sample_index for s in got] == [0] * 6 and all(s.correct for s in got)
    assert stats.n_in == 15 and stats.n_out == 6
    assert stats.dropped == {"incorrect": 6, "truncated": 1, "invalid_json": 1, "duplicate_id": 1}
    assert stats.n_in == stats.n_out + sum(stats.dropped.values())
    rejects = [json.loads(x) for x in (tmp_path / "verified.rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == sorted(
        ["incorrect"] * 6 + ["truncated", "invalid_json", "duplicate_id"]
    )
    assert stats.metrics["source.t.n_in"] == 13 and stats.metrics["source.t.n_out"] == 6

    listed, lstats = verify_samples(samples, VerifyConfig(), problems=read_records(problems, Problem))
    assert [s.model_dump() for s in listed] == [s.model_dump() for s in got]
    assert lstats.dropped == {"incorrect": 6, "truncated": 1}


def test_shards_of_a_stream_add_up_and_bad_rows_are_reported_once(tmp_path: Path) -> None:
    problems, path, _ = _files(tmp_path)
    parts = []
    for shard in range(2):
        out = tmp_path / f"v{shard}.jsonl"
        r = run_stage(
            "verify",
            paths={"samples": path, "problems": problems, "verified": out},
            params={"shard_index": shard, "shard_count": 2},
            tracking=NO_TRACKING,
        )
        parts.append((r.stats, read_records(out, Sample)))
    assert sum(len(p[1]) for p in parts) == 6 and all(p[1] for p in parts)
    assert parts[0][0].dropped.get("invalid_json") == 1 and "invalid_json" not in parts[1][0].dropped
    assert sum(p[0].n_in for p in parts) == 15


def test_select_streams_two_passes_and_matches_the_list_path(tmp_path: Path) -> None:
    samples = [
        _sample(f"p{k}", i, 0, correct=i != 3, rv=(k + i) % 10, cd=(2 * k + i) % 10)
        for k in range(20)
        for i in range(4)
    ]
    path = tmp_path / "scored.jsonl"
    path.write_text("".join(s.model_dump_json() + "\n" for s in samples))
    cfg = {"per_problem": 1, "target_size": 9, "seed": 2}
    result = run_stage(
        "select", config=cfg, paths={"samples": path, "selected": tmp_path / "sel.jsonl"}, tracking=NO_TRACKING
    )
    got = read_records(tmp_path / "sel.jsonl", Sample)
    listed, lstats = select(samples, SelectConfig(**cfg))
    assert [s.id for s in got] == [s.id for s in listed] and 0 < len(got) <= 9
    assert result.stats is not None and result.stats.dropped == lstats.dropped
    order = {s.id: i for i, s in enumerate(samples)}
    assert [order[s.id] for s in got] == sorted(order[s.id] for s in got)  # input order
    n_rejects = len((tmp_path / "sel.rejects.jsonl").read_text().splitlines())
    assert n_rejects == sum(lstats.dropped.values()) == 80 - len(got)


def test_record_stream_rereads_and_reports_rejects_once(tmp_path: Path) -> None:
    _, path, _ = _files(tmp_path)
    seen: list[Reject] = []
    stream = RecordStream(path, Sample, on_reject=seen.append, keep=lambda s: s.problem_id != "p1")
    first, second = list(stream), list(stream)
    assert [s.id for s in first] == [s.id for s in second] and len(first) == 11
    assert [r.reason for r in seen] == ["invalid_json", "duplicate_id"] and stream.rows == 15


def _peak_kib(fn) -> float:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_corpus(tmp_path: Path) -> None:
    """4x the CoTs (8 KB each): reading the file into a list (the shape before) allocates ~11 KB more per
    extra CoT at its peak; the streaming run only what it keeps per CoT whatever its length — the ids
    (repeated-id check) and select's light index, a few hundred bytes."""
    text = "<think>\n" + "x" * 8000 + "\n</think>\n\nThe answer is $\\boxed{1}$."
    peaks = {}
    for n in (300, 1200):
        path = tmp_path / f"s{n}.jsonl"
        path.write_text(
            "".join(
                _sample(f"p{k % 50}", k // 50, 1, text=text, correct=True, rv=2, cd=2).model_dump_json() + "\n"
                for k in range(n)
            )
        )
        out = tmp_path / f"o{n}.jsonl"
        stream = _peak_kib(
            lambda path=path, out=out: run_stage(
                "select", config={"per_problem": 2}, paths={"samples": path, "selected": out}, tracking=NO_TRACKING
            )
        )
        listed = _peak_kib(lambda path=path: select(read_records(path, Sample), SelectConfig(per_problem=2)))
        peaks[n] = (stream, listed)
    (s_small, l_small), (s_large, l_large) = peaks[300], peaks[1200]
    per_cot_stream = (s_large - s_small) * 1024 / 900
    per_cot_list = (l_large - l_small) * 1024 / 900
    assert per_cot_list > 8000, peaks  # the text of every CoT
    assert per_cot_stream < 1024 and per_cot_stream < per_cot_list / 10, peaks


def test_score_streams_in_chunks_and_a_fatal_failure_writes_no_output(tmp_path: Path) -> None:
    """The judge stages stream too (chunk by chunk through the client); when requests fail after every
    retry (`request_failed`, fatal) nothing of the output is left behind, and the rejects say which."""
    import pytest

    from kubedistill.runner import StageFailed
    from kubedistill.testing.openai_server import ServerScript, running_server

    problems, path, _ = _files(tmp_path)
    answers = [(r"REASONING VERBOSITY", "<score>3</score>"), (r"COGNITIVE DIFFICULTY", "<score>2</score>")]
    with running_server(ServerScript(answers=answers, always_fail=["work for p4"])) as url:
        judge = {"url": url, "model": "scripted"}
        client = {"cache_dir": str(tmp_path / "cache"), "max_retries": 0, "progress": False}
        ok = tmp_path / "scored.jsonl"
        good = tmp_path / "good.jsonl"
        good.write_text("".join(ln + "\n" for ln in path.read_text().splitlines() if '"p4"' not in ln))
        result = run_stage(
            "score",
            config={"judge": judge, "client": client, "chunk_size": 4},
            paths={"samples": good, "problems": problems, "scored": ok},
            tracking=NO_TRACKING,
        )
        scored = read_records(ok, Sample)
        assert len(scored) == 11 and {(s.rv, s.cd) for s in scored} == {(3, 2)}
        assert result.stats is not None and result.stats.metrics["source.t.n_out"] == 11

        bad = tmp_path / "bad.jsonl"
        with pytest.raises(StageFailed, match="request failed"):
            run_stage(
                "score",
                config={"judge": judge, "client": client, "chunk_size": 4},
                paths={"samples": path, "problems": problems, "scored": bad},
                tracking=NO_TRACKING,
            )
    assert not bad.exists() and not list(tmp_path.glob(".bad.jsonl.tmp-*"))
    rejects = [json.loads(x) for x in (tmp_path / "bad.rejects.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejects} >= {"request_failed", "invalid_json", "duplicate_id"}


REWRITE_ANSWERS = [
    # the rewriter: an extended CoT answers 2 (right for p1 only), a simplified one 4 (right for p3 only)
    (r"small model can follow every step", "<think>\nMore steps.\n</think>\n\nThe answer is $\\boxed{2}$."),
    (r"clear, direct derivation", "<think>\nShort.\n</think>\n\nThe answer is $\\boxed{4}$."),
    # the difficulty judge, re-judging: an extended CoT is medium now, a simplified one stays hard
    (r"(?s)More steps.*Classify", "<difficulty>medium</difficulty>"),
    (r"Classify", "<difficulty>hard</difficulty>"),
]
#: p5's simplification is cut off: a failed rewrite
REWRITE_CUT = [(r"(?s)(?=.*work for p5)(?=.*clear, direct derivation)", "length")]


def _judged(tmp_path: Path) -> tuple[Path, Path, list[Sample], list[Problem]]:
    """12 CoTs of 6 problems (p<k> answers k + 1), judged easy / hard / medium / unlabelled, as a list and a file."""
    problems_path, _, _ = _files(tmp_path)
    problems = read_records(problems_path, Problem)
    labels = [
        ("easy", "medium"),
        ("easy", None),
        ("hard", "medium"),
        ("hard", "easy"),
        (None, "medium"),
        ("hard", "easy"),
    ]
    samples = [_sample(f"p{k}", i, k + 1, difficulty=labels[k][i]) for k in range(6) for i in range(2)]
    path = tmp_path / "judged.jsonl"
    path.write_text("".join(s.model_dump_json() + "\n" for s in samples))
    return problems_path, path, samples, problems


def _rewrite_counts(stats: StageStats) -> dict[str, object]:
    """What rewrite reports, less the client's request counts (a cached answer counts apart)."""
    return {
        "metrics": {k: v for k, v in stats.metrics.items() if k.startswith("rewrite.")},
        "info": {k: v for k, v in stats.info.items() if k in ("counts", "validation", "failed", "dropped_rewrites")},
        "dropped": stats.dropped,
        "n": (stats.n_in, stats.n_out),
    }


def test_rewrite_streams_in_chunks_with_the_same_result(tmp_path: Path) -> None:
    """rewrite reads its input lazily, chunk by chunk: a chunk's outputs come before the next chunk is read,
    and chunk sizes 1, 3 and larger than the input give the list path's records, counts and rejects."""
    from kubedistill.cot.rewrite import RewriteConfig, rewrite
    from kubedistill.testing.openai_server import ServerScript, running_server

    problems_path, path, samples, problems = _judged(tmp_path)
    with running_server(ServerScript(answers=REWRITE_ANSWERS, finish_reasons=REWRITE_CUT)) as url:
        base = {
            "rewriter": {"url": url, "model": "scripted", "name": "rw"},
            "client": {"cache_dir": str(tmp_path / "cache"), "max_retries": 0, "progress": False},
            "dropped_rewrites": "none",
        }
        listed, lstats = rewrite(samples, RewriteConfig(**base), problems=problems)
        # 4 easy CoTs extended (only p1's answer, 2, is right: kept), 3 hard ones simplified (p5's fails and
        # stays; p3's is right but still hard): 1 kept, 5 dropped with their originals (dropped_rewrites: none)
        assert lstats.info["counts"] == {"extend": 4, "simplify": 2, "rewrite_failed": 1}
        assert lstats.info["validation"] == {
            "moved_to_medium": 1,
            "stayed": 1,
            "moved_other": 0,
            "unlabelled": 0,
            "wrong_answer": 4,
        }
        assert (lstats.n_in, lstats.n_out, lstats.dropped) == (12, 7, {"rewrite_rejected": 5})
        assert [s.id for s in listed if s.rewritten_from] == [samples[2].id + "::rw"]

        read = [0]  # input rows read so far

        def lazily() -> Iterator[Sample]:
            for s in samples:
                read[0] += 1
                yield s

        position = {s.id: n for n, s in enumerate(samples)}
        for size in (1, 3, 100):
            read[0] = 0
            out, stats = rewrite(lazily(), RewriteConfig(**base, chunk_size=size), problems=problems)
            assert not isinstance(out, list)
            assert read[0] == 0  # nothing read before the output is asked for
            got = []
            for s in out:  # each output comes once its chunk is read, before the next chunk is
                n = position[s.rewritten_from or s.id]
                assert read[0] == min((n // size + 1) * size, len(samples)), (size, s.id)
                got.append(s)
            assert [s.model_dump() for s in got] == [s.model_dump() for s in listed], size
            assert _rewrite_counts(stats) == _rewrite_counts(lstats), size

        # through the runner: the file is streamed, the rejects written as they come
        out_path = tmp_path / "rewritten.jsonl"
        result = run_stage(
            "rewrite",
            config={**base, "chunk_size": 5},
            paths={"samples": path, "problems": problems_path, "rewritten": out_path},
            tracking=NO_TRACKING,
        )
    assert [s.model_dump() for s in read_records(out_path, Sample)] == [s.model_dump() for s in listed]
    assert result.stats is not None and _rewrite_counts(result.stats) == _rewrite_counts(lstats)
    rejects = [json.loads(x) for x in (tmp_path / "rewritten.rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["rewrite_rejected"] * lstats.dropped["rewrite_rejected"]


def test_streaming_stages_look_problems_up_in_an_index_with_the_same_rejects(tmp_path: Path) -> None:
    """The problems of a streaming stage come as an index by id (RecordIndex: byte offsets, read back on
    demand), not a list: the same verdicts, a CoT of an unknown problem still unverifiable, the problems
    file's bad rows and repeated ids still counted apart; select's mix by domain reads the domains there."""
    problems, path, samples = _files(tmp_path)
    rows = problems.read_text().splitlines()
    rows[1] = json.dumps({"id": "p1", "problem": "1+1?", "answer": "99", "source": "s"})  # p1's answer now wrong
    rows[5] = "{not json"  # p5 gone: its CoTs have no problem
    rows.append(json.dumps({"id": "p1", "problem": "x", "answer": "2", "source": "s"}))  # repeated: first kept
    problems.write_text("\n".join(rows) + "\n")
    out = tmp_path / "verified.jsonl"
    result = run_stage(
        "verify",
        config={"keep_unverifiable": False},
        paths={"samples": path, "problems": problems, "verified": out},
        tracking=NO_TRACKING,
    )
    stats = result.stats
    assert stats is not None
    assert sorted({s.problem_id for s in read_records(out, Sample)}) == ["p0", "p2", "p3", "p4"]
    assert stats.dropped["unverifiable"] == 2 and stats.dropped["incorrect"] == 6
    assert stats.info["input_rejects"] == {"problems": {"invalid_json": 1, "duplicate_id": 1}}

    domains = tmp_path / "domains.jsonl"
    domains.write_text(
        "".join(
            json.dumps({"id": f"p{k}", "problem": "q", "answer": "1", "source": "s", "domain": d}) + "\n"
            for k, d in enumerate(["math", "code"] * 3)
        )
    )
    scored = tmp_path / "scored.jsonl"
    good = [s.model_copy(update={"correct": True, "rv": 2, "cd": 2}) for s in samples[:12]]
    scored.write_text("".join(s.model_dump_json() + "\n" for s in good))
    cfg = {"per_problem": 2, "target_size": 4, "mix": {"code": 1.0}}
    run_stage(
        "select",
        config=cfg,
        paths={"samples": scored, "problems": domains, "selected": tmp_path / "sel.jsonl"},
        tracking=NO_TRACKING,
    )
    listed, _ = select(good, SelectConfig(**cfg), problems=read_records(domains, Problem))
    got = read_records(tmp_path / "sel.jsonl", Sample)
    assert [s.id for s in got] == [s.id for s in listed] and {s.problem_id for s in got} <= {"p1", "p3", "p5"}
    assert len(got) == 4
