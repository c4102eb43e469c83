"""The adaptive-thinking RL pipeline (DistilQwen-ThoughtY's GRPO stage):

collect -> generate -> verify -> score (RV, CD by the judge) -> reward models (RV and CD regressors
distilled from the judge) -> GRPO of the student with R = R_format + R_accuracy + λ_RV·R_RV + λ_CD·R_CD
-> evaluate (student vs the policy it started from) -> register (-> promote when the gate passes) -> report

``base_model`` is the policy GRPO starts from: typically the adaptive-thinking SFT student
(``models:/NAME@champion``), a model directory, or a hub id.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset

from components.stages import (
    collect_op,
    grpo_op,
    reward_models_op,
)
from pipelines._sharding import scored_cots
from pipelines._shared import evaluate_register_promote, run_report

_EMPTY: dict = {}


class Outputs(NamedTuple):
    model_uri: str
    summary: Dataset


@dsl.pipeline(
    name="grpo",
    description="ThoughtY RL: RV and CD reward models distilled from the judge's scores, then GRPO of the student "
    "with format, accuracy and interval rewards; evaluated against the starting policy; registered in MLflow.",
)
def grpo(
    collect_config: dict = _EMPTY,
    generate_config: dict = _EMPTY,
    verify_config: dict = _EMPTY,
    score_config: dict = _EMPTY,
    reward_models_config: dict = _EMPTY,
    grpo_config: dict = _EMPTY,
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
    reward_models = reward_models_op(
        config=reward_models_config, tracking=tracking, problems=problems, samples=scored.outputs["merged"]
    )
    policy = grpo_op(
        config=grpo_config,
        tracking=tracking,
        problems=problems,
        reward_models=reward_models.outputs["models"],
        base_model=base_model,
        work_dir=work_dir,
    )
    evaluate, register = evaluate_register_promote(
        model=policy.outputs["model"],
        heldout=collect.outputs["heldout"],
        base_model=base_model,
        eval_config=eval_config,
        register_config=register_config,
        gate=gate,
        promote=promote,
        tracking=tracking,
    )
    report = run_report(
        "grpo",
        tracking=tracking,
        model_uri=register.output,
        results=evaluate.outputs["results"],
        scored=scored.outputs["merged"],
        collect_metrics=collect.outputs["metrics"],
        generate_metrics=generated.outputs["metrics"],
        verify_metrics=verified.outputs["metrics"],
        score_metrics=scored.outputs["metrics"],
        reward_models_metrics=reward_models.outputs["metrics"],
        grpo_metrics=policy.outputs["metrics"],
    )
    return Outputs(model_uri=register.output, summary=report.outputs["summary"])
