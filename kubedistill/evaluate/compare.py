"""Side-by-side reports of evaluation runs: Markdown, self-contained HTML, JSON and plots.

``compare_runs({"base": dir1, "student": dir2}, out_dir)`` reads each run's ``results.json``,
``run.json`` and per-item JSONL (written by :func:`kubedistill.evaluate.run.evaluate_endpoint`) and
writes into ``out_dir``:

* ``report.md`` — a summary table, then per benchmark a table of every metric (accuracy ± standard
  error [95% interval], pass@k, answered and truncated shares, mean/median completion tokens overall, correct and
  incorrect) with one column per run and a Δ column per run against the baseline (the first run),
  plus a paired count over the problems the runs share (better / worse / same per-problem accuracy,
  mean Δ ± standard error, its paired 95% interval); the settings of every run; warnings where the
  runs were not produced under the same settings (their scores are then not comparable);
* ``report.html`` — the same, self-contained (plots embedded as base64 PNG, inline CSS);
* ``comparison.json`` — the numbers of the report;
* ``plots/`` — ``scores.png``, ``pass_at_k.png``, ``lengths.png`` with the runs overlaid.

A single evaluation is a comparison of one run: :func:`write_report` renders it without Δ columns
(``evaluate_endpoint`` does this for its own output directory).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubedistill.core.config import ConfigError
from kubedistill.evaluate.core import BenchmarkResult, stderr_of_mean

RESULTS_FILE = "results.json"
RUN_FILE = "run.json"
ITEMS_DIR = "items"
PLOTS_DIR = "plots"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
COMPARISON_FILE = "comparison.json"

#: Settings that must agree for two runs' scores to be comparable (model and endpoint may differ).
COMPARABLE_SETTINGS = ("temperature", "top_p", "max_tokens", "n", "prompt", "harness", "seed")


@dataclass(frozen=True)
class ItemPoint:
    """What reports and plots need of one scored completion (the text is left on disk)."""

    problem_id: str
    sample_index: int
    correct: bool | None
    completion_tokens: int
    method: str
    finish_reason: str | None = None


@dataclass
class RunData:
    """One evaluation run: per-benchmark results and items, and its ``run.json`` (model, settings)."""

    label: str
    results: dict[str, BenchmarkResult]
    items: dict[str, list[ItemPoint]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


@dataclass
class ComparisonReport:
    """What :func:`compare_runs` / :func:`write_report` wrote, and the numbers behind it."""

    data: dict[str, Any]
    paths: dict[str, Path]


def benchmark_slug(name: str) -> str:
    """A file-name-safe form of a benchmark name (``reasoning_gym:chain_sum`` → ``reasoning_gym_chain_sum``)."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return out or "benchmark"


def items_path(run_dir: str | Path, benchmark: str) -> Path:
    return Path(run_dir) / ITEMS_DIR / f"{benchmark_slug(benchmark)}.jsonl"


def point_of(row: Mapping[str, Any]) -> ItemPoint:
    return ItemPoint(
        problem_id=str(row["problem_id"]),
        sample_index=int(row.get("sample_index", 0)),
        correct=row.get("correct"),
        completion_tokens=int(row.get("completion_tokens") or 0),
        method=str(row.get("method", "")),
        finish_reason=row.get("finish_reason"),
    )


