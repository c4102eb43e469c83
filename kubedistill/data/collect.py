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

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from kubedistill.core.config import StrictModel
from kubedistill.core.records import Domain, Problem, RecordSpool, Sample, StageStats

from .decontaminate import DecontamConfig, decontaminate
from .dedup import DedupConfig, dedup
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

    t = time.perf_counter()
    problems: list[Problem] = []
    where_of: dict[int, str] = {}  # id(problem object) -> its row ("file:line"), for the rejects of later steps
    labels: list[str] = []  # the config source of each loaded problem (Problem.source may differ)
    for src in cfg.sources:
        loaded = load_source(src, stats, where_of, cots=cots)
        problems.extend(loaded)
        labels.extend([src.label] * len(loaded))
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
    timings["normalize_s"] = time.perf_counter() - t

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
    return out, stats


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
    return train, held, stats


class _CotSpool:
    """The imported CoTs of a collect run, on disk until the problems they belong to are known: a CoT is
    kept when its problem is in the training output, and the same row object that brought it is the one
    kept (a second row with an already-seen problem id does not add its CoTs to the first one's)."""

    def __init__(self) -> None:
        self.spool = RecordSpool(Sample)
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
        self.per_problem[problem.id] += 1
        self.label_of[problem.id] = label

    def report(self, train: Sequence[Problem], held: Sequence[Problem], stats: StageStats) -> set[str]:
        """The problem ids whose CoTs are output; the CoT funnel in ``stats.info["cots"]`` (overall) and
        ``stats.info["sources"][label]["cots_out"]``, metrics ``cots_in`` / ``cots_out``."""
        keep = {p.id for p in train}
        held_ids = {p.id for p in held}
        funnel: dict[str, int] = {"read": len(self.spool) + sum(self.shadowed.values()), "out": 0}
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
