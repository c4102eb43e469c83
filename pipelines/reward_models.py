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

from components.stages import (
    collect_op,
    register_reward_models_op,
    reward_models_op,
)
from pipelines._sharding import scored_cots
from pipelines._shared import run_report

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
def reward_models(
    collect_config: dict = _EMPTY,
    generate_config: dict = _EMPTY,
    verify_config: dict = _EMPTY,
    score_config: dict = _EMPTY,
    reward_models_config: dict = _EMPTY,
    register_config: dict = _EMPTY,
    tracking: dict = _EMPTY,
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
    train = reward_models_op(
        config=reward_models_config, tracking=tracking, problems=problems, samples=scored.outputs["merged"]
    )
    register = register_reward_models_op(config=register_config, tracking=tracking, models=train.outputs["models"])
    register.set_caching_options(False)  # a new registry version each run
    report = run_report(
        "reward-models",
        tracking=tracking,
        model_uri=register.output,
        scored=scored.outputs["merged"],
        collect_metrics=collect.outputs["metrics"],
        generate_metrics=generated.outputs["metrics"],
        verify_metrics=verified.outputs["metrics"],
        score_metrics=scored.outputs["metrics"],
        reward_models_metrics=train.outputs["metrics"],
    )
    return Outputs(model_uri=register.output, models=train.outputs["models"], summary=report.outputs["summary"])
