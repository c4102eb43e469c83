"""The thin layer every front-end (CLI subcommand, KFP component) uses to run a stage over files.

read inputs (bad rows → rejects) → call the pure stage function → write rejects + stats → write the
output atomically (or, when the stage reports a fatal reason such as ``request_failed``, write no
output and raise :class:`StageFailed`) → log params, counts and files to MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kubedistill.config import TrackingConfig
from kubedistill.records import Reject, StageStats, read_records, write_records, write_rejects


class StageFailed(RuntimeError):
    """A stage ran but its result must not be used (e.g. teacher requests failed after all retries)."""

    def __init__(self, message: str, stats: StageStats) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass(frozen=True)
class Outputs:
    """Where a stage writes: the records, the rejects (JSONL, one reason per row) and the stats (JSON)."""

    output: Path
    rejects: Path
    stats: Path

    @classmethod
    def beside(cls, output: str | Path, rejects: str | Path | None = None, stats: str | Path | None = None) -> Outputs:
        """``samples.jsonl`` → ``samples.rejects.jsonl`` and ``samples.stats.json`` unless given."""
        out = Path(output)
        stem = out.name
        for suffix in (".jsonl", ".parquet", ".json"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        return cls(
            output=out,
            rejects=Path(rejects) if rejects else out.with_name(f"{stem}.rejects.jsonl"),
            stats=Path(stats) if stats else out.with_name(f"{stem}.stats.json"),
        )


def read_input(path: str | Path, cls: type[BaseModel], stage: str) -> tuple[list[Any], list[Reject]]:
    collector = StageStats(stage=stage)
    records = read_records(path, cls, stage=stage, stats=collector)
    return records, collector.rejects


def merge_read_rejects(stats: StageStats, rejects: Sequence[Reject]) -> None:
    """Rows refused while reading count as stage input that was dropped."""
    if rejects:
        stats.n_in += len(rejects)
        stats.add_rejects(rejects)


def save(
    records: Sequence[BaseModel],
    stats: StageStats,
    outputs: Outputs,
    *,
    fatal: Iterable[str] = (),
) -> None:
    write_rejects(outputs.rejects, stats.rejects)
    outputs.stats.parent.mkdir(parents=True, exist_ok=True)
    outputs.stats.write_text(stats.model_dump_json(indent=2))
    bad = {r: stats.dropped[r] for r in fatal if stats.dropped.get(r)}
    if bad:
        what = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in bad.items())
        raise StageFailed(
            f"{stats.stage}: {what}; no output written. Listed in {outputs.rejects}. "
            "Finished requests are cached: run the same command again to retry only the failed ones.",
            stats,
        )
    write_records(outputs.output, records)


def run_stage(
    stage: str,
    fn: Callable[..., tuple[list[Any], StageStats]],
    *,
    inputs: Mapping[str, tuple[str | Path, type[BaseModel]]],
    outputs: Outputs,
    cfg: BaseModel | None,
    tracking: TrackingConfig | None = None,
    fatal: Iterable[str] = (),
    primary: str | None = None,
    shard: tuple[int, int] = (0, 1),
    **kwargs: Any,
) -> StageStats:
    """Run ``fn(<primary records>, cfg, **other inputs, **kwargs)`` over files.

    ``inputs`` maps argument names to (path, record class); the first one (or ``primary``) is passed
    positionally and its read-rejects count as this stage's drops. Other inputs are read strictly.
    ``shard = (index, count)`` keeps only the primary records of that shard (kubedistill/sharding.py)."""
    from kubedistill import tracking as tr
    from kubedistill.sharding import select

    tracking = tracking or TrackingConfig()
    names = list(inputs)
    primary = primary or names[0]
    loaded: dict[str, list[Any]] = {}
    read_rejects: list[Reject] = []
    for name, (path, cls) in inputs.items():
        records, rejects = read_input(path, cls, stage)
        loaded[name] = records
        if name == primary:
            read_rejects = rejects
        elif rejects:
            read_rejects.extend(rejects)
    params = cfg.model_dump(mode="json") if cfg is not None else {}
    with tr.stage_run(
        stage,
        experiment=tracking.experiment,
        tracking_uri=tracking.tracking_uri,
        params=params,
        enabled=tracking.enabled,
    ) as run:
        others = {k: v for k, v in loaded.items() if k != primary}
        mine = select(loaded[primary], *shard)
        if shard[0] != 0:
            read_rejects = []  # unreadable rows have no problem id: shard 0 reports them, once
        records, stats = fn(mine, cfg, **others, **kwargs) if cfg is not None else fn(mine, **others, **kwargs)
        merge_read_rejects(stats, read_rejects)
        if run is not None:
            stats.info["mlflow_run_id"] = run.info.run_id
        try:
            save(records, stats, outputs, fatal=fatal)
        finally:
            if run is not None:
                tr.log_stage_stats(stats, artifacts={"rejects": outputs.rejects})
    return stats


def load_stats(path: str | Path) -> StageStats:
    return StageStats.model_validate(json.loads(Path(path).read_text()))
