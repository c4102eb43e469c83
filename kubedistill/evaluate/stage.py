"""Stages `evaluate` and `evaluate_models`: models served on this machine (or endpoints), scored side by side.

Each model is served with vLLM or transformers (kubedistill/serve/local.py) behind an OpenAI-compatible
endpoint for the duration of its evaluation, then scored by :func:`kubedistill.evaluate.run.evaluate_endpoint`
(the same harness as ``kubedistill evaluate``). Both stages write:

* ``results/<label>/`` — each model's run: ``results.json`` keyed by benchmark, ``items/``, ``plots/``, reports;
* ``results/compare/`` — the side-by-side report when there are several models;
* ``results/results.json`` — every score as ``{label: {benchmark: scores}}``;
* ``report`` / ``report_html`` — the comparison's (or the single run's) Markdown and HTML.

Inside a stage run the scores go into the stage's MLflow run (``<label>.<benchmark>.<metric>``) with the
reports under ``evaluation/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from kubedistill.chat.config import EndpointConfig
from kubedistill.core.config import validate_config
from kubedistill.core.paths import request_cache_dir
from kubedistill.core.records import Problem, StageStats, Timer
from kubedistill.evaluate.core import EvalConfig
from kubedistill.tracking import TrackingConfig

Backend = Literal["vllm", "transformers", "auto"]


class LocalEvalConfig(EvalConfig):
    """Evaluation of models served on this machine: the student (and its base) on the held-out problems,
    or registered models on named benchmarks."""

    backend: Backend = Field(default="auto", description="server for the student: vllm, transformers, auto")
    max_model_len: int = 4096
    compare_base: bool = Field(default=True, description="also evaluate the untrained base student")


def evaluate_student(
    problems: Sequence[Problem],
    cfg: LocalEvalConfig,
    *,
    model: str | Path,
    results: str | Path,
    report: str | Path,
    report_html: str | Path | None = None,
    base_model: str = "",
    tracking: TrackingConfig | None = None,
) -> tuple[dict[str, Any], StageStats]:
    """Stage `evaluate`: serve ``model`` (a directory) and, with ``cfg.compare_base``, ``base_model`` (a
    model reference); score both on ``problems`` (benchmark ``heldout``), side by side.

    Returns the scores ``{label: {benchmark: scores}}`` and stats whose metrics are
    ``<label>.heldout.<metric>`` (accuracy, pass@k, lengths in tokens). Raises ``UserError`` for a model
    that cannot be resolved, ``RunFailed`` when a server does not start."""
    from kubedistill.models import resolve_model

    models: dict[str, Any] = {"student": Path(model)}
    if cfg.compare_base and base_model:
        models = {"base": resolve_model(base_model), **models}
    return evaluate_local(
        models,
        {"heldout": list(problems)},
        cfg,
        results=results,
        report=report,
        report_html=report_html,
        baseline="base" if "base" in models else None,
        title="student vs base student",
        tracking=tracking,
    )


def evaluate_on_endpoint(
    cfg: EvalConfig,
    *,
    endpoint: Mapping[str, Any],
    benchmarks: Sequence[str],
    results: str | Path,
    benchmark_paths: Mapping[str, str] | None = None,
    limit: int = 0,
    allow_failed: bool = False,
    tracking: TrackingConfig | None = None,
) -> tuple[dict[str, Any], StageStats]:
    """Stage `evaluate_endpoint` (``kubedistill evaluate``): score the endpoint ``{url, model, name,
    api_key_env}`` on ``benchmarks`` (names or Problem files; ``benchmark_paths`` reads named ones from
    local files; ``limit`` problems each, 0: all) into the directory ``results``.

    Returns the :class:`~kubedistill.evaluate.core.BenchmarkResult` s by benchmark and stats whose metrics
    are ``<benchmark>.<metric>`` (accuracy, pass@k, token lengths). Raises ``ConfigError`` for a k above
    a benchmark's n (checked before anything is loaded), ``BenchmarkError`` for an unknown benchmark,
    ``EndpointError`` for an unusable endpoint, ``EvaluationIncomplete`` (exit 3, with the partial
    results) when requests failed after every retry, unless ``allow_failed``."""
    from kubedistill.evaluate.run import evaluate_endpoint, load_benchmarks

    ep = validate_config(EndpointConfig, dict(endpoint), "endpoint")
    cfg.check_k(list(benchmarks))  # before loading: a bad k fails in milliseconds, not after a download
    sets, sources = load_benchmarks(list(benchmarks), paths=dict(benchmark_paths or {}) or None, limit=limit or None)
    with Timer() as timer:
        res = evaluate_endpoint(
            ep,
            sets,
            cfg,
            results,
            label=ep.name,
            sources=sources,
            tracking=tracking,
            allow_failed=allow_failed,
            log_prefix="",
        )
    stats = StageStats(stage="evaluate_endpoint", n_in=sum(len(v) for v in sets.values()))
    stats.n_out = stats.n_in
    stats.elapsed_s = timer.elapsed
    stats.metrics.update(
        {
            f"{b}.{k}": float(v)
            for b, r in res.items()
            for k, v in r.flat().items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
    )
    return res, stats


def evaluate_models(
    cfg: LocalEvalConfig,
    *,
    models: Mapping[str, Any],
    benchmarks: Sequence[str],
    benchmark_paths: Mapping[str, str] | None = None,
    limit: int = 0,
    results: str | Path,
    report: str | Path,
    report_html: str | Path | None = None,
    tracking: TrackingConfig | None = None,
) -> tuple[dict[str, Any], StageStats]:
    """Stage `evaluate_models`: several models on named benchmarks, side by side (the first is the baseline).

    ``models`` maps a label to a model reference served here (``models:/NAME@ALIAS``, a directory, an
    alias) or to an endpoint ``{"url", "model", "api_key_env"}`` (e.g. a KServe student). ``limit``: at
    most this many problems per benchmark (0: all). Raises ``BenchmarkError`` (exit 2) for an unknown
    benchmark."""
    from kubedistill.evaluate.run import load_benchmarks

    sets, sources = load_benchmarks(list(benchmarks), paths=dict(benchmark_paths or {}) or None, limit=limit or None)
    return evaluate_local(
        dict(models),
        sets,
        cfg,
        results=results,
        report=report,
        report_html=report_html,
        baseline=next(iter(models)),
        sources=sources,
        tracking=tracking,
    )


def evaluate_local(
    models: Mapping[str, Any],
    sets: Mapping[str, Sequence[Problem]],
    cfg: LocalEvalConfig,
    *,
    results: str | Path,
    report: str | Path,
    report_html: str | Path | None = None,
    baseline: str | None = None,
    title: str | None = None,
    sources: Mapping[str, str] | None = None,
    tracking: TrackingConfig | None = None,
) -> tuple[dict[str, Any], StageStats]:
    """Score ``models`` (label -> a model reference or directory served here, or an endpoint) on ``sets``
    (benchmark -> problems) into ``results`` (the layout of the module docstring); the first model is the
    baseline of the side-by-side report when there are several. Returns ``{label: {benchmark: scores}}``
    and the stats (metrics ``<label>.<benchmark>.<metric>``)."""
    from kubedistill.evaluate.compare import compare_runs
    from kubedistill.evaluate.run import evaluate_endpoint

    out = Path(results)
    out.mkdir(parents=True, exist_ok=True)
    # beside the artifact, not in it
    cfg.client.cache_dir = request_cache_dir(cfg.client.cache_dir, stage="evaluate", beside=out)
    stats = StageStats(stage="evaluate", n_in=sum(len(v) for v in sets.values()) * len(models))
    summary: dict[str, Any] = {}
    with Timer() as timer:
        for label, ref in models.items():
            res = _evaluate_one(
                label, ref, sets, cfg, out, sources=sources, tracking=tracking, evaluate=evaluate_endpoint
            )
            summary[label] = {b: r.flat() for b, r in res.items()}
        (out / "results.json").write_text(json.dumps(summary, indent=2))
        reports = out / next(iter(models))
        if len(models) > 1:
            compare_runs({label: out / label for label in models}, out / "compare", baseline=baseline, title=title)
            reports = out / "compare"
        Path(report).write_text((reports / "report.md").read_text())
        if report_html:
            Path(report_html).write_text((reports / "report.html").read_text())
        if tracking is not None:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.log_artifacts(str(reports), artifact_path="evaluation")
    stats.n_out = stats.n_in
    stats.elapsed_s = timer.elapsed
    stats.metrics.update(
        {
            f"{label}.{b}.{k}": float(v)
            for label, by_b in summary.items()
            for b, r in by_b.items()
            for k, v in r.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
    )
    return summary, stats


def _evaluate_one(
    label: str,
    ref: Any,
    sets: Mapping[str, Sequence[Problem]],
    cfg: LocalEvalConfig,
    out: Path,
    *,
    sources: Mapping[str, str] | None,
    tracking: TrackingConfig | None,
    evaluate: Any,
) -> Any:
    """Score one model: an endpoint as it is, anything else served here for the duration."""
    from kubedistill.models import resolve_model
    from kubedistill.serve.local import LocalServer

    if isinstance(ref, Mapping | EndpointConfig):
        endpoint = (
            ref if isinstance(ref, EndpointConfig) else validate_config(EndpointConfig, dict(ref), f"models.{label}")
        )
        return evaluate(endpoint, sets, cfg, out / label, label=label, sources=sources, tracking=tracking)
    path = ref if isinstance(ref, Path) else resolve_model(str(ref))
    with LocalServer(
        path,
        served_name=label,
        backend=cfg.backend,
        max_model_len=cfg.max_model_len,
        log_path=out / f"server-{label}.log",
    ) as url:
        return evaluate(
            EndpointConfig(url=url, model=label),
            sets,
            cfg,
            out / label,
            label=label,
            sources=sources,
            tracking=tracking,
        )
