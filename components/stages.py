"""KFP components: one thin function per stage, typed artifacts, all logic in kubedistill.steps.

Each component imports kubedistill inside its body (the image has it installed), so kfp.local's
SubprocessRunner runs the very same code in-process here. Components hold no logic: they pass their
artifact paths and parameters to kubedistill.steps and log the returned metrics.
"""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import BASE_IMAGE, SERVE_IMAGE, TRAIN_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def collect_op(
    config: dict,
    tracking: dict,
    problems: Output[Dataset],
    heldout: Output[Dataset],
    rejects: Output[Dataset],
    metrics: Output[Metrics],
):
    """Load problems from the configured sources; dedup, decontaminate, re-sample; split off a held-out set."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.collect(
            config=config, tracking=tracking, problems=problems.path, heldout=heldout.path, rejects=rejects.path
        ),
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def generate_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    samples: Output[Dataset],
    rejects: Output[Dataset],
    metrics: Output[Metrics],
    shard_index: int = 0,
    shard_count: int = 1,
):
    """Ask every teacher for CoTs (teachers x temperatures x samples), through the cached, retrying client."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.generate(
            config=config,
            tracking=tracking,
            problems=problems.path,
            samples=samples.path,
            rejects=rejects.path,
            shard_index=shard_index,
            shard_count=shard_count,
        ),
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def shard_plan_op(count: int) -> list:
    """The shard indices (0 .. count-1) the teacher-bound stages fan out over."""
    from kubedistill import steps

    return steps.shard_plan(count)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_shards_op(
    parts: Input[list[Dataset]],
    part_rejects: Input[list[Dataset]],
    part_metrics: Input[list[Metrics]],
    merged: Output[Dataset],
    rejects: Output[Dataset],
    metrics: Output[Metrics],
):
    """Join a sharded stage's parts: records, rejects, and metrics (counts summed over shards)."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.merge_shards(
            parts=[p.path for p in parts],
            rejects=[p.path for p in part_rejects],
            metrics=[p.path for p in part_metrics],
            merged=merged.path,
            merged_rejects=rejects.path,
        ),
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def verify_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    samples: Input[Dataset],
    verified: Output[Dataset],
    rejects: Output[Dataset],
    metrics: Output[Metrics],
):
    """Check every CoT's answer (math-verify, sandboxed code, choice letter); keep the correct ones."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.verify(
            config=config,
            tracking=tracking,
            problems=problems.path,
            samples=samples.path,
            verified=verified.path,
            rejects=rejects.path,
        ),
    )


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def sft_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    samples: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    work_dir: str = "",
):
    """Curriculum SFT of the student on verified CoTs (TRL); writes a transformers/vLLM model directory."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.sft(
            config=config,
            tracking=tracking,
            problems=problems.path,
            samples=samples.path,
            model=model.path,
            work_dir=work_dir,
        ),
    )


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def dpo_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    pairs: Input[Dataset],
    base_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    work_dir: str = "",
):
    """DPO of the SFT student on the preference pairs (per-pair beta); writes a transformers/vLLM model directory."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.dpo(
            config=config,
            tracking=tracking,
            problems=problems.path,
            pairs=pairs.path,
            base_model=base_model.path,
            model=model.path,
            work_dir=work_dir,
        ),
    )


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def reward_models_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    samples: Input[Dataset],
    models: Output[Model],
    metrics: Output[Metrics],
):
    """RV and CD regressors distilled from the judge's scores (models/rv, models/cd); MAE and Spearman held out."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.reward_models(
            config=config, tracking=tracking, problems=problems.path, samples=samples.path, models=models.path
        ),
    )


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def grpo_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    reward_models: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    base_model: str = "",
    work_dir: str = "",
):
    """GRPO with R = format + accuracy + interval rewards on the distilled RV / CD scores."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.grpo(
            config=config,
            tracking=tracking,
            problems=problems.path,
            reward_models=reward_models.path,
            model=model.path,
            base_model=base_model,
            work_dir=work_dir,
        ),
    )


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def evaluate_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    model: Input[Model],
    results: Output[Dataset],
    report: Output[Markdown],
    report_html: Output[HTML],
    metrics: Output[Metrics],
    base_model: str = "",
):
    """Serve the student (and the base student) with vLLM; score them on the held-out problems, side by side."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.evaluate(
            config=config,
            tracking=tracking,
            problems=problems.path,
            model=model.path,
            results=results.path,
            report=report.path,
            report_html=report_html.path,
            base_model=base_model,
        ),
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_op(config: dict, tracking: dict, model: Input[Model], results: Input[Dataset]) -> str:
    """Register the student in the MLflow model registry with its scores; returns models:/NAME/VERSION."""
    from kubedistill import steps

    return steps.register(config=config, tracking=tracking, model=model.path, results=results.path)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_reward_models_op(config: dict, tracking: dict, models: Input[Model]) -> str:
    """Register the RV / CD reward models in MLflow (<name>-rv, <name>-cd); returns their models:/ URIs."""
    from kubedistill import steps

    return steps.register_reward_models(config=config, tracking=tracking, models=models.path)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def report_op(
    pipeline: str,
    run_name: str,
    tracking: dict,
    report: Output[Markdown],
    report_html: Output[HTML],
    summary: Output[Dataset],
    model_uri: str = "",
    results: Input[Dataset] = None,
    scored: Input[Dataset] = None,
    collect_metrics: Input[Metrics] = None,
    generate_metrics: Input[Metrics] = None,
    judge_metrics: Input[Metrics] = None,
    rewrite_metrics: Input[Metrics] = None,
    verify_metrics: Input[Metrics] = None,
    score_metrics: Input[Metrics] = None,
    select_metrics: Input[Metrics] = None,
    pairs_metrics: Input[Metrics] = None,
    sft_metrics: Input[Metrics] = None,
    dpo_metrics: Input[Metrics] = None,
    reward_models_metrics: Input[Metrics] = None,
    grpo_metrics: Input[Metrics] = None,
):
    """The run report: stage funnel, student vs base, CoT lengths, RV/CD distribution (Markdown + HTML)."""
    from kubedistill import steps

    steps.report(
        pipeline=pipeline,
        run_name=run_name,
        tracking=tracking,
        model_uri=model_uri,
        results=results.path if results else None,
        scored=scored.path if scored else None,
        stage_metrics={
            "collect": collect_metrics,
            "generate": generate_metrics,
            "judge": judge_metrics,
            "rewrite": rewrite_metrics,
            "verify": verify_metrics,
            "score": score_metrics,
            "select": select_metrics,
            "pairs": pairs_metrics,
            "sft": sft_metrics,
            "dpo": dpo_metrics,
            "reward_models": reward_models_metrics,
            "grpo": grpo_metrics,
        },
        report_md=report.path,
        report_html=report_html.path,
        summary=summary.path,
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def judge_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    samples: Input[Dataset],
    judged: Output[Dataset],
    rejects: Output[Dataset],
    metrics: Output[Metrics],
    shard_index: int = 0,
    shard_count: int = 1,
):
    """LLM judge: each CoT's difficulty for the student (easy / medium / hard)."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.judge(
            config=config,
            tracking=tracking,
            problems=problems.path,
            samples=samples.path,
            judged=judged.path,
            rejects=rejects.path,
            shard_index=shard_index,
            shard_count=shard_count,
        ),
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def rewrite_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    samples: Input[Dataset],
    rewritten: Output[Dataset],
    rejects: Output[Dataset],
    metrics: Output[Metrics],
    shard_index: int = 0,
    shard_count: int = 1,
):
    """Extend easy CoTs (add the missing steps), simplify hard ones."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.rewrite(
            config=config,
            tracking=tracking,
            problems=problems.path,
            samples=samples.path,
            rewritten=rewritten.path,
            rejects=rejects.path,
            shard_index=shard_index,
            shard_count=shard_count,
        ),
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def score_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    samples: Input[Dataset],
    scored: Output[Dataset],
    rejects: Output[Dataset],
    metrics: Output[Metrics],
    shard_index: int = 0,
    shard_count: int = 1,
):
    """LLM judge: reasoning verbosity (RV) and cognitive difficulty (CD), 0-9, for each CoT."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.score(
            config=config,
            tracking=tracking,
            problems=problems.path,
            samples=samples.path,
            scored=scored.path,
            rejects=rejects.path,
            shard_index=shard_index,
            shard_count=shard_count,
        ),
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_op(
    config: dict,
    tracking: dict,
    samples: Input[Dataset],
    selected: Output[Dataset],
    rejects: Output[Dataset],
    metrics: Output[Metrics],
):
    """Target-aware selection: correct CoTs whose RV / CD fit the student, at most K per problem."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.select(
            config=config, tracking=tracking, samples=samples.path, selected=selected.path, rejects=rejects.path
        ),
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pairs_op(
    config: dict,
    tracking: dict,
    problems: Input[Dataset],
    samples: Input[Dataset],
    pairs: Output[Dataset],
    rejects: Output[Dataset],
    metrics: Output[Metrics],
):
    """DPO preference pairs: a verified CoT vs a corrupted copy (kind and magnitude recorded)."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.pairs(
            config=config,
            tracking=tracking,
            problems=problems.path,
            samples=samples.path,
            pairs=pairs.path,
            rejects=rejects.path,
        ),
    )


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def evaluate_models_op(
    config: dict,
    tracking: dict,
    models: dict,
    benchmarks: list,
    benchmark_paths: dict,
    results: Output[Dataset],
    report: Output[Markdown],
    report_html: Output[HTML],
    metrics: Output[Metrics],
    limit: int = 0,
):
    """Score registered students (served here with vLLM) or endpoints on named benchmarks, side by side."""
    from kubedistill import steps

    steps.log_metrics(
        metrics,
        steps.evaluate_models(
            config=config,
            tracking=tracking,
            models=models,
            benchmarks=benchmarks,
            benchmark_paths=benchmark_paths,
            results=results.path,
            report=report.path,
            report_html=report_html.path,
            limit=limit,
        ),
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def promote_op(gate: dict, model_uri: str) -> bool:
    """Evaluation gate: move the `champion` alias to this student if its scores pass the gate."""
    from kubedistill import steps

    return steps.promote(gate=gate, model_uri=model_uri)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy_op(settings: dict, model_uri: str) -> str:
    """Serve the student with KServe (OpenAI routes), wait until Ready, smoke-test; returns its base URL."""
    from kubedistill import steps

    return steps.deploy(settings=settings, model_uri=model_uri)
