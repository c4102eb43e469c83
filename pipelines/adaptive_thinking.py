"""The adaptive-thinking pipeline (ThoughtX / ThoughtY):

collect -> generate -> verify -> score (RV, CD) -> select (fits the student) -> SFT -> evaluate -> register -> report

and ``adaptive_thinking_imported``, the same on an existing CoT corpus with no generate step (a recipe with
``cot_source: imported``): collect (CoTs imported with their problems) -> verify -> score -> select -> SFT -> ...
"""

from kfp import dsl
from kubedistill_kfp.components import select_op, sft_op
from kubedistill_kfp.pipelines._sharding import IMPORTED_LOOP, SCORED_LOOP, collected_scored_cots, imported_scored_cots
from kubedistill_kfp.pipelines._shared import Outputs, finish_training, preflight, with_form

_EMPTY: dict = {}


@dsl.pipeline(
    name="adaptive-thinking",
    description="ThoughtX/ThoughtY: verified CoTs scored for reasoning verbosity and cognitive difficulty; the "
    "subset that fits the student trains it; evaluated against the base student; registered in MLflow.",
)
@with_form("adaptive_thinking")
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
    deploy: bool = False,
    serve_config: dict = _EMPTY,
    tracking: dict = _EMPTY,
    work_dir: str = "",
    shards: int = 1,
    form: dict | None = None,
) -> Outputs:
    c = preflight(
        "adaptive_thinking", locals(), loop=SCORED_LOOP
    )  # the first task: the form merged, every section checked
    collect, generated, verified, scored = collected_scored_cots(checked=c, shards=shards)
    select = select_op(
        config=c.select_config,
        tracking=c.tracking,
        samples=scored.outputs["merged"],
        problems=collect.outputs["problems"],  # each CoT's domain, for a mix by domain
    )
    sft = sft_op(
        config=c.sft_config,
        tracking=c.tracking,
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
        base_model=c.base_model,
        eval_config=c.eval_config,
        register_config=c.register_config,
        gate=gate,
        promote=promote,
        tracking=c.tracking,
        deploy=deploy,
        serve_config=c.serve_config,
    )


@dsl.pipeline(
    name="adaptive-thinking-imported",
    description="ThoughtX/ThoughtY on an existing CoT corpus (no generate step): imported CoTs verified, scored "
    "for RV and CD, the subset that fits the student trains it; evaluated against the base student; registered.",
)
@with_form("adaptive_thinking_imported")
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
    deploy: bool = False,
    serve_config: dict = _EMPTY,
    tracking: dict = _EMPTY,
    work_dir: str = "",
    shards: int = 1,
    form: dict | None = None,
) -> Outputs:
    c = preflight(
        "adaptive_thinking_imported", locals(), loop=IMPORTED_LOOP
    )  # the first task: the form merged, every section checked
    collect, verified, scored = imported_scored_cots(checked=c, shards=shards)
    select = select_op(
        config=c.select_config,
        tracking=c.tracking,
        samples=scored.outputs["merged"],
        problems=collect.outputs["problems"],  # each CoT's domain, for a mix by domain
    )
    sft = sft_op(
        config=c.sft_config,
        tracking=c.tracking,
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
        base_model=c.base_model,
        eval_config=c.eval_config,
        register_config=c.register_config,
        gate=gate,
        promote=promote,
        tracking=c.tracking,
        deploy=deploy,
        serve_config=c.serve_config,
    )
