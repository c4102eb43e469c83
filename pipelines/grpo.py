"""The adaptive-thinking RL pipeline (DistilQwen-ThoughtY's GRPO stage):

collect -> generate -> verify -> score (RV, CD by the judge) -> reward models (RV and CD regressors
distilled from the judge) -> GRPO of the student with R = R_format + R_accuracy + λ_RV·R_RV + λ_CD·R_CD
-> evaluate (student vs the policy it started from) -> register (-> promote when the gate passes) -> report

``base_model`` is the policy GRPO starts from: typically the adaptive-thinking SFT student
(``models:/NAME@champion``), a model directory, or a hub id.
"""

from kfp import dsl
from kubedistill_kfp.components import grpo_op, reward_models_op
from kubedistill_kfp.pipelines._sharding import collected_scored_cots
from kubedistill_kfp.pipelines._shared import Outputs, finish_training

_EMPTY: dict = {}


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
    collect, generated, verified, scored = collected_scored_cots(
        collect_config=collect_config,
        tracking=tracking,
        shards=shards,
        generate_config=generate_config,
        verify_config=verify_config,
        score_config=score_config,
    )
    problems = collect.outputs["problems"]
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
    return finish_training(
        "grpo",
        model=policy.outputs["model"],
        collect=collect,
        scored=scored.outputs["merged"],
        stages={
            "generate": generated,
            "verify": verified,
            "score": scored,
            "reward_models": reward_models,
            "grpo": policy,
        },
        base_model=base_model,
        eval_config=eval_config,
        register_config=register_config,
        gate=gate,
        promote=promote,
        tracking=tracking,
    )
