"""The run report: stage funnel, student vs base, CoT lengths — as Markdown (KFP UI), a self-contained
HTML page with plots (logged to MLflow), a JSON summary, and the terminal summary of `kubedistill run`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from kubedistill.stages import STAGE_ORDER, TRAINING_STAGES

_TRAINING_KEYS = ("loss", "mae", "spearman", "reward", "skipped", "steps", "accurac", "margins", "elapsed_s")


class FunnelRow(BaseModel):
    stage: str
    n_in: int
    n_out: int
    dropped: dict[str, int] = Field(default_factory=dict)
    effect: str = ""  # what the stage did besides dropping: labels given, CoTs rewritten, steps trained


class RunSummary(BaseModel):
    pipeline: str
    run_name: str = ""
    funnel: list[FunnelRow] = Field(default_factory=list)
    # stage -> source -> {n_in, n_out}: the funnel per source (a dataset CoTs were imported from, or a
    # teacher; collect: per source of problems, and cots_in / cots_out for sources that import CoTs)
    by_source: dict[str, dict[str, dict[str, int]]] = Field(default_factory=dict)
    training: dict[str, dict[str, float]] = Field(default_factory=dict)  # stage -> loss, MAE, reward, ...
    evaluation: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)  # model -> benchmark -> result
    # model -> benchmark -> paired difference against the baseline (mean_delta, delta_ci95, shared_problems, ...)
    comparison: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    baseline: str | None = None
    warnings: list[str] = Field(default_factory=list)  # stages that did nothing, judges that missed the format
    lengths: dict[str, list[int]] = Field(default_factory=dict, exclude=True)  # model -> completion tokens
    scores: list[tuple[int, int]] = Field(default_factory=list, exclude=True)  # (rv, cd) of scored CoTs
    model_uri: str | None = None
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    report_html: str | None = None


def _n(m: dict[str, Any], key: str) -> int:
    v = m.get(key)
    return int(v) if isinstance(v, int | float) else 0


def _labels(m: dict[str, Any], name: str, values: tuple[str, ...]) -> str:
    parts = [f"{v} {_n(m, f'{name}.{v}')}" for v in values if _n(m, f"{name}.{v}")]
    if _n(m, f"{name}.unparsable"):
        parts.append(f"unparsable {_n(m, f'{name}.unparsable')}")
    frac = m.get(f"{name}.labelled_fraction")
    if isinstance(frac, int | float):
        parts.append(f"{frac:.0%} labelled")
    return ", ".join(parts)


def stage_effect(stage: str, m: dict[str, Any]) -> str:
    """One line: what ``stage`` did to its records, from its metrics (empty when there is nothing to say)."""
    if stage == "collect" and "train" in m:
        made = f"train {_n(m, 'train')}, held out {_n(m, 'heldout')}"
        return made + (f"; CoTs imported {_n(m, 'cots_in')}, kept {_n(m, 'cots_out')}" if _n(m, "cots_in") else "")
    if stage == "judge":
        return _labels(m, "difficulty", ("easy", "medium", "hard"))
    if stage == "score":
        return "; ".join(f"{n.upper()}: {_labels(m, n, tuple(str(i) for i in range(10)))}" for n in ("rv", "cd"))
    if stage == "rewrite":
        made = f"extended {_n(m, 'rewrite.extend')}, simplified {_n(m, 'rewrite.simplify')}"
        if _n(m, "rewrite.rewrite_failed"):
            made += f", failed {_n(m, 'rewrite.rewrite_failed')}"
        if not any(k.startswith("rewrite.validated.") for k in m):
            return made
        v = {k.removeprefix("rewrite.validated."): _n(m, k) for k in m if k.startswith("rewrite.validated.")}
        moved = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in v.items() if n)
        return f"{made}; re-judged: {moved or 'none'}; kept {_n(m, 'rewrite.kept')}, dropped {_n(m, 'rewrite.dropped')}"
    if stage == "verify":
        return f"correct {_n(m, 'n_correct')} ({float(m.get('correct_rate', 0.0)):.0%})" if "n_correct" in m else ""
    if stage in ("sft", "dpo", "grpo"):
        if m.get("skipped"):
            return "skipped"
        steps = sum(v for k, v in m.items() if isinstance(v, int | float) and (k == "steps" or k.endswith(".steps")))
        return f"{steps:.0f} optimizer steps" if steps else ""
    if stage == "select" and "problems_covered" in m:
        return f"{_n(m, 'problems_covered')} problems covered"
    return ""


def stage_warnings(stage_metrics: dict[str, dict[str, Any]]) -> list[str]:
    """Stages that did nothing, or did their work badly enough to say so in the run's summary."""
    out: list[str] = []
    for stage, m in stage_metrics.items():
        m = m or {}
        if "n_in" not in m:
            continue
        n_in, n_out = _n(m, "n_in"), _n(m, "n_out")
        if n_in and not n_out:
            out.append(f"{stage}: did nothing useful — none of its {n_in} inputs came out")
        for name in ("difficulty", "rv", "cd"):
            frac = m.get(f"{name}.labelled_fraction")
            if isinstance(frac, int | float) and frac < 0.9:
                cut = _n(m, "judge.truncated")
                why = (
                    f"{cut} of its replies were cut at max_tokens: raise max_tokens or lower rationale_chars"
                    if cut
                    else "`constrained: true` helps small judges"
                )
                out.append(
                    f"{stage}: the judge gave only {frac:.0%} of its {name} labels in its format (unlabelled CoTs "
                    f"are counted, not labelled; {why})"
                )
            values = {k.split(".", 1)[1]: _n(m, k) for k in m if k.startswith(f"{name}.") and k.count(".") == 1}
            values = {k: v for k, v in values.items() if k not in ("unparsable", "labelled_fraction") and v}
            if len(values) == 1 and sum(values.values()) > 1:
                (only,) = values
                out.append(
                    f"{stage}: the judge gave every one of its {values[only]} CoTs the same {name} label ({only}): "
                    "its labels carry no information (a bigger judge, or a rationale before the label, may help)"
                )
        if stage == "rewrite" and "rewrite.extend" in m:
            made = _n(m, "rewrite.extend") + _n(m, "rewrite.simplify")
            judge = stage_metrics.get("judge") or {}
            todo = _n(judge, "difficulty.easy") + _n(judge, "difficulty.hard")
            if not made:
                why = (
                    f" although the judge labelled {todo} CoTs easy or hard"
                    if todo
                    else " (no CoT was judged easy or hard)"
                )
                out.append(f"rewrite: did nothing — no CoT was rewritten{why}")
            elif "rewrite.kept" in m and not _n(m, "rewrite.kept"):
                out.append(f"rewrite: every one of its {made} rewrites was dropped by validation")
        if stage in ("sft", "dpo", "grpo") and m.get("skipped"):
            out.append(f"{stage}: did nothing — skipped (too few training rows); the model passed through unchanged")
    return out


