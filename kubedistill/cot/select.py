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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from kubedistill.core.config import ConfigError, StrictModel
from kubedistill.core.records import Problem, Reject, Sample, SourceFunnel, StageStats, Timer, cot_source

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


@dataclass(frozen=True, slots=True)
class _Fit:
    """What selection needs of a fitting CoT (a light index: the CoT's text stays on disk)."""

    index: int  # position in the input
    id: str
    problem_id: str
    sample_index: int
    rv: int
    cd: int
    source: str


def select(
    samples: Iterable[Sample],
    cfg: SelectConfig,
    *,
    problems: Sequence[Problem] | None = None,
    reject_sink: Callable[[Reject], None] | None = None,
) -> tuple[Any, StageStats]:
    """Stage `select`: the correct samples whose RV and CD (0-9) fit the windows of ``cfg`` (see the module
    docstring), at most ``per_problem`` per problem and ``target_size`` in all; with ``cfg.mix``, re-sampled
    to the mix over groups of CoTs (domain, source, or both: task-aware re-sampling of the merged corpus of
    imported and generated CoTs), each group's quota ``target_size × weight`` (or the largest set with
    exactly the mix), CoTs taken in the same problem-covering order.

    Output: the selected samples, in input order; the others are rejects (``not_correct``, ``unscored``,
    ``rv_out_of_window``, ``cd_out_of_window``, ``over_per_problem``, ``over_target``, ``not_in_mix``,
    ``over_mix_quota``). ``problems`` (optional) give each CoT's domain for ``mix_by: domain``. Metrics per
    source (``source.<src>.n_in`` / ``n_out``); ``stats.info["mix"]`` per group: available, weight,
    selected, shortfall. Deterministic for ``cfg.seed``. Raises ``ConfigError`` (exit 2) for a mix by
    domain without problems.

    Two passes: the first keeps only a light index of the fitting CoTs (ids, scores; ~150 bytes each) and
    decides; the second yields the chosen CoTs. Given a list, the output is a list; given another
    re-iterable (the runner's :class:`~kubedistill.core.records.RecordStream`), an iterator, with rejects
    handed to ``reject_sink``: resident memory does not grow with the CoTs' text."""
    from kubedistill.data.resample import quotas

    if cfg.mix is not None and cfg.mix_by != "source" and problems is None:
        raise ConfigError(f"select: mix_by: {cfg.mix_by} needs the problems (--problems) for each CoT's domain")
    stats = StageStats(stage=STAGE)
    stats.stream_rejects(reject_sink)
    rv_w, cd_w = cfg.windows()
    domain_of = {p.id: p.domain for p in problems or ()}
    funnel = SourceFunnel()
    with Timer() as timer:
        fitting: dict[str, list[_Fit]] = {}
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
                fit = _Fit(i, s.id, s.problem_id, s.sample_index, s.rv, s.cd, cot_source(s))
                fitting.setdefault(s.problem_id, []).append(fit)
        for group in fitting.values():
            group.sort(key=lambda f: (abs(f.rv - rv_w.centre) + abs(f.cd - cd_w.centre), f.sample_index, f.id))
            for f in group[cfg.per_problem :]:
                stats.reject(
                    "over_per_problem", f"problem has {cfg.per_problem} better-fitting CoTs", record={"sample_id": f.id}
                )
            del group[cfg.per_problem :]
        order = sorted(fitting)
        random.Random(cfg.seed).shuffle(order)
        ranked: list[_Fit] = []  # one CoT per problem per round: as many problems covered as possible
        rnd = 0
        while True:
            took = False
            for pid in order:
                group = fitting[pid]
                if rnd < len(group):
                    ranked.append(group[rnd])
                    took = True
            if not took:
                break
            rnd += 1
        del fitting
        if cfg.mix is None:
            chosen = ranked if cfg.target_size is None else ranked[: cfg.target_size]
            for f in ranked[len(chosen) :]:
                stats.reject("over_target", f"target size {cfg.target_size} reached", record={"sample_id": f.id})
        else:
            chosen = _mix(ranked, cfg, domain_of, stats, quotas)
    stats.n_out = len(chosen)
    stats.elapsed_s = timer.elapsed
    stats.info["windows"] = {"rv": rv_w.model_dump(), "cd": cd_w.model_dump(), "profile": cfg.profile}
    stats.metrics["problems_covered"] = float(len({f.problem_id for f in chosen}))
    if chosen:
        stats.metrics["mean_rv"] = sum(f.rv for f in chosen) / len(chosen)
        stats.metrics["mean_cd"] = sum(f.cd for f in chosen) / len(chosen)
    if cfg.target_size is not None and len(chosen) < cfg.target_size:
        stats.info["shortfall"] = cfg.target_size - len(chosen)
    keep = {f.index for f in chosen}
    del ranked, chosen

    def second_pass() -> Iterator[Sample]:
        for i, s in enumerate(samples):
            if i in keep:
                funnel.add_out(s)
                yield s
        funnel.into(stats)

    if isinstance(samples, Sequence):
        return list(second_pass()), stats
    return second_pass(), stats


def _mix(
    ranked: list[_Fit], cfg: SelectConfig, domain_of: dict[str, str], stats: StageStats, quotas: Any
) -> list[_Fit]:
    assert cfg.mix is not None

    def group_of(f: _Fit) -> str:
        domain = domain_of.get(f.problem_id, "unknown")
        if cfg.mix_by == "domain":
            return domain
        return f.source if cfg.mix_by == "source" else f"{domain}/{f.source}"

    groups = [group_of(f) for f in ranked]
    available: dict[str, int] = {}
    for g in groups:
        available[g] = available.get(g, 0) + 1
    take, shortfall = quotas(available, cfg.mix, cfg.target_size, cfg.fill_shortfall)
    taken: dict[str, int] = {}
    chosen: list[_Fit] = []
    for f, g in zip(ranked, groups, strict=True):
        if g not in take:
            stats.reject("not_in_mix", f"{cfg.mix_by} {g!r} is not in the mix", record={"sample_id": f.id})
        elif taken.get(g, 0) >= take[g]:
            stats.reject("over_mix_quota", f"{g!r} has its {take[g]} CoTs", record={"sample_id": f.id})
        else:
            taken[g] = taken.get(g, 0) + 1
            chosen.append(f)
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
    return chosen
