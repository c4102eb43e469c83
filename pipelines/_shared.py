"""What the pipelines share: the end of every training pipeline (evaluate the trained student against its
base on the held-out problems, register it, promote it when the gate passes) and the run report task."""

from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Dataset
from kubedistill_kfp.components import evaluate_op, promote_op, register_op, report_op


class Outputs(NamedTuple):
    """What a training pipeline returns: the registered student and the run summary."""

    model_uri: str
    summary: Dataset


def evaluate_register_promote(*, model, heldout, base_model, eval_config, register_config, gate, promote, tracking):
    """Returns the evaluate and register tasks (``register.output`` is the ``models:/NAME/VERSION`` URI)."""
    evaluate = evaluate_op(config=eval_config, tracking=tracking, problems=heldout, model=model, base_model=base_model)
    register = register_op(config=register_config, tracking=tracking, model=model, results=evaluate.outputs["results"])
    # cached like every task: a re-run with the same model and results reports the version it registered
    with dsl.If(promote == True, name="promotion-gate"):  # noqa: E712 - a KFP condition, not a Python one
        promote_op(gate=gate, model_uri=register.output)
    return evaluate, register


def run_report(pipeline: str, *, tracking, model_uri, stages: dict[str, Any], **inputs):
    """The report task (cached like every task: its inputs hold no per-run value; the run's id reaches it
    as ``$KFP_RUN_ID`` on the cluster). ``stages`` maps a stage name to
    the task whose ``metrics`` output is that stage's (a merge task for a sharded stage); ``inputs`` are
    report_op's optional ``results`` / ``scored`` artifacts."""
    metrics = {f"{name}_metrics": task.outputs["metrics"] for name, task in stages.items()}
    report = report_op(
        pipeline=pipeline,
        tracking=tracking,
        model_uri=model_uri,
        **inputs,
        **metrics,
    )
    return report


def finish_training(pipeline: str, *, model, collect, stages: dict[str, Any], scored=None, **settings) -> Outputs:
    """The tail of a training pipeline: evaluate ``model`` (the trained student) against ``base_model`` on
    ``collect``'s held-out problems, register it, promote it when the gate passes, and report the run.
    ``settings`` are the pipeline parameters evaluate_register_promote takes."""
    evaluate, register = evaluate_register_promote(model=model, heldout=collect.outputs["heldout"], **settings)
    inputs = {"results": evaluate.outputs["results"]}
    if scored is not None:
        inputs["scored"] = scored
    report = run_report(
        pipeline,
        tracking=settings["tracking"],
        model_uri=register.output,
        stages={"collect": collect, **stages},
        **inputs,
    )
    return Outputs(model_uri=register.output, summary=report.outputs["summary"])