def funnel_from_metrics(stage_metrics: dict[str, dict[str, Any]]) -> list[FunnelRow]:
    rows = []
    order = sorted(stage_metrics, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER))
    for stage in order:
        m = stage_metrics[stage] or {}
        if "n_in" not in m:
            continue
        dropped = {k.removeprefix("dropped."): int(v) for k, v in m.items() if k.startswith("dropped.") and v}
        if m.get("skipped"):
            dropped["skipped: too few inputs"] = int(m["n_in"]) - sum(dropped.values())
        rows.append(
            FunnelRow(
                stage=stage, n_in=int(m["n_in"]), n_out=int(m["n_out"]), dropped=dropped, effect=stage_effect(stage, m)
            )
        )
    return rows


def by_source_from_metrics(stage_metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """``source.<src>.<count>`` metrics of each stage (in pipeline order) as ``{stage: {src: {count: n}}}``."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    order = sorted(stage_metrics, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER))
    for stage in order:
        for k, v in (stage_metrics[stage] or {}).items():
            if not k.startswith("source.") or not isinstance(v, int | float):
                continue
            src, _, count = k.removeprefix("source.").rpartition(".")
            if src:
                out.setdefault(stage, {}).setdefault(src, {})[count] = int(v)
    return out


def training_from_metrics(stage_metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The trainers' headline figures (losses, reward-model MAE / Spearman, rewards, steps, time)."""
    out: dict[str, dict[str, float]] = {}
    for stage in TRAINING_STAGES:
        m = stage_metrics.get(stage) or {}
        picked = {
            k: float(v)
            for k, v in sorted(m.items())
            if isinstance(v, int | float) and not k.startswith("dropped.") and any(w in k for w in _TRAINING_KEYS)
        }
        if picked:
            out[stage] = picked
    return out


def load_lengths(results_dir: Path) -> dict[str, list[int]]:
    """Completion tokens per model, from an evaluation's ``<label>/items/*.jsonl`` files."""
    out: dict[str, list[int]] = {}
    for run in sorted(p for p in results_dir.iterdir() if (p / "items").is_dir()) if results_dir.is_dir() else []:
        for f in sorted((run / "items").glob("*.jsonl")):
            for line in f.read_text().splitlines():
                if line.strip():
                    out.setdefault(run.name, []).append(int(json.loads(line)["completion_tokens"]))
    return out


# -------------------------------------------------------------------------------------------- render


def markdown(summary: RunSummary) -> str:
    lines = [f"# {summary.pipeline} — run report", ""]
    if summary.funnel:
        lines += [
            "## Stage funnel",
            "",
            "| stage | in | out | dropped (by reason) | effect |",
            "|---|---:|---:|---|---|",
        ]
        for r in summary.funnel:
            drops = ", ".join(f"{k}: {v}" for k, v in sorted(r.dropped.items())) or "—"
            lines.append(f"| {r.stage} | {r.n_in} | {r.n_out} | {drops} | {r.effect or '—'} |")
        lines.append("")
    if summary.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in summary.warnings] + [""]
    if summary.by_source:
        lines += [
            "## Funnel by source",
            "",
            "Problems per source in `collect` (and the CoTs a source imports); CoTs per source (the dataset "
            "they were imported from, or their teacher) in the CoT stages.",
            "",
            "| stage | source | in | out | CoTs in | CoTs out |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for stage, sources in summary.by_source.items():
            for src, c in sorted(sources.items()):
                cells = [str(c[k]) if k in c else "—" for k in ("n_in", "n_out", "cots_in", "cots_out")]
                lines.append(f"| {stage} | {src} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary.training:
        lines += ["## Training", "", "| stage | metric | value |", "|---|---|---:|"]
        for stage, m in summary.training.items():
            lines += [f"| {stage} | {k} | {v:.4g} |" for k, v in m.items()]
        lines.append("")
    if summary.evaluation:
        lines += [
            "## Evaluation",
            "",
            "| model | benchmark | problems | accuracy | 95% interval | pass@k | mean / median tokens |",
            "|---|---|---:|---:|---|---|---|",
        ]
        for model, benches in summary.evaluation.items():
            for bench, r in benches.items():
                passk = ", ".join(f"{k}={v:.3f}" for k, v in r.items() if k.startswith("pass@"))
                ln = r.get("lengths", {})
                lines.append(
                    f"| {model} | {bench} | {r.get('n_problems', 0)} | {r.get('accuracy', 0):.3f} | "
                    f"{_interval(r.get('accuracy_ci95'))} | {passk} | "
                    f"{ln.get('mean', 0):.0f} / {ln.get('median', 0):.0f} |"
                )
        lines.append("")
        lines += [
            gap_line(summary.baseline or "", model, bench, d)
            for model, b in summary.comparison.items()
            for bench, d in b.items()
        ]
        lines.append("")
    if summary.model_uri:
        lines += [f"Registered student: `{summary.model_uri}`", ""]
    return "\n".join(lines)


def _interval(ci: Any) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list | tuple) and len(ci) == 2 else "—"


def gap_line(baseline: str, model: str, bench: str, d: dict[str, Any]) -> str:
    """``student − base on heldout (100 problems): +0.310, 95% interval [+0.21, +0.41]: a real gap``."""
    lo, hi = d.get("delta_ci95", (0.0, 0.0))
    verdict = (
        "outside the interval: a real difference" if lo > 0 or hi < 0 else "inside the interval: no real difference"
    )
    return (
        f"{model} − {baseline} on {bench} ({d.get('shared_problems', 0)} problems, paired): "
        f"{d.get('mean_delta', 0.0):+.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}] — 0 is {verdict}"
    )


def load_comparison(results_dir: Path) -> tuple[str | None, dict[str, dict[str, dict[str, Any]]]]:
    """The baseline and each other model's paired difference per benchmark, from ``compare/comparison.json``."""
    f = results_dir / "compare" / "comparison.json"
    if not f.exists():
        return None, {}
    data = json.loads(f.read_text())
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for bench, entry in data.get("benchmarks", {}).items():
        for model, pr in entry.get("paired", {}).items():
            out.setdefault(model, {})[bench] = pr
    return data.get("baseline"), out


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(summary: RunSummary) -> dict[str, str]:
    """Base64 PNGs: the funnel, accuracy per model and benchmark, completion-length distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    if summary.funnel:
        fig, ax = plt.subplots(figsize=(7, 3))
        xs = range(len(summary.funnel))
        ax.bar([x - 0.2 for x in xs], [r.n_in for r in summary.funnel], width=0.4, color="#c8d6e5", label="in")
        ax.bar([x + 0.2 for x in xs], [r.n_out for r in summary.funnel], width=0.4, color="#2e86de", label="out")
        ax.set_xticks(list(xs), [r.stage for r in summary.funnel])
        ax.set_ylabel("records")
        ax.set_title("Stage funnel")
        ax.legend()
        out["funnel"] = _png(fig)
    if summary.evaluation:
        fig, ax = plt.subplots(figsize=(7, 3))
        models = list(summary.evaluation)
        benches = sorted({b for m in summary.evaluation.values() for b in m})
        width = 0.8 / max(1, len(models))
        for i, model in enumerate(models):
            vals = [summary.evaluation[model].get(b, {}).get("accuracy", 0.0) for b in benches]
            ax.bar([j + i * width for j in range(len(benches))], vals, width=width, label=model)
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(benches))], benches)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title("Accuracy by model")
        ax.legend()
        out["accuracy"] = _png(fig)
    if summary.lengths:
        fig, ax = plt.subplots(figsize=(7, 3))
        everything = [x for xs in summary.lengths.values() for x in xs]
        lo, hi = (min(everything), max(everything)) if everything else (0, 1)
        bins = [lo + (hi - lo + 1) * i / 20 for i in range(21)]  # shared bins: models are comparable
        for model, xs in summary.lengths.items():
            if xs:
                ax.hist(xs, bins=bins, alpha=0.55, label=f"{model} (median {statistics.median(xs):.0f})")
        ax.set_xlabel("completion tokens")
        ax.set_ylabel("completions")
        ax.set_title("CoT length")
        ax.legend()
        out["lengths"] = _png(fig)
    if summary.scores:
        import numpy as np

        rv = [a for a, _ in summary.scores]
        cd = [b for _, b in summary.scores]
        fig, axes = plt.subplots(1, 3, figsize=(11, 3))
        for ax, vals, name in ((axes[0], rv, "reasoning verbosity (RV)"), (axes[1], cd, "cognitive difficulty (CD)")):
            ax.bar(range(10), [vals.count(i) for i in range(10)], color="#2e86de")
            ax.set_xticks(range(10))
            ax.set_xlabel(name)
            ax.set_ylabel("CoTs")
        grid = np.zeros((10, 10))
        for a, b in summary.scores:
            grid[b, a] += 1
        im = axes[2].imshow(grid, origin="lower", cmap="Blues")
        axes[2].set_xlabel("RV")
        axes[2].set_ylabel("CD")
        axes[2].set_xticks(range(10))
        axes[2].set_yticks(range(10))
        fig.colorbar(im, ax=axes[2], fraction=0.046)
        fig.suptitle(f"RV / CD of {len(summary.scores)} scored CoTs")
        out["scores"] = _png(fig)
    return out


def render_html(summary: RunSummary) -> str:
    imgs = plots(summary)
    md = markdown(summary)
    body = []
    for line in md.splitlines():
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            title = line[3:]
            body.append(f"<h2>{html.escape(title)}</h2>")
            key = {"Stage funnel": "funnel", "Evaluation": "accuracy"}.get(title)
            if key and key in imgs:
                body.append(f'<img alt="{key}" src="data:image/png;base64,{imgs[key]}">')
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-:"):
                continue
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    if "lengths" in imgs:
        body.append(f'<h2>CoT length</h2><img alt="lengths" src="data:image/png;base64,{imgs["lengths"]}">')
    if "scores" in imgs:
        body.append(f'<h2>RV / CD distribution</h2><img alt="scores" src="data:image/png;base64,{imgs["scores"]}">')
    # wrap consecutive rows in tables
    out, in_table = [], False
    for b in body:
        if b.startswith("<tr>") and not in_table:
            out.append("<table>")
            in_table = True
        if not b.startswith("<tr>") and in_table:
            out.append("</table>")
            in_table = False
        out.append(b)
    if in_table:
        out.append("</table>")
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
        "td{border:1px solid #ccc;padding:.3em .6em}tr:first-child td{font-weight:bold;background:#f4f6f8}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(summary.pipeline)} report"
        f"</title><style>{style}</style></head><body>{''.join(out)}</body></html>"
    )


# ------------------------------------------------------------------------------------------ terminal


def print_run_summary(result: Any) -> None:
    """What `kubedistill run` prints at the end; the last two lines are ``tracking:`` and ``model:``."""
    import sys

    from rich.console import Console
    from rich.table import Table

    # In a log (no terminal) rich would squeeze the tables into 80 columns.
    console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 140)
    summary = None
    summary_path = result.outputs.get("summary")
    path = getattr(summary_path, "path", summary_path)
    if path and Path(path).exists():
        summary = RunSummary.model_validate_json(Path(path).read_text())
    if summary is not None:
        if summary.funnel:
            t = Table(title="Stage funnel")
            for col in ("stage", "in", "out", "dropped", "effect"):
                t.add_column(col, justify="right" if col in ("in", "out") else "left")
            for r in summary.funnel:
                t.add_row(
                    r.stage,
                    str(r.n_in),
                    str(r.n_out),
                    ", ".join(f"{k}={v}" for k, v in sorted(r.dropped.items())) or "-",
                    r.effect or "-",
                )
            console.print(t)
        for w in summary.warnings:
            console.print(f"[bold yellow]warning:[/] {w}")
        if summary.training:
            t = Table(title="Training")
            for col in ("stage", "steps", "loss first -> last", "other"):
                t.add_column(col, justify="right" if col == "steps" else "left")
            for stage, m in summary.training.items():
                steps = sum(v for k, v in m.items() if k == "steps" or k.endswith(".steps"))
                # one pair per curriculum stage / reward-model head: "medium.first_loss", "rv.first_loss", ...
                loss = (
                    "; ".join(
                        (f"{k.removesuffix('first_loss').rstrip('.')}: " if k != "first_loss" else "")
                        + f"{v:.3g} -> {m[k.replace('first_loss', 'last_loss')]:.3g}"
                        for k, v in m.items()
                        if k.endswith("first_loss") and k.replace("first_loss", "last_loss") in m
                    )
                    or "-"
                )
                other = ", ".join(
                    f"{k}={v:.3g}"
                    for k, v in m.items()
                    if k.endswith(("mae_points", "spearman", "rewards.margins", "reward.last", "skipped"))
                )
                t.add_row(stage, f"{steps:.0f}", loss, other or "-")
            console.print(t)
        if summary.evaluation:
            t = Table(title="Evaluation: base vs student")
            for col in (
                "model",
                "benchmark",
                "problems",
                "accuracy",
                "95% interval",
                "pass@1",
                "answered",
                "mean tokens",
                "median tokens",
            ):
                t.add_column(col, justify="left" if col in ("model", "benchmark") else "right")
            for model, benches in summary.evaluation.items():
                for bench, r in benches.items():
                    ln = r.get("lengths", {})
                    t.add_row(
                        model,
                        bench,
                        str(r.get("n_problems")),
                        f"{r.get('accuracy', 0):.3f}",
                        _interval(r.get("accuracy_ci95")),
                        f"{r.get('pass@1', float('nan')):.3f}",
                        f"{r.get('answered_rate', 0):.2f}",
                        f"{ln.get('mean', 0):.0f}",
                        f"{ln.get('median', 0):.0f}",
                    )
            console.print(t)
            for model, benches in summary.comparison.items():
                for bench, d in benches.items():
                    print(gap_line(summary.baseline or "", model, bench, d))
        if summary.report_html:
            print(f"report: {summary.report_html}")
        if summary.mlflow_run_id:
            print(f"mlflow run: {summary.mlflow_run_id} (the report is among its artifacts)")
    executed, reused = list(getattr(result, "executed", [])), list(getattr(result, "reused", []))
    if executed or reused:
        ran = f": {', '.join(executed)}" if executed else ""
        print(f"tasks: {len(reused)} reused from the cache, {len(executed)} run{ran}")
        if reused:
            print(f"reused: {', '.join(reused)}")
    started = getattr(result, "teacher_started", None)
    if started is not None:
        print(
            "teacher: started (a task had requests no cache answered)"
            if started
            else "teacher: not started (every teacher answer came from the caches)"
        )
    print(f"run dir: {result.run_dir} ({result.elapsed_s:.0f} s)")
    # plain prints, never wrapped: CI and scripts read these two last lines
    print(f"tracking: {result.tracking_uri}")
    print(f"model: {result.model_uri or '(none registered)'}")


def print_ablation_table(result: Any) -> None:
    """The ablation table of a local run (`kubedistill ablate`), with the path of its HTML report."""
    path = result.outputs.get("table")
    path = getattr(path, "path", path)
    if not path or not Path(path).exists():
        print("ablation: no table (the run did not get that far)")
        return
    from kubedistill.ablation import table_markdown

    data = json.loads(Path(path).read_text())
    print(f"\nAblation {data.get('name', '')}: every arm on the same held-out problems (greedy pass@1)\n")
    print(table_markdown(data.get("rows", [])))
    html_copy = Path(result.run_dir) / "ablation.html"
    if html_copy.exists():
        print(f"\nablation report: {html_copy}")
    if data.get("parent_run_id"):
        print(f"mlflow parent run: {data['parent_run_id']} (every arm's runs are nested under it)")


def write_report(
    *,
    pipeline: str,
    report: str,
    report_html: str,
    summary: str,
    run_name: str = "",
    model_uri: str = "",
    results: str | None = None,
    scored: str | None = None,
    tracking: Any = None,
    **stage_metrics: dict[str, Any] | None,
) -> dict[str, float]:
    """Stage `report`: the run report — funnel, training, evaluation, CoT lengths (and the RV/CD
    distribution of ``scored`` samples) — as Markdown (``report``), HTML with plots (``report_html``) and
    JSON (``summary``); with ``tracking``, logged to MLflow as the pipeline's run (the HTML report among
    its artifacts). ``stage_metrics`` are ``<stage>_metrics`` dicts (None for stages the pipeline lacks).
    Returns the run's flat metrics."""
    import os

    from kubedistill import tracking as tr
    from kubedistill.core.records import Sample, read_records, write_json
    from kubedistill.core.secrets import redact

    run_name = run_name or os.environ.get("KFP_RUN_ID", "")  # not a task input: the task stays cacheable
    metrics_by_stage = {k.removesuffix("_metrics"): v for k, v in stage_metrics.items() if v is not None}
    res_file = Path(results) / "results.json" if results else None
    s = RunSummary(
        pipeline=pipeline,
        run_name=run_name,
        funnel=funnel_from_metrics(metrics_by_stage),
        by_source=by_source_from_metrics(metrics_by_stage),
        training=training_from_metrics(metrics_by_stage),
        evaluation=json.loads(res_file.read_text()) if res_file and res_file.exists() else {},
        model_uri=model_uri or None,
        tracking_uri=tr.resolve_tracking_uri(tracking.tracking_uri) if tracking is not None else None,
        report_html=report_html,
    )
    s.lengths = load_lengths(Path(results)) if results else {}
    if results:
        s.baseline, s.comparison = load_comparison(Path(results))
    s.warnings = stage_warnings(metrics_by_stage)
    if scored:
        s.scores = [(x.rv, x.cd) for x in read_records(scored, Sample) if x.rv is not None and x.cd is not None]
    # everything written goes through the redaction step (a tracking URI may carry a password)
    Path(report).write_text(redact(markdown(s)))
    Path(report_html).write_text(redact(render_html(s)))
    metrics = {f"{r.stage}.n_out": float(r.n_out) for r in s.funnel}
    for model, benches in s.evaluation.items():
        for bench, r in benches.items():
            metrics.update(
                {
                    f"{model}.{bench}.{k}".replace("@", "_at_"): float(v)
                    for k, v in r.items()
                    if isinstance(v, int | float)
                }
            )
    if tracking is not None:
        import mlflow

        with tr.stage_run(
            f"pipeline:{pipeline}",
            experiment=tracking.experiment,
            tracking_uri=tracking.tracking_uri,
            tags={
                "kubedistill.kind": "pipeline",
                "kubedistill.run_name": run_name,
                "kubedistill.model_uri": model_uri,
                "mlflow.note.content": redact(markdown(s)),
            },
        ) as run:
            mlflow.log_metrics({tr.metric_key(k): v for k, v in metrics.items()})
            mlflow.log_artifact(report_html, artifact_path="report")
            mlflow.log_artifact(report, artifact_path="report")
            s.mlflow_run_id = run.info.run_id
    # For a local run, the report also lands beside the run's outputs.
    local_copy = os.environ.get("KUBEDISTILL_REPORT_DIR")
    if local_copy:
        Path(local_copy).mkdir(parents=True, exist_ok=True)
        target = Path(local_copy) / "report.html"
        target.write_text(redact(Path(report_html).read_text()))
        s.report_html = str(target)
    write_json(summary, s)
    return metrics
