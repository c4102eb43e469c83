"""A sharded collect (``collect_shard`` × N → ``collect_merge``) through the stage runner, on real files: the
same problems (in the same order), held-out set, rejects and imported CoTs as one ``collect``, with the
duplicates planted so that each copy falls in another shard than what it copies; and the merge refuses a
set of files that is not every shard of one run."""

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

WORDS = [f"{c}{v}" for c in "bdgkmprst" for v in "aeiou"]  # 45 syllables to make problem texts of
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


def _same_as_collect(merged: dict[str, Any], stats: Any, config: dict[str, Any]) -> Any:
    """Assert the sharded outputs are one ``collect``'s: problems and held-out set in order, the CoTs as a
    set (they come shard by shard), rejects, counts, per-source counts and the CoT funnel."""
    out, single = collect_stage(validate_config(CollectConfig, config))
    single_cots = list(out["samples"])
    assert [p.model_dump() for p in merged["problems"]] == [p.model_dump() for p in out["problems"]]
    assert [p.model_dump() for p in merged["heldout"]] == [p.model_dump() for p in out["heldout"]]
    assert sorted(s.model_dump_json() for s in merged["samples"]) == sorted(s.model_dump_json() for s in single_cots)
    assert stats.dropped == single.dropped and stats.n_in == single.n_in and stats.n_out == single.n_out
    assert stats.info["cots"] == single.info["cots"] and stats.info.get("holdout") == single.info.get("holdout")
    assert stats.info.get("resample") == single.info.get("resample")
    for label, theirs in single.info["sources"].items():
        mine = stats.info["sources"][label]
        keys = ("rows", "loaded", "rejected", "cots", "out", "cots_out")
        assert {k: mine.get(k) for k in keys} == {k: theirs.get(k) for k in keys}
    return single


def test_duplicates_in_other_shards_are_caught_and_the_outputs_are_one_collects(tmp_path: Path) -> None:
    config = _config(tmp_path, _rows(), holdout={"fraction": 0.25})
    merged, stats = _sharded(tmp_path, config)
    single = _same_as_collect(merged, stats, config)
    assert stats.dropped == {
        "duplicate": 1,
        "near_duplicate": 1,
        "duplicate_id": 1,
        "contaminated": 1,
        "missing_problem": 1,
        "invalid_json": 1,
    }
    assert stats.n_in == 53 and stats.n_in == stats.n_out + sum(stats.dropped.values())
    assert stats.info["decontaminate"]["benchmarks"]["gsm8k"]["removed"] == 1
    assert stats.info["dedup"]["global"] is True and stats.info["dedup"]["shards"] == N
    ours = _rejects(tmp_path / "merged.rejects.jsonl")
    assert ours == sorted((r.reason, r.detail) for r in single.rejects)  # the same rejects, word for word
    dup = dict(ours)
    assert dup["duplicate"] == "duplicate of p0" and dup["near_duplicate"].startswith("near duplicate of p1 ")
    assert dup["contaminated"].startswith("gsm8k: item")
    (kept_p2,) = [p for p in merged["problems"] + merged["heldout"] if p.id == "p2"]
    assert kept_p2.problem.endswith("number 2")  # id p2's first row in the file, though a later shard has it
    assert all(s.problem_id != "leak" for s in merged["samples"])


@pytest.mark.parametrize("n", [1, 2, 4])
def test_any_number_of_shards_gives_one_collects_mix_and_holdout(tmp_path: Path, n: int) -> None:
    config = _config(
        tmp_path, _rows(), holdout={"fraction": 0.25}, mix_by="source", mix={"big": 3, "small": 1}, size=24
    )
    merged, stats = _sharded(tmp_path, config, n=n)
    single = _same_as_collect(merged, stats, config)
    assert stats.metrics["train"] == single.metrics["train"] and stats.metrics["cots_out"] == single.metrics["cots_out"]
    assert stats.dropped.get("resampled_out", 0) > 0


