"""Stage ``collect``: load problems from sources, normalise, dedup, decontaminate, re-sample.

``collect(records, cfg)`` is a pure stage function (``records`` are extra problems given directly,
added after those of ``cfg.sources``). Its guarantees:

* ``stats.n_in`` counts every input row (source rows, rejected ones included, plus ``records``), and
  ``stats.n_in == stats.n_out + sum(stats.dropped.values())``.
* Every dropped row is a reject with its reason — load problems (``missing_problem``,
  ``invalid_field``, ``invalid_record``, ``unknown_domain``, ``too_short``, ``invalid_json``),
  ``duplicate`` / ``duplicate_id`` / ``near_duplicate`` naming the kept id, ``contaminated`` naming
  benchmark, item and n-gram — except ``resampled_out``, which is a count (see
  :mod:`kubedistill.data.resample`).
* ``stats.info`` holds per-source counts (``sources.<name>``: rows read, loaded, rejected by reason,
  problems in the output), per-benchmark removals (``decontaminate``),
  dedup and resample reports, and the output's counts by domain and by source; ``stats.metrics``
  the seconds each step took.
* Deterministic: the same sources, records and config give the same output in the same order.

:func:`split_holdout` splits a held-out evaluation set off the result (``cfg.holdout``);
:func:`collect_with_holdout` runs both.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import Field, model_validator

from kubedistill.core.config import ConfigError, StrictModel
from kubedistill.core.records import Domain, Problem, RecordSpool, Reject, Sample, StageStats, iter_records

from .decontaminate import DecontamConfig, decontaminate
from .dedup import DedupConfig, DedupKeys, GlobalDrop, dedup, dedup_keys, from_json_bytes, global_dedup, json_bytes
from .normalize import NormalizeConfig, normalize_problem
from .resample import largest_remainder, resample
from .sources import Source, load_source, preview

STAGE = "collect"
INPUT_SOURCE = "input"  # the label of problems passed to collect() directly, in stats.info["sources"]


class HoldoutConfig(StrictModel):
    """A held-out evaluation split taken from the collected problems (stratified by domain)."""

    fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description="share of problems held out")
    max_items: int | None = Field(default=None, ge=0, description="cap on the held-out count")
    seed: int | None = Field(default=None, description="None: the collect seed")


class CollectConfig(StrictModel):
    """Stage ``collect``: which sources, and how to clean and shape the problem pool."""

    sources: list[Source] = Field(default_factory=list, description="hf / file / reasoning_gym sources")
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontaminate: DecontamConfig = Field(default_factory=DecontamConfig)
    mix: dict[str, float] | None = Field(
        default=None, description="weights per group, e.g. {math: 0.5, code: 0.3, science: 0.2}; None: no mix"
    )
    mix_by: Literal["domain", "source"] = Field(default="domain", description="what the mix keys name")
    fill_shortfall: bool = Field(
        default=False, description="give a short group's missing quota to the others (keeps size, bends the mix)"
    )
    size: int | None = Field(default=None, ge=1, description="target problem count; None: as many as the mix allows")
    seed: int = Field(default=0, description="seed of re-sampling and of the hold-out split")
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)

    @model_validator(mode="after")
    def _check(self) -> CollectConfig:
        labels = [s.label for s in self.sources]
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            raise ValueError(f"source names repeat: {repeated} (give each source a distinct `name`)")
        if INPUT_SOURCE in labels:
            raise ValueError(f"source name {INPUT_SOURCE!r} is reserved for problems passed in directly")
        if self.mix is not None:
            if not self.mix:
                raise ValueError("mix is empty (leave it out for no re-sampling)")
            if any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
                raise ValueError(f"mix weights must be >= 0 with a positive sum (got {self.mix})")
            if self.mix_by == "domain":
                bad = sorted(set(self.mix) - set(get_args(Domain)))
                if bad:
                    raise ValueError(f"mix names unknown domain(s) {bad}; domains are {list(get_args(Domain))}")
        return self


def collect(
    records: Sequence[Problem], cfg: CollectConfig, *, cots: Callable[[Problem, Sample], None] | None = None
) -> tuple[list[Problem], StageStats]:
    """Load ``cfg.sources`` (plus ``records``) → normalise → dedup → decontaminate → re-sample.

    ``cots``, when given, receives ``(problem as read, sample)`` for every existing CoT of a source with a
    ``cots`` mapping (see :func:`kubedistill.data.sources.load_source`); which of them to keep is the
    caller's choice, by the ids of the problems returned (:func:`collect_stage` does that)."""
    stats = StageStats(stage=STAGE)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    where_of: dict[int, str] = {}  # id(problem object) -> its row ("file:line"), for the rejects of later steps
    normalised, label_of = _load_and_normalise(records, cfg, stats, where_of, timings, cots=cots)

    t = time.perf_counter()
    exempt = {s.label for s in cfg.sources if not s.near_dedup}
    kept = dedup(normalised, cfg.dedup, stats, near_exempt_sources=exempt, where_of=where_of)
    timings["dedup_s"] = time.perf_counter() - t

    t = time.perf_counter()
    kept = decontaminate(kept, cfg.decontaminate, stats, where_of=where_of)
    timings["decontaminate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    out = resample(kept, cfg.mix, cfg.size, cfg.seed, stats, by=cfg.mix_by, fill_shortfall=cfg.fill_shortfall)
    timings["resample_s"] = time.perf_counter() - t

    _finish_stats(out, label_of, stats, timings, t_start)
    return out, stats


def _load_and_normalise(
    records: Sequence[Problem],
    cfg: CollectConfig,
    stats: StageStats,
    where_of: dict[int, str],
    timings: dict[str, float],
    *,
    cots: Callable[[Problem, Sample], None] | None = None,
    shard: tuple[int, int] = (0, 1),
    order_of: dict[int, tuple[int, int]] | None = None,
) -> tuple[list[Problem], dict[int, str]]:
    """Load ``cfg.sources`` (the rows of ``shard``) plus ``records``, then normalise: ``(problems, label_of)``
    with ``label_of`` ``id(problem) -> source label``; rejects, ``stats.n_in`` and per-source counts in
    ``stats``, seconds in ``timings``; ``order_of``, when given, ``id(problem) -> (source index, row place)``."""
    t = time.perf_counter()
    problems: list[Problem] = []
    labels: list[str] = []  # the config source of each loaded problem (Problem.source may differ)
    place_of: dict[int, int] = {}
    for k, src in enumerate(cfg.sources):
        loaded = load_source(src, stats, where_of, cots=cots, shard=shard, place_of=place_of)
        problems.extend(loaded)
        labels.extend([src.label] * len(loaded))
        if order_of is not None:
            order_of.update((id(p), (k, place_of[id(p)])) for p in loaded)
    per_source: dict[str, dict[str, Any]] = stats.info.setdefault("sources", {})
    if records:
        problems.extend(records)
        labels.extend([INPUT_SOURCE] * len(records))
        per_source[INPUT_SOURCE] = {"rows": len(records), "loaded": len(records), "rejected": {}}
    stats.n_in = len(problems) + stats.n_dropped
    timings["load_s"] = time.perf_counter() - t

    t = time.perf_counter()
    normalised: list[Problem] = []
    label_of: dict[int, str] = {}  # id(problem object) → source label; later steps keep the objects
    for p, label in zip(problems, labels, strict=True):
        try:
            q = normalize_problem(p, cfg.normalize)
        except ValueError as e:
            stats.reject(
                "too_short",
                f"source {label}: {p.id}: {e}",
                record=preview(p.model_dump(mode="json")),
                where=where_of.get(id(p)),
            )
            rejected = per_source[label].setdefault("rejected", {})
            rejected["too_short"] = rejected.get("too_short", 0) + 1
            continue
        normalised.append(q)
        label_of[id(q)] = label
        if id(p) in where_of:
            where_of[id(q)] = where_of[id(p)]
        if order_of is not None and id(p) in order_of:
            order_of[id(q)] = order_of[id(p)]
    timings["normalize_s"] = time.perf_counter() - t
    return normalised, label_of


def _finish_stats(
    out: Sequence[Problem], label_of: Mapping[int, str], stats: StageStats, timings: Mapping[str, float], t_start: float
) -> None:
    """The output's counts (per source, by domain, by source) and the seconds of each step."""
    per_source: dict[str, dict[str, Any]] = stats.info.setdefault("sources", {})
    stats.n_out = len(out)
    kept_by_label = Counter(label_of[id(p)] for p in out)
    for label, info in per_source.items():
        info["out"] = kept_by_label.get(label, 0)
        stats.metrics[f"source.{label}.n_in"] = float(info.get("rows", 0))
        stats.metrics[f"source.{label}.n_out"] = float(info["out"])  # before the held-out split
    stats.info["out_by_domain"] = dict(sorted(Counter(p.domain for p in out).items()))
    stats.info["out_by_source"] = dict(sorted(Counter(p.source for p in out).items()))
    stats.metrics.update({k: round(v, 3) for k, v in timings.items()})
    stats.elapsed_s = time.perf_counter() - t_start


def split_holdout(
    problems: Sequence[Problem], fraction: float, max_items: int | None, seed: int
) -> tuple[list[Problem], list[Problem]]:
    """``(train, held_out)``: about ``fraction`` of the problems (at most ``max_items``) held out.

    Stratified by domain: the held-out count is shared among domains in proportion to their sizes
    (largest remainder, so a small domain may get none), then drawn at random within each domain with
    a seed derived from ``seed`` and the domain. Deterministic; both parts keep the input order and
    together hold every problem exactly once."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1) (got {fraction})")
    n = round(len(problems) * fraction)
    if max_items is not None:
        n = min(n, max_items)
    if n <= 0:
        return list(problems), []
    by_domain: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        by_domain.setdefault(p.domain, []).append(i)
    shares = largest_remainder(n, {d: len(ix) / len(problems) for d, ix in by_domain.items()})
    held: set[int] = set()
    for d, k in shares.items():
        pool = by_domain[d]
        held.update(random.Random(f"holdout:{seed}:{d}").sample(pool, min(k, len(pool))))
    train = [p for i, p in enumerate(problems) if i not in held]
    heldout = [p for i, p in enumerate(problems) if i in held]
    return train, heldout


def collect_with_holdout(
    records: Sequence[Problem], cfg: CollectConfig
) -> tuple[list[Problem], list[Problem], StageStats]:
    """:func:`collect`, then :func:`split_holdout` with ``cfg.holdout``: ``(train, held_out, stats)``.

    ``stats.n_out`` stays the number collected (train + held out); ``stats.info["holdout"]`` has the
    split's sizes by domain."""
    return _collect_with_holdout(records, cfg)


def _collect_with_holdout(
    records: Sequence[Problem], cfg: CollectConfig, cots: Callable[[Problem, Sample], None] | None = None
) -> tuple[list[Problem], list[Problem], StageStats]:
    out, stats = collect(records, cfg, cots=cots)
    train, held = _holdout(out, cfg, stats)
    return train, held, stats


def _holdout(out: Sequence[Problem], cfg: CollectConfig, stats: StageStats) -> tuple[list[Problem], list[Problem]]:
    h = cfg.holdout
    seed = cfg.seed if h.seed is None else h.seed
    train, held = split_holdout(out, h.fraction, h.max_items, seed)
    info: dict[str, Any] = {
        "fraction": h.fraction,
        "max_items": h.max_items,
        "seed": seed,
        "train": len(train),
        "heldout": len(held),
        "heldout_by_domain": dict(sorted(Counter(p.domain for p in held).items())),
    }
    stats.info["holdout"] = info
    return train, held


class _CotSpool:
    """The imported CoTs of a collect run, on disk until the problems they belong to are known: a CoT is
    kept when its problem is in the training output, and the same row object that brought it is the one
    kept (a second row with an already-seen problem id does not add its CoTs to the first one's)."""

    def __init__(self) -> None:
        import hashlib

        self.spool = RecordSpool(Sample)
        self.n_kept = 0  # CoTs spooled (their problem's first row brought them)
        self.ids_digest = hashlib.sha256()  # of the spooled CoTs' ids, in order (a shard's file is checked by it)
        self.owner: dict[str, int] = {}  # problem id -> id() of the row's Problem that brought its CoTs
        self.per_problem: Counter[str] = Counter()
        self.label_of: dict[str, str] = {}  # problem id -> source label
        self.shadowed: Counter[str] = Counter()  # per source: CoTs of a repeated problem id

    def add(self, problem: Problem, sample: Sample) -> None:
        label = str(sample.metadata.get("imported_from", ""))
        if self.owner.setdefault(problem.id, id(problem)) != id(problem):
            self.shadowed[label] += 1
            return
        self.spool.append(sample)
        self.ids_digest.update(sample.id.encode("utf-8") + b"\n")
        self.n_kept += 1
        self.per_problem[problem.id] += 1
        self.label_of[problem.id] = label

    def report(self, train: Sequence[Problem], held: Sequence[Problem], stats: StageStats) -> set[str]:
        """The problem ids whose CoTs are output; the CoT funnel in ``stats.info["cots"]`` (overall) and
        ``stats.info["sources"][label]["cots_out"]``, metrics ``cots_in`` / ``cots_out``."""
        keep = {p.id for p in train}
        held_ids = {p.id for p in held}
        funnel: dict[str, int] = {"read": self.n_kept + sum(self.shadowed.values()), "out": 0}
        dropped = {"heldout": 0, "problem_dropped": 0, "repeated_problem_id": sum(self.shadowed.values())}
        out_by_label: Counter[str] = Counter()
        for pid, n in self.per_problem.items():
            if pid in keep:
                funnel["out"] += n
                out_by_label[self.label_of[pid]] += n
            elif pid in held_ids:
                dropped["heldout"] += n
            else:
                dropped["problem_dropped"] += n
        stats.info["cots"] = {**funnel, "dropped": dropped}
        for label, info in stats.info.get("sources", {}).items():
            if info.get("cots"):
                info["cots_out"] = out_by_label.get(label, 0)
                stats.metrics[f"source.{label}.cots_in"] = float(info["cots"])
                stats.metrics[f"source.{label}.cots_out"] = float(info["cots_out"])
        stats.metrics["cots_in"] = float(funnel["read"])
        stats.metrics["cots_out"] = float(funnel["out"])
        return keep

    def emit(self, keep: set[str]) -> Iterator[Sample]:
        try:
            for s in self.spool:
                if s.problem_id in keep:
                    yield s
        finally:
            self.spool.close()


def collect_stage(cfg: CollectConfig) -> tuple[dict[str, Any], StageStats]:
    """Stage `collect`: :func:`collect_with_holdout` of ``cfg.sources``.

    Returns ``{"problems": train, "heldout": held_out, "samples": CoTs}`` and the stats (``n_out`` counts
    both splits; metrics ``train`` and ``heldout`` give their sizes). ``samples`` are the existing CoTs of
    the sources that import them (``cots`` / ``import_cots``), those of training problems only, streamed
    from a spool file (never all in memory); CoTs of problems dropped by dedup, decontamination,
    re-sampling or the held-out split are counted in ``stats.info["cots"]["dropped"]`` (the problem's own
    reject says why). Raises ``SourceError`` (exit 2) for a source that cannot be read at all; bad rows
    are rejects."""
    spool = _CotSpool()
    train, held, stats = _collect_with_holdout([], cfg, cots=spool.add)
    stats.metrics["train"] = float(len(train))
    stats.metrics["heldout"] = float(len(held))
    keep = spool.report(train, held, stats)
    return {"problems": train, "heldout": held, "samples": spool.emit(keep)}, stats


# ------------------------------------------------------------------ sharded: collect_shard -> collect_merge

SHARD_STAGE = "collect_shard"
MERGE_STAGE = "collect_merge"


@dataclass
class ShardKeys:
    """What :func:`collect_merge_stage` needs of one shard besides its records, in the shard's order
    (position ``i`` is the shard's ``i``-th problem): the dedup keys (:class:`~kubedistill.data.dedup.
    DedupKeys`: exact-key hashes, shingle hashes), each problem's place in the corpus (``source`` — the
    index of its source in the config — and ``place``, its row's place in that source: the order one
    ``collect`` would meet it in), its source label and row (``file:line``), the decontamination verdicts
    (position → the ``contaminated`` reject and its benchmark; decided in the shard, applied after global
    dedup, as :func:`collect` applies them) and the shard's counts (``summary``: shard index and count, a
    digest of the collect config, ``n_in``, rejects written, per source). Saved as one ``.npz`` file (no
    pickles); about ``8 × (3 + shingles)`` bytes per problem plus its label and row."""

    dedup: DedupKeys
    source: np.ndarray  # int64, one per problem: the index of its source in cfg.sources
    place: np.ndarray  # int64, one per problem: its row's place in the source
    labels: list[str]
    where: list[str | None]
    contaminated: dict[int, dict[str, Any]]  # position -> {"benchmark": name, "reject": Reject as JSON}
    summary: dict[str, Any]  # shard, config, n_in, n_rejects, sources, decontaminate, cots_shadowed

    def save(self, path: str | Path) -> None:
        meta = {
            "labels": self.labels,
            "where": self.where,
            "contaminated": [[pos, c] for pos, c in sorted(self.contaminated.items())],
            "summary": self.summary,
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with partial.open("wb") as f:  # a KFP output path has no .npz suffix: write to the file itself
            np.savez_compressed(f, **self.dedup.arrays(), source=self.source, place=self.place, meta=json_bytes(meta))
        partial.replace(target)

    @classmethod
    def load(cls, path: str | Path) -> ShardKeys:
        """Raises ``ConfigError`` (exit 2) for a file that is missing or is not a shard's keys."""
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such keys file")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = from_json_bytes(z["meta"])
                keys = DedupKeys.from_arrays(z)
                source, place = z["source"], z["place"]
        except (OSError, ValueError, KeyError, EOFError):
            raise ConfigError(f"{path}: not the keys file of a collect shard (collect-shard's --keys output)") from None
        contaminated = {int(pos): c for pos, c in meta["contaminated"]}
        return cls(keys, source, place, meta["labels"], meta["where"], contaminated, meta["summary"])


def _rejects_digest(rejects: Sequence[Reject]) -> str:
    """A digest of a shard's rejects (reason and row of each, in order): the merge checks it is given their file."""
    import hashlib

    text = "\n".join(f"{r.reason}\t{r.where}" for r in rejects)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def config_digest(cfg: CollectConfig) -> str:
    """A short digest of a collect config: the merge refuses shards collected with another one. Canonical:
    keys sorted, integral numbers as ints (a pipeline hands each task its config through KFP's JSON, where
    mappings may come back reordered and ``400`` as ``400.0``)."""
    import hashlib

    def canonical(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): canonical(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [canonical(v) for v in x]
        if isinstance(x, float) and x.is_integer():
            return int(x)
        return x

    text = json.dumps(canonical(cfg.model_dump(mode="json")), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def collect_shard_stage(
    cfg: CollectConfig, *, keys: str, shard_index: int = 0, shard_count: int = 1
) -> tuple[dict[str, Any], StageStats]:
    """Stage `collect_shard`: one task of a sharded collect (``collect_shard`` × N → ``collect_merge``).

    Takes the rows of every source whose place in it is ``shard_index`` modulo ``shard_count``; loads and
    normalises them (bad rows are this shard's rejects), decides decontamination for each and computes its
    dedup keys, but drops nothing that needs the other shards: dedup is global, in the merge. Returns
    ``{"problems": the shard's problems (normalised, before dedup), "samples": their imported CoTs}`` and
    writes :class:`ShardKeys` to ``keys``. Raises ``ConfigError`` (exit 2) for a shard index outside
    ``0..shard_count-1``, ``SourceError`` (exit 2) for a source that cannot be read."""
    if shard_count < 1:
        raise ConfigError(f"collect_shard: shard count {shard_count}: it must be at least 1")
    if not 0 <= shard_index < shard_count:
        raise ConfigError(f"collect_shard: shard index {shard_index} of {shard_count}: give 0..{shard_count - 1}")
    stats = StageStats(stage=SHARD_STAGE)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    where_of: dict[int, str] = {}
    order_of: dict[int, tuple[int, int]] = {}
    spool = _CotSpool()
    problems, label_of = _load_and_normalise(
        [], cfg, stats, where_of, timings, cots=spool.add, shard=(shard_index, shard_count), order_of=order_of
    )

    t = time.perf_counter()
    verdicts = StageStats(stage=STAGE)  # the verdicts are applied by the merge, after global dedup
    clean = {id(p) for p in decontaminate(problems, cfg.decontaminate, verdicts, where_of=where_of)}
    dirty = [i for i, p in enumerate(problems) if id(p) not in clean]
    found = [r for r in verdicts.rejects if r.reason == "contaminated"]
    if len(found) != len(dirty):  # pragma: no cover - decontaminate rejects each dropped problem once, in order
        raise RuntimeError("decontaminate's rejects do not match the problems it dropped")
    names = sorted(verdicts.info.get("decontaminate", {}).get("benchmarks", {}), key=len, reverse=True)
    contaminated = {  # a reject's detail starts with "<benchmark>: item ..." (Contamination.describe)
        pos: {"benchmark": next(b for b in names if r.detail.startswith(f"{b}: ")), "reject": r.model_dump(mode="json")}
        for pos, r in zip(dirty, found, strict=True)
    }
    timings["decontaminate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    exempt = {s.label for s in cfg.sources if not s.near_dedup}
    report = verdicts.info.get("decontaminate", {})
    ShardKeys(
        dedup_keys(problems, cfg.dedup, exempt),
        np.fromiter((order_of[id(p)][0] for p in problems), dtype=np.int64, count=len(problems)),
        np.fromiter((order_of[id(p)][1] for p in problems), dtype=np.int64, count=len(problems)),
        [label_of[id(p)] for p in problems],
        [where_of.get(id(p)) for p in problems],
        contaminated,
        {
            "shard": [shard_index, shard_count],
            "config": config_digest(cfg),
            "n_in": stats.n_in,
            "n_rejects": len(stats.rejects),
            "rejects_digest": _rejects_digest(stats.rejects),
            "sources": stats.info.get("sources", {}),
            "decontaminate": report,
            "cots_shadowed": dict(spool.shadowed),
            "n_cots": spool.n_kept,
            "cots_digest": spool.ids_digest.hexdigest()[:16],
        },
    ).save(keys)
    timings["keys_s"] = time.perf_counter() - t

    stats.n_out = len(problems)
    stats.info["shard"] = {"index": shard_index, "count": shard_count}
    stats.info["contaminated"] = len(contaminated)
    stats.metrics["contaminated"] = float(len(contaminated))
    stats.metrics["cots"] = float(spool.n_kept)
    stats.metrics.update({k: round(v, 3) for k, v in timings.items()})
    stats.elapsed_s = time.perf_counter() - t_start
    return {"problems": problems, "samples": spool.emit(set(spool.per_problem))}, stats


def _check_shards(cfg: CollectConfig, shards: Sequence[ShardKeys], part_keys: Sequence[str]) -> None:
    """Refuse (``ConfigError``) a set of shards that is not one run's: every shard ``0..N-1`` once, in order,
    all of the same count and collected with this config."""
    n = len(shards)
    for i, (k, path) in enumerate(zip(shards, part_keys, strict=True)):
        index, count = k.summary["shard"]
        if count != n:
            raise ConfigError(
                f"collect_merge: {path} is shard {index} of {count}, but {n} shard(s) are given: give every "
                f"shard of one collect-shard run, 0..{count - 1}, in order"
            )
        if index != i:
            raise ConfigError(
                f"collect_merge: the keys given in place {i} ({path}) are shard {index} of {count}: give the "
                "shards' files in shard order, each shard once"
            )
        if k.summary["config"] != config_digest(cfg):
            raise ConfigError(
                f"collect_merge: {path} was collected with another collect config: merge with the very config the "
                "shards ran with (the whole collect section is checked: sources, dedup, decontamination, mix, size, "
                "seed, holdout)"
            )


def collect_merge_stage(
    cfg: CollectConfig,
    *,
    parts: Sequence[str],
    part_samples: Sequence[str],
    part_keys: Sequence[str],
    part_rejects: Sequence[str],
) -> tuple[dict[str, Any], StageStats]:
    """Stage `collect_merge`: join a sharded collect's shards, deciding what needs them all.

    The shards' problems are taken in the order one :func:`collect` would meet them (source by source,
    row by row), and in that order: global dedup over every shard's keys
    (:func:`~kubedistill.data.dedup.global_dedup`: exact keys, ids, then MinHash near duplicates, the first
    occurrence kept — a duplicate whose copies fell in two shards is caught), the shards' decontamination
    verdicts, re-sampling (the mix) and the held-out split: the same decisions as one ``collect``, whatever
    the number of shards. ``parts`` / ``part_samples`` / ``part_keys`` / ``part_rejects``: each shard's
    problems, imported CoTs, :class:`ShardKeys` and rejects, in shard order. Returns the outputs of
    :func:`collect_stage` (``problems`` and ``heldout`` in collect's order; ``samples`` — the training
    problems' CoTs, the same set as collect's, streamed from the shards' files shard by shard) and the
    stats of the whole collect (the shards' rejects included: ``n_in == n_out + dropped``). Raises
    ``ConfigError`` (exit 2) when the files are not every shard of one run of this config, in order."""
    n = len(parts)
    if n == 0 or len(part_samples) != n or len(part_keys) != n or len(part_rejects) != n:
        raise ConfigError(
            f"collect_merge: {n} problem parts, {len(part_samples)} CoT parts, {len(part_keys)} key files and "
            f"{len(part_rejects)} rejects files: one of each per shard"
        )
    stats = StageStats(stage=MERGE_STAGE)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    shards = [ShardKeys.load(k) for k in part_keys]
    _check_shards(cfg, shards, part_keys)
    for i, path in enumerate(part_rejects):  # the shards' loading rejects: rows of this collect that were dropped
        rejects = _read_rejects(path)
        if _rejects_digest(rejects) != shards[i].summary["rejects_digest"]:
            raise ConfigError(
                f"collect_merge: {path} is not shard {i}'s rejects file (not the rows it refused: {len(rejects)} "
                f"here, {shards[i].summary['n_rejects']} there): give each shard's files in shard order"
            )
        stats.add_rejects(rejects)
    stats.n_in = sum(int(k.summary["n_in"]) for k in shards)
    per_source: dict[str, dict[str, Any]] = {}
    for k in shards:
        _add_counts(per_source, k.summary["sources"])
    stats.info["sources"] = per_source

    t = time.perf_counter()
    part_of = np.concatenate([np.full(len(k.dedup.ids), i, dtype=np.int64) for i, k in enumerate(shards)])
    pos_of = np.concatenate([np.arange(len(k.dedup.ids), dtype=np.int64) for k in shards])
    rank = np.lexsort(  # collect's order: by source, then by row
        (np.concatenate([k.place for k in shards]), np.concatenate([k.source for k in shards]))
    )
    order = list(zip(part_of[rank].tolist(), pos_of[rank].tolist(), strict=True))
    drops = global_dedup([k.dedup for k in shards], cfg.dedup, order=order)
    dropped: list[dict[int, GlobalDrop]] = [{} for _ in shards]
    for d in drops:
        dropped[d.part][d.position] = d
    report = json.loads(json.dumps(shards[0].summary["decontaminate"]))  # the same benchmarks in every shard
    for b in report.get("benchmarks", {}).values():
        b["removed"] = 0
    if report:
        report["removed"] = 0
    kept: list[tuple[tuple[int, int], Problem]] = []
    label_of: dict[int, str] = {}
    late: list[tuple[tuple[int, int], Reject]] = []  # rejects, put in collect's order after the pass
    for i, (path, k) in enumerate(zip(parts, shards, strict=True)):
        position = -1
        for position, p in enumerate(_read_part(path, Problem)):
            if position >= len(k.dedup.ids) or p.id != k.dedup.ids[position]:
                expected = k.dedup.ids[position] if position < len(k.dedup.ids) else "no row"
                raise ConfigError(
                    f"collect_merge: {path} row {position + 1} is {p.id!r}, but shard {i}'s keys have {expected!r} "
                    "there: the problems and the keys are from different collect-shard runs"
                )
            key = (int(k.source[position]), int(k.place[position]))
            d = dropped[i].get(position)
            if d is not None:
                record = preview(p.model_dump(mode="json"))
                why = {"reason": d.reason, "detail": d.detail, "record": record, "where": k.where[position]}
                late.append((key, Reject(stage=MERGE_STAGE, **why)))
                continue
            c = k.contaminated.get(position)
            if c is not None:
                late.append((key, Reject.model_validate({**c["reject"], "stage": MERGE_STAGE})))
                report["benchmarks"][c["benchmark"]]["removed"] += 1
                report["removed"] += 1
                continue
            kept.append((key, p))
            label_of[id(p)] = k.labels[position]
        if position + 1 != len(k.dedup.ids):
            raise ConfigError(
                f"collect_merge: {path} has {position + 1} problems, shard {i}'s keys name {len(k.dedup.ids)}"
            )
    late.sort(key=lambda x: x[0])
    stats.add_rejects(r for _, r in late)
    kept.sort(key=lambda x: x[0])
    ordered = [p for _, p in kept]
    del kept
    counts = Counter(d.reason for d in drops)
    stats.info["dedup"] = {
        "duplicate": counts["duplicate"],
        "duplicate_id": counts["duplicate_id"],
        "near_duplicate": counts["near_duplicate"],
        "near_exempt_sources": sorted(s.label for s in cfg.sources if not s.near_dedup),
        "params": cfg.dedup.model_dump(),
        "global": True,
        "shards": n,
    }
    stats.info["decontaminate"] = report
    timings["dedup_s"] = time.perf_counter() - t

    t = time.perf_counter()
    out = resample(ordered, cfg.mix, cfg.size, cfg.seed, stats, by=cfg.mix_by, fill_shortfall=cfg.fill_shortfall)
    timings["resample_s"] = time.perf_counter() - t
    _finish_stats(out, label_of, stats, timings, t_start)
    train, held = _holdout(out, cfg, stats)
    stats.metrics["train"] = float(len(train))
    stats.metrics["heldout"] = float(len(held))
    cots = _ShardCots(part_samples, shards)
    keep = cots.report(train, held, stats)
    return {"problems": train, "heldout": held, "samples": cots.emit(keep)}, stats


def _read_rejects(path: str) -> list[Reject]:
    """A shard's rejects file; ``ConfigError`` (exit 2) for one that is missing or is not one."""
    from pydantic import ValidationError

    if not Path(path).is_file():
        raise ConfigError(f"collect_merge: {path}: no such rejects file")
    with Path(path).open("rb") as f:
        try:
            return [Reject.model_validate_json(line) for line in f if line.strip()]
        except (ValidationError, ValueError):
            raise ConfigError(f"collect_merge: {path}: not a rejects file (collect-shard's --rejects output)") from None


def _read_part(path: str, cls: type[Any]) -> Iterator[Any]:
    """A shard's records, streamed; a row that is not one is a ``ConfigError`` (the shard wrote it)."""
    for item in iter_records(path, cls, stage=MERGE_STAGE, unique_ids=False):
        if isinstance(item, Reject):
            raise ConfigError(f"collect_merge: {path}: {item.where}: {item.detail}")
        yield item


def _add_counts(into: dict[str, Any], more: Mapping[str, Any]) -> None:
    """Sum nested counts (per-source dicts of ints and dicts of ints) into ``into``."""
    for key, value in more.items():
        if isinstance(value, Mapping):
            _add_counts(into.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value
        else:
            into.setdefault(key, value)


class _ShardCots(_CotSpool):
    """The imported CoTs of a sharded collect, read from the shards' files twice (counted, then emitted)
    instead of spooled: a problem id's CoTs are those its first row in collect's order brought (of the
    rows that reached the keys), as :class:`_CotSpool` keeps those of the first row."""

    def __init__(self, paths: Sequence[str], shards: Sequence[ShardKeys]) -> None:
        import hashlib

        self.paths = list(paths)
        self.n_kept = 0
        self.per_problem: Counter[str] = Counter()
        self.label_of: dict[str, str] = {}
        self.shadowed: Counter[str] = Counter()
        first: dict[str, tuple[int, int, int]] = {}  # problem id -> (source, place, shard) of its first row
        for i, k in enumerate(shards):
            self.shadowed.update(k.summary.get("cots_shadowed", {}))
            for pid, src, place in zip(k.dedup.ids, k.source.tolist(), k.place.tolist(), strict=True):
                mine = (src, place, i)
                if pid not in first or mine < first[pid]:
                    first[pid] = mine
        self.first = {pid: v[2] for pid, v in first.items()}  # problem id -> the shard whose CoTs are kept
        del first
        for i, path in enumerate(self.paths):
            digest, n = hashlib.sha256(), 0
            for s in _read_part(path, Sample):
                digest.update(s.id.encode("utf-8") + b"\n")
                n += 1
                label = str(s.metadata.get("imported_from", ""))
                if self.first.setdefault(s.problem_id, i) != i:
                    self.shadowed[label] += 1
                    continue
                self.n_kept += 1
                self.per_problem[s.problem_id] += 1
                self.label_of[s.problem_id] = label
            summary = shards[i].summary
            if digest.hexdigest()[:16] != summary["cots_digest"]:
                raise ConfigError(
                    f"collect_merge: {path} ({n} CoTs) is not shard {i}'s CoTs file (it wrote {summary['n_cots']}, "
                    "other ones): give each shard's files in shard order"
                )

    def emit(self, keep: set[str]) -> Iterator[Sample]:
        for i, path in enumerate(self.paths):
            for s in _read_part(path, Sample):
                if s.problem_id in keep and self.first.get(s.problem_id) == i:
                    yield s
