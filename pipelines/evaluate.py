"""The evaluate pipeline: registered students (or any OpenAI-compatible endpoints) on named benchmarks —
pass@k, accuracy, CoT lengths, side-by-side report (MATH500, AIME2024, GPQA-Diamond, LiveCodeBench,
GSM8K, HumanEval, reasoning-gym tasks, local files)."""

from kfp import dsl
from kfp.dsl import HTML
from kubedistill_kfp.components import evaluate_models_op
from kubedistill_kfp.pipelines._shared import preflight, with_form

_EMPTY: dict = {}
_NONE: list = []


@dsl.pipeline(name="evaluate", description="Benchmarks for students and baselines: pass@k, lengths, side by side.")
@with_form("evaluate")
def evaluate(
    models: dict = _EMPTY,
    benchmarks: list = _NONE,
    benchmark_paths: dict = _EMPTY,
    eval_config: dict = _EMPTY,
    tracking: dict = _EMPTY,
    limit: int = 0,
    form: dict | None = None,
) -> HTML:
    c = preflight("evaluate", locals())  # the first task: the form merged, every section checked
    task = evaluate_models_op(
        config=c.eval_config,
        tracking=c.tracking,
        models=models,
        benchmarks=benchmarks,
        benchmark_paths=benchmark_paths,
        limit=limit,
    )
    task.set_caching_options(False)  # registry aliases move: always score what they point at now
    return task.outputs["report_html"]
