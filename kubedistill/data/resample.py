"""Task-aware re-sampling to a configured mix (by domain, or by source), deterministic with a seed.

Rules of :func:`resample`:

* ``mix`` gives a weight per group (``{"math": 0.5, "code": 0.3, "science": 0.2}``); weights are
  normalised to sum to 1. Groups absent from ``mix`` (or with weight 0) are left out entirely.
* With ``size``, each group's quota is ``size × weight`` (largest-remainder rounding, so quotas sum
  to ``size``). Without ``size``, the output is the **largest set that has exactly the mix** the
  available problems allow (the scarcest group, relative to its weight, sets the size).
* A group with fewer problems than its quota contributes all it has; the shortfall is reported in
  ``stats.info["resample"]["shortfall"]`` and logged as a warning — never silent. With
  ``fill_shortfall`` the missing count is redistributed to the other groups by weight (as far as they
  have problems), trading the exact mix for the target size.
* Within a group, problems are chosen uniformly at random with a seed derived from ``seed`` and the
  group name (adding a group does not change another group's picks). The output keeps input order.
* Problems left out are not errors: they are counted as ``stats.dropped["resampled_out"]`` and listed
  per group in ``stats.info``, but not written one by one to the rejects file (a 100K-row pool cut to
  10K would bury the real rejects under 90K "not chosen" rows). Their ids are the input ids that are
  not in the output.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kubedistill.core.records import Problem, StageStats

log = logging.getLogger(__name__)

RESAMPLED_OUT = "resampled_out"


def largest_remainder(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Integer shares of ``total`` proportional to ``weights`` (which sum to 1), summing to ``total``;
    ties in the remainders go to the group listed first."""
    exact = {g: total * w for g, w in weights.items()}
    shares = {g: int(v) for g, v in exact.items()}
    left = total - sum(shares.values())
    order = sorted(weights, key=lambda g: (-(exact[g] - shares[g]), list(weights).index(g)))
    for g in order[:left]:
        shares[g] += 1
    return shares


def _normalise(mix: Mapping[str, float]) -> dict[str, float]:
    if any(w < 0 for w in mix.values()):
        raise ValueError(f"mix weights must be >= 0: {dict(mix)}")
    total = sum(mix.values())
    if total <= 0:
        raise ValueError(f"mix weights sum to {total}: at least one must be positive")
    return {g: w / total for g, w in mix.items() if w > 0}


def quotas(
    available: Mapping[str, int],
    mix: Mapping[str, float],
    size: int | None,
    fill_shortfall: bool = False,
) -> tuple[dict[str, int], dict[str, int]]:
    """``(take, shortfall)`` per group of ``mix``: how many problems to take from each group, and how
    many each group lacks against its quota (only groups that lack any)."""
    weights = _normalise(mix)
    if size is None:
        # The largest total whose quotas every group with problems can fill; a group with none cannot
        # limit it (the output would be empty) — its whole quota is reported as shortfall instead.
        present = [g for g in weights if available.get(g, 0) > 0]
        target = min((int(available[g] / weights[g] + 1e-9) for g in present), default=0)
        want = largest_remainder(target, weights)
        take = {g: min(want[g], available.get(g, 0)) for g in weights}
        shortfall = {g: want[g] - take[g] for g in weights if want[g] > take[g]}
        return take, shortfall
    want = largest_remainder(size, weights)
    take = {g: min(want[g], available.get(g, 0)) for g in weights}
    shortfall = {g: want[g] - take[g] for g in weights if want[g] > take[g]}
    if fill_shortfall:
        missing = sum(shortfall.values())
        while missing > 0:
            spare = {g: available.get(g, 0) - take[g] for g in weights if available.get(g, 0) > take[g]}
            if not spare:
                break
            share = largest_remainder(missing, _normalise({g: weights[g] for g in spare}))
            moved = 0
            for g, extra in share.items():
                add = min(extra, spare[g])
                take[g] += add
                moved += add
            missing -= moved
            if moved == 0:
                break
    return take, shortfall


def resample(
    problems: Sequence[Problem],
    mix: Mapping[str, float] | None,
    size: int | None,
    seed: int,
    stats: StageStats,
    *,
    by: Literal["domain", "source"] = "domain",
    fill_shortfall: bool = False,
) -> list[Problem]:
    """Re-sample ``problems`` to ``mix`` / ``size`` (see the module docstring). With neither, the input
    is returned unchanged; with only ``size``, a uniform sample of ``size`` problems."""
    if mix is None and (size is None or size >= len(problems)):
        info: dict[str, Any] = {"applied": False, "by": by, "size": size, "available": len(problems)}
        if size is not None and size > len(problems):
            info["shortfall"] = {"*": size - len(problems)}
            log.warning("resample: size %d asked, only %d problems available", size, len(problems))
        stats.info["resample"] = info
        return list(problems)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        groups.setdefault(p.domain if by == "domain" else p.source, []).append(i)
    available = {g: len(ix) for g, ix in groups.items()}
    if mix is None:
        weights: dict[str, float] = {"*": 1.0}
        take = {"*": size or 0}
        shortfall: dict[str, int] = {}
        pools = {"*": list(range(len(problems)))}
        available_report = {"*": len(problems)}
    else:
        weights = _normalise(mix)
        take, shortfall = quotas(available, mix, size, fill_shortfall)
        pools = {g: groups.get(g, []) for g in take}
        available_report = available
    chosen: list[int] = []
    for g, n in take.items():
        pool = pools[g]
        if n >= len(pool):
            chosen.extend(pool)
        else:
            chosen.extend(random.Random(f"resample:{seed}:{g}").sample(pool, n))
    keep = set(chosen)
    out = [p for i, p in enumerate(problems) if i in keep]
    left_out = len(problems) - len(out)
    if left_out:
        stats.dropped[RESAMPLED_OUT] = stats.dropped.get(RESAMPLED_OUT, 0) + left_out
    for g, n in shortfall.items():
        log.warning("resample: %s %r has %d problems, %d short of its quota", by, g, available.get(g, 0), n)
    per_group = {
        g: {
            "available": available_report.get(g, 0),
            "weight": round(weights.get(g, 0.0), 6),
            "selected": take.get(g, 0),
            "shortfall": shortfall.get(g, 0),
        }
        for g in sorted(set(available_report) | set(take))
    }
    stats.info["resample"] = {
        "applied": True,
        "by": by,
        "size": size,
        "seed": seed,
        "fill_shortfall": fill_shortfall,
        "groups": per_group,
        "shortfall": shortfall,
        "resampled_out": left_out,
    }
    return out
