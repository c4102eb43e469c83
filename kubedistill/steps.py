"""What each KFP component calls: plain paths and JSON-able parameters in, metrics out.

Components (components/) stay one call deep: they pass their artifact paths and parameters here and
log the returned metrics. Each step validates its config, runs the pure stage function through
:mod:`kubedistill.runner` (rejects, stats, MLflow) and returns flat metrics for the KFP Metrics artifact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kubedistill.config import ConfigError, GenerateConfig, TrackingConfig, validate_config
from kubedistill.records import Problem, Sample, StageStats, read_records, write_records
from kubedistill.runner import Outputs, run_stage


def stage_metrics(stats: StageStats) -> dict[str, float]:
    m: dict[str, float] = {"n_in": float(stats.n_in), "n_out": float(stats.n_out), "n_dropped": float(stats.n_dropped)}
    m.update({f"dropped.{k}": float(v) for k, v in stats.dropped.items()})
    m.update({k: float(v) for k, v in stats.metrics.items()})
    m["elapsed_s"] = round(stats.elapsed_s, 3)
    return m


def _tracking(tracking: dict[str, Any] | None) -> TrackingConfig:
    cfg = validate_config(TrackingConfig, tracking or {}, "tracking")
    if cfg.enabled and int(os.environ.get("RANK", "0")) != 0:  # one MLflow run per stage, from rank 0
        cfg = cfg.model_copy(update={"enabled": False})
    return cfg


def _outputs(output: str, rejects: str, stats: str | None) -> Outputs:
    return Outputs(Path(output), Path(rejects), Path(stats) if stats else Path(output + ".stats.json"))


# ----------------------------------------------------------------------------------------- collect


def collect(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    heldout: str,
    rejects: str,
    stats: str | None = None,
) -> dict[str, float]:
    """Load, clean and split problems: ``problems`` (train) and ``heldout`` (evaluation)."""
    from kubedistill import tracking as tr
    from kubedistill.data.collect import CollectConfig, collect_with_holdout
    from kubedistill.runner import save

    cfg = validate_config(CollectConfig, config, "collect")
    tcfg = _tracking(tracking)
    outputs = _outputs(problems, rejects, stats)
    with tr.stage_run(
        "collect",
        experiment=tcfg.experiment,
        tracking_uri=tcfg.tracking_uri,
        params=cfg.model_dump(mode="json"),
        enabled=tcfg.enabled,
    ) as run:
        train, held, st = collect_with_holdout([], cfg)  # n_out counts both splits
        st.metrics["train"] = float(len(train))
        st.metrics["heldout"] = float(len(held))
        if run is not None:
            st.info["mlflow_run_id"] = run.info.run_id
        write_records(heldout, held)
        save(train, st, outputs)
        if run is not None:
            tr.log_stage_stats(st, artifacts={"rejects": outputs.rejects})
    return stage_metrics(st)


# ---------------------------------------------------------------------------------------- generate


def generate(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    samples: str,
    rejects: str,
    stats: str | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
) -> dict[str, float]:
    """CoTs from every teacher for the problems (of one shard, when sharded)."""
    from kubedistill.cot.generate import generate as generate_fn

    cfg = _shard_cache(validate_config(GenerateConfig, config, "generate"), (shard_index, shard_count))
    st = run_stage(
        "generate",
        generate_fn,
        inputs={"problems": (problems, Problem)},
        outputs=_outputs(samples, rejects, stats),
        cfg=cfg,
        tracking=_tracking(tracking),
        fatal=("request_failed",),
        shard=(shard_index, shard_count),
    )
    return stage_metrics(st)


def _shard_cache(cfg: Any, shard: tuple[int, int]) -> Any:
    """One request cache per shard (``<cache_dir>/shard-I-of-N``): parallel pods never share a SQLite file
    (WAL needs one host), and a problem always lands in the same shard, so a rerun finds its answers."""
    index, count = shard
    if count > 1 and cfg.client.cache_dir is not None:
        cfg.client.cache_dir = Path(cfg.client.cache_dir) / f"shard-{index}-of-{count}"
    return cfg


def shard_plan(count: int) -> list[int]:
    """The shard indices a ParallelFor runs the teacher-bound stages over."""
    if not 1 <= count <= 64:
        raise ConfigError(f"shards: {count} is outside 1..64")
    return list(range(count))


def merge_shards(
    *, parts: list[str], rejects: list[str], metrics: list[str], merged: str, merged_rejects: str
) -> dict[str, float]:
    """Join the shards of a teacher-bound stage: records, rejects, and metrics (counts summed)."""
    from kubedistill import sharding

    sharding.merge(parts, merged)
    sharding.merge(rejects, merged_rejects)
    return sharding.merge_metrics([sharding.read_metrics(m) for m in metrics])


# ------------------------------------------------------------------------------------------ verify


def verify(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    samples: str,
    verified: str,
    rejects: str,
    stats: str | None = None,
) -> dict[str, float]:
    from kubedistill.cot.verify import VerifyConfig, verify_samples

    cfg = validate_config(VerifyConfig, config, "verify")
    st = run_stage(
        "verify",
        verify_samples,
        inputs={"samples": (samples, Sample), "problems": (problems, Problem)},
        outputs=_outputs(verified, rejects, stats),
        cfg=cfg,
        tracking=_tracking(tracking),
    )
    return stage_metrics(st)


# --------------------------------------------------------------------------------------------- sft


def sft(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    samples: str,
    model: str,
    work_dir: str = "",
) -> dict[str, float]:
    from kubedistill import tracking as tr
    from kubedistill.launch import relaunch
    from kubedistill.train.sft import SFTSettings, train_sft

    cfg = validate_config(SFTSettings, config, "sft")
    launched = relaunch(
        "sft",
        {
            "config": config,
            "tracking": tracking,
            "problems": problems,
            "samples": samples,
            "model": model,
            "work_dir": work_dir,
        },
    )
    if launched is not None:
        return launched
    tcfg = _tracking(tracking)
    train = read_records(samples, Sample)
    probs = read_records(problems, Problem)
    with tr.stage_run(
        "sft",
        experiment=tcfg.experiment,
        tracking_uri=tcfg.tracking_uri,
        params=cfg.model_dump(mode="json"),
        enabled=tcfg.enabled,
    ) as run:
        _, st = train_sft(train, cfg, problems=probs, model_dir=model, work_dir=work_dir or None)
        if run is not None:
            tr.log_stage_stats(st)
    return stage_metrics(st)


def dpo(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    pairs: str,
    base_model: str,
    model: str,
    work_dir: str = "",
) -> dict[str, float]:
    """DPO of ``base_model`` (the SFT student: a directory or reference) on the preference pairs."""
    from kubedistill import tracking as tr
    from kubedistill.launch import relaunch
    from kubedistill.records import PreferencePair
    from kubedistill.train.dpo import DPOSettings, train_dpo

    cfg = validate_config(DPOSettings, config, "dpo")
    launched = relaunch(
        "dpo",
        {
            "config": config,
            "tracking": tracking,
            "problems": problems,
            "pairs": pairs,
            "base_model": base_model,
            "model": model,
            "work_dir": work_dir,
        },
    )
    if launched is not None:
        return launched
    work_dir = str(Path(work_dir) / "dpo") if work_dir else ""  # beside sft's, on a shared volume
    tcfg = _tracking(tracking)
    with tr.stage_run(
        "dpo",
        experiment=tcfg.experiment,
        tracking_uri=tcfg.tracking_uri,
        params={**cfg.model_dump(mode="json"), "base_model": base_model},
        enabled=tcfg.enabled,
    ) as run:
        _, st = train_dpo(
            read_records(pairs, PreferencePair),
            cfg,
            problems=read_records(problems, Problem),
            model_dir=model,
            work_dir=work_dir or None,
            base_model=base_model or None,
        )
        if run is not None:
            tr.log_stage_stats(st)
    return stage_metrics(st)


def reward_models(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    samples: str,
    models: str,
) -> dict[str, float]:
    """RV / CD regressors distilled from the judge's 0-9 scores on ``samples``, into ``models/<head>/``
    (logged to MLflow as artifacts of the stage's run)."""
    from kubedistill import tracking as tr
    from kubedistill.launch import relaunch
    from kubedistill.train.reward_model import RewardModelSettings, train_reward_models

    cfg = validate_config(RewardModelSettings, config, "reward_models")
    launched = relaunch(
        "reward_models",
        {"config": config, "tracking": tracking, "problems": problems, "samples": samples, "models": models},
    )
    if launched is not None:
        return launched
    tcfg = _tracking(tracking)
    with tr.stage_run(
        "reward_models",
        experiment=tcfg.experiment,
        tracking_uri=tcfg.tracking_uri,
        params=cfg.model_dump(mode="json"),
        enabled=tcfg.enabled,
    ) as run:
        dirs, st = train_reward_models(
            read_records(samples, Sample), cfg, problems=read_records(problems, Problem), output_dir=models
        )
        if run is not None:
            import mlflow

            tr.log_stage_stats(st)
            for head, d in dirs.items():
                mlflow.log_artifacts(str(d), artifact_path=f"reward_models/{head}")
    return stage_metrics(st)


def grpo(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    model: str,
    reward_models: str = "",
    base_model: str = "",
    work_dir: str = "",
) -> dict[str, float]:
    """GRPO of ``base_model`` (default: the config's) on ``problems``; ``reward_models`` is a directory
    with ``rv/`` and/or ``cd/`` regressors (from :func:`reward_models`), whose interval terms are then on."""
    from kubedistill import tracking as tr
    from kubedistill.launch import relaunch
    from kubedistill.train.grpo import GRPOSettings, train_grpo

    cfg = validate_config(GRPOSettings, config, "grpo")
    launched = relaunch(
        "grpo",
        {
            "config": config,
            "tracking": tracking,
            "problems": problems,
            "model": model,
            "reward_models": reward_models,
            "base_model": base_model,
            "work_dir": work_dir,
        },
    )
    if launched is not None:
        return launched
    work_dir = str(Path(work_dir) / "grpo") if work_dir else ""  # beside sft's, on a shared volume
    heads: dict[str, str] = {}
    if reward_models:
        heads = {h: str(Path(reward_models) / h) for h in ("rv", "cd") if (Path(reward_models) / h).is_dir()}
        if not heads:
            raise ConfigError(f"grpo: {reward_models} holds no rv/ or cd/ reward model")
    tcfg = _tracking(tracking)
    with tr.stage_run(
        "grpo",
        experiment=tcfg.experiment,
        tracking_uri=tcfg.tracking_uri,
        params={**cfg.model_dump(mode="json"), "reward_models": sorted(heads), "base_model": base_model},
        enabled=tcfg.enabled,
    ) as run:
        _, st = train_grpo(
            read_records(problems, Problem),
            cfg,
            model_dir=model,
            work_dir=work_dir or None,
            reward_models=heads,
            base_model=base_model or None,
        )
        if run is not None:
            tr.log_stage_stats(st)
    return stage_metrics(st)


# ---------------------------------------------------------------------------------------- evaluate


def evaluate(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    model: str,
    results: str,
    report: str,
    base_model: str = "",
    benchmark: str = "heldout",
    report_html: str | None = None,
) -> dict[str, float]:
    """Serve ``model`` locally (vLLM or transformers) and evaluate it — and the base student — on ``problems``.

    ``results/<label>/`` holds each model's run (results.json keyed by benchmark, items/, plots/, reports),
    ``results/compare/`` the side-by-side report, ``results/results.json`` all scores as
    ``{label: {benchmark: scores}}``; ``report`` gets the comparison's Markdown."""
    from kubedistill import tracking as tr
    from kubedistill.config import TeacherConfig
    from kubedistill.evaluate.compare import compare_runs
    from kubedistill.evaluate.run import evaluate_endpoint
    from kubedistill.models import resolve_model
    from kubedistill.recipes import EvalSection
    from kubedistill.serve.local import LocalServer

    cfg = validate_config(EvalSection, config, "evaluate")
    tcfg = _tracking(tracking)
    probs = read_records(problems, Problem)
    out = Path(results)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.client.cache_dir is None:  # beside the artifact, not inside it
        cfg.client.cache_dir = out.with_name(out.name + ".cache")
    models = {"student": Path(model)}
    if cfg.compare_base and base_model:
        models = {"base": resolve_model(base_model), **models}
    summary: dict[str, Any] = {}
    with tr.stage_run(
        "evaluate",
        experiment=tcfg.experiment,
        tracking_uri=tcfg.tracking_uri,
        params=cfg.model_dump(mode="json"),
        enabled=tcfg.enabled,
    ) as run:
        for label, path in models.items():
            with LocalServer(
                path,
                served_name=label,
                backend=cfg.backend,
                max_model_len=cfg.max_model_len,
                log_path=out / f"server-{label}.log",
            ) as url:
                res = evaluate_endpoint(
                    TeacherConfig(url=url, model=label),
                    {benchmark: probs},
                    cfg,
                    out / label,
                    label=label,
                    tracking=tcfg if run is not None else None,
                )
            summary[label] = {b: r.flat() for b, r in res.items()}
        (out / "results.json").write_text(json.dumps(summary, indent=2))
        if len(models) > 1:
            compare_runs(
                {label: out / label for label in models},
                out / "compare",
                baseline="base",
                title="student vs base student",
            )
            reports = out / "compare"
        else:
            reports = out / "student"
        Path(report).write_text((reports / "report.md").read_text())
        if report_html:
            Path(report_html).write_text((reports / "report.html").read_text())
        metrics = {
            f"{label}.{b}.{k}": float(v)
            for label, by_bench in summary.items()
            for b, r in by_bench.items()
            for k, v in r.items()
            if isinstance(v, int | float)
        }
        if run is not None:
            import mlflow

            mlflow.log_artifacts(str(reports), artifact_path="evaluation")
    return metrics


# ---------------------------------------------------------------------------------------- register


def register(*, config: dict[str, Any], tracking: dict[str, Any], model: str, results: str | None = None) -> str:
    """Register the student in the MLflow registry with its evaluation metrics; returns models:/NAME/VERSION."""
    from kubedistill import tracking as tr
    from kubedistill.recipes import RegisterSection

    cfg = validate_config(RegisterSection, config, "register")
    tcfg = _tracking(tracking)
    res_file = Path(results) / "results.json" if results else None
    metrics: dict[str, float] = {}
    if res_file is not None and res_file.exists():
        for label, by_bench in json.loads(res_file.read_text()).items():
            for bench, r in by_bench.items():
                for k, v in r.items():
                    if isinstance(v, int | float):
                        metrics[f"{label}.{bench}.{k}".replace("@", "_at_")] = float(v)
    _, uri = tr.register_student(
        model,
        cfg.name,
        aliases=cfg.aliases,
        experiment=tcfg.experiment,
        tracking_uri=tcfg.tracking_uri,
        metrics=metrics,
    )
    return uri


def register_reward_models(*, config: dict[str, Any], tracking: dict[str, Any], models: str) -> str:
    """Register each head in ``models/`` (``rv/``, ``cd/``) as ``<name>-<head>``, with its held-out MAE /
    Spearman; returns the ``models:/NAME/VERSION`` URIs, comma-separated."""
    from kubedistill import tracking as tr
    from kubedistill.recipes import RewardRegisterSection

    cfg = validate_config(RewardRegisterSection, config, "registry")
    tcfg = _tracking(tracking)
    uris = []
    for head in ("rv", "cd"):
        d = Path(models) / head
        if not d.is_dir():
            continue
        meta = json.loads((d / "kubedistill_reward.json").read_text())
        metrics = {k: float(v) for k, v in meta.get("metrics", {}).items() if isinstance(v, int | float)}
        _, uri = tr.register_reward_model(
            d,
            f"{cfg.name}-{head}",
            aliases=cfg.aliases,
            experiment=tcfg.experiment,
            tracking_uri=tcfg.tracking_uri,
            metrics=metrics,
            tags={"kubedistill.reward_head": head},
        )
        uris.append(uri)
    if not uris:
        raise ConfigError(f"register: {models} holds no rv/ or cd/ reward model")
    return ",".join(uris)


# ------------------------------------------------------------------------------------------ report


def report(
    *,
    pipeline: str,
    run_name: str,
    tracking: dict[str, Any],
    stage_metrics: dict[str, Any],
    results: str | None,
    model_uri: str,
    report_md: str,
    report_html: str,
    summary: str,
    scored: str | None = None,
) -> dict[str, float]:
    """The run report: funnel + evaluation + lengths (+ the RV/CD distribution of ``scored`` samples), as
    Markdown, HTML (with plots) and JSON; logged to MLflow as the pipeline's run (the HTML report is among
    its artifacts). ``stage_metrics`` values are KFP Metrics artifacts (their metadata), dicts, or None."""
    import os

    from kubedistill import tracking as tr
    from kubedistill.report import (
        RunSummary,
        funnel_from_metrics,
        load_lengths,
        markdown,
        render_html,
        training_from_metrics,
    )

    tcfg = _tracking(tracking)
    metrics_by_stage = {k: getattr(v, "metadata", v) for k, v in stage_metrics.items() if v is not None}
    res_file = Path(results) / "results.json" if results else None
    s = RunSummary(
        pipeline=pipeline,
        run_name=run_name,
        funnel=funnel_from_metrics(metrics_by_stage),
        training=training_from_metrics(metrics_by_stage),
        evaluation=json.loads(res_file.read_text()) if res_file and res_file.exists() else {},
        model_uri=model_uri or None,
        tracking_uri=tr.resolve_tracking_uri(tcfg.tracking_uri) if tcfg.enabled else None,
        report_html=report_html,
    )
    s.lengths = load_lengths(Path(results)) if results else {}
    if scored:
        s.scores = [(x.rv, x.cd) for x in read_records(scored, Sample) if x.rv is not None and x.cd is not None]
    Path(report_md).write_text(markdown(s))
    Path(report_html).write_text(render_html(s))
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
    if tcfg.enabled:
        import mlflow

        with tr.stage_run(
            f"pipeline:{pipeline}",
            experiment=tcfg.experiment,
            tracking_uri=tcfg.tracking_uri,
            tags={
                "kubedistill.kind": "pipeline",
                "kubedistill.run_name": run_name,
                "kubedistill.model_uri": model_uri,
                "mlflow.note.content": markdown(s),
            },
        ) as run:
            mlflow.log_metrics({tr._metric_key(k): v for k, v in metrics.items()})
            mlflow.log_artifact(report_html, artifact_path="report")
            mlflow.log_artifact(report_md, artifact_path="report")
            s.mlflow_run_id = run.info.run_id
    # For a local run, the report also lands beside the run's outputs.
    local_copy = os.environ.get("KUBEDISTILL_REPORT_DIR")
    if local_copy:
        Path(local_copy).mkdir(parents=True, exist_ok=True)
        target = Path(local_copy) / "report.html"
        target.write_text(Path(report_html).read_text())
        s.report_html = str(target)
    Path(summary).write_text(s.model_dump_json(indent=2))
    return metrics


def log_metrics(artifact: Any, values: dict[str, float]) -> None:
    """Log ``values`` on a KFP Metrics artifact, and write them to its file too: kfp.local's cache treats
    an output artifact without a file as missing (and would re-run the task every time)."""
    for k, v in values.items():
        artifact.log_metric(k, v)
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(values, indent=2, sort_keys=True))


