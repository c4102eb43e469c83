"""Fan-out of the teacher-bound stages: ``dsl.ParallelFor`` over ``shard_plan_op(count=shards)``, each
task taking the problems whose id hashes to its shard (kubedistill/sharding.py); ``merged`` joins a
stage's parts after the loop."""

from kfp import dsl
from kubedistill_kfp.components import collect_op, generate_op, merge_shards_op, score_op, shard_plan_op, verify_op


def merged(task, records: str, stage: str):
    """A merge task for ``task`` (created inside the ParallelFor): its ``records`` output, rejects and
    metrics from every shard, as one Dataset (``merged``), rejects and Metrics (``metrics``)."""
    merge = merge_shards_op(
        parts=dsl.Collected(task.outputs[records]),
        part_rejects=dsl.Collected(task.outputs["rejects"]),
        part_metrics=dsl.Collected(task.outputs["metrics"]),
    )
    merge.set_display_name(f"merge-{stage}")
    return merge


def scored_cots(*, problems, imported, tracking, shards, generate_config, verify_config, score_config):
    """generate (plus the ``imported`` CoTs of each shard's problems) -> verify -> score (RV, CD) over the
    shards; returns the three merge tasks."""
    plan = shard_plan_op(count=shards)
    with dsl.ParallelFor(plan.output, name="teacher-shards") as shard:  # the teacher-bound stages, side by side
        part = {"tracking": tracking, "problems": problems, "shard_index": shard, "shard_count": shards}
        generate = generate_op(config=generate_config, imported=imported, **part)
        generate.set_retry(num_retries=2, backoff_duration="60s")
        verify = verify_op(
            config=verify_config, tracking=tracking, problems=problems, samples=generate.outputs["samples"]
        )
        score = score_op(config=score_config, samples=verify.outputs["verified"], **part)
        score.set_retry(num_retries=2, backoff_duration="60s")
    return (
        merged(generate, "samples", "generate"),
        merged(verify, "verified", "verify"),
        merged(score, "scored", "score"),
    )


def collected_scored_cots(*, collect_config, tracking, shards, generate_config, verify_config, score_config):
    """collect, then generate -> verify -> score over the shards: the start of the adaptive-thinking, reward-model
    and GRPO pipelines. Returns the collect task and the generate, verify and score merge tasks."""
    collect = collect_op(config=collect_config, tracking=tracking)
    generated, verified, scored = scored_cots(  # side by side over the shards
        problems=collect.outputs["problems"],
        imported=collect.outputs["samples"],
        tracking=tracking,
        shards=shards,
        generate_config=generate_config,
        verify_config=verify_config,
        score_config=score_config,
    )
    return collect, generated, verified, scored


def imported_scored_cots(*, collect_config, tracking, shards, verify_config, score_config):
    """collect (with sources that import CoTs), then verify -> score over the shards, with no generate step:
    the start of a pipeline on an existing CoT corpus. Each shard takes the CoTs whose problem id hashes to
    it. Returns the collect task and the verify and score merge tasks."""
    collect = collect_op(config=collect_config, tracking=tracking)
    problems = collect.outputs["problems"]
    plan = shard_plan_op(count=shards)
    with dsl.ParallelFor(plan.output, name="cot-shards") as shard:
        part = {"tracking": tracking, "shard_index": shard, "shard_count": shards}
        verify = verify_op(config=verify_config, problems=problems, samples=collect.outputs["samples"], **part)
        score = score_op(config=score_config, problems=problems, samples=verify.outputs["verified"], **part)
        score.set_retry(num_retries=2, backoff_duration="60s")
    return collect, merged(verify, "verified", "verify"), merged(score, "scored", "score")
