"""Stage `select` (ThoughtX / ThoughtY): the subset of CoTs that fits a given student.

Keep correct CoTs whose reasoning verbosity (RV) and cognitive difficulty (CD) fall inside the
student's windows, at most ``per_problem`` per problem, up to ``target_size`` in all. Smaller students
learn better from shorter, easier chains of thought, so the built-in profiles shift the windows with
student size (defaults to tune, not constants of nature):

==========  =========  =========
profile     RV window  CD window
==========  =========  =========
``small``   0 – 4      0 – 5      (≤ 3B parameters)
``medium``  2 – 6      2 – 7      (3B – 14B)
``large``   3 – 9      3 – 9      (> 14B)
==========  =========  =========

Within a problem, CoTs nearest the windows' centres win (ties: lower sample index, then id); with a
``target_size``, problems are visited in a seeded order, one CoT per problem per round, so the subset
covers as many problems as possible. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from kubedistill.core.config import ConfigError, StrictModel
from kubedistill.core.records import (
    Problem,
    Reject,
    Sample,
    SourceFunnel,
    StageStats,
    Timer,
    cot_source,
    records_by_id,
)

STAGE = "select"


class Window(StrictModel):
    low: int = Field(ge=0, le=9)
    high: int = Field(ge=0, le=9)

    @model_validator(mode="after")
    def _order(self) -> Window:
        if self.low > self.high:
            raise ValueError(f"window low {self.low} is above high {self.high}")
        return self

    def contains(self, v: int) -> bool:
        return self.low <= v <= self.high

    @property
    def centre(self) -> float:
        return (self.low + self.high) / 2


PROFILES: dict[str, tuple[Window, Window]] = {
    "small": (Window(low=0, high=4), Window(low=0, high=5)),
    "medium": (Window(low=2, high=6), Window(low=2, high=7)),
    "large": (Window(low=3, high=9), Window(low=3, high=9)),
}


class SelectConfig(StrictModel):
    profile: str | None = Field(default="small", description="small | medium | large; rv/cd override it")
    rv: Window | None = None
    cd: Window | None = None
    per_problem: int = Field(default=2, ge=1, description="at most K CoTs per problem")
    target_size: int | None = Field(default=None, ge=1, description="at most this many CoTs in all")
    require_correct: bool = True
    seed: int = 0
    mix: dict[str, float] | None = Field(
        default=None,
        description="task-aware re-sampling of the fitting CoTs: weight per group (mix_by), e.g. {math: 0.6, "
        "code: 0.4} or {openr1-math: 0.5, deepseek-r1: 0.5}; groups outside it are left out; None: no mix",
    )
    mix_by: Literal["domain", "source", "domain_source"] = Field(
        default="domain",
        description="what the mix keys name: the problem's domain (needs --problems), the CoT's source "
        "(the dataset it was imported from, else its teacher), or both as 'domain/source'",
    )
    fill_shortfall: bool = Field(
        default=False, description="give a short group's missing quota to the others (keeps target_size)"
    )

    @model_validator(mode="after")
    def _windows(self) -> SelectConfig:
        if self.profile is not None and self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r} (known: {', '.join(PROFILES)})")
        if self.profile is None and (self.rv is None or self.cd is None):
            raise ValueError("without a profile give both rv and cd windows")
        if self.mix is not None and (
            not self.mix or any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0
        ):
            raise ValueError(f"mix weights must be >= 0 with a positive sum (got {self.mix})")
        return self

    def windows(self) -> tuple[Window, Window]:
        rv, cd = PROFILES[self.profile] if self.profile else (None, None)
        return self.rv or rv, self.cd or cd  # type: ignore[return-value]


class _Fits:
    """The light index of the fitting CoTs (their text stays on disk), as parallel columns: the input
    position (8 bytes), a problem code (4), the sample index (4), RV and CD (1 each), a source code (4)
    and the id's UTF-8 bytes with their end (8): ~30-60 bytes a CoT (a frozen dataclass with its strings:
    ~0.4 KiB). Problem ids and sources are kept once each, coded in order of first appearance."""

    def __init__(self) -> None:
        self.index = array("q")
        self.problem = array("i")
        self.sample_index = array("i")
        self.rv = array("b")
        self.cd = array("b")
        self.source = array("i")
        self.ids = bytearray()
        self.id_end = array("q")
        self.problem_codes: dict[str, int] = {}
        self.source_codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def add(self, i: int, s: Sample) -> None:
        self.index.append(i)
        self.problem.append(self.problem_codes.setdefault(s.problem_id, len(self.problem_codes)))
        self.sample_index.append(s.sample_index)
        self.rv.append(s.rv or 0)
        self.cd.append(s.cd or 0)
        self.source.append(self.source_codes.setdefault(cot_source(s), len(self.source_codes)))
        self.ids += s.id.encode("utf-8")
        self.id_end.append(len(self.ids))

    def id(self, j: int) -> str:
        """The id of fit ``j``."""
        return self.ids[self.id_end[j - 1] if j else 0 : self.id_end[j]].decode("utf-8")

    def ranked(self, rv_centre: float, cd_centre: float, per_problem: int, seed: int, stats: StageStats) -> Any:
        """The fits kept (at most ``per_problem`` a problem, nearest the windows' centres first; ties: lower
        sample index, then id), as a numpy array of fit numbers in round-robin order: one CoT per problem
        per round, problems in a ``seed``-shuffled order of their sorted ids. The others are rejected
        (``over_per_problem``), problem by problem in order of first appearance."""
        import numpy as np

        n = len(self)
        problem = np.frombuffer(self.problem, dtype=self.problem.typecode).astype(np.int64)
        sample_index = np.frombuffer(self.sample_index, dtype=self.sample_index.typecode).astype(np.int64)
        dist = np.abs(np.frombuffer(self.rv, dtype=np.int8) - rv_centre) + np.abs(
            np.frombuffer(self.cd, dtype=np.int8) - cd_centre
        )
        order = np.lexsort((sample_index, dist, problem))  # by problem (first appearance), distance, sample index
        if n > 1:  # equal (problem, distance, sample index): by id
            same = (
                (problem[order][1:] == problem[order][:-1])
                & (dist[order][1:] == dist[order][:-1])
                & (sample_index[order][1:] == sample_index[order][:-1])
            )
            k = 0
            ties = np.flatnonzero(same)
            while k < len(ties):
                a = int(ties[k])
                b = a + 1
                while k + 1 < len(ties) and int(ties[k + 1]) == b:
                    k += 1
                    b += 1
                order[a : b + 1] = sorted(order[a : b + 1].tolist(), key=self.id)
                k += 1
        grouped = problem[order]
        starts = np.r_[0, np.flatnonzero(grouped[1:] != grouped[:-1]) + 1] if n else np.zeros(0, dtype=np.int64)
        rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        for j in order[rank >= per_problem].tolist():
            stats.reject(
                "over_per_problem", f"problem has {per_problem} better-fitting CoTs", record={"sample_id": self.id(j)}
            )
        kept, kept_rank = order[rank < per_problem], rank[rank < per_problem]
        names = list(self.problem_codes)
        shuffled = sorted(names)
        random.Random(seed).shuffle(shuffled)
        position = np.empty(len(names), dtype=np.int64)
        code = self.problem_codes
        position[[code[pid] for pid in shuffled]] = np.arange(len(names))
        return kept[np.lexsort((position[problem[kept]], kept_rank))]


def select(
    samples: Iterable[Sample],
    cfg: SelectConfig,
    *,
    problems: Sequence[Problem] | Mapping[str, Problem] | None = None,
    reject_sink: Callable[[Reject], None] | None = None,
) -> tuple[Any, StageStats]:
    """Stage `select`: the correct samples whose RV and CD (0-9) fit the windows of ``cfg`` (see the module
    docstring), at most ``per_problem`` per problem and ``target_size`` in all; with ``cfg.mix``, re-sampled
    to the mix over groups of CoTs (domain, source, or both: task-aware re-sampling of the merged corpus of
    imported and generated CoTs), each group's quota ``target_size × weight`` (or the largest set with
    exactly the mix), CoTs taken in the same problem-covering order.

    Output: the selected samples, in input order; the others are rejects (``not_correct``, ``unscored``,
    ``rv_out_of_window``, ``cd_out_of_window``, ``over_per_problem``, ``over_target``, ``not_in_mix``,
    ``over_mix_quota``, ``no_problem`` — a mix by domain with the CoT's problem missing from ``problems``).
    ``problems`` (optional) give each CoT's domain for ``mix_by: domain``. Metrics per source
    (``source.<src>.n_in`` / ``n_out``); ``stats.info["mix"]`` per group: available, weight, selected,
    shortfall. Deterministic for ``cfg.seed``. Raises ``ConfigError`` (exit 2) for a mix by domain without
    problems.

    Two passes: the first keeps only a light index of the fitting CoTs (:class:`_Fits`: ids, scores as
    columns, ~30-60 bytes each) and decides; the second yields the chosen CoTs. Given a list, the output is
    a list; given another re-iterable (the runner's :class:`~kubedistill.core.records.RecordStream`), an
    iterator, with rejects handed to ``reject_sink``: resident memory does not grow with the CoTs' text."""
    import numpy as np

    from kubedistill.data.resample import quotas

    if cfg.mix is not None and cfg.mix_by != "source" and problems is None:
        raise ConfigError(f"select: mix_by: {cfg.mix_by} needs the problems (--problems) for each CoT's domain")
    stats = StageStats(stage=STAGE)
    stats.stream_rejects(reject_sink)
    rv_w, cd_w = cfg.windows()
    by_id = records_by_id(problems or ())
    funnel = SourceFunnel()
    with Timer() as timer:
        fits = _Fits()
        for i, s in enumerate(samples):
            stats.n_in += 1
            funnel.add_in(s)
            rec = {"sample_id": s.id, "rv": s.rv, "cd": s.cd}
            if cfg.require_correct and s.correct is not True:
                stats.reject("not_correct", f"correct={s.correct}", record=rec)
            elif s.rv is None or s.cd is None:
                stats.reject("unscored", "no RV or CD score", record=rec)
            elif not rv_w.contains(s.rv):
                stats.reject("rv_out_of_window", f"rv={s.rv} outside {rv_w.low}-{rv_w.high}", record=rec)
            elif not cd_w.contains(s.cd):
                stats.reject("cd_out_of_window", f"cd={s.cd} outside {cd_w.low}-{cd_w.high}", record=rec)
            else:
                fits.add(i, s)
        ranked = fits.ranked(rv_w.centre, cd_w.centre, cfg.per_problem, cfg.seed, stats)
        if cfg.mix is None:
            chosen = ranked if cfg.target_size is None else ranked[: cfg.target_size]
            for j in ranked[len(chosen) :].tolist():
                stats.reject("over_target", f"target size {cfg.target_size} reached", record={"sample_id": fits.id(j)})
        else:
            chosen = _mix(ranked, fits, cfg, by_id, stats, quotas)
    stats.n_out = len(chosen)
    stats.elapsed_s = timer.elapsed
    stats.info["windows"] = {"rv": rv_w.model_dump(), "cd": cd_w.model_dump(), "profile": cfg.profile}
    problem = np.frombuffer(fits.problem, dtype=fits.problem.typecode)
    stats.metrics["problems_covered"] = float(len(np.unique(problem[chosen])))
    if len(chosen):
        stats.metrics["mean_rv"] = int(np.frombuffer(fits.rv, dtype=np.int8)[chosen].sum()) / len(chosen)
        stats.metrics["mean_cd"] = int(np.frombuffer(fits.cd, dtype=np.int8)[chosen].sum()) / len(chosen)
    if cfg.target_size is not None and len(chosen) < cfg.target_size:
        stats.info["shortfall"] = cfg.target_size - len(chosen)
    keep = np.sort(np.frombuffer(fits.index, dtype=np.int64)[chosen])  # input positions, ascending
    del ranked, chosen, problem, fits

    def second_pass() -> Iterator[Sample]:
        k = 0
        for i, s in enumerate(samples):
            if k < len(keep) and i == keep[k]:
                k += 1
                funnel.add_out(s)
                yield s
        funnel.into(stats)

    if isinstance(samples, Sequence):
        return list(second_pass()), stats
    return second_pass(), stats


UNKNOWN_DOMAIN = "unknown"  # the group of a CoT whose problem is not in the problems given


def _mix(
    ranked: Any, fits: _Fits, cfg: SelectConfig, by_id: Mapping[str, Problem], stats: StageStats, quotas: Any
) -> Any:
    """The fits of ``ranked`` (numpy fit numbers) re-sampled to ``cfg.mix``, in the same order."""
    import numpy as np

    assert cfg.mix is not None
    names = list(fits.problem_codes)
    sources = list(fits.source_codes)
    domains: dict[int, str] = {}

    def domain(code: int) -> str:
        d = domains.get(code)
        if d is None:
            p = by_id.get(names[code])
            d = domains[code] = p.domain if p is not None else UNKNOWN_DOMAIN
        return d

    def group_of(j: int) -> str:
        if cfg.mix_by == "source":
            return sources[fits.source[j]]
        d = domain(fits.problem[j])
        return d if cfg.mix_by == "domain" else f"{d}/{sources[fits.source[j]]}"

    ranked_list: list[int] = ranked.tolist()
    groups = [group_of(j) for j in ranked_list]
    available: dict[str, int] = {}
    for g in groups:
        available[g] = available.get(g, 0) + 1
    take, shortfall = quotas(available, cfg.mix, cfg.target_size, cfg.fill_shortfall)
    taken: dict[str, int] = {}
    chosen: list[int] = []
    missing = {code for code, d in domains.items() if d == UNKNOWN_DOMAIN and names[code] not in by_id}
    for j, g in zip(ranked_list, groups, strict=True):
        if cfg.mix_by != "source" and fits.problem[j] in missing:  # not a domain outside the mix: no domain at all
            stats.reject(
                "no_problem",
                f"problem {names[fits.problem[j]]!r} is not in the problems file: its domain is unknown",
                record={"sample_id": fits.id(j)},
            )
        elif g not in take:
            stats.reject("not_in_mix", f"{cfg.mix_by} {g!r} is not in the mix", record={"sample_id": fits.id(j)})
        elif taken.get(g, 0) >= take[g]:
            stats.reject("over_mix_quota", f"{g!r} has its {take[g]} CoTs", record={"sample_id": fits.id(j)})
        else:
            taken[g] = taken.get(g, 0) + 1
            chosen.append(j)
    total = sum(cfg.mix.values())
    stats.info["mix"] = {
        "by": cfg.mix_by,
        "groups": {
            g: {
                "available": available.get(g, 0),
                "weight": round(cfg.mix.get(g, 0.0) / total, 6),
                "selected": taken.get(g, 0),
                "shortfall": shortfall.get(g, 0),
            }
            for g in sorted(set(available) | set(take))
        },
    }
    return np.array(chosen, dtype=np.int64)
