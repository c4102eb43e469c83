"""The end every training pipeline shares: evaluate the trained student against its base on the
held-out problems, register it, promote it when the gate passes, and write the run report."""

from kfp import dsl

from components.stages import evaluate_op, promote_op, register_op, report_op


def evaluate_register_promote(*, model, heldout, base_model, eval_config, register_config, gate, promote, tracking):
    """Returns the evaluate and register tasks (``register.output`` is the ``models:/NAME/VERSION`` URI)."""
    evaluate = evaluate_op(config=eval_config, tracking=tracking, problems=heldout, model=model, base_model=base_model)
    register = register_op(config=register_config, tracking=tracking, model=model, results=evaluate.outputs["results"])
    register.set_caching_options(False)  # a new registry version each run
    with dsl.If(promote == True, name="promotion-gate"):  # noqa: E712 - a KFP condition, not a Python one
        promote_op(gate=gate, model_uri=register.output).set_caching_options(False)
    return evaluate, register


def run_report(pipeline: str, *, tracking, model_uri, **inputs):
    """The report task (never cached: it logs the pipeline's MLflow run); ``inputs`` are report_op's
    optional results / scored / ``<stage>_metrics`` artifacts."""
    report = report_op(
        pipeline=pipeline,
        run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        tracking=tracking,
        model_uri=model_uri,
        **inputs,
    )
    report.set_caching_options(False)
    return report