# -------------------------------------------------------------------- CoT processors (judge, rewrite, ...)


def _samples_stage(
    stage: str,
    fn: Any,
    cfg: Any,
    *,
    tracking: dict[str, Any],
    problems: str | None,
    samples: str,
    output: str,
    rejects: str,
    stats: str | None,
    fatal: tuple[str, ...] = (),
    shard: tuple[int, int] = (0, 1),
) -> dict[str, float]:
    if shard[1] > 1:
        cfg = _shard_cache(cfg, shard)
    inputs: dict[str, tuple[str, type]] = {"samples": (samples, Sample)}
    if problems is not None:
        inputs["problems"] = (problems, Problem)
    st = run_stage(
        stage,
        fn,
        inputs=inputs,
        outputs=_outputs(output, rejects, stats),
        cfg=cfg,
        tracking=_tracking(tracking),
        fatal=fatal,
        shard=shard,
    )
    return stage_metrics(st)


def judge(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    samples: str,
    judged: str,
    rejects: str,
    stats: str | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
) -> dict[str, float]:
    """Difficulty (easy / medium / hard for the student) on every CoT, by an LLM judge."""
    from kubedistill.cot.judge import JudgeSettings, judge_difficulty

    cfg = validate_config(JudgeSettings, config, "judge")
    return _samples_stage(
        "judge",
        judge_difficulty,
        cfg,
        tracking=tracking,
        problems=problems,
        samples=samples,
        output=judged,
        rejects=rejects,
        stats=stats,
        shard=(shard_index, shard_count),
        fatal=("request_failed",),
    )