def load_run(path: str | Path, label: str | None = None) -> RunData:
    """Read an evaluation output directory (``results.json``, ``run.json``, ``items/*.jsonl``)."""
    run_dir = Path(path)
    res_file = run_dir / RESULTS_FILE
    if not res_file.exists():
        raise ConfigError(f"{run_dir}: not an evaluation output (no {RESULTS_FILE})")
    try:
        raw = json.loads(res_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{res_file}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) and "n_problems" in v for v in raw.values()):
        raise ConfigError(f"{res_file}: expected an object keyed by benchmark name, each with n_problems, pass@k, ...")
    results = {b: BenchmarkResult.from_flat(b, d) for b, d in raw.items()}
    info: dict[str, Any] = {}
    if (run_dir / RUN_FILE).exists():
        info = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    items: dict[str, list[ItemPoint]] = {}
    for bench in results:
        rel = (info.get("benchmarks") or {}).get(bench, {}).get("items")
        f = run_dir / rel if rel else items_path(run_dir, bench)
        if not f.exists():
            items[bench] = []
            continue
        with open(f, encoding="utf-8") as fh:
            items[bench] = [point_of(json.loads(line)) for line in fh if line.strip()]
    name = label or str(info.get("label") or "") or run_dir.name
    return RunData(label=name, results=results, items=items, info=info, path=run_dir)


def compare_runs(
    runs: Mapping[str, str | Path],
    out_dir: str | Path,
    *,
    baseline: str | None = None,
    title: str | None = None,
) -> ComparisonReport:
    """Compare evaluation output directories (label → directory; the baseline defaults to the first)."""
    if not runs:
        raise ConfigError("compare: give at least one run (label=DIR)")
    loaded = [load_run(p, label) for label, p in runs.items()]
    return write_report(loaded, out_dir, baseline=baseline, title=title)


# ------------------------------------------------------------------------------------------- numbers


