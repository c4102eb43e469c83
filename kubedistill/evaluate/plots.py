"""PNG plots of evaluation runs: pass@k curves, CoT length distributions, scores side by side.

Every function takes one or more *runs* keyed by a label (``{"base": ..., "student": ...}``; a single
evaluation is a run of one), so the same plots serve one model and a comparison. Figures are built
with :class:`matplotlib.figure.Figure` directly (no pyplot global state, safe in threads and in a
KFP component) and written with :func:`save_plots`.

* ``pass_at_k.png`` — one panel per benchmark, pass@k against k (log2 axis), one line per run;
* ``lengths.png`` — one panel per benchmark, the distribution of completion tokens of correct (solid)
  and incorrect (dashed) completions, one colour per run, as shares of the run's completions so runs
  with different sample counts compare; the means are in the legend;
* ``scores.png`` — grouped bars of pass@1 (or the smallest k) per benchmark and run, with values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from kubedistill.evaluate.core import BenchmarkResult

PLOT_FILES = {"scores": "scores.png", "pass_at_k": "pass_at_k.png", "lengths": "lengths.png"}
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
_DPI = 110


class LengthPoint(Protocol):
    """What the length plot needs of an item (:class:`~kubedistill.evaluate.core.EvalItem` has it)."""

    correct: bool | None
    completion_tokens: int
    method: str


def _color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def _grid(n: int, panel_w: float = 4.6, panel_h: float = 3.4, max_cols: int = 3) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    ncols = min(max_cols, max(1, n))
    nrows = math.ceil(max(1, n) / ncols)
    fig = Figure(figsize=(panel_w * ncols, panel_h * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[: max(1, n)]


def _benchmarks(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for per_bench in runs.values():
        for b in per_bench:
            seen.setdefault(b, None)
    return list(seen)


def _ks(result: BenchmarkResult | Mapping[str, Any]) -> list[tuple[int, float]]:
    pk = (
        result.pass_at_k if hasattr(result, "pass_at_k") else {k: v for k, v in result.items() if k.startswith("pass@")}
    )
    out = []
    for key, v in pk.items():
        try:
            out.append((int(key.removeprefix("pass@")), float(v)))
        except ValueError:
            continue
    return sorted(out)


def pass_at_k_figure(runs: Mapping[str, Mapping[str, BenchmarkResult]]) -> Figure:
    """pass@k against k, one panel per benchmark, one line per run."""
    benches = _benchmarks(runs)
    fig, axes = _grid(len(benches))
    for ax, bench in zip(axes, benches, strict=False):
        all_k: set[int] = set()
        for i, (label, per_bench) in enumerate(runs.items()):
            r = per_bench.get(bench)
            if r is None:
                continue
            pts = _ks(r)
            if not pts:
                continue
            ks, vs = zip(*pts, strict=True)
            all_k.update(ks)
            ax.plot(ks, vs, marker="o", color=_color(i), label=f"{label} (n={r.n})", linewidth=2)
            for k, v in pts[-1:]:
                ax.annotate(f"{v:.3f}", (k, v), textcoords="offset points", xytext=(6, -3), fontsize=8, color=_color(i))
        ax.set_xscale("log", base=2)
        ticks = sorted(all_k) or [1]
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.set_xlim(ticks[0] / 1.4, ticks[-1] * 1.9)  # room for the value labels right of the last point
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k")
        ax.set_title(_panel_title(bench, runs))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("pass@k (unbiased estimator, mean over problems)", fontsize=12)
    return fig


def _panel_title(bench: str, runs: Mapping[str, Mapping[str, Any]]) -> str:
    ns = {getattr(r, "n_problems", None) for per in runs.values() for b, r in per.items() if b == bench}
    ns.discard(None)
    if len(ns) == 1:
        return f"{bench} ({ns.pop()} problems)"
    return bench


def lengths_figure(runs: Mapping[str, Mapping[str, Sequence[LengthPoint]]]) -> Figure:
    """Completion tokens of correct (solid) and incorrect (dashed) completions per benchmark and run."""
    import numpy as np

    benches = _benchmarks(runs)
    fig, axes = _grid(len(benches), panel_w=6.0, panel_h=3.8, max_cols=2)  # legends need the width
    for ax, bench in zip(axes, benches, strict=False):
        points = {label: [p for p in per.get(bench, []) if p.method != "error"] for label, per in runs.items()}
        values = [p.completion_tokens for pts in points.values() for p in pts]
        if not values:
            ax.text(0.5, 0.5, "no completions", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(bench)
            continue
        lo, hi = min(values), max(values)
        if hi - lo < 40:  # few distinct lengths: one bin per token count
            bins = np.arange(lo - 0.5, hi + 1.5)
        else:
            bins = np.histogram_bin_edges(values, bins="auto")
            if len(bins) > 41:
                bins = np.linspace(lo, hi, 41)
        for i, (label, pts) in enumerate(points.items()):
            if not pts:
                continue
            total = len(pts)
            for correct, style, word in ((True, "-", "correct"), (False, "--", "incorrect")):
                xs = [p.completion_tokens for p in pts if p.correct is correct]
                if not xs:
                    continue
                ax.hist(
                    xs,
                    bins=bins,
                    weights=np.full(len(xs), 1.0 / total),
                    histtype="step",
                    linestyle=style,
                    linewidth=1.8,
                    color=_color(i),
                    label=f"{label} {word}: {len(xs)}, mean {np.mean(xs):,.0f}",
                )
        ax.set_xlabel("completion tokens")
        ax.set_ylabel("share of completions")
        ax.set_title(bench)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper right")
    fig.suptitle("CoT length: correct (solid) vs incorrect (dashed)", fontsize=12)
    return fig


def scores_figure(runs: Mapping[str, Mapping[str, BenchmarkResult]]) -> Figure:
    """Grouped bars: pass@1 (else the smallest k reported) per benchmark, one bar per run."""
    from matplotlib.figure import Figure

    benches = _benchmarks(runs)
    labels = list(runs)
    width = min(0.4, 0.8 / max(1, len(labels)))
    fig = Figure(figsize=(max(5.0, 1.3 * len(benches) * max(1, len(labels)) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    metric_names: set[str] = set()
    for i, label in enumerate(labels):
        xs, ys = [], []
        for j, bench in enumerate(benches):
            r = runs[label].get(bench)
            pts = _ks(r) if r is not None else []
            if not pts:
                continue
            k, v = next(((k, v) for k, v in pts if k == 1), pts[0])
            metric_names.add(f"pass@{k}")
            xs.append(j + (i - (len(labels) - 1) / 2) * width)
            ys.append(v)
        bars = ax.bar(xs, ys, width=width * 0.95, color=_color(i), label=label)
        ax.bar_label(bars, labels=[f"{y:.3f}" for y in ys], fontsize=8, padding=2)
    ax.set_xticks(range(len(benches)), benches)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(" / ".join(sorted(metric_names)) or "pass@1")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper right", ncols=min(4, len(labels)))
    ax.set_title("pass@1 by benchmark", fontsize=12)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    fig.savefig(tmp, dpi=_DPI, format="png")
    tmp.replace(p)
    return p


def save_plots(
    results: Mapping[str, Mapping[str, BenchmarkResult]],
    items: Mapping[str, Mapping[str, Sequence[LengthPoint]]],
    out_dir: str | Path,
) -> dict[str, Path]:
    """Write ``scores.png``, ``pass_at_k.png`` and ``lengths.png`` into ``out_dir``; returns name → path.

    ``results`` and ``items`` are keyed by run label, then by benchmark."""
    out = Path(out_dir)
    return {
        "scores": save_figure(scores_figure(results), out / PLOT_FILES["scores"]),
        "pass_at_k": save_figure(pass_at_k_figure(results), out / PLOT_FILES["pass_at_k"]),
        "lengths": save_figure(lengths_figure(items), out / PLOT_FILES["lengths"]),
    }
