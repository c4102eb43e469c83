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
from collections.abc import Sequence

from pydantic import Field, model_validator

from kubedistill.core.config import StrictModel
from kubedistill.core.records import Sample, StageStats, Timer

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

    @model_validator(mode="after")
    def _windows(self) -> SelectConfig:
        if self.profile is not None and self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r} (known: {', '.join(PROFILES)})")
        if self.profile is None and (self.rv is None or self.cd is None):
            raise ValueError("without a profile give both rv and cd windows")
        return self

    def windows(self) -> tuple[Window, Window]:
        rv, cd = PROFILES[self.profile] if self.profile else (None, None)
        return self.rv or rv, self.cd or cd  # type: ignore[return-value]


def select(samples: Sequence[Sample], cfg: SelectConfig) -> tuple[list[Sample], StageStats]:
    """Stage `select`: the correct samples whose RV and CD (0-9) fit the windows of ``cfg`` (see the module
    docstring), at most ``per_problem`` per problem and ``target_size`` in all.

    Output: the selected samples; the others are rejects (``not_correct``, ``unscored``, ``rv_out_of_window``,
    ``cd_out_of_window``, ``over_per_problem``, ``over_target``). Deterministic for ``cfg.seed``."""
    stats = StageStats(stage=STAGE, n_in=len(samples))
    rv_w, cd_w = cfg.windows()
    with Timer() as timer:
        fitting: dict[str, list[Sample]] = {}
        for s in samples:
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
                fitting.setdefault(s.problem_id, []).append(s)
        for group in fitting.values():
            group.sort(
                key=lambda s: (
                    abs(s.rv - rv_w.centre) + abs(s.cd - cd_w.centre),  # type: ignore[operator]
                    s.sample_index,
                    s.id,
                )
            )
            for s in group[cfg.per_problem :]:
                stats.reject(
                    "over_per_problem", f"problem has {cfg.per_problem} better-fitting CoTs", record={"sample_id": s.id}
                )
            del group[cfg.per_problem :]
        order = sorted(fitting)
        random.Random(cfg.seed).shuffle(order)
        chosen: list[Sample] = []
        rnd = 0
        while True:
            took = False
            for pid in order:
                group = fitting[pid]
                if rnd < len(group):
                    if cfg.target_size is not None and len(chosen) >= cfg.target_size:
                        stats.reject(
                            "over_target", f"target size {cfg.target_size} reached", record={"sample_id": group[rnd].id}
                        )
                    else:
                        chosen.append(group[rnd])
                    took = True
            if not took:
                break
            rnd += 1
    stats.n_out = len(chosen)
    stats.elapsed_s = timer.elapsed
    stats.info["windows"] = {"rv": rv_w.model_dump(), "cd": cd_w.model_dump(), "profile": cfg.profile}
    stats.metrics["problems_covered"] = float(len({s.problem_id for s in chosen}))
    if chosen:
        stats.metrics["mean_rv"] = sum(s.rv for s in chosen) / len(chosen)  # type: ignore[misc]
        stats.metrics["mean_cd"] = sum(s.cd for s in chosen) / len(chosen)  # type: ignore[misc]
    if cfg.target_size is not None and len(chosen) < cfg.target_size:
        stats.info["shortfall"] = cfg.target_size - len(chosen)
    return chosen, stats