def score(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    samples: str,
    scored: str,
    rejects: str,
    stats: str | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
) -> dict[str, float]:
    """RV and CD scores 0-9 on every CoT, by an LLM judge."""
    from kubedistill.cot.judge import JudgeSettings, score_rv_cd

    cfg = validate_config(JudgeSettings, config, "score")
    return _samples_stage(
        "score",
        score_rv_cd,
        cfg,
        tracking=tracking,
        problems=problems,
        samples=samples,
        output=scored,
        rejects=rejects,
        stats=stats,
        shard=(shard_index, shard_count),
        fatal=("request_failed",),
    )


def rewrite(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    samples: str,
    rewritten: str,
    rejects: str,
    stats: str | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
) -> dict[str, float]:
    """Extend easy CoTs, simplify hard ones."""
    from kubedistill.cot.rewrite import RewriteSettings
    from kubedistill.cot.rewrite import rewrite as rewrite_fn

    cfg = validate_config(RewriteSettings, config, "rewrite")
    return _samples_stage(
        "rewrite",
        rewrite_fn,
        cfg,
        tracking=tracking,
        problems=problems,
        samples=samples,
        output=rewritten,
        rejects=rejects,
        stats=stats,
        shard=(shard_index, shard_count),
    )


def select(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    samples: str,
    selected: str,
    rejects: str,
    stats: str | None = None,
) -> dict[str, float]:
    """Keep the correct CoTs whose RV / CD fit the student's windows."""
    from kubedistill.cot.select import SelectSettings
    from kubedistill.cot.select import select as select_fn

    cfg = validate_config(SelectSettings, config, "select")
    return _samples_stage(
        "select",
        select_fn,
        cfg,
        tracking=tracking,
        problems=None,
        samples=samples,
        output=selected,
        rejects=rejects,
        stats=stats,
    )


