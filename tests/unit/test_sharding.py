"""Sharding of the teacher-bound stages: a stable partition by problem id, and merges that give back
what one unsharded task writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubedistill.core import sharding
from kubedistill.core.config import ConfigError
from kubedistill.core.records import Problem, Sample, read_records, write_records


def _problems(n: int) -> list[Problem]:
    return [Problem(id=f"p{i}", problem=f"q{i}", answer=str(i), source="t") for i in range(n)]


def test_shards_partition_the_problems_and_keep_a_problems_samples_together() -> None:
    problems = _problems(200)
    parts = [sharding.select(problems, i, 4) for i in range(4)]
    ids = [p.id for part in parts for p in part]
    assert sorted(ids) == sorted(p.id for p in problems) and len(ids) == len(set(ids))  # each exactly once
    assert all(30 <= len(part) <= 70 for part in parts)  # roughly even
    samples = [
        Sample(problem_id=f"p{i}", teacher="t", temperature=0.6, sample_index=k, text="x")
        for i in range(200)
        for k in range(2)
    ]
    for i, part in enumerate(parts):
        mine = {s.problem_id for s in sharding.select(samples, i, 4)}
        assert mine == {p.id for p in part}
    assert sharding.select(problems, 0, 1) == problems
    with pytest.raises(ValueError, match="outside"):
        sharding.select(problems, 4, 4)


def test_the_shard_of_an_id_is_the_same_in_every_process() -> None:
    code = "from kubedistill.core.sharding import shard_of; print([shard_of(f'p{i}', 7) for i in range(20)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other.strip() == str([sharding.shard_of(f"p{i}", 7) for i in range(20)])


def test_merge_joins_records_and_rejects_and_sums_counts(tmp_path: Path) -> None:
    parts, rejects, metrics = [], [], []
    for i, chunk in enumerate((_problems(3), _problems(5)[3:])):
        parts.append(tmp_path / f"part{i}")
        write_records(parts[-1], chunk)
        rejects.append(tmp_path / f"rej{i}")
        rejects[-1].write_text(json.dumps({"reason": "bad", "detail": str(i)}) + "\n")
        metrics.append(tmp_path / f"m{i}")
        metrics[-1].write_text(
            json.dumps({"n_in": 4 + i, "n_out": 3 - i, "dropped.bad": 1, "elapsed_s": 2.0 + i, "req_per_s": 1.0 + i})
        )
    merged = sharding.merge_shards(
        parts=[str(p) for p in parts],
        part_rejects=[str(p) for p in rejects],
        part_metrics=[str(p) for p in metrics],
        merged=str(tmp_path / "all"),
        rejects=str(tmp_path / "all-rejects"),
    )
    assert [p.id for p in read_records(tmp_path / "all", Problem)] == ["p0", "p1", "p2", "p3", "p4"]
    assert len((tmp_path / "all-rejects").read_text().splitlines()) == 2
    assert merged == {"n_in": 9.0, "n_out": 5.0, "dropped.bad": 2.0, "elapsed_s": 3.0, "req_per_s": 1.5}
    assert sharding.shard_plan(3) == [0, 1, 2]
    with pytest.raises(ConfigError):
        sharding.shard_plan(0)


def test_each_shard_has_its_own_request_cache() -> None:
    from kubedistill.core.paths import request_cache_dir

    assert request_cache_dir("/cache", shard=(1, 3)) == Path("/cache/shard-1-of-3")  # pods never share one SQLite
    assert request_cache_dir("/cache", shard=(0, 1)) == Path("/cache")
    assert request_cache_dir(None, beside="/out/results", shard=(2, 4)) == Path("/out/results.cache/shard-2-of-4")
    assert request_cache_dir(None) is None
