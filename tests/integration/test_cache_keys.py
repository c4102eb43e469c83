"""Cache keys hold no per-run value (issue 18): compiled twice — in another directory, with another
HOME, TMPDIR and cache, a moment later — every pipeline is the same file, plain and with cluster
settings, and no task input names the run (job name or id, task id, create or schedule time), so KFP's
server-side cache can answer a task of the next run. The recipe arguments a run sends are the same too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Tasks that are never cached, and why: the evaluate pipeline scores registry aliases (models:/NAME@champion),
# which move between runs; its endpoint answers still come from the request cache. Every pipeline's preflight
# checks the cluster as it is now (its outputs, the checked sections, are the same values every run, so the
# tasks after it stay cached). The deploy step
# changes the cluster (apply, wait, smoke test).
NEVER_CACHED = (
    {("evaluate.yaml", "evaluate-models-op")}
    | {
        (f"{p}.yaml", "preflight-op")
        for p in (
            "slow_thinking",
            "adaptive_thinking",
            "adaptive_thinking_imported",
            "reward_models",
            "grpo",
            "evaluate",
            "ablation",
        )
    }
    | {(f"{p}.yaml", "deploy-op") for p in ("slow_thinking", "adaptive_thinking", "adaptive_thinking_imported", "grpo")}
)
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if p.name != "cluster.yaml")


def _compile(out: Path, work: Path, cluster: bool) -> dict[str, str]:
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(work / "home"),
        "TMPDIR": str(work),
        "KUBEDISTILL_CACHE": str(work / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "kubedistill.cli", "compile", "--output-dir", str(out)]
    if cluster:
        cmd += ["--cluster-config", str(ROOT / "examples" / "cluster.yaml")]
    subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True, text=True, timeout=600)
    return {p.name: p.read_text() for p in sorted(out.glob("*.yaml"))}


def _per_run_placeholders() -> list[str]:
    from kfp import dsl

    return [
        getattr(dsl, name)
        for name in dir(dsl)
        if name.endswith("_PLACEHOLDER")
        and any(part in name for part in ("JOB_NAME", "JOB_ID", "JOB_RESOURCE", "TASK_ID", "CREATE_TIME", "SCHEDULE"))
    ]


def _task_inputs(doc: dict) -> list[tuple[str, str, object]]:
    """(component, task, inputs) of every task of every DAG: what KFP's cache fingerprint reads."""
    dags = [("root", doc["root"]), *((n, c) for n, c in doc.get("components", {}).items())]
    return [
        (name, task_name, task.get("inputs", {}))
        for name, comp in dags
        for task_name, task in comp.get("dag", {}).get("tasks", {}).items()
    ]


@pytest.mark.parametrize("cluster", [False, True], ids=["plain", "cluster"])
def test_compiling_twice_gives_the_same_pipelines_with_no_per_run_value(tmp_path: Path, cluster: bool) -> None:
    first = _compile(tmp_path / "a" / "out", tmp_path / "a", cluster)
    second = _compile(tmp_path / "b" / "out", tmp_path / "b", cluster)
    assert first and set(first) == set(second)
    placeholders = _per_run_placeholders()
    assert "{{$.pipeline_job_name}}" in placeholders and "{{$.pipeline_job_uuid}}" in placeholders
    for name, text in first.items():
        assert text == second[name], f"{name} differs between two compiles"
        assert str(tmp_path) not in text  # no path of the compiling machine
        docs = [d for d in yaml.safe_load_all(text) if d]
        spec = docs[0]
        for component, task, inputs in _task_inputs(spec):
            dumped = yaml.safe_dump(inputs)
            for p in placeholders:
                assert p not in dumped, f"{name}: task {task} of {component} takes the per-run value {p}"
        for executor, e in spec["deploymentSpec"]["executors"].items():
            dumped = yaml.safe_dump(e)
            for p in placeholders:
                assert p not in dumped, f"{name}: executor {executor} holds the per-run value {p}"
        for _component, comp in [("root", spec["root"]), *spec.get("components", {}).items()]:
            for task_name, task in comp.get("dag", {}).get("tasks", {}).items():
                if "executorLabel" not in spec["components"][task["componentRef"]["name"]]:
                    continue  # a condition or a loop: KFP caches containers
                if (name, task_name) in NEVER_CACHED:
                    assert task.get("cachingOptions", {}).get("enableCache") is not True
                    continue
                assert task.get("cachingOptions", {}).get("enableCache") is True, f"{name}: {task_name} is not cached"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_a_recipes_arguments_are_the_same_from_one_run_to_the_next(example: Path) -> None:
    from kubedistill.recipes import load_recipe
    from kubedistill_kfp.local import local_teacher_endpoint

    def arguments() -> dict:
        recipe = load_recipe(example, here="cluster" not in example.stem)
        teacher = getattr(recipe, "teacher", None)
        if teacher is None:
            return recipe.pipeline_arguments()
        # as `kubedistill run --local` gives them: a local teacher is `local://NAME` whatever its port
        endpoints = [local_teacher_endpoint(teacher.local)] if teacher.local and not teacher.endpoints else None
        return recipe.pipeline_arguments(endpoints)

    first, second = arguments(), arguments()
    assert first == second
    dumped = yaml.safe_dump(first)
    for p in _per_run_placeholders():
        assert p not in dumped
