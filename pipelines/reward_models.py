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
    generate_op,
    register_reward_models_op,
    report_op,
    reward_models_op,
    score_op,
    verify_op,
)

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
) -> Outputs:
    collect = collect_op(config=collect_config, tracking=tracking)
    problems = collect.outputs["problems"]
    generate = generate_op(config=generate_config, tracking=tracking, problems=problems)
    generate.set_retry(num_retries=2, backoff_duration="60s")
    verify = verify_op(config=verify_config, tracking=tracking, problems=problems, samples=generate.outputs["samples"])
    score = score_op(config=score_config, tracking=tracking, problems=problems, samples=verify.outputs["verified"])
    score.set_retry(num_retries=2, backoff_duration="60s")
    train = reward_models_op(
        config=reward_models_config, tracking=tracking, problems=problems, samples=score.outputs["scored"]
    )
    register = register_reward_models_op(config=register_config, tracking=tracking, models=train.outputs["models"])
    register.set_caching_options(False)  # a new registry version each run
    report = report_op(
        pipeline="reward-models",
        run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        tracking=tracking,
        model_uri=register.output,
        scored=score.outputs["scored"],
        collect_metrics=collect.outputs["metrics"],
        generate_metrics=generate.outputs["metrics"],
        verify_metrics=verify.outputs["metrics"],
        score_metrics=score.outputs["metrics"],
        reward_models_metrics=train.outputs["metrics"],
    )
    report.set_caching_options(False)
    return Outputs(model_uri=register.output, models=train.outputs["models"], summary=report.outputs["summary"])
