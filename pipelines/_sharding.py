"""Fan-out of the teacher-bound stages: ``dsl.ParallelFor`` over ``shard_plan_op(count=shards, settings=...)``, each
task taking the problems whose id hashes to its shard (kubedistill/sharding.py); ``merged`` joins a
stage's parts after the loop."""

from kfp import dsl
from kubedistill_kfp.components import (
    collect_merge_op,
    collect_shard_op,
    generate_op,
    merge_shards_op,
    score_op,
    shard_plan_op,
    verify_op,
)


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


# The sections the tasks of scored_cots' loop take (preflight(..., loop=SCORED_LOOP)).
SCORED_LOOP = ("collect_config", "generate_config", "verify_config", "score_config", "tracking")
# ... and those of imported_scored_cots' loops (a sharded collect, no generate step).
IMPORTED_LOOP = ("collect_config", "verify_config", "score_config", "tracking")


def shard_loop(settings, shards, name="teacher-shards"):
    """``dsl.ParallelFor`` over the shards; each item carries ``index`` and the ``settings`` sections
    (the preflight's ``loop_settings``), which the loop's tasks read as ``shard.generate_config``..."""
    plan = shard_plan_op(count=shards, settings=settings)
    return dsl.ParallelFor(plan.output, name=name)


def scored_cots(*, problems, imported, shards, settings):
    """generate (plus the ``imported`` CoTs of each shard's problems) -> verify -> score (RV, CD) over the
    shards (``settings``: the preflight's loop_settings of SCORED_LOOP); returns the three merge tasks."""
    with shard_loop(settings, shards) as shard:  # the teacher-bound stages, side by side
        part = {"tracking": shard.tracking, "problems": problems, "shard_index": shard.index, "shard_count": shards}
        generate = generate_op(config=shard.generate_config, imported=imported, **part)
        generate.set_retry(num_retries=2, backoff_duration="60s")
        verify = verify_op(
            config=shard.verify_config, tracking=shard.tracking, problems=problems, samples=generate.outputs["samples"]
        )
        score = score_op(config=shard.score_config, samples=verify.outputs["verified"], **part)
        score.set_retry(num_retries=2, backoff_duration="60s")
    return (
        merged(generate, "samples", "generate"),
        merged(verify, "verified", "verify"),
        merged(score, "scored", "score"),
    )


def collected_scored_cots(*, checked, shards):
    """collect (sharded, :func:`sharded_collect`), then generate -> verify -> score over the shards: the start
    of the adaptive-thinking, reward-model and GRPO pipelines (``checked``: the preflight's sections, made with
    ``loop=SCORED_LOOP``). Returns the collect merge task and the generate, verify and score merge tasks."""
    collect = sharded_collect(checked=checked, shards=shards)
    generated, verified, scored = scored_cots(  # side by side over the shards
        problems=collect.outputs["problems"],
        imported=collect.outputs["samples"],
        shards=shards,
        settings=checked.loop_settings,
    )
    return collect, generated, verified, scored


def sharded_collect(*, checked, shards):
    """collect as ``shards`` parallel tasks (``collect_shard``: row *i* of every source goes to shard *i* mod
    ``shards``; each normalises its rows and writes their dedup keys and decontamination verdicts), then one
    ``collect_merge`` task: dedup over every shard's keys (global), decontamination, the mix and the
    held-out split. Returns the merge task, whose outputs are collect's (``checked``: the preflight's
    sections, made with a ``loop`` that holds ``collect_config`` and ``tracking``)."""
    with shard_loop(checked.loop_settings, shards, name="collect-shards") as shard:
        part = collect_shard_op(
            config=shard.collect_config, tracking=shard.tracking, shard_index=shard.index, shard_count=shards
        )
    merge = collect_merge_op(
        config=checked.collect_config,
        tracking=checked.tracking,
        parts=dsl.Collected(part.outputs["problems"]),
        part_samples=dsl.Collected(part.outputs["samples"]),
        part_keys=dsl.Collected(part.outputs["keys"]),
        part_rejects=dsl.Collected(part.outputs["rejects"]),
    )
    merge.set_display_name("collect")
    return merge


def imported_scored_cots(*, checked, shards):
    """collect (with sources that import CoTs; sharded, :func:`sharded_collect`), then verify -> score over the
    shards, with no generate step:
    the start of a pipeline on an existing CoT corpus (``checked``: the preflight's sections, made with
    ``loop=IMPORTED_LOOP``). Each shard takes the CoTs whose problem id hashes to it. Returns the collect
    task and the verify and score merge tasks."""
    collect = sharded_collect(checked=checked, shards=shards)
    problems = collect.outputs["problems"]
    with shard_loop(checked.loop_settings, shards, name="cot-shards") as shard:
        part = {"tracking": shard.tracking, "shard_index": shard.index, "shard_count": shards}
        verify = verify_op(config=shard.verify_config, problems=problems, samples=collect.outputs["samples"], **part)
        score = score_op(config=shard.score_config, problems=problems, samples=verify.outputs["verified"], **part)
        score.set_retry(num_retries=2, backoff_duration="60s")
    return collect, merged(verify, "verified", "verify"), merged(score, "scored", "score")
