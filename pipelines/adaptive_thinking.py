"""The adaptive-thinking pipeline (ThoughtX / ThoughtY):

collect -> generate -> verify -> score (RV, CD) -> select (fits the student) -> SFT -> evaluate -> register -> report

and ``adaptive_thinking_imported``, the same on an existing CoT corpus with no generate step (a recipe with
``cot_source: imported``): collect (CoTs imported with their problems) -> verify -> score -> select -> SFT -> ...
"""

from kfp import dsl
from kubedistill_kfp.components import select_op, sft_op
from kubedistill_kfp.pipelines._sharding import collected_scored_cots, imported_scored_cots
from kubedistill_kfp.pipelines._shared import Outputs, finish_training

_EMPTY: dict = {}


@dsl.pipeline(
    name="adaptive-thinking",
    description="ThoughtX/ThoughtY: verified CoTs scored for reasoning verbosity and cognitive difficulty; the "
    "subset that fits the student trains it; evaluated against the base student; registered in MLflow.",
)
def adaptive_thinking(
    collect_config: dict = _EMPTY,
    generate_config: dict = _EMPTY,
    verify_config: dict = _EMPTY,
    score_config: dict = _EMPTY,
    select_config: dict = _EMPTY,
    sft_config: dict = _EMPTY,
    eval_config: dict = _EMPTY,
    register_config: dict = _EMPTY,
    gate: dict = _EMPTY,
    promote: bool = False,
    tracking: dict = _EMPTY,
    base_model: str = "tiny-qwen3",
    work_dir: str = "",
    shards: int = 1,
) -> Outputs:
    collect, generated, verified, scored = collected_scored_cots(
        collect_config=collect_config,
        tracking=tracking,
        shards=shards,
        generate_config=generate_config,
        verify_config=verify_config,
        score_config=score_config,
    )
    select = select_op(
        config=select_config,
        tracking=tracking,
        samples=scored.outputs["merged"],
        problems=collect.outputs["problems"],  # each CoT's domain, for a mix by domain
    )
    sft = sft_op(
        config=sft_config,
        tracking=tracking,
        problems=collect.outputs["problems"],
        samples=select.outputs["selected"],
        work_dir=work_dir,
    )
    return finish_training(
        "adaptive-thinking",
        model=sft.outputs["model"],
        collect=collect,
        scored=scored.outputs["merged"],
        stages={"generate": generated, "verify": verified, "score": scored, "select": select, "sft": sft},
        base_model=base_model,
        eval_config=eval_config,
        register_config=register_config,
        gate=gate,
        promote=promote,
        tracking=tracking,
    )


@dsl.pipeline(
    name="adaptive-thinking-imported",
    description="ThoughtX/ThoughtY on an existing CoT corpus (no generate step): imported CoTs verified, scored "
    "for RV and CD, the subset that fits the student trains it; evaluated against the base student; registered.",
)
def adaptive_thinking_imported(
    collect_config: dict = _EMPTY,
    verify_config: dict = _EMPTY,
    score_config: dict = _EMPTY,
    select_config: dict = _EMPTY,
    sft_config: dict = _EMPTY,
    eval_config: dict = _EMPTY,
    register_config: dict = _EMPTY,
    gate: dict = _EMPTY,
    promote: bool = False,
    tracking: dict = _EMPTY,
    base_model: str = "tiny-qwen3",
    work_dir: str = "",
    shards: int = 1,
) -> Outputs:
    collect, verified, scored = imported_scored_cots(
        collect_config=collect_config,
        tracking=tracking,
        shards=shards,
        verify_config=verify_config,
        score_config=score_config,
    )
    select = select_op(
        config=select_config,
        tracking=tracking,
        samples=scored.outputs["merged"],
        problems=collect.outputs["problems"],  # each CoT's domain, for a mix by domain
    )
    sft = sft_op(
        config=sft_config,
        tracking=tracking,
        problems=collect.outputs["problems"],
        samples=select.outputs["selected"],
        work_dir=work_dir,
    )
    return finish_training(
        "adaptive-thinking-imported",
        model=sft.outputs["model"],
        collect=collect,
        scored=scored.outputs["merged"],
        stages={"verify": verified, "score": scored, "select": select, "sft": sft},
        base_model=base_model,
        eval_config=eval_config,
        register_config=register_config,
        gate=gate,
        promote=promote,
        tracking=tracking,
    )
