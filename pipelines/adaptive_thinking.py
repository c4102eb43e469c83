"""The adaptive-thinking pipeline (ThoughtX / ThoughtY):

collect -> generate -> verify -> score (RV, CD) -> select (fits the student) -> SFT -> evaluate -> register -> report
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset

from components.stages import (
    collect_op,
    select_op,
    sft_op,
)
from pipelines._sharding import scored_cots
from pipelines._shared import evaluate_register_promote, run_report

_EMPTY: dict = {}


class Outputs(NamedTuple):
    model_uri: str
    summary: Dataset


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
    collect = collect_op(config=collect_config, tracking=tracking)
    problems = collect.outputs["problems"]
    generated, verified, scored = scored_cots(  # generate -> verify -> score, side by side over the shards
        problems=problems,
        tracking=tracking,
        shards=shards,
        generate_config=generate_config,
        verify_config=verify_config,
        score_config=score_config,
    )
    select = select_op(config=select_config, tracking=tracking, samples=scored.outputs["merged"])
    sft = sft_op(
        config=sft_config, tracking=tracking, problems=problems, samples=select.outputs["selected"], work_dir=work_dir
    )
    evaluate, register = evaluate_register_promote(
        model=sft.outputs["model"],
        heldout=collect.outputs["heldout"],
        base_model=base_model,
        eval_config=eval_config,
        register_config=register_config,
        gate=gate,
        promote=promote,
        tracking=tracking,
    )
    report = run_report(
        "adaptive-thinking",
        tracking=tracking,
        model_uri=register.output,
        results=evaluate.outputs["results"],
        scored=scored.outputs["merged"],
        collect_metrics=collect.outputs["metrics"],
        generate_metrics=generated.outputs["metrics"],
        verify_metrics=verified.outputs["metrics"],
        score_metrics=scored.outputs["metrics"],
        select_metrics=select.outputs["metrics"],
        sft_metrics=sft.outputs["metrics"],
    )
    return Outputs(model_uri=register.output, summary=report.outputs["summary"])
