"""The adaptive-thinking RL pipeline (DistilQwen-ThoughtY's GRPO stage):

collect -> generate -> verify -> score (RV, CD by the judge) -> reward models (RV and CD regressors
distilled from the judge) -> GRPO of the student with R = R_format + R_accuracy + λ_RV·R_RV + λ_CD·R_CD
-> evaluate (student vs the policy it started from) -> register (-> promote when the gate passes) -> report

``base_model`` is the policy GRPO starts from: typically the adaptive-thinking SFT student
(``models:/NAME@champion``), a model directory, or a hub id.
"""

from kfp import dsl
from kubedistill_kfp.components import grpo_op, reward_models_op
from kubedistill_kfp.pipelines._sharding import SCORED_LOOP, collected_scored_cots
from kubedistill_kfp.pipelines._shared import Outputs, finish_training, preflight, with_form

_EMPTY: dict = {}


@dsl.pipeline(
    name="grpo",
    description="ThoughtY RL: RV and CD reward models distilled from the judge's scores, then GRPO of the student "
    "with format, accuracy and interval rewards; evaluated against the starting policy; registered in MLflow.",
)
@with_form("grpo")
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
    deploy: bool = False,
    serve_config: dict = _EMPTY,
    tracking: dict = _EMPTY,
    work_dir: str = "",
    shards: int = 1,
    form: dict | None = None,
) -> Outputs:
    c = preflight("grpo", locals(), loop=SCORED_LOOP)  # the first task: the form merged, every section checked
    collect, generated, verified, scored = collected_scored_cots(checked=c, shards=shards)
    problems = collect.outputs["problems"]
    reward_models = reward_models_op(
        config=c.reward_models_config, tracking=c.tracking, problems=problems, samples=scored.outputs["merged"]
    )
    policy = grpo_op(
        config=c.grpo_config,
        tracking=c.tracking,
        problems=problems,
        reward_models=reward_models.outputs["models"],
        base_model=c.base_model,
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
        base_model=c.base_model,
        eval_config=c.eval_config,
        register_config=c.register_config,
        gate=gate,
        promote=promote,
        tracking=c.tracking,
        deploy=deploy,
        serve_config=c.serve_config,
    )
