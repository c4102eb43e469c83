"""Sharding of the teacher-bound stages (generate, judge, rewrite, score) across parallel KFP tasks.

A pipeline with ``shards: N`` runs those stages N times side by side (``dsl.ParallelFor``); task ``i``
takes the records whose problem id hashes to ``i`` (a stable hash: the same problem lands in the same
shard in every run and every stage, so request caches and KFP's cache keep working), and
:func:`merge` joins the parts afterwards — records, rejects and metrics — into what one unsharded task
would have written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Summed over shards; every other metric is averaged (rates, means) except elapsed_s (the slowest shard).
_SUMMED_PREFIXES = ("n_", "dropped.", "source.")
_SUMMED_WORDS = ("tokens", "requests", "count", "retries", "failed", "cached")


def shard_of(key: str, count: int) -> int:
    """The shard (0 .. count-1) of a problem id; stable across processes and runs."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


def shard_key(record: Any) -> str:
    """A record's problem id: ``problem_id`` for samples and pairs, ``id`` for problems."""
    return str(getattr(record, "problem_id", None) or record.id)


def select(records: Sequence[Any], index: int, count: int) -> list[Any]:
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} outside 0..{count - 1}")
    if count == 1:
        return list(records)
    return [r for r in records if shard_of(shard_key(r), count) == index]


def merge_metrics(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for p in parts for k in p})
    out: dict[str, float] = {}
    for k in keys:
        values = [float(p[k]) for p in parts if k in p]
        if k.startswith(_SUMMED_PREFIXES) or any(w in k for w in _SUMMED_WORDS):
            out[k] = sum(values)
        elif k == "elapsed_s":
            out[k] = max(values)
        else:
            out[k] = sum(values) / len(values)
    return out


def merge(parts: Sequence[str | Path], output: str | Path) -> int:
    """Concatenate JSONL record files (in shard order) into ``output``, atomically; returns the rows."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    with tmp.open("w") as f:
        for part in parts:
            p = Path(part)
            if not p.exists():
                continue
            with p.open() as part_file:  # line by line: a shard's part may be gigabytes
                for line in part_file:
                    if line.strip():
                        f.write(line.rstrip("\n") + "\n")
                        n += 1
    tmp.replace(out)
    return n


def read_metrics(path: str | Path) -> dict[str, float]:
    p = Path(path)
    return {k: float(v) for k, v in json.loads(p.read_text()).items()} if p.exists() else {}


def shard_plan(count: int, settings: dict[str, Any] | None = None) -> list[Any]:
    """Stage `shard_plan`: the shard indices (0 .. count-1) a ParallelFor runs the teacher-bound stages
    over; with ``settings`` (the sections the loop's tasks take), one ``{"index": i, **settings}`` per shard,
    which the tasks in the loop read as ``shard.index``, ``shard.generate_config``... (kfp.local 2.17 hands a
    loop's tasks the loop item in place of any other task's output parameter: settings reach them this way).
    Raises ``ConfigError`` (exit 2) outside 1..64."""
    from kubedistill.core.config import ConfigError

    if not 1 <= count <= 64:
        raise ConfigError(f"shards: {count} is outside 1..64")
    if settings:
        return [{"index": i, **settings} for i in range(count)]
    return list(range(count))


def merge_shards(
    *, parts: Sequence[str], part_rejects: Sequence[str], part_metrics: Sequence[str], merged: str, rejects: str
) -> dict[str, float]:
    """Stage `merge_shards`: join the shards of a sharded stage — records into ``merged``, rejects into
    ``rejects`` (JSONL, in shard order) — and return their metrics, counts summed (:func:`merge_metrics`)."""
    merge(parts, merged)
    merge(part_rejects, rejects)
    return merge_metrics([read_metrics(m) for m in part_metrics])
