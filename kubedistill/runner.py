"""The one wrapper every front-end (CLI subcommand, KFP component, torchrun rank) runs a stage through.

:func:`run_stage` takes a stage's name (a row of :mod:`kubedistill.stages`), its config (a dict, as a
recipe or a KFP parameter gives it), the paths of its inputs and outputs and its plain parameters, and:

1. validates the config (one-line :class:`~kubedistill.core.config.ConfigError` naming the key) and
   resolves every reference in it — model, benchmark, reasoning-gym task, prompt, file
   (:mod:`kubedistill.preflight`) — and remembers its secret values for the redaction step;
2. for a ``train`` stage on a pod with several GPUs, starts itself once per GPU (kubedistill/launch.py);
3. checks that every output path can be written, then reads the record inputs: a file that cannot be
   read at all is a one-line :class:`~kubedistill.core.records.RecordsError` (exit 2) before any work;
   bad rows — and rows whose id was already read — become rejects with the row as it was; the first
   input is the one that is sharded;
4. opens the stage's MLflow run (params from the config, redacted; rank 0 only);
5. calls the stage function (the calling convention is in :mod:`kubedistill.stages`);
6. writes the record outputs atomically, the rejects and the stats — or, when the stage reports a fatal
   drop reason such as ``request_failed``, writes no output and raises :class:`StageFailed` (exit 3);
7. logs counts, metrics and the rejects / stats files (and any ``log_outputs`` directories) to MLflow.

Everything written goes through the one redaction step (:mod:`kubedistill.core.secrets`): rejects and
stats masked in full, record outputs with known secret values removed, MLflow params redacted.
Rows refused while reading the *first* record input count as stage input that was dropped
(``n_in = n_out + sum(dropped)``); those of other inputs (the problems file of ``verify``) are written to
the rejects file too, but counted apart, in ``stats.info["input_rejects"]``.

and returns a :class:`StageResult`: the stats, the flat metrics a KFP Metrics artifact gets, and the
function's value for ``task`` stages.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kubedistill.core.config import validate_config
from kubedistill.core.errors import PartialFailure
from kubedistill.core.records import (
    JsonlWriter,
    PreferencePair,
    Problem,
    RecordStream,
    Reject,
    Sample,
    StageStats,
    read_records,
    records_index,
    write_json,
    write_records,
    write_rejects,
)
from kubedistill.stages import Port, Stage, stage
from kubedistill.tracking import TrackingConfig

RECORD_CLASSES: dict[str, type[BaseModel]] = {"Problem": Problem, "Sample": Sample, "PreferencePair": PreferencePair}


class StageFailed(PartialFailure, RuntimeError):
    """A stage ran but its result must not be used (e.g. teacher requests failed after all retries)."""

    def __init__(self, message: str, stats: StageStats) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass
class StageResult:
    """What :func:`run_stage` did: ``metrics`` (flat, for a KFP Metrics artifact and the report),
    ``stats`` (None for tasks), ``value`` (what the function returned besides its stats: a task's return
    value, a records stage's records) and where it wrote rejects and stats."""

    metrics: dict[str, float] = field(default_factory=dict)
    stats: StageStats | None = None
    value: Any = None
    rejects: Path | None = None
    stats_path: Path | None = None


def stage_metrics(stats: StageStats) -> dict[str, float]:
    """A stage's stats as flat metrics: ``n_in``, ``n_out``, ``n_dropped``, ``dropped.<reason>``, the
    stage's own metrics and ``elapsed_s`` (seconds)."""
    m: dict[str, float] = {"n_in": float(stats.n_in), "n_out": float(stats.n_out), "n_dropped": float(stats.n_dropped)}
    m.update({f"dropped.{k}": float(v) for k, v in stats.dropped.items()})
    m.update({k: float(v) for k, v in stats.metrics.items()})
    m["elapsed_s"] = round(stats.elapsed_s, 3)
    return m


def beside(output: str | Path, suffix: str) -> Path:
    """``samples.jsonl`` -> ``samples<suffix>`` (``.rejects.jsonl``, ``.stats.json``); a KFP artifact path
    (no suffix) -> ``<path><suffix>``."""
    out = Path(output)
    stem = out.name
    for ext in (".jsonl.gz", ".jsonl", ".parquet", ".json"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    return out.with_name(f"{stem}{suffix}")


def tracking_config(tracking: TrackingConfig | Mapping[str, Any] | None) -> TrackingConfig:
    """The stage's tracking settings; off on every rank but 0 of a multi-process run (one MLflow run per stage)."""
    cfg = (
        tracking
        if isinstance(tracking, TrackingConfig)
        else validate_config(TrackingConfig, tracking or {}, "tracking")
    )
    if cfg.enabled and int(os.environ.get("RANK", "0")) != 0:
        cfg = cfg.model_copy(update={"enabled": False})
    return cfg


def run_stage(
    name: str,
    *,
    config: BaseModel | Mapping[str, Any] | None = None,
    tracking: TrackingConfig | Mapping[str, Any] | None = None,
    paths: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    relaunch: bool = True,
    allow_empty_inputs: bool = True,
) -> StageResult:
    """Run stage ``name`` over files (see the module docstring).

    ``paths`` maps port names to paths (a list of paths for ``many`` ports, a metrics dict for a Metrics
    input); a records or files stage also takes ``rejects`` and ``stats`` there (default: beside its
    first output). ``params`` are the stage's plain parameters. ``allow_empty_inputs`` False (the command
    line: the files are a person's) refuses a record input with no rows unless its port is ``empty_ok``;
    True (a pipeline: an empty shard is normal) accepts it and notes it in ``stats.info["empty_inputs"]``.
    Raises ``ConfigError`` / ``RecordsError`` (exit 2) for a bad config, a reference that does not
    resolve, or a file that cannot be read or written, :class:`StageFailed` (exit 3) for a fatal drop
    reason."""
    from kubedistill.core.secrets import remember_config

    spec = stage(name)
    paths = {k: v for k, v in dict(paths or {}).items() if v not in (None, "")}
    params = {p.name: p.default for p in spec.params if not p.required} | dict(params or {})
    cfg = _config(spec, config)
    tcfg = tracking_config(tracking) if spec.tracked else None
    remember_config({"config": cfg.model_dump(mode="json") if cfg is not None else None, "params": params})
    if tcfg is not None:
        remember_config(tcfg.model_dump(mode="json"))
    if cfg is not None:
        from kubedistill.preflight import check_references

        check_references(cfg, spec.name)
    _check_model_params(spec, params)

    if relaunch and spec.role == "train":
        from kubedistill.launch import relaunch as relaunch_on_gpus

        launched = relaunch_on_gpus(
            spec.name,
            {
                "config": cfg.model_dump(mode="json") if cfg is not None else None,
                "tracking": tracking_config(tracking).model_dump(mode="json"),
                "paths": {k: (str(v) if isinstance(v, Path) else v) for k, v in paths.items()},
                "params": params,
            },
        )
        if launched is not None:
            return StageResult(metrics=launched)

    if spec.kind == "task":
        return _run_task(spec, cfg, tcfg, paths, params)
    return _run_tracked(spec, cfg, tcfg or TrackingConfig(enabled=False), paths, params, allow_empty_inputs)


# ------------------------------------------------------------------------------------------ internals


def _config(spec: Stage, config: BaseModel | Mapping[str, Any] | None) -> BaseModel | None:
    cls = spec.load_config()
    if cls is None:
        return None
    if isinstance(config, cls):
        return config.model_copy(deep=True)
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config or {})
    return validate_config(cls, data, spec.name)


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


def _port_value(port: Port, value: Any) -> Any:
    if port.many:
        return [str(v) for v in value]
    if port.type == "Metrics" and not port.records:
        return value if isinstance(value, Mapping) else _read_metrics(value)
    return str(value)


def _read_metrics(path: Any) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return {}


def _run_task(
    spec: Stage, cfg: BaseModel | None, tcfg: TrackingConfig | None, paths: Mapping[str, Any], params: dict[str, Any]
) -> StageResult:
    fn = spec.load_fn()
    kwargs: dict[str, Any] = {}
    for port in (*spec.inputs, *spec.outputs):
        if port.name in paths and port.name != "metrics":
            kwargs[port.name] = _port_value(port, paths[port.name])
    kwargs.update(params)
    if _accepts(fn, "tracking"):
        kwargs["tracking"] = tcfg if tcfg is not None and tcfg.enabled else None
    value = fn(cfg, **kwargs) if cfg is not None else fn(**kwargs)
    metrics = value if isinstance(value, dict) and "metrics" in {p.name for p in spec.outputs} else {}
    return StageResult(metrics={k: float(v) for k, v in metrics.items()}, value=value)


@dataclass
class _Inputs:
    loaded: dict[str, Any]
    primary_rejects: list[Reject]  # rows of the first record input: stage input that was dropped
    other_rejects: dict[str, list[Reject]]  # rows of the other record inputs, by port
    empty: list[str]


def _read_inputs(
    spec: Stage,
    paths: Mapping[str, Any],
    allow_empty: bool,
    *,
    streamed: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> _Inputs:
    """Record inputs as lists (their unreadable rows and repeated ids as rejects), other ports as paths.
    ``streamed``: the first record input is read by a stream instead (left out here), and the other record
    inputs — looked up by id (the problems) — come as a read-only mapping id -> record
    (:func:`~kubedistill.core.records.records_index`: a :class:`RecordIndex` of byte offsets for JSONL,
    16 bytes a record; a dict for Parquet / gzip), so that memory does not grow with them either. A port
    marked ``streamed`` comes as a :class:`RecordStream` filtered to ``shard`` (its refused rows are
    collected as they are met, in ``other_rejects``)."""
    from kubedistill.core.config import ConfigError

    out = _Inputs({}, [], {}, [])
    primary: str | None = None
    first = next((p for p in spec.inputs if p.records is not None), None)
    for port in spec.inputs:
        if streamed and port is first:
            primary = port.name
            continue
        if port.name not in paths:
            if port.records is not None and not (port.optional or port.cli_optional):
                raise ConfigError(f"{spec.name}: no {port.name} given")
            continue
        if port.records is None:
            if port.type == "Model" and not port.many:
                _check_model_input(spec, port, paths[port.name])
            out.loaded[port.name] = _port_value(port, paths[port.name])
            continue
        if port.streamed and primary is not None:
            from kubedistill.core.sharding import shard_key, shard_of

            index, count = shard
            met: list[Reject] = []
            stream_in = RecordStream(
                paths[port.name],
                RECORD_CLASSES[port.records],
                stage=spec.name,
                on_reject=met.append,
                keep=None
                if count == 1 or not spec.shardable
                else (lambda r, i=index, c=count: shard_of(shard_key(r), c) == i),
                allow_empty=allow_empty or port.empty_ok,
            )
            stream_in.check()
            out.loaded[port.name] = stream_in
            out.other_rejects[port.name] = met
            continue
        if streamed and primary is not None:  # looked up by id (the problems): an index, not a list
            refused: list[Reject] = []
            index_of = records_index(
                paths[port.name],
                RECORD_CLASSES[port.records],
                stage=spec.name,
                on_reject=refused.append,
                allow_empty=allow_empty or port.empty_ok,
            )
            out.loaded[port.name] = index_of
            if not index_of and not refused:
                out.empty.append(port.name)
            if refused:
                out.other_rejects[port.name] = refused
            continue
        collector = StageStats(stage=spec.name)
        records = read_records(
            paths[port.name],
            RECORD_CLASSES[port.records],
            stage=spec.name,
            stats=collector,
            allow_empty=allow_empty or port.empty_ok,
        )
        out.loaded[port.name] = records
        if not records and not collector.rejects:
            out.empty.append(port.name)
        if primary is None:
            primary = port.name
            out.primary_rejects = collector.rejects
        elif collector.rejects:
            out.other_rejects[port.name] = collector.rejects
    return out


def _check_model_params(spec: Stage, params: Mapping[str, Any]) -> None:
    """Plain parameters that name a model (``base_model`` of grpo / evaluate) resolve: exit 2 before work."""
    from kubedistill.core.config import ConfigError
    from kubedistill.preflight import model_problem

    for p in spec.params:
        value = params.get(p.name)
        if p.model_reference and isinstance(value, str) and value:
            why = model_problem(value)
            if why:
                raise ConfigError(f"{spec.name}: --{p.name.replace('_', '-')}: {why}")


def _check_model_input(spec: Stage, port: Port, value: Any) -> None:
    """A model input (a model directory, or a reference such as an alias) that cannot be one: exit 2
    before any work."""
    from kubedistill.core.records import RecordsError
    from kubedistill.preflight import model_problem

    p = Path(str(value))
    if p.is_dir():
        return
    why = f"{p}: is a file, not a model directory" if p.is_file() else model_problem(str(value))
    if why:
        raise RecordsError(f"{spec.name}: --{port.name.replace('_', '-')}: {why}")


def _check_outputs(spec: Stage, outputs: Mapping[str, Any], side: Sequence[Path | None]) -> None:
    """Refuse, before any work, an output that cannot be written: a records file whose path is a
    directory, a model directory whose path is a file, a parent that is a file, or two outputs (rejects,
    stats) at one path."""
    from kubedistill.core.records import RecordsError

    seen: dict[Path, str] = {}
    kinds = {p.name: "file" if p.records is not None else "dir" if p.type == "Model" else "" for p in spec.outputs}
    files = [(name, Path(outputs[name]), kinds[name]) for name in outputs]
    files += [(name, path, "file") for name, path in zip(("rejects", "stats"), side, strict=True) if path is not None]
    for name, path, kind in files:
        key = path.resolve()
        if key in seen and seen[key] != name:
            raise RecordsError(f"{spec.name}: {name} and {seen[key]} are the same file ({path})")
        seen[key] = name
        if kind == "file" and path.is_dir():
            raise RecordsError(f"{path}: is a directory; the {name} output is a file")
        if kind == "dir" and path.is_file():
            raise RecordsError(f"{path}: is a file; the {name} output is a model directory")
        parent = next((q for q in path.parents if q.exists()), None)
        if parent is not None and not parent.is_dir():
            raise RecordsError(f"{path}: cannot be written ({parent} is a file, not a directory)")
        if parent is not None and not os.access(parent, os.W_OK):
            raise RecordsError(f"{path}: cannot be written (no write permission in {parent})")


def _run_tracked(
    spec: Stage,
    cfg: BaseModel | None,
    tcfg: TrackingConfig,
    paths: Mapping[str, Any],
    params: dict[str, Any],
    allow_empty: bool = True,
) -> StageResult:
    from kubedistill import tracking as tr
    from kubedistill.core.paths import request_cache_dir
    from kubedistill.core.sharding import select

    outputs = {p.name: paths[p.name] for p in spec.outputs if p.name in paths and p.name != "metrics"}
    rejects_path, stats_path = _side_files(spec, paths)
    _check_outputs(spec, outputs, (rejects_path, stats_path))
    shard = (int(params.get("shard_index", 0)), int(params.get("shard_count", 1)))
    stream = _open_stream(spec, paths, allow_empty, shard) if spec.streams and spec.kind == "records" else None
    inputs = _read_inputs(spec, paths, allow_empty, streamed=stream is not None, shard=shard)
    loaded = inputs.loaded
    read_rejects = inputs.primary_rejects if stream is None else []
    other_rejects = inputs.other_rejects
    fn = spec.load_fn()
    record_inputs = [p.name for p in spec.inputs if p.records is not None and p.name in loaded]
    primary = record_inputs[0] if record_inputs else None
    if stream is not None:
        primary = stream.port
        loaded[primary] = stream.records
    elif primary is not None and spec.shardable:
        loaded[primary] = select(loaded[primary], *shard)
    if shard[0] != 0 and spec.shardable:
        read_rejects, other_rejects = [], {}  # unreadable rows have no problem id: shard 0 reports them, once
    client = getattr(cfg, "client", None)
    if client is not None:  # every teacher-bound stage keeps its answers (kubedistill/core/paths.py)
        client.cache_dir = request_cache_dir(client.cache_dir, stage=spec.name, shard=shard)

    kwargs: dict[str, Any] = {k: v for k, v in loaded.items() if k != primary}
    if spec.kind == "files":
        kwargs.update({k: str(v) for k, v in outputs.items()})
    else:  # a records stage's outputs that are not records (collect_shard's keys): paths the function writes
        own = [p.name for p in spec.outputs if p.records is None and p.name in outputs and p.name != "rejects"]
        kwargs.update({name: str(outputs[name]) for name in own})
    kwargs.update({k: v for k, v in params.items() if k not in ("shard_index", "shard_count") or _accepts(fn, k)})
    if _accepts(fn, "tracking"):
        kwargs["tracking"] = tcfg if tcfg.enabled else None
    positional = ([loaded[primary]] if primary is not None else []) + ([cfg] if cfg is not None else [])

    logged = {
        **(cfg.model_dump(mode="json") if cfg is not None else {}),
        **_scalar_params(spec, params),
        **{p.name: str(paths[p.name]) for p in spec.inputs if p.records is None and p.name in paths},
    }
    if stream is not None:  # every input is readable: the rejects file may be started
        stream.writer = JsonlWriter(rejects_path, diagnostics=True) if rejects_path is not None else None
        kwargs["reject_sink"] = stream.write_reject
    with tr.stage_run(
        spec.name,
        experiment=tcfg.experiment,
        tracking_uri=tcfg.tracking_uri,
        params=logged,
        enabled=tcfg.enabled,
    ) as run:
        try:
            result, stats = fn(*positional, **kwargs)
            if stream is not None:  # the output is written as the stage yields it; then its counts are final
                _save_stream(spec, result, outputs, lambda: stats)
                stream.finish(stats, other_rejects)
                other_rejects = {}
        except BaseException:
            if stream is not None:
                stream.abort()
            raise
        if read_rejects:  # rows refused while reading count as stage input that was dropped
            stats.n_in += len(read_rejects)
            stats.add_rejects(read_rejects)
        if other_rejects:  # rows of the other inputs are not the stage's records: kept, counted apart
            counts: dict[str, dict[str, int]] = {}
            for port_name, rejects in other_rejects.items():
                stats.rejects.extend(rejects)
                by_reason = counts.setdefault(port_name, {})
                for r in rejects:
                    by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
                stats.metrics[f"input_rejects.{port_name}"] = float(len(rejects))
            stats.info["input_rejects"] = counts
        if stream is not None and stream.records.empty:
            inputs.empty.insert(0, stream.port)
        if inputs.empty:  # accepted (an empty shard is normal in a pipeline), but said
            stats.info["empty_inputs"] = inputs.empty
            import sys

            print(f"{spec.name}: note: no rows in {', '.join(inputs.empty)}", file=sys.stderr)
        if run is not None:
            stats.info["mlflow_run_id"] = run.info.run_id
        try:
            if stream is not None:
                if stats_path is not None:
                    write_json(stats_path, stats)
                _raise_if_fatal(spec.fatal, stats, rejects_path)  # its output was not written
            elif spec.kind == "records":
                _save(spec, result, stats, outputs, rejects_path, stats_path)
            else:
                if rejects_path is not None and (stats.rejects or "rejects" in paths):
                    write_rejects(rejects_path, stats.rejects)
                if stats_path is not None:
                    write_json(stats_path, stats)
        finally:
            if run is not None:
                artifacts = {"rejects": rejects_path} if rejects_path is not None and rejects_path.exists() else {}
                tr.log_stage_stats(stats, artifacts=artifacts)
                _log_outputs(spec, outputs)
    refused = dict(stream.read_counts) if stream is not None else dict(Counter(r.reason for r in read_rejects))
    n_refused = sum(refused.values())
    if not allow_empty and spec.kind == "records" and n_refused and n_refused == stats.n_in:
        from kubedistill.core.records import RecordsError

        why = ", ".join(f"{reason} {n}" for reason, n in sorted(refused.items()))
        raise RecordsError(  # a person's file none of whose rows is a record: the wrong file, said (exit 2)
            f"{spec.name}: none of the {n_refused} row(s) of {paths.get(primary or '', 'the input')} is a record "
            f"({why}); each one is in {rejects_path} — is it the right file?"
        )
    return StageResult(
        metrics=stage_metrics(stats),
        stats=stats,
        value=result,
        rejects=rejects_path if rejects_path is not None and rejects_path.exists() else None,
        stats_path=stats_path,
    )


@dataclass
class _Stream:
    """The first input of a streaming stage (``Stage.streams``) and its rejects file, written as rows are
    refused: unreadable rows of the input (counted as stage input that was dropped), the stage's own
    rejects (through ``reject_sink``), the other inputs' bad rows (counted apart)."""

    port: str
    records: RecordStream
    writer: JsonlWriter | None
    read_counts: dict[str, int] = field(default_factory=dict)

    def write_reject(self, r: Reject) -> None:
        if self.writer is not None:
            self.writer.write(r)

    def read_reject(self, r: Reject) -> None:
        self.read_counts[r.reason] = self.read_counts.get(r.reason, 0) + 1
        self.write_reject(r)

    def finish(self, stats: StageStats, other_rejects: Mapping[str, list[Reject]]) -> None:
        stats.n_in += sum(self.read_counts.values())
        for reason, n in self.read_counts.items():
            stats.dropped[reason] = stats.dropped.get(reason, 0) + n
        counts: dict[str, dict[str, int]] = {}
        for port_name, rejects in other_rejects.items():
            if not rejects:
                continue
            by_reason = counts.setdefault(port_name, {})
            for r in rejects:
                self.write_reject(r)
                by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
            stats.metrics[f"input_rejects.{port_name}"] = float(len(rejects))
        if counts:
            stats.info["input_rejects"] = counts
        for r in stats.rejects:  # any the stage kept in memory after all
            self.write_reject(r)
        if self.writer is not None:
            self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _open_stream(spec: Stage, paths: Mapping[str, Any], allow_empty: bool, shard: tuple[int, int]) -> _Stream:
    """The first record input of ``spec`` as a :class:`RecordStream` (checked now: a file that cannot be
    read is exit 2 before any work), filtered to the shard, its refused rows reported by shard 0 only."""
    from kubedistill.core.config import ConfigError
    from kubedistill.core.sharding import shard_key, shard_of

    port = next(p for p in spec.inputs if p.records is not None)
    if port.name not in paths:
        raise ConfigError(f"{spec.name}: no {port.name} given")
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} outside 0..{count - 1}")
    keep = None if count == 1 else (lambda r: shard_of(shard_key(r), count) == index)
    stream = _Stream(port.name, None, None)  # type: ignore[arg-type]
    records = RecordStream(
        paths[port.name],
        RECORD_CLASSES[port.records or "Sample"],
        stage=spec.name,
        on_reject=stream.read_reject if index == 0 else None,
        keep=keep,
        allow_empty=allow_empty or port.empty_ok,
    )
    records.check()
    stream.records = records
    return stream


def _save_stream(spec: Stage, result: Any, outputs: Mapping[str, Any], stats_of: Any) -> None:
    """Write a streaming stage's output as it yields; when the stage then reports a fatal drop reason
    (``request_failed``), the output is discarded (never half a result) — the caller raises."""
    by_port = result if isinstance(result, Mapping) else {spec.record_outputs[0].name: result}
    for port in spec.record_outputs:
        records = by_port.get(port.name) or ()
        path = outputs.get(port.name)
        if path is None:  # no path: the records are still produced (the stage's counts depend on it)
            for _ in records:
                pass
            continue
        if str(path).endswith((".parquet", ".pq")):
            records = list(records)
            if not _fatal(spec.fatal, stats_of()):
                write_records(path, records)
            continue
        writer = JsonlWriter(path)
        try:
            for r in records:
                writer.write(r)
        except BaseException:
            writer.abort()
            raise
        if _fatal(spec.fatal, stats_of()):
            writer.abort()
        else:
            writer.close()


def _fatal(fatal: Iterable[str], stats: StageStats) -> bool:
    return any(stats.dropped.get(r) for r in fatal)


def _scalar_params(spec: Stage, params: Mapping[str, Any]) -> dict[str, Any]:
    skip = {"shard_index", "shard_count", "work_dir"}
    return {k: v for k, v in params.items() if k not in skip and isinstance(v, str | int | float | bool) and v != ""}


def _side_files(spec: Stage, paths: Mapping[str, Any]) -> tuple[Path | None, Path | None]:
    """Where the rejects and the stats go: given, else beside the first output (a records stage always
    writes both; a files stage — a trainer — writes its rejects when it refused rows)."""
    first = next((p.name for p in spec.outputs if p.name in paths and p.name not in ("rejects", "metrics")), None)
    rejects = paths.get("rejects")
    stats = paths.get("stats")
    if spec.kind == "records":
        if rejects is None and first is not None:
            rejects = beside(paths[first], ".rejects.jsonl")
        if stats is None and first is not None:
            stats = (
                Path(str(paths[first]) + ".stats.json") if "rejects" in paths else beside(paths[first], ".stats.json")
            )
    elif spec.kind == "files" and rejects is None and first is not None and any(p.records for p in spec.inputs):
        rejects = beside(paths[first], ".rejects.jsonl")
    return (Path(rejects) if rejects else None), (Path(stats) if stats else None)


def _save(
    spec: Stage,
    result: Any,
    stats: StageStats,
    outputs: Mapping[str, Any],
    rejects: Path | None,
    stats_path: Path | None,
) -> None:
    if rejects is not None:
        write_rejects(rejects, stats.rejects)
    if stats_path is not None:
        write_json(stats_path, stats)
    _raise_if_fatal(spec.fatal, stats, rejects)
    by_port = result if isinstance(result, Mapping) else {spec.record_outputs[0].name: result}
    for port in spec.record_outputs:
        if port.name in outputs:
            write_records(outputs[port.name], by_port.get(port.name) or ())  # an iterable streams to JSONL


def _raise_if_fatal(fatal: Iterable[str], stats: StageStats, rejects: Path | None) -> None:
    bad = {r: stats.dropped[r] for r in fatal if stats.dropped.get(r)}
    if bad:
        what = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in bad.items())
        raise StageFailed(
            f"{stats.stage}: {what}; no output written. Listed in {rejects}. "
            "Finished requests are cached: run the same command again to retry only the failed ones.",
            stats,
        )


def _log_outputs(spec: Stage, outputs: Mapping[str, Any]) -> None:
    if not spec.log_outputs:
        return
    import mlflow

    for name in spec.log_outputs:
        root = Path(outputs.get(name, ""))
        if not root.is_dir():
            continue
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            with contextlib.suppress(Exception):
                mlflow.log_artifacts(str(sub), artifact_path=f"{spec.name}/{sub.name}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of each process of a multi-GPU launch (kubedistill/launch.py):
    ``python -m kubedistill.runner STAGE ARGS.json METRICS.json``; rank 0 writes the metrics."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m kubedistill.runner STAGE ARGS.json METRICS.json", file=sys.stderr)
        return 2
    name, args_file, metrics_file = args
    kwargs = json.loads(Path(args_file).read_text())
    result = run_stage(name, relaunch=False, **kwargs)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(metrics_file).write_text(json.dumps(result.metrics))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
