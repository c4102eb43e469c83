"""The reward-model pipeline (DistilQwen-ThoughtY's RV / CD scorers):

collect -> generate -> verify (every CoT kept: RV and CD describe a CoT, right or wrong) -> score (RV,
CD by the judge) -> reward models (two regressors distilled from the judge's 0-9 scores; held-out MAE and
Spearman) -> register (<name>-rv, <name>-cd in the MLflow registry) -> report

A registered reward model is a pyfunc scorer (rows {problem, cot} -> score in [0, 1]); its directory is
what GRPO loads (``kubedistill grpo --reward-models``; the grpo pipeline trains its own).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Model
from kubedistill_kfp.components import register_reward_models_op, reward_models_op
from kubedistill_kfp.pipelines._sharding import SCORED_LOOP, collected_scored_cots
from kubedistill_kfp.pipelines._shared import preflight, run_report, with_form

_EMPTY: dict = {}


class Outputs(NamedTuple):
    model_uri: str
    models: Model
    summary: Dataset


@dsl.pipeline(
    name="reward-models",
    description="ThoughtY reward models: teacher CoTs scored for reasoning verbosity and cognitive difficulty by "
    "an LLM judge; two regressors distilled from those scores; registered in MLflow.",
)
@with_form("reward_models")
def reward_models(
    collect_config: dict = _EMPTY,
    generate_config: dict = _EMPTY,
    verify_config: dict = _EMPTY,
    score_config: dict = _EMPTY,
    reward_models_config: dict = _EMPTY,
    register_config: dict = _EMPTY,
    tracking: dict = _EMPTY,
    shards: int = 1,
    form: dict | None = None,
) -> Outputs:
    c = preflight("reward_models", locals(), loop=SCORED_LOOP)  # the first task: the form merged, every section checked
    collect, generated, verified, scored = collected_scored_cots(checked=c, shards=shards)
    train = reward_models_op(
        config=c.reward_models_config,
        tracking=c.tracking,
        problems=collect.outputs["problems"],
        samples=scored.outputs["merged"],
    )
    register = register_reward_models_op(config=c.register_config, tracking=c.tracking, models=train.outputs["models"])
    # cached like every task: a re-run with the same reward models reports the versions it registered
    report = run_report(
        "reward-models",
        tracking=c.tracking,
        model_uri=register.output,
        scored=scored.outputs["merged"],
        stages={"collect": collect, "generate": generated, "verify": verified, "score": scored, "reward_models": train},
    )
    return Outputs(model_uri=register.output, models=train.outputs["models"], summary=report.outputs["summary"])
