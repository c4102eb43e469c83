"""Fan-out of the teacher-bound stages: ``dsl.ParallelFor`` over ``shard_plan_op(count=shards)``, each
task taking the problems whose id hashes to its shard (kubedistill/sharding.py); ``merged`` joins a
stage's parts after the loop."""

from kfp import dsl

from components.stages import merge_shards_op


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
