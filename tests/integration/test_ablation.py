"""The ablation harness end to end under kfp.local (a scripted teacher, tiny students, real TRL steps, a real
transformers server, MLflow on SQLite), and the compiled pipeline's shape: the arms in a ParallelFor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubedistill.testing.openai_server import ServerScript, read_log, running_server

pytestmark = pytest.mark.integration

ANSWERS = [
    (r"Classify the chain of thought", "Balanced.\n<difficulty>medium</difficulty>"),
    (r"REASONING VERBOSITY", "Short.\n<score>2</score>"),
    (r"COGNITIVE DIFFICULTY", "Routine.\n<score>3</score>"),
]


def _recipe(tmp_path: Path, url: str) -> Path:
    recipe = yaml.safe_load(Path("examples/ablation.yaml").read_text())
    recipe["name"] = "ablation-test"
    recipe["teacher"] = {"endpoints": [{"url": url, "model": "scripted", "name": "scripted-teacher"}]}
    recipe["collect"]["sources"] = [
        {"kind": "reasoning_gym", "tasks": {"chain_sum": 16}, "seed": 3, "task_config": {"chain_sum": {"max_terms": 2}}}
    ]
    recipe["collect"]["holdout"] = {"fraction": 0.25, "max_items": 4}
    recipe["generate"].update(temperatures=[0.7], num_generations=2)
    recipe["reward_models"].update(base_model="tiny-qwen3", epochs=1)
    a = recipe["ablation"]
    a.update(base_model="tiny-qwen3", budget={"sft_steps": 2, "dpo_steps": 1, "grpo_steps": 1})
    a["sft"].pop("lora", None)
    a["grpo"].update(max_completion_length=8, num_generations=2, per_device_batch_size=2)
    a["evaluate"].update(max_tokens=8, backend="transformers")
    a["arms"] = ["base", "sft_verified", "curriculum", "dpo", "grpo_rv_cd"]  # one of each kind (all: unit tests)
    recipe["tracking"] = {"experiment": "kd-ablation-e2e"}
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~30 kfp.local tasks, each a fresh process that imports torch
def test_the_ablation_harness_runs_every_arm_from_one_pool_and_tabulates_them(
    tmp_path: Path, tracking_uri: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from kubedistill.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    log = tmp_path / "teacher.jsonl"
    with running_server(ServerScript(models=["scripted"], log_path=str(log), answers=ANSWERS)) as url:
        recipe = _recipe(tmp_path, url)
        assert main(["ablate", "--recipe", str(recipe), "--workdir", str(tmp_path / "out")]) == 0
        out = capsys.readouterr().out
        n_requests = len(read_log(log))
        data = json.loads((tmp_path / "out" / "ablation-test" / "ablation.json").read_text())
        rows = {r["arm"]["name"]: r for r in data["rows"]}
        assert list(rows) == ["base", "sft_verified", "curriculum", "dpo", "grpo_rv_cd"]
        held_out = {r["n_problems"] for r in rows.values()}
        assert held_out == {4}  # every arm on the same held-out problems
        assert {len(r["per_problem"]) for r in rows.values()} == {4}
        assert rows["sft_verified"]["training"]["rows"] >= rows["curriculum"]["training"]["rows"] > 0
        training = rows["curriculum"]["training"]
        assert training["medium.steps"] == training["hard.steps"] == 1  # the budget of 2 steps, half each
        assert rows["base"]["training"] == {"rows": 0.0} or not rows["base"]["training"].get("steps")
        assert rows["dpo"]["training"].get("steps") == 1 or rows["dpo"]["training"].get("skipped") == 1
        assert rows["grpo_rv_cd"]["training"]["steps"] == 1
        for r in rows.values():  # RV / CD of every arm's completions against the target interval
            assert 0.0 <= r["rv"]["inside"] <= 1.0 and r["cd"]["distance"] >= 0.0
        assert "| curriculum |" in out and "Δ vs base" in out and "ablation report:" in out
        assert "data:image/png;base64," in (tmp_path / "out" / "ablation-test" / "ablation.html").read_text()

        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        parent = mlflow.get_run(data["parent_run_id"])
        assert parent.data.metrics["curriculum.accuracy"] == rows["curriculum"]["accuracy"]
        runs = mlflow.search_runs(experiment_names=["kd-ablation-e2e"], output_format="list")
        nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == data["parent_run_id"]]
        assert {r.data.tags["kubedistill.ablation.arm"] for r in nested} == set(rows)
        assert {r.data.tags["kubedistill.ablation.role"] for r in nested} == {"train", "evaluate"}

        # Again: the pool and the arms come from kfp.local's cache; the teacher sees nothing new.
        assert main(["ablate", "--recipe", str(recipe), "--workdir", str(tmp_path / "out")]) == 0
        assert len(read_log(log)) == n_requests


def test_the_compiled_ablation_trains_its_arms_in_parallel(tmp_path: Path) -> None:
    from kubedistill.chat.config import EndpointConfig
    from kubedistill.recipes import load_recipe
    from kubedistill_kfp.compile import compile_all

    (path,) = compile_all(tmp_path, names=["ablation"])
    spec = yaml.safe_load(path.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    loops = {n: t for n, t in tasks.items() if n.startswith("for-loop-")}
    (arm_loop,) = [
        t for t in loops.values() if t["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--arms"
    ]
    body = spec["components"][arm_loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"arm-train-op-2", "arm-evaluate-op-2"}  # one train and one evaluate task per arm
    # every arm gets the reference student (trained once, before the loop) and the pool
    assert body["arm-train-op-2"]["inputs"]["artifacts"]["reference"] == {
        "componentInputArtifact": "pipelinechannel--arm-train-op-model"
    }
    assert tasks["arm-train-op"]["inputs"]["parameters"]["arm"]["componentInputParameter"] == "reference_arm"
    report = tasks["ablation-report-op"]["inputs"]["artifacts"]
    assert report["arms"]["taskOutputArtifact"]["producerTask"] == "for-loop-2"  # dsl.Collected over the arms
    assert report["reference"]["taskOutputArtifact"]["producerTask"] == "arm-evaluate-op"
    images = {e: c["container"]["image"] for e, c in spec["deploymentSpec"]["executors"].items()}
    assert (
        "kubedistill-train" in images["exec-arm-train-op-2"] and "kubedistill-serve" in images["exec-arm-evaluate-op-2"]
    )

    for example in ("examples/ablation.yaml", "examples/ablation_cluster.yaml"):
        recipe = load_recipe(example)
        args = recipe.pipeline_arguments([EndpointConfig(url="http://127.0.0.1:9/v1", model="t")])
        assert args["arms"] and "sft_verified" not in args["arms"] and args["reference_arm"] == "sft_verified"
        assert args["verify_config"]["keep_all"] is True and args["judge_config"]["only_correct"] is True
