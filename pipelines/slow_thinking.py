"""The slow-thinking pipeline (DistilQwen2.5-R1):

collect (``collect_shard`` over the ``shards``, then one ``collect_merge``: dedup stays global) -> generate
-> judge (difficulty) -> rewrite (extend easy, simplify hard) -> verify -> DPO pairs (verified CoT vs
corrupted copy; these five over the ``shards``, side by side) -> curriculum SFT (medium, then hard) -> DPO
of the SFT student -> evaluate (student vs base) -> register (-> promote when the gate passes) -> report
"""

from kfp import dsl
from kubedistill_kfp.components import (
    dpo_op,
    generate_op,
    judge_op,
    pairs_op,
    rewrite_op,
    sft_op,
    verify_op,
)
from kubedistill_kfp.pipelines._sharding import merged, shard_loop, sharded_collect
from kubedistill_kfp.pipelines._shared import Outputs, finish_training, preflight, with_form

# Defaults are placeholders for the KFP UI; a recipe (examples/*.yaml) gives every value.
_EMPTY: dict = {}


@dsl.pipeline(
    name="slow-thinking",
    description="DistilQwen2.5-R1: CoTs from teachers, judged, rewritten for the student, verified; curriculum "
    "SFT, then DPO on correct-vs-corrupted CoT pairs; evaluated against the base student; registered in MLflow.",
)
@with_form("slow_thinking")
def slow_thinking(
    collect_config: dict = _EMPTY,
    generate_config: dict = _EMPTY,
    judge_config: dict = _EMPTY,
    rewrite_config: dict = _EMPTY,
    verify_config: dict = _EMPTY,
    sft_config: dict = _EMPTY,
    pairs_config: dict = _EMPTY,
    dpo_config: dict = _EMPTY,
    eval_config: dict = _EMPTY,
    register_config: dict = _EMPTY,
    gate: dict = _EMPTY,
    promote: bool = False,
    deploy: bool = False,
    serve_config: dict = _EMPTY,
    tracking: dict = _EMPTY,
    work_dir: str = "",
    shards: int = 1,
    form: dict | None = None,
) -> Outputs:
    c = preflight(  # the first task: the form merged, every section checked
        "slow_thinking",
        locals(),
        loop=(
            "collect_config",
            "generate_config",
            "judge_config",
            "rewrite_config",
            "verify_config",
            "pairs_config",
            "tracking",
        ),
    )
    collect = sharded_collect(checked=c, shards=shards)  # collect_shard x shards, then one global merge
    problems = collect.outputs["problems"]
    with shard_loop(c.loop_settings, shards) as shard:  # the teacher-bound stages, side by side
        part = {"tracking": shard.tracking, "problems": problems, "shard_index": shard.index, "shard_count": shards}
        generate = generate_op(config=shard.generate_config, imported=collect.outputs["samples"], **part)
        generate.set_retry(num_retries=2, backoff_duration="60s")
        judge = judge_op(config=shard.judge_config, samples=generate.outputs["samples"], **part)
        judge.set_retry(num_retries=2, backoff_duration="60s")
        rewrite = rewrite_op(config=shard.rewrite_config, samples=judge.outputs["judged"], **part)
        rewrite.set_retry(num_retries=2, backoff_duration="60s")
        # the CPU stages of each shard's CoTs, in the same loop (their decisions are per CoT)
        verify = verify_op(
            config=shard.verify_config, tracking=shard.tracking, problems=problems, samples=rewrite.outputs["rewritten"]
        )
        pairs = pairs_op(
            config=shard.pairs_config, tracking=shard.tracking, problems=problems, samples=verify.outputs["verified"]
        )
    generated = merged(generate, "samples", "generate")
    judged = merged(judge, "judged", "judge")
    rewritten = merged(rewrite, "rewritten", "rewrite")
    verified = merged(verify, "verified", "verify")
    paired = merged(pairs, "pairs", "pairs")
    sft = sft_op(
        config=c.sft_config,
        tracking=c.tracking,
        problems=problems,
        samples=verified.outputs["merged"],
        work_dir=work_dir,
    )
    dpo = dpo_op(
        config=c.dpo_config,
        tracking=c.tracking,
        problems=problems,
        pairs=paired.outputs["merged"],
        base_model=sft.outputs["model"],
        work_dir=work_dir,
    )
    return finish_training(
        "slow-thinking",
        model=dpo.outputs["model"],
        collect=collect,
        stages={
            "generate": generated,
            "judge": judged,
            "rewrite": rewritten,
            "verify": verified,
            "pairs": paired,
            "sft": sft,
            "dpo": dpo,
        },
        base_model=c.base_model,
        eval_config=c.eval_config,
        register_config=c.register_config,
        gate=gate,
        promote=promote,
        tracking=c.tracking,
        deploy=deploy,
        serve_config=c.serve_config,
    )