def _fmt_score(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _fmt_tokens(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def _fmt_delta(v: float | None, kind: str = "score") -> str:
    if v is None:
        return ""
    if kind == "tokens":
        return f"{v:+,.0f}"
    if kind == "share":
        return f"{v * 100:+.1f} pp"
    return f"{v:+.3f}"


def _metric_rows(results: Sequence[BenchmarkResult | None]) -> list[tuple[str, list[float | None], str]]:
    """(metric name, value per run, kind) where kind is "score", "tokens", "count" or "share"."""
    ks = sorted({int(k.removeprefix("pass@")) for r in results if r for k in r.pass_at_k})

    def col(fn: Any) -> list[float | None]:
        return [fn(r) if r is not None else None for r in results]

    def share(n: int, r: BenchmarkResult) -> float | None:
        total = r.n_problems * r.n
        return n / total if total else None

    rows: list[tuple[str, list[float | None], str]] = [
        ("problems", col(lambda r: r.n_problems), "count"),
        ("samples per problem", col(lambda r: r.n), "count"),
        ("accuracy (mean over samples)", col(lambda r: r.accuracy), "score"),
    ]
    rows += [(f"pass@{k}", col(lambda r, k=k: r.pass_at_k.get(f"pass@{k}")), "score") for k in ks]
    rows += [
        ("answered (finished, stated an answer)", col(lambda r: r.answered_rate), "share"),
        ("truncated at max_tokens", col(lambda r: share(r.n_truncated, r)), "share"),
        ("unscorable (no verdict)", col(lambda r: share(r.n_unscorable, r)), "share"),
        ("mean tokens", col(lambda r: r.lengths.mean), "tokens"),
        ("median tokens", col(lambda r: r.lengths.median), "tokens"),
        ("mean tokens, correct", col(lambda r: r.lengths.mean_correct), "tokens"),
        ("mean tokens, incorrect", col(lambda r: r.lengths.mean_incorrect), "tokens"),
        ("median tokens, correct", col(lambda r: r.lengths.median_correct), "tokens"),
        ("median tokens, incorrect", col(lambda r: r.lengths.median_incorrect), "tokens"),
    ]
    return rows


def _problem_accuracy(points: Sequence[ItemPoint]) -> dict[str, float]:
    by: dict[str, list[ItemPoint]] = {}
    for p in points:
        by.setdefault(p.problem_id, []).append(p)
    return {pid: sum(1 for p in v if p.correct is True) / len(v) for pid, v in by.items()}


def paired(base: Sequence[ItemPoint], other: Sequence[ItemPoint]) -> dict[str, Any] | None:
    """Per-problem accuracy of ``other`` against ``base`` on the problems both answered: counts of better /
    worse / same, the mean difference, its standard error and its paired 95% interval (mean ± 1.96 SE)."""
    a, b = _problem_accuracy(other), _problem_accuracy(base)
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    diffs = [a[p] - b[p] for p in shared]
    return {
        "shared_problems": len(shared),
        "only_in_baseline": len(set(b) - set(a)),
        "only_in_run": len(set(a) - set(b)),
        "better": sum(1 for d in diffs if d > 1e-12),
        "worse": sum(1 for d in diffs if d < -1e-12),
        "same": sum(1 for d in diffs if abs(d) <= 1e-12),
        "mean_delta": float(statistics.fmean(diffs)),
        "delta_stderr": stderr_of_mean(diffs),
        # paired 95% interval of the mean per-problem difference (normal approximation over problems)
        "delta_ci95": [
            float(statistics.fmean(diffs)) - 1.96 * stderr_of_mean(diffs),
            float(statistics.fmean(diffs)) + 1.96 * stderr_of_mean(diffs),
        ],
    }


def _settings_of(run: RunData, bench: str) -> dict[str, Any]:
    r = run.results.get(bench)
    s = dict(r.settings) if r is not None else {}
    s.pop("k", None)
    return s


def _warnings(runs: Sequence[RunData], benches: Sequence[str]) -> list[str]:
    out: list[str] = []
    for bench in benches:
        present = [r for r in runs if bench in r.results]
        missing = [r.label for r in runs if bench not in r.results]
        if missing:
            out.append(f"{bench}: not evaluated in {', '.join(missing)}.")
        for key in COMPARABLE_SETTINGS:
            vals = {r.label: _settings_of(r, bench).get(key) for r in present}
            if len({json.dumps(v, sort_keys=True) for v in vals.values()}) > 1:
                shown = ", ".join(f"{label}={v}" for label, v in vals.items())
                out.append(f"{bench}: runs differ in {key} ({shown}): scores are not directly comparable.")
        ids = [frozenset(p.problem_id for p in r.items.get(bench, [])) for r in present if r.items.get(bench)]
        if len(set(ids)) > 1:
            out.append(f"{bench}: the runs answered different problem sets (see the paired counts).")
        for r in present:
            res = r.results[bench]
            total = res.n_problems * res.n
            if res.n_failed:
                out.append(f"{bench}: {r.label} has {res.n_failed} failed request(s), counted unscorable.")
            if total and res.n_truncated / total > 0.05:
                out.append(
                    f"{bench}: {r.label} has {res.n_truncated / total:.0%} of completions truncated at "
                    f"max_tokens={_settings_of(r, bench).get('max_tokens')}: raise max_tokens."
                )
    return out


def comparison_data(runs: Sequence[RunData], baseline: str | None = None) -> dict[str, Any]:
    """The numbers of a report: per benchmark the flat results per run, Δ against the baseline, paired counts."""
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"compare: run labels repeat: {labels}")
    base_label = baseline or labels[0]
    if base_label not in labels:
        raise ConfigError(f"compare: baseline {base_label!r} is not one of the runs {labels}")
    base = next(r for r in runs if r.label == base_label)
    benches: list[str] = []
    for r in runs:
        benches += [b for b in r.results if b not in benches]
    data: dict[str, Any] = {
        "baseline": base_label,
        "runs": {
            r.label: {
                "path": str(r.path) if r.path else None,
                "model": r.info.get("model") or next((x.model for x in r.results.values()), None),
                "endpoint": r.info.get("endpoint"),
                "harness": r.info.get("harness"),
                "prompt": r.info.get("prompt"),
            }
            for r in runs
        },
        "benchmarks": {},
        "warnings": _warnings(runs, benches),
    }
    for bench in benches:
        per_run = {r.label: r.results[bench].flat() for r in runs if bench in r.results}
        entry: dict[str, Any] = {"results": per_run, "delta": {}, "paired": {}}
        b = base.results.get(bench)
        for r in runs:
            res = r.results.get(bench)
            if r.label == base_label or res is None or b is None:
                continue
            delta = {"accuracy": res.accuracy - b.accuracy, "mean_tokens": res.lengths.mean - b.lengths.mean}
            for k, v in res.pass_at_k.items():
                if k in b.pass_at_k:
                    delta[k] = v - b.pass_at_k[k]
            entry["delta"][r.label] = delta
            pr = paired(base.items.get(bench, []), r.items.get(bench, []))
            if pr is not None:
                entry["paired"][r.label] = pr
        data["benchmarks"][bench] = entry
    return data


# ------------------------------------------------------------------------------------------ rendering

Cell = str | tuple[str, str]  # text, or (text, css class)


@dataclass
class _Table:
    header: list[str]
    rows: list[list[Cell]]
    align: list[str]  # "l" or "r" per column


@dataclass
class _Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append((f"h{level}", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def warn(self, lines: list[str]) -> None:
        if lines:
            self.blocks.append(("warn", lines))

    def table(self, t: _Table) -> None:
        self.blocks.append(("table", t))

    def img(self, alt: str, path: Path, rel: str) -> None:
        self.blocks.append(("img", (alt, path, rel)))


def _delta_cell(v: float | None, kind: str) -> Cell:
    if v is None:
        return ""
    text = _fmt_delta(v, kind)
    if kind == "score" and abs(v) > 1e-12:
        return (text, "up" if v > 0 else "down")
    return text


def _value(v: float | None, kind: str) -> str:
    if kind == "tokens":
        return _fmt_tokens(v)
    if kind == "count":
        return "—" if v is None else f"{v:,.0f}"
    if kind == "share":
        return "—" if v is None else f"{v:.1%}"
    return _fmt_score(v)


def _build_doc(
    runs: Sequence[RunData], data: dict[str, Any], plots: Mapping[str, Path], out_dir: Path, title: str
) -> _Doc:
    doc = _Doc()
    base_label = data["baseline"]
    others = [r.label for r in runs if r.label != base_label]
    multi = bool(others)
    doc.h(1, title)
    harnesses = sorted({str(r.info.get("harness")) for r in runs if r.info.get("harness")})
    prompts = sorted({str(r.info.get("prompt")) for r in runs if r.info.get("prompt")})
    doc.p(
        f"Harness: {', '.join(harnesses) or 'unknown'}; prompt: {', '.join(prompts) or 'unknown'}. "
        "pass@k uses the unbiased estimator 1 − C(n−c,k)/C(n,k) averaged over problems; accuracy is the "
        "mean over all samples (± standard error over problems); lengths are completion tokens as the "
        "server counted them. Truncated completions count as incorrect."
        + (f" Δ is each run minus the baseline **{base_label}**." if multi else "")
    )
    doc.warn(data["warnings"])

    # summary
    labels = [r.label for r in runs]
    header = ["benchmark", "problems", "n"]
    for label in labels:
        header.append(f"{label} pass@1")
        if label != base_label:
            header.append(f"Δ {label}")
    header += [f"{label} mean tokens" for label in labels]
    rows: list[list[Cell]] = []
    for bench, entry in data["benchmarks"].items():
        res = entry["results"]
        first = next(iter(res.values()))
        row: list[Cell] = [bench, f"{first['n_problems']:,}", str(first.get("n", first.get("samples")))]
        for label in labels:
            v = res.get(label, {}).get("pass@1")
            row.append(_fmt_score(v))
            if label != base_label:
                row.append(_delta_cell(entry["delta"].get(label, {}).get("pass@1"), "score"))
        row += [_fmt_tokens(res.get(label, {}).get("lengths", {}).get("mean")) for label in labels]
        rows.append(row)
    doc.h(2, "Summary")
    doc.table(_Table(header, rows, ["l"] + ["r"] * (len(header) - 1)))

    # per benchmark
    for bench, entry in data["benchmarks"].items():
        doc.h(2, bench)
        per = [next((r.results.get(bench) for r in runs if r.label == label), None) for label in labels]
        header = ["metric"]
        for label in labels:
            header.append(label)
            if label != base_label:
                header.append(f"Δ {label}")
        base_idx = labels.index(base_label)
        rows = []
        for name, vals, kind in _metric_rows(per):
            row = [name]
            for i, label in enumerate(labels):
                cell = _value(vals[i], kind)
                if name.startswith("accuracy") and per[i] is not None:
                    lo, hi = per[i].accuracy_ci95  # type: ignore[union-attr]
                    cell += f" ± {per[i].accuracy_stderr:.3f} [{lo:.3f}, {hi:.3f}]"  # type: ignore[union-attr]
                row.append(cell)
                if label != base_label:
                    v, b = vals[i], vals[base_idx]
                    d = v - b if v is not None and b is not None and kind != "count" else None
                    row.append(_delta_cell(d, kind))
            rows.append(row)
        doc.table(_Table(header, rows, ["l"] + ["r"] * (len(header) - 1)))
        for label, pr in entry["paired"].items():
            extra = ""
            if pr["only_in_baseline"] or pr["only_in_run"]:
                extra = f" ({pr['only_in_baseline']} only in {base_label}, {pr['only_in_run']} only in {label})"
            doc.p(
                f"Paired by problem, {label} vs {base_label}, on {pr['shared_problems']} shared problems{extra}: "
                f"better on {pr['better']}, worse on {pr['worse']}, same on {pr['same']}; "
                f"mean Δ per-problem accuracy {pr['mean_delta']:+.3f} ± {pr['delta_stderr']:.3f} (s.e.), "
                f"95% interval [{pr['delta_ci95'][0]:+.3f}, {pr['delta_ci95'][1]:+.3f}]"
                + (" — 0 lies outside it." if pr["delta_ci95"][0] > 0 or pr["delta_ci95"][1] < 0 else ".")
            )

    # plots
    if plots:
        doc.h(2, "Plots")
        captions = {
            "scores": "pass@1 by benchmark",
            "pass_at_k": "pass@k curves",
            "lengths": "completion-token distributions, correct vs incorrect",
        }
        for name, path in plots.items():
            doc.img(captions.get(name, name), path, os.path.relpath(path, out_dir))

    # settings
    doc.h(2, "Settings")
    keys = ["model", "endpoint", "harness", "prompt"]
    rows = [[k] + [str(data["runs"][label].get(k) or "—") for label in labels] for k in keys]
    for key in ("temperature", "top_p", "max_tokens", "seed"):
        rows.append([key] + [_settings_cell(r, key) for r in runs])
    rows.append(["samples per problem"] + [_settings_cell(r, "n") for r in runs])
    rows.append(
        ["requests (cached / failed)"]
        + [
            (
                f"{rq.get('total', 0):,} ({rq.get('cached', 0):,} / {rq.get('failed', 0):,})"
                if (rq := r.info.get("requests"))
                else "—"
            )
            for r in runs
        ]
    )
    doc.table(_Table(["setting", *labels], rows, ["l"] * (len(labels) + 1)))
    return doc


def _settings_cell(run: RunData, key: str) -> str:
    vals = {b: r.settings.get(key) for b, r in run.results.items()}
    distinct = {json.dumps(v) for v in vals.values()}
    if len(distinct) <= 1:
        return str(next(iter(vals.values()), "—"))
    return ", ".join(f"{b}: {v}" for b, v in vals.items())


def _md_cell(c: Cell) -> str:
    text = c[0] if isinstance(c, tuple) else c
    return text.replace("|", "\\|")


def render_markdown(doc: _Doc) -> str:
    out: list[str] = []
    for kind, payload in doc.blocks:
        if kind.startswith("h"):
            out += ["#" * int(kind[1:]) + " " + payload, ""]
        elif kind == "p":
            out += [payload, ""]
        elif kind == "warn":
            out += [f"> **Warning:** {w}" for w in payload] + [""]
        elif kind == "table":
            t: _Table = payload
            out.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
            out.append("|" + "|".join("---:" if a == "r" else "---" for a in t.align) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
            out.append("")
        elif kind == "img":
            alt, _, rel = payload
            out += [f"![{alt}]({rel})", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#1b1f24;line-height:1.45}
h1{font-size:1.6rem;border-bottom:2px solid #d0d7de;padding-bottom:.3rem}
h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem}
th{background:#f6f8fa;text-align:left}
td.r{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fbfcfd}
td.up{color:#1a7f37;font-weight:600} td.down{color:#cf222e;font-weight:600}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem .8rem;border-radius:4px;margin:.6rem 0}
figure{margin:1rem 0} figure img{max-width:100%;border:1px solid #d0d7de}
figcaption{font-size:.85rem;color:#57606a}
"""


def render_html(doc: _Doc, title: str) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for kind, payload in doc.blocks:
        if kind.startswith("h"):
            out.append(f"<{kind}>{e(payload)}</{kind}>")
        elif kind == "p":
            text = e(payload)
            while "**" in text:  # the one bit of Markdown the paragraphs use
                text = text.replace("**", "<strong>", 1).replace("**", "</strong>", 1)
            out.append(f"<p>{text}</p>")
        elif kind == "warn":
            out.append('<div class="warn">' + "<br>".join(f"⚠ {e(w)}" for w in payload) + "</div>")
        elif kind == "table":
            t: _Table = payload
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.header) + "</tr></thead><tbody>")
            for row in t.rows:
                cells = []
                for c, a in zip(row, t.align, strict=False):
                    text, cls = c if isinstance(c, tuple) else (c, "")
                    classes = " ".join(x for x in ("r" if a == "r" else "", cls) if x)
                    cells.append(f'<td class="{classes}">{e(text)}</td>' if classes else f"<td>{e(text)}</td>")
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</tbody></table>")
        elif kind == "img":
            alt, path, _ = payload
            b64 = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{e(alt)}" src="data:image/png;base64,{b64}"><figcaption>{e(alt)}</figcaption>'
                "</figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_report(
    runs: Sequence[RunData],
    out_dir: str | Path,
    *,
    baseline: str | None = None,
    title: str | None = None,
    plots: bool = True,
    json_name: str | None = COMPARISON_FILE,
) -> ComparisonReport:
    """Render ``report.md``, ``report.html``, ``plots/*.png`` (and ``comparison.json``) for ``runs``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = comparison_data(runs, baseline)
    labels = [r.label for r in runs]
    if title is None:
        title = f"Evaluation of {labels[0]}" if len(labels) == 1 else "Evaluation: " + " vs ".join(labels)
    paths: dict[str, Path] = {}
    plot_paths: dict[str, Path] = {}
    if plots:
        from kubedistill.evaluate.plots import save_plots

        plot_paths = save_plots({r.label: r.results for r in runs}, {r.label: r.items for r in runs}, out / PLOTS_DIR)
        paths.update({f"plot_{k}": v for k, v in plot_paths.items()})
    doc = _build_doc(runs, data, plot_paths, out, title)
    paths["markdown"] = write_text_atomic(out / REPORT_MD, render_markdown(doc))
    paths["html"] = write_text_atomic(out / REPORT_HTML, render_html(doc, title))
    if json_name:
        paths["json"] = write_text_atomic(out / json_name, json.dumps(data, indent=2, default=_json_default) + "\n")
    return ComparisonReport(data=data, paths=paths)


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    return str(o)