def test_merge_refuses_files_that_are_not_every_shard_of_one_run(tmp_path: Path) -> None:
    config = _config(tmp_path, _rows())
    _sharded(tmp_path / "a", config, n=3)
    _sharded(tmp_path / "b", config, n=2)

    def files(run: str, shards: list[int]) -> dict[str, list[str]]:
        d = tmp_path / run
        return {
            "parts": [str(d / f"shard{i}/problems.jsonl") for i in shards],
            "part_samples": [str(d / f"shard{i}/samples.jsonl") for i in shards],
            "part_keys": [str(d / f"shard{i}/keys") for i in shards],
            "part_rejects": [str(d / f"shard{i}/rejects.jsonl") for i in shards],
        }

    out = {k: tmp_path / f"bad.{k}.jsonl" for k in ("problems", "heldout", "samples")}

    def merge(parts: dict[str, list[str]], cfg: dict[str, Any] = config) -> None:
        run_stage("collect_merge", config=cfg, paths={**parts, **out}, tracking={"enabled": False})

    cases: list[tuple[dict[str, list[str]], str]] = [
        (files("a", [1, 0, 2]), r"place 0 .* are shard 1 of 3: give the shards' files in shard order"),
        (files("a", [0, 1]), r"is shard 0 of 3, but 2 shard\(s\) are given"),
        (files("a", [0, 0, 2]), r"place 1 .* are shard 0 of 3"),
        ({k: v[:2] + files("a", [2])[k] for k, v in files("b", [0, 1]).items()}, r"is shard 0 of 2, but 3"),
        ({**files("a", [0, 1, 2]), "part_keys": files("a", [0, 1, 2])["part_keys"][:2]}, "one of each per shard"),
        (
            {**files("a", [0, 1, 2]), "parts": [files("b", [0])["parts"][0], *files("a", [1, 2])["parts"]]},
            r"row \d+ is '.*', but shard 0's keys have '.*' there: .* different collect-shard runs",
        ),
        (
            {**files("a", [0, 1, 2]), "part_rejects": list(reversed(files("a", [0, 1, 2])["part_rejects"]))},
            r"is not shard 0's rejects file",
        ),
        (
            {**files("a", [0, 1, 2]), "part_keys": [files("a", [0])["parts"][0], *files("a", [1, 2])["part_keys"]]},
            "not the keys file of a collect shard",
        ),
    ]
    every = files("a", [0, 1, 2])
    cases += [
        ({**every, "part_samples": [every["part_samples"][i] for i in (0, 2, 1)]}, "is not shard 1's CoTs file"),
        ({**every, "part_samples": files("b", [0, 1])["part_samples"] + every["part_samples"][2:]}, "CoTs file"),
        ({**every, "part_rejects": [every["part_keys"][0], *every["part_rejects"][1:]]}, "not a rejects file"),
        ({**every, "part_rejects": [str(tmp_path / "nope.jsonl"), *every["part_rejects"][1:]]}, "no such rejects"),
        ({**every, "part_keys": [str(tmp_path / "nope.npz"), *every["part_keys"][1:]]}, "no such keys file"),
    ]
    for parts, message in cases:
        with pytest.raises(ConfigError, match=message):
            merge(parts)
    with pytest.raises(ConfigError, match="collected with another collect config"):
        merge(files("a", [0, 1, 2]), {**config, "seed": 99})
    assert not out["problems"].exists()  # nothing half-written
    for index, count, message in ((3, 3, r"shard index 3 of 3: give 0..2"), (-1, 3, "index -1"), (0, 0, "count 0")):
        with pytest.raises(ConfigError, match=message):
            run_stage(
                "collect_shard",
                config=config,
                paths={"problems": tmp_path / "x.jsonl", "samples": tmp_path / "xs.jsonl", "keys": tmp_path / "xk"},
                params={"shard_index": index, "shard_count": count},
                tracking={"enabled": False},
            )


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


def test_the_config_digest_survives_kfps_json() -> None:
    """A pipeline hands the shards and the merge their config through KFP's JSON (a loop item, a task output):
    mappings may come back in another key order and integers as floats; the digest must not change."""
    from kubedistill.data.collect import config_digest

    data = {
        "sources": [{"kind": "reasoning_gym", "tasks": {"chain_sum": 40, "basic_arithmetic": 20}, "seed": 11}],
        "mix": {"math": 1.0},
        "seed": 7,
    }
    as_kfp = json.loads(json.dumps(data).replace("40", "40.0").replace(": 11", ": 11.0"))
    as_kfp["sources"][0]["tasks"] = dict(reversed(list(as_kfp["sources"][0]["tasks"].items())))
    one, other = validate_config(CollectConfig, data), validate_config(CollectConfig, as_kfp)
    assert config_digest(one) == config_digest(other)
    assert config_digest(one) != config_digest(validate_config(CollectConfig, {**data, "seed": 8}))
