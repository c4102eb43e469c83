"""The ablation pipeline (kubedistill/ablation.py): which parts of the recipes make the student better.

collect -> generate -> verify (every CoT kept) -> difficulty judge -> RV/CD scores   (the pool, built once)
        -> DPO pairs, RV/CD reward models
        -> the reference arm (SFT on verified CoTs) -> its evaluation
        -> ParallelFor over the other arms: train (SFT variants, DPO, GRPO variants) -> evaluate on held-out
        -> the ablation table (+ plot, MLflow parent run) and the pool's run report

On a cluster the arms train in parallel, one pod each; under kfp.local they run one after the other, and
a second run re-executes only what changed (the pool comes from the cache).
"""

from typing import NamedTuple

from kfp import dsl
from kubedistill_kfp.components import (
    ablation_report_op,
    arm_evaluate_op,
    arm_train_op,
    collect_op,
    generate_op,
    judge_op,
    pairs_op,
    reward_models_op,
    score_op,
    verify_op,
)
from kubedistill_kfp.pipelines._sharding import merged, shard_loop
from kubedistill_kfp.pipelines._shared import preflight, run_report, with_form

# Defaults are placeholders for the KFP UI; a recipe (examples/ablation*.yaml) gives every value.
_EMPTY: dict = {}
_NO_ARMS: list = []


class AblationOutputs(NamedTuple):
    """The pool's run report (funnel) and the ablation table (every arm's row)."""

    summary: dsl.Dataset
    table: dsl.Dataset


@dsl.pipeline(
    name="ablation",
    description="Ablation harness: one pool of CoTs (verified, judged, scored), arms trained from it with the same "
    "budget and seed (SFT on all / verified / curriculum / shuffled / RV-CD window / random subset, DPO, GRPO with "
    "and without RV/CD rewards), every arm evaluated on the same held-out problems; one table.",
)
@with_form("ablation")
def ablation(
    collect_config: dict = _EMPTY,
    generate_config: dict = _EMPTY,
    verify_config: dict = _EMPTY,
    judge_config: dict = _EMPTY,
    score_config: dict = _EMPTY,
    pairs_config: dict = _EMPTY,
    reward_models_config: dict = _EMPTY,
    arm_config: dict = _EMPTY,
    arms: list = _NO_ARMS,
    reference_arm: str = "sft_verified",
    name: str = "ablation",
    tracking: dict = _EMPTY,
    work_dir: str = "",
    shards: int = 1,
    form: dict | None = None,
) -> AblationOutputs:
    c = preflight(  # the first task: the form merged, every section checked
        "ablation", locals(), loop=("generate_config", "verify_config", "judge_config", "score_config", "tracking")
    )
    collect = collect_op(config=c.collect_config, tracking=c.tracking)
    problems = collect.outputs["problems"]
    heldout = collect.outputs["heldout"]
    with shard_loop(c.loop_settings, shards) as shard:  # the teacher-bound stages, side by side
        part = {"tracking": shard.tracking, "problems": problems, "shard_index": shard.index, "shard_count": shards}
        generate = generate_op(config=shard.generate_config, **part)
        generate.set_retry(num_retries=2, backoff_duration="60s")
        verify = verify_op(
            config=shard.verify_config, tracking=shard.tracking, problems=problems, samples=generate.outputs["samples"]
        )
        judge = judge_op(config=shard.judge_config, samples=verify.outputs["verified"], **part)
        judge.set_retry(num_retries=2, backoff_duration="60s")
        score = score_op(config=shard.score_config, samples=judge.outputs["judged"], **part)
        score.set_retry(num_retries=2, backoff_duration="60s")
    generated = merged(generate, "samples", "generate")
    verified = merged(verify, "verified", "verify")
    judged = merged(judge, "judged", "judge")
    scored = merged(score, "scored", "score")
    pool = scored.outputs["merged"]
    pairs = pairs_op(config=c.pairs_config, tracking=c.tracking, problems=problems, samples=pool)
    reward_models = reward_models_op(
        config=c.reward_models_config, tracking=c.tracking, problems=problems, samples=pool
    )
    # The arms' loop takes arm_config and tracking as given (the form has no field of theirs, so the
    # preflight's are the same values): kfp.local would hand a loop's tasks its item for a task output.
    shared = {
        "config": arm_config,
        "tracking": tracking,
        "samples": pool,
        "problems": problems,
        "pairs": pairs.outputs["pairs"],
        "reward_models": reward_models.outputs["models"],
        "work_dir": work_dir,
    }
    # The reference student (SFT on the verified CoTs): DPO and GRPO arms start from it.
    reference = arm_train_op(arm=reference_arm, **shared)
    reference.set_display_name("arm-train-reference")
    reference_eval = arm_evaluate_op(
        config=c.arm_config,
        tracking=c.tracking,
        problems=heldout,
        model=reference.outputs["model"],
        reward_models=reward_models.outputs["models"],
        arm=reference_arm,
    )
    reference_eval.set_display_name("arm-evaluate-reference")
    with dsl.ParallelFor(arms, name="arms") as arm:  # one pod per arm on a cluster
        train = arm_train_op(arm=arm, reference=reference.outputs["model"], **shared)
        evaluate = arm_evaluate_op(
            config=arm_config,
            tracking=tracking,
            problems=heldout,
            model=train.outputs["model"],
            reward_models=reward_models.outputs["models"],
            arm=arm,
        )
    table = ablation_report_op(
        arms=dsl.Collected(evaluate.outputs["results"]),
        reference=reference_eval.outputs["results"],
        name=name,
        tracking=c.tracking,
    )  # cached like every task (no per-run input); the run's id reaches it as $KFP_RUN_ID on the cluster
    report = run_report(
        "ablation",
        tracking=c.tracking,
        model_uri="",
        stages={
            "collect": collect,
            "generate": generated,
            "verify": verified,
            "judge": judged,
            "score": scored,
            "pairs": pairs,
            "reward_models": reward_models,
        },
        scored=pool,
    )
    return AblationOutputs(summary=report.outputs["summary"], table=table.outputs["summary"])