def pairs(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    problems: str,
    samples: str,
    pairs: str,
    rejects: str,
    stats: str | None = None,
) -> dict[str, float]:
    """DPO preference pairs: verified CoT vs a corrupted copy."""
    from kubedistill.cot.pairs import PairsSettings, make_pairs

    cfg = validate_config(PairsSettings, config, "pairs")
    return _samples_stage(
        "pairs",
        make_pairs,
        cfg,
        tracking=tracking,
        problems=problems,
        samples=samples,
        output=pairs,
        rejects=rejects,
        stats=stats,
    )


# ------------------------------------------------------------------------- evaluate registered models


def evaluate_models(
    *,
    config: dict[str, Any],
    tracking: dict[str, Any],
    models: dict[str, Any],
    benchmarks: list[str],
    benchmark_paths: dict[str, str],
    results: str,
    report: str,
    report_html: str,
    limit: int = 0,
) -> dict[str, float]:
    """Evaluate several models on named benchmarks, side by side.

    ``models`` maps a label to a model reference served here (``models:/NAME@ALIAS``, a directory, an
    alias — vLLM or transformers) or to an endpoint ``{"url", "model", "api_key_env"}`` (e.g. a KServe
    student). Writes ``results/<label>/`` per model, ``results/compare/`` and ``results/results.json``."""
    from kubedistill import tracking as tr
    from kubedistill.config import TeacherConfig
    from kubedistill.evaluate.compare import compare_runs
    from kubedistill.evaluate.run import evaluate_endpoint, load_benchmarks
    from kubedistill.models import resolve_model
    from kubedistill.recipes import EvalSection
    from kubedistill.serve.local import LocalServer

    cfg = validate_config(EvalSection, config, "evaluate")
    tcfg = _tracking(tracking)
    out = Path(results)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.client.cache_dir is None:
        cfg.client.cache_dir = out.with_name(out.name + ".cache")
    sets, sources = load_benchmarks(benchmarks, paths=benchmark_paths or None, limit=limit or None)
    summary: dict[str, Any] = {}
    with tr.stage_run(
        "evaluate",
        experiment=tcfg.experiment,
        tracking_uri=tcfg.tracking_uri,
        params={**cfg.model_dump(mode="json"), "models": models, "benchmarks": benchmarks},
        enabled=tcfg.enabled,
    ) as run:
        for label, ref in models.items():
            track = tcfg if run is not None else None
            if isinstance(ref, dict):
                endpoint = validate_config(TeacherConfig, ref, f"models.{label}")
                res = evaluate_endpoint(endpoint, sets, cfg, out / label, label=label, sources=sources, tracking=track)
            else:
                with LocalServer(
                    resolve_model(str(ref)),
                    served_name=label,
                    backend=cfg.backend,
                    max_model_len=cfg.max_model_len,
                    log_path=out / f"server-{label}.log",
                ) as url:
                    res = evaluate_endpoint(
                        TeacherConfig(url=url, model=label),
                        sets,
                        cfg,
                        out / label,
                        label=label,
                        sources=sources,
                        tracking=track,
                    )
            summary[label] = {b: r.flat() for b, r in res.items()}
        (out / "results.json").write_text(json.dumps(summary, indent=2))
        reports = out / next(iter(models))
        if len(models) > 1:
            compare_runs({label: out / label for label in models}, out / "compare", baseline=next(iter(models)))
            reports = out / "compare"
        Path(report).write_text((reports / "report.md").read_text())
        Path(report_html).write_text((reports / "report.html").read_text())
        if run is not None:
            import mlflow

            mlflow.log_artifacts(str(reports), artifact_path="evaluation")
    return {
        f"{label}.{b}.{k}": float(v)
        for label, by_b in summary.items()
        for b, r in by_b.items()
        for k, v in r.items()
        if isinstance(v, int | float)
    }


# --------------------------------------------------------------------------------- promote / deploy


def promote(*, gate: dict[str, Any], model_uri: str) -> bool:
    """Move the gate's alias (``champion``) to ``models:/NAME/VERSION`` if its registered scores pass."""
    from kubedistill.errors import UserError
    from kubedistill.promote import promote as promote_fn

    if not model_uri.startswith("models:/") or model_uri.count("/") != 2:
        raise UserError(f"promote needs models:/NAME/VERSION (got {model_uri!r})")
    name, version = model_uri.removeprefix("models:/").split("/")
    return promote_fn(name, version, None, gate)


def deploy(*, settings: dict[str, Any], model_uri: str) -> str:
    """Render and apply a KServe InferenceService for the student; wait for Ready; smoke-test it."""
    from kubedistill.serve.kserve import deploy as deploy_fn

    return deploy_fn(model_uri, settings=settings, log=print).openai_base_url
