"""What the pipelines share: the end of every training pipeline (evaluate the trained student against its
base on the held-out problems, register it, promote it when the gate passes) and the run report task."""

import inspect
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Dataset
from kubedistill_kfp.components import deploy_op, evaluate_op, preflight_op, promote_op, register_op, report_op

from kubedistill.recipes import BASE_MODEL_OF, form_docstring, form_fields

# What the parameters that are not form fields mean (the compiled YAML's inputDefinitions descriptions).
PARAM_HELP = {
    "tracking": "the tracking section (JSON, whole: from `kubedistill submit --dry-run --json`); empty: built "
    "from the tracking_* fields",
    "gate": 'the promotion gate (JSON), e.g. {"metric": "student.heldout.accuracy", "beat_base_by": 0.0}',
    "promote": "move the registry's `champion` alias to the student when it passes the gate",
    "deploy": "serve the student that passes the gate on KServe (the serve_* fields; needs promote)",
    "work_dir": "checkpoints of the training steps (empty: on the storage PVC, keyed by the step's inputs)",
    "shards": "the teacher-bound stages run as this many parallel tasks",
    "models": "label -> models:/NAME@ALIAS, a model directory or an endpoint (JSON); the first is the baseline",
    "benchmarks": 'benchmark names (JSON list), e.g. ["math500", "aime2024"]',
    "benchmark_paths": "benchmark -> a file on the storage PVC (JSON)",
    "limit": "at most this many problems per benchmark (0: all)",
    "arms": "the arms trained side by side (JSON list of names of arm_config's arms)",
    "reference_arm": "the arm the others start from",
    "name": "the ablation's name",
}


def _section_help(name: str) -> str:
    stem = name.removesuffix("_config")
    return (
        f"the {stem} section of a recipe (JSON, whole: from `kubedistill submit --dry-run --json`); empty: built "
        f"from the {stem}_* fields over its defaults"
    )


def with_form(pipeline: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a pipeline function its UI form (put it under ``@dsl.pipeline``): the function's own parameters
    (the section JSONs and the plain ones) followed by the flat, typed form fields of
    :data:`kubedistill.recipes.FORMS`, and an ``Args:`` docstring describing every parameter. The function
    itself takes its own parameters and ``form`` (field name -> the field's pipeline channel)."""

    def decorate(body: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(body).parameters.values() if p.name != "form"]
        fields = form_fields(pipeline)
        extra = [
            inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=f.type)
            for f in fields
        ]
        signature = inspect.signature(body).replace(parameters=[*own, *extra])
        form_names = {f.name for f in fields}

        def pipeline_function(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            form = {k: values.pop(k) for k in list(values) if k in form_names}
            return body(**values, form=form)

        pipeline_function.__name__ = body.__name__
        pipeline_function.__qualname__ = body.__qualname__
        pipeline_function.__module__ = body.__module__
        pipeline_function.__signature__ = signature  # type: ignore[attr-defined]
        helps = {p.name: _section_help(p.name) if p.name.endswith("_config") else PARAM_HELP[p.name] for p in own}
        summary = inspect.getdoc(body) or f"The {pipeline} pipeline."
        pipeline_function.__doc__ = summary + "\n\n" + form_docstring(pipeline, helps)
        return pipeline_function

    return decorate


# The custom resources a step needs, checked by the preflight (``when``: only with that pipeline parameter on).
DEPLOY_CRDS = [
    {
        "group": "serving.kserve.io",
        "version": "v1beta1",
        "plural": "inferenceservices",
        "why": "the deploy step",
        "when": "deploy",
    }
]


def preflight(
    pipeline: str, params: Mapping[str, Any], crds: list | None = None, loop: tuple[str, ...] = ()
) -> SimpleNamespace:
    """The first task of a pipeline: ``params`` are the pipeline function's ``locals()`` (its section
    parameters, ``form``, and ``deploy`` where it has a deploy step). Returns the checked sections by name
    (``.sft_config``, ``.tracking``), where the pipeline has one ``.base_model``, and with ``loop`` (the
    sections the tasks of its shard loop take) ``.loop_settings`` for ``shard_plan_op(settings=...)``: the
    tasks in a ParallelFor read their sections from the loop item (``shard.generate_config``), because
    kfp.local 2.17 gives a loop's tasks the loop item in place of any other task's output parameter."""
    sections = tuple(k for k in params if k.endswith("_config") or k == "tracking")
    has_base = pipeline in BASE_MODEL_OF
    has_deploy = "deploy" in params
    crds = list(crds or []) + (DEPLOY_CRDS if has_deploy else [])
    op = preflight_op(pipeline, sections, has_base, has_deploy, bool(loop))
    switches = {"deploy": params["deploy"]} if has_deploy else {}
    if loop:
        switches["loop_sections"] = list(loop)
    task = op(**{k: params[k] for k in sections}, **params["form"], crds=crds, **switches)
    task.set_caching_options(False)  # its checks are of the moment; its outputs are the same values every run
    checked = {k: task.outputs[f"checked_{k}"] for k in sections}
    if has_base:
        checked["base_model"] = task.outputs["base_model"]
    if loop:
        checked["loop_settings"] = task.outputs["loop_settings"]
    return SimpleNamespace(task=task, **checked)


class Outputs(NamedTuple):
    """What a training pipeline returns: the registered student and the run summary."""

    model_uri: str
    summary: Dataset


def evaluate_register_promote(
    *, model, heldout, base_model, eval_config, register_config, gate, promote, tracking, deploy=None, serve_config=None
):
    """Returns the evaluate and register tasks (``register.output`` is the ``models:/NAME/VERSION`` URI). With
    ``deploy`` on, a version that passes the gate is served on KServe (deploy_op: apply, wait, smoke test)."""
    evaluate = evaluate_op(config=eval_config, tracking=tracking, problems=heldout, model=model, base_model=base_model)
    register = register_op(config=register_config, tracking=tracking, model=model, results=evaluate.outputs["results"])
    # cached like every task: a re-run with the same model and results reports the version it registered
    with dsl.If(promote == True, name="promotion-gate"):  # noqa: E712 - a KFP condition, not a Python one
        gate_task = promote_op(gate=gate, model_uri=register.output)
        if deploy is not None:
            passed, wanted = gate_task.output == True, deploy == True  # noqa: E712 - KFP conditions
            with dsl.If(passed, name="passed-gate"), dsl.If(wanted, name="deploy-student"):
                served = deploy_op(settings=serve_config, model_uri=register.output)
                served.set_caching_options(False)  # it changes the cluster: a re-run applies and checks again
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
