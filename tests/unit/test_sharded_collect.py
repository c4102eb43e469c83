"""A sharded collect (``collect_shard`` × N → ``collect_merge``) through the stage runner, on real files: the
same problems, rejects and imported CoTs as one ``collect`` over the rows in shard order, with the
duplicates planted so that each copy falls in another shard than what it copies."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from kubedistill.core.config import ConfigError, validate_config
from kubedistill.core.records import Problem, Sample, read_records
from kubedistill.data.collect import CollectConfig, ShardKeys, collect_stage
from kubedistill.runner import run_stage

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
]
GSM = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many "
    "clips did Natalia sell altogether in April and May?"
)
N = 3  # shards


def _row(pid: str, text: str, n_cots: int = 2) -> dict[str, Any]:
    return {
        "id": pid,
        "problem": text,
        "answer": "7",
        **{f"r{k}": f"<think>{pid} {k}</think> 7" for k in range(n_cots)},
    }


def _rows() -> list[dict[str, Any]]:
    rnd = random.Random(5)
    rows = [_row(f"p{i}", " ".join(rnd.choice(WORDS) for _ in range(60)) + f" number {i}") for i in range(40)]
    near = rows[1]["problem"].split()
    near[5] = "changed"
    rows += [
        _row("exact-copy", "  " + rows[0]["problem"].upper()),  # place 40: shard 1 (p0 is in shard 0)
        _row("near-copy", " ".join(near)),  # place 41: shard 2 (p1: shard 1)
        _row("p2", "another problem under a taken id, long enough to be one " * 2),  # place 42: shard 0 (p2: shard 2)
        _row("leak", GSM),  # contaminated: the GSM8K item below
        {"id": "no-text", "answer": "1"},  # missing_problem
    ]
    return rows


def _config(tmp_path: Path, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n", encoding="utf-8")
    gsm = tmp_path / "gsm8k.jsonl"
    gsm.write_text(json.dumps({"question": GSM, "answer": "#### 72"}) + "\n", encoding="utf-8")
    small = tmp_path / "small.jsonl"
    small.write_text(
        "".join(
            json.dumps(_row(f"s{i}", f"small source problem number {i} with enough words in it")) + "\n"
            for i in range(7)
        ),
        encoding="utf-8",
    )
    return {
        "sources": [
            {"kind": "file", "name": "big", "path": str(src), "cots": {"text": ["r0", "r1"]}},
            {"kind": "file", "name": "small", "path": str(small), "cots": {"text": ["r0", "r1"]}, "near_dedup": False},
        ],
        "decontaminate": {"benchmarks": [{"name": "gsm8k", "path": str(gsm)}], "ngram": 8},
        **extra,
    }


def _sharded(tmp_path: Path, config: dict[str, Any], n: int = N) -> tuple[dict[str, Any], Any]:
    parts: dict[str, list[str]] = {"parts": [], "part_samples": [], "part_keys": [], "part_rejects": []}
    for i in range(n):
        d = tmp_path / f"shard{i}"
        paths = {
            "problems": d / "problems.jsonl",
            "samples": d / "samples.jsonl",
            "keys": d / "keys",  # a KFP output path: no suffix
            "rejects": d / "rejects.jsonl",
        }
        run_stage(
            "collect_shard",
            config=config,
            paths=paths,
            params={"shard_index": i, "shard_count": n},
            tracking={"enabled": False},
        )
        for port, key in (("parts", "problems"), ("part_samples", "samples"), ("part_keys", "keys")):
            parts[port].append(str(paths[key]))
        parts["part_rejects"].append(str(paths["rejects"]))
    out = {k: tmp_path / f"merged.{k}.jsonl" for k in ("problems", "heldout", "samples")}
    result = run_stage(
        "collect_merge",
        config=config,
        paths={**parts, **out, "rejects": tmp_path / "merged.rejects.jsonl"},
        tracking={"enabled": False},
    )
    return {k: read_records(v, Sample if k == "samples" else Problem) for k, v in out.items()}, result.stats


def _rejects(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return sorted((r["reason"], r["detail"]) for r in rows)


def test_duplicates_in_other_shards_are_caught_and_decisions_equal_one_collect_in_shard_order(tmp_path: Path) -> None:
    rows = _rows()
    config = _config(tmp_path, rows)
    merged, stats = _sharded(tmp_path, config)

    # one process over the same rows, in shard order (shard 0's rows, then shard 1's, ...)
    ordered = [r for i in range(N) for place, r in enumerate(rows) if place % N == i]
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    single_cfg = validate_config(CollectConfig, _config(single_dir, ordered))
    # the unreadable line is the last row of the file: its place in shard order differs, its reject does not
    out, single = collect_stage(single_cfg)
    single_cots = list(out["samples"])

    # the same problems and CoTs (in shard order: each shard's rows of every source, then the next shard's)
    assert sorted((p.id, p.problem) for p in merged["problems"]) == sorted((p.id, p.problem) for p in out["problems"])
    assert sorted((s.id, s.text) for s in merged["samples"]) == sorted((s.id, s.text) for s in single_cots)
    assert stats.dropped == single.dropped
    assert stats.dropped == {
        "duplicate": 1,
        "near_duplicate": 1,
        "duplicate_id": 1,
        "contaminated": 1,
        "missing_problem": 1,
        "invalid_json": 1,
    }
    assert stats.n_in == single.n_in == 53 and stats.n_in == stats.n_out + sum(stats.dropped.values())
    assert stats.info["cots"] == single.info["cots"]
    assert stats.info["decontaminate"]["benchmarks"]["gsm8k"]["removed"] == 1
    assert stats.info["dedup"]["global"] is True and stats.info["dedup"]["shards"] == N
    for label in ("big", "small"):
        mine, theirs = stats.info["sources"][label], single.info["sources"][label]
        assert {k: mine[k] for k in ("rows", "loaded", "rejected", "cots", "out")} == {
            k: theirs[k] for k in ("rows", "loaded", "rejected", "cots", "out")
        }
    ours = [(r, d) for r, d in _rejects(tmp_path / "merged.rejects.jsonl")]
    assert [r for r, _ in ours] == sorted(r.reason for r in single.rejects)
    dup = dict((r, d) for r, d in ours if r != "invalid_json")
    # the copy in the earlier shard is kept (shard order), whichever of the two it is
    assert dup["duplicate"] in ("duplicate of exact-copy", "duplicate of p0")
    assert "near duplicate of" in dup["near_duplicate"] and dup["contaminated"].startswith("gsm8k: item")
    # the kept row of the taken id brings its own CoTs, not the other row's
    (kept_p2,) = [p for p in merged["problems"] if p.id == "p2"]
    assert kept_p2.problem.startswith("another problem")  # shard 0's row comes first
    assert all(s.problem_id != "leak" for s in merged["samples"])


def test_one_shard_equals_collect_and_a_mix_and_holdout_apply_after_the_merge(tmp_path: Path) -> None:
    config = _config(tmp_path, _rows(), holdout={"fraction": 0.25}, mix_by="source", mix={"big": 3, "small": 1})
    merged, stats = _sharded(tmp_path, config, n=1)
    out, single = collect_stage(validate_config(CollectConfig, config))
    assert [p.id for p in merged["problems"]] == [p.id for p in out["problems"]]
    assert [p.id for p in merged["heldout"]] == [p.id for p in out["heldout"]]
    assert [s.id for s in merged["samples"]] == [s.id for s in out["samples"]]
    assert stats.dropped == single.dropped and stats.info["holdout"] == single.info["holdout"]
    assert stats.metrics["train"] == single.metrics["train"] and stats.metrics["cots_out"] == single.metrics["cots_out"]


def test_merge_refuses_shards_that_do_not_match(tmp_path: Path) -> None:
    config = _config(tmp_path, _rows())
    _sharded(tmp_path, config, n=2)
    parts = {
        "parts": [str(tmp_path / "shard0/problems.jsonl"), str(tmp_path / "shard1/problems.jsonl")],
        "part_samples": [str(tmp_path / "shard0/samples.jsonl"), str(tmp_path / "shard1/samples.jsonl")],
        "part_keys": [str(tmp_path / "shard1/keys"), str(tmp_path / "shard0/keys")],  # swapped
    }
    out = {k: tmp_path / f"bad.{k}.jsonl" for k in ("problems", "heldout", "samples")}
    with pytest.raises(ConfigError, match="is not the problem shard 0's keys name"):
        run_stage("collect_merge", config=config, paths={**parts, **out}, tracking={"enabled": False})
    parts["part_keys"] = [str(tmp_path / "shard0/keys")]
    with pytest.raises(ConfigError, match="one of each per shard"):
        run_stage("collect_merge", config=config, paths={**parts, **out}, tracking={"enabled": False})
    parts["part_keys"] = [str(tmp_path / "shard0/problems.jsonl"), str(tmp_path / "shard1/keys")]
    with pytest.raises(ConfigError, match="not the dedup keys of a collect shard"):
        run_stage("collect_merge", config=config, paths={**parts, **out}, tracking={"enabled": False})
    assert not out["problems"].exists()  # nothing half-written


def test_shard_keys_round_trip(tmp_path: Path) -> None:
    config = _config(tmp_path, _rows())
    _sharded(tmp_path, config, n=2)
    k = ShardKeys.load(tmp_path / "shard0/keys")
    assert len(k.labels) == len(k.where) == len(k.dedup.ids) == k.dedup.counts.size
    assert k.summary["shard"] == [0, 2] and set(k.labels) == {"big", "small"}
    assert all(w and ":" in w for w in k.where)  # file:line of every problem


def test_the_commands_shard_and_merge_with_default_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`kubedistill collect-shard` per shard (keys beside --output by default), then `kubedistill collect-merge`
    with each shard's files, in shard order."""
    import yaml

    from kubedistill.cli import main

    cfg = tmp_path / "collect.yaml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path, _rows())), encoding="utf-8")
    flags = ["--config", str(cfg), "--no-tracking"]
    for i in range(2):
        out = tmp_path / f"s{i}.jsonl"
        assert main(["collect-shard", *flags, "--output", str(out), "--shard-index", str(i), "--shard-count", "2"]) == 0
        assert (tmp_path / f"s{i}.keys.npz").is_file() and (tmp_path / f"s{i}.samples.jsonl").is_file()
    files = {
        "--parts": [tmp_path / f"s{i}.jsonl" for i in range(2)],
        "--part-samples": [tmp_path / f"s{i}.samples.jsonl" for i in range(2)],
        "--part-keys": [tmp_path / f"s{i}.keys.npz" for i in range(2)],
        "--part-rejects": [tmp_path / f"s{i}.rejects.jsonl" for i in range(2)],
    }
    args = [x for flag, paths in files.items() for x in (flag, *map(str, paths))]
    capsys.readouterr()
    assert main(["collect-merge", *flags, *args, "--output", str(tmp_path / "merged.jsonl")]) == 0
    err = capsys.readouterr().err
    kept = read_records(tmp_path / "merged.jsonl", Problem)
    assert len(kept) == 47  # p0..p39 and s0..s6: every planted copy, the leak and the bad rows dropped
    assert f"wrote {len(kept)} record(s)" in err and "dropped: " in err and "duplicate=1" in err


def test_more_shards_than_rows_leaves_empty_shards_that_merge_cleanly(tmp_path: Path) -> None:
    rows = [_row("a", "the first of two problems, long enough"), _row("b", "the second of two problems, long enough")]
    src = tmp_path / "two.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {"sources": [{"kind": "file", "name": "two", "path": str(src), "cots": {"text": ["r0", "r1"]}}]}
    merged, stats = _sharded(tmp_path, config, n=5)
    assert [p.id for p in merged["problems"]] == ["a", "b"] and len(merged["samples"]) == 4
    assert stats.n_in == 2 and stats.dropped == {} and stats.info["sources"]["two"]["rows"] == 2
    assert ShardKeys.load(tmp_path / "shard4/keys").dedup.ids == []
