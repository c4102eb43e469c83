"""Dedup across shards: keys computed per shard (exact-key hashes, shingle hashes, saved as .npz and read
back), decided once over all shards; a duplicate whose copies fall in two different shards is caught,
and the decisions equal those of single-process dedup over the concatenated shards."""

from __future__ import annotations

import random
from pathlib import Path

from kubedistill.core.records import Problem, StageStats
from kubedistill.core.sharding import shard_of
from kubedistill.data.dedup import DedupConfig, DedupKeys, apply_drops, dedup, dedup_keys, global_dedup

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


def _problem(pid: str, text: str, source: str = "s") -> Problem:
    return Problem(id=pid, problem=text, source=source)


def _corpus() -> list[Problem]:
    rnd = random.Random(3)
    out = [_problem(f"p{i}", " ".join(rnd.choice(WORDS) for _ in range(80)) + f" number {i}") for i in range(60)]
    out.append(_problem("exact-copy", "  " + out[0].problem.upper() + " "))  # same text, other case and spaces
    words = out[1].problem.split()
    words[3] = "changed"
    out.append(_problem("near-copy", " ".join(words)))  # one word changed: a near duplicate of p1
    out.append(_problem("p2", "a different problem under an id that is taken already"))
    return out


def _shards(problems: list[Problem], n: int) -> list[list[Problem]]:
    parts: list[list[Problem]] = [[] for _ in range(n)]
    for p in problems:
        parts[shard_of(p.id, n)].append(p)
    return parts


def test_a_duplicate_in_another_shard_is_caught(tmp_path: Path) -> None:
    cfg = DedupConfig()
    problems = _corpus()
    shards = _shards(problems, 3)
    where = {p.id: i for i, part in enumerate(shards) for p in part}
    # the planted copies really are in other shards than what they copy
    assert where["exact-copy"] != where["p0"] and where["near-copy"] != where["p1"]

    per_shard = [dedup(part, cfg, StageStats(stage="collect")) for part in shards]
    missed = {p.id for kept in per_shard for p in kept}
    assert {"exact-copy", "near-copy"} <= missed  # per-shard dedup cannot see them

    files = []
    for i, part in enumerate(shards):  # each shard's task writes its keys; the merge task reads them all
        path = tmp_path / f"keys-{i}.npz"
        dedup_keys(part, cfg).save(path)
        files.append(path)
    drops = global_dedup([DedupKeys.load(f) for f in files], cfg)
    # the copy in the earlier shard is kept (shard order, then row order), whichever of the two it is
    (exact,) = [d for d in drops if d.reason == "duplicate"]
    assert {exact.id, exact.detail.removeprefix("duplicate of ")} == {"p0", "exact-copy"}
    (near,) = [d for d in drops if d.reason == "near_duplicate"]
    assert near.id in {"p1", "near-copy"} and ({"p1", "near-copy"} - {near.id}).pop() in near.detail
    assert [d.reason for d in drops if d.id == "p2"] == ["duplicate_id"]

    kept_global: list[Problem] = []
    stats = StageStats(stage="collect")
    for i, part in enumerate(shards):
        kept_global += apply_drops(part, [d for d in drops if d.part == i], stats)
    # the same decisions as one process deduplicating the shards one after the other
    single_stats = StageStats(stage="collect")
    single = dedup([p for part in shards for p in part], cfg, single_stats)
    assert [p.id for p in kept_global] == [p.id for p in single]
    assert sorted((r.reason, r.detail) for r in stats.rejects) == sorted(
        (r.reason, r.detail) for r in single_stats.rejects
    )
    assert stats.dropped == {"duplicate": 1, "near_duplicate": 1, "duplicate_id": 1}


def test_near_exempt_sources_and_switches() -> None:
    a = _problem("a", "compute the sum of 3 and 4 and report it as a number please", source="rg")
    b = _problem("b", "compute the sum of 3 and 5 and report it as a number please", source="rg")
    cfg = DedupConfig(ngram=2, threshold=0.5)
    keys = [dedup_keys([a], cfg, {"rg"}), dedup_keys([b], cfg, {"rg"})]
    assert global_dedup(keys, cfg) == []  # exempt source: exact and id dedup only
    keys = [dedup_keys([a], cfg), dedup_keys([b], cfg)]
    assert [d.id for d in global_dedup(keys, cfg)] == ["b"]
    assert global_dedup(keys, cfg.model_copy(update={"near": False})) == []


def test_keys_computed_in_chunks_equal_keys_computed_at_once() -> None:
    cfg = DedupConfig()
    problems = _corpus()
    whole, parts = dedup_keys(problems, cfg), dedup_keys(problems, cfg, chunk=7)
    assert whole.ids == parts.ids and (whole.counts == parts.counts).all()
    assert (whole.shingles == parts.shingles).all() and (whole.exact == parts.exact).all()
