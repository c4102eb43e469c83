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

    for example in ("examples/ablation.yaml", "examples/cluster_ablation.yaml"):
        recipe = load_recipe(example, here="cluster" not in example)  # cluster: the pods check
        args = recipe.pipeline_arguments([EndpointConfig(url="http://127.0.0.1:9/v1", model="t")])
        assert args["arms"] and "sft_verified" not in args["arms"] and args["reference_arm"] == "sft_verified"
        assert args["verify_config"]["keep_all"] is True and args["judge_config"]["only_correct"] is True


def _pool(n: int = 8) -> tuple[list, list, list]:
    """Training problems, held-out problems and a pool of CoTs on the training ones: two per problem, one right
    and one wrong; the right ones labelled (medium / hard, RV, CD) as the pool's judge and scorer leave them."""
    from kubedistill.core.records import Problem, Sample

    problems = [
        Problem(id=f"p{i}", problem=f"What is {i} + {i + 1}?", answer=str(2 * i + 1), source="t") for i in range(n)
    ]
    heldout = [Problem(id=f"h{i}", problem=f"What is {i} + 3?", answer=str(i + 3), source="t") for i in range(3)]
    pool = []
    for i, p in enumerate(problems):
        for j, right in enumerate((True, False)):
            answer = int(p.answer) + (0 if right else 1)
            pool.append(
                Sample(
                    problem_id=p.id,
                    teacher="t",
                    temperature=0.7,
                    sample_index=j,
                    text=f"<think>\n{i} + {i + 1} = {answer}.\nSo it is {answer}.\n</think>\n\n\\boxed{{{answer}}}",
                    correct=right,
                    difficulty=("medium" if i % 2 else "hard") if right else None,
                    rv=(i % 9) + 1 if right else None,
                    cd=(2 * i) % 10 if right else None,
                )
            )
    return problems, heldout, pool


def test_every_kind_of_arm_trains_and_is_scored_by_the_real_stages(
    tiny_model: Path, tmp_path: Path, tracking_uri: str
) -> None:
    """The stage functions in-process, one arm of each kind: real TRL steps on the tiny student (a step or two),
    real pairs and reward models, the transformers server for the held-out evaluation, MLflow on SQLite."""
    import mlflow

    from kubedistill.ablation import ARM_FILE, ArmConfig, ablation_report, evaluate_arm, train_arm
    from kubedistill.core.config import ConfigError
    from kubedistill.cot.pairs import PairsConfig, make_pairs
    from kubedistill.tracking import TrackingConfig
    from kubedistill.train.reward_model import RewardModelConfig, train_reward_models

    problems, heldout, pool = _pool()
    pairs, _ = make_pairs(pool, PairsConfig(difficulties=["medium", "hard"], pairs_per_sample=1), problems=problems)
    assert pairs
    rm_cfg = RewardModelConfig(base_model=str(tiny_model), max_steps=1, max_length=64, eval_fraction=0.25)
    heads, _ = train_reward_models([s for s in pool if s.correct], rm_cfg, problems=problems, models=tmp_path / "rm")
    assert set(heads) == {"rv", "cd"}
    cfg = ArmConfig.model_validate(
        {
            "base_model": str(tiny_model),
            "seed": 3,
            "budget": {"sft_steps": 2, "dpo_steps": 1, "grpo_steps": 1},
            "sft": {"per_device_batch_size": 4, "max_length": 256, "logging_steps": 1, "learning_rate": 1e-3},
            "dpo": {
                "per_device_batch_size": 2,
                "gradient_accumulation_steps": 1,
                "max_length": 256,
                "logging_steps": 1,
            },
            "grpo": {"per_device_batch_size": 2, "num_generations": 2, "max_completion_length": 8, "logging_steps": 1},
            "evaluate": {"n": 1, "k": [1], "temperature": 0.0, "max_tokens": 8, "backend": "transformers"},
            "arms": ["sft_verified", "base", "curriculum", "dpo", "grpo_rv_cd"],
        }
    )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("kd-ablation-stages")
    common = {"problems": problems, "pairs": pairs, "reward_models": str(tmp_path / "rm"), "work_dir": str(tmp_path)}
    models: dict[str, Path] = {}
    with pytest.raises(ConfigError, match="needs the reference student"):
        train_arm(pool, cfg, model=tmp_path / "m-x", arm="dpo", **common)
    for arm in ("sft_verified", "base", "curriculum", "dpo", "grpo_rv_cd"):
        with mlflow.start_run(run_name=f"train:{arm}") as run:
            ref = None if arm in ("sft_verified", "base", "curriculum") else str(models["sft_verified"])
            models[arm], stats = train_arm(pool, cfg, model=tmp_path / f"m-{arm}", arm=arm, reference=ref, **common)
        assert mlflow.get_run(run.info.run_id).data.tags["kubedistill.ablation.arm"] == arm
        record = json.loads((models[arm] / ARM_FILE).read_text())
        assert record["seed"] == 3 and record["run_id"] == run.info.run_id
        if arm != "base":
            assert (models[arm] / "config.json").exists()  # a saved model
            assert stats.metrics["training_tokens"] > 0, (arm, stats.metrics)
    training = {a: json.loads((m / ARM_FILE).read_text())["training"] for a, m in models.items()}
    assert training["sft_verified"]["rows"] == 8  # the 8 right CoTs, not the 8 wrong ones
    assert training["curriculum"]["rows"] == 8  # all verified ones are medium or hard here
    assert training["curriculum"]["medium.steps"] == training["curriculum"]["hard.steps"] == 1  # 2 steps, split
    assert training["dpo"]["steps"] == 1 and training["dpo"]["rows"] == len(pairs)
    assert training["grpo_rv_cd"]["steps"] == 1 and training["grpo_rv_cd"]["rows"] == 1  # 2 completions: 1 prompt

    results = []
    for arm, model in models.items():
        row, stats = evaluate_arm(
            heldout, cfg, model=model, results=tmp_path / f"r-{arm}", arm=arm, reward_models=str(tmp_path / "rm")
        )
        assert row["n_problems"] == 3 and set(row["per_problem"]) == {"h0", "h1", "h2"}
        assert 0.0 <= row["ci95"][0] <= row["accuracy"] <= row["ci95"][1] <= 1.0
        for head, target in (("rv", cfg.grpo.rv), ("cd", cfg.grpo.cd)):
            assert (row[head]["low"], row[head]["high"]) == (target.low, target.high)
            assert 0.0 <= row[head]["inside"] <= 1.0 and row[head]["distance"] >= 0.0
        assert stats.metrics["accuracy"] == row["accuracy"]
        results.append(str(tmp_path / f"r-{arm}"))
    metrics = ablation_report(
        arms=results[1:],
        reference=results[0],
        report=str(tmp_path / "t.md"),
        report_html=str(tmp_path / "t.html"),
        summary=str(tmp_path / "t.json"),
        name="stages",
        tracking=TrackingConfig(experiment="kd-ablation-stages", tracking_uri=tracking_uri),
    )
    table = (tmp_path / "t.md").read_text()
    for arm in models:
        assert f"| {arm} |" in table and f"{arm}.accuracy" in metrics
    summary = json.loads((tmp_path / "t.json").read_text())
    assert [r["arm"]["name"] for r in summary["rows"]] == ["base", "sft_verified", "curriculum", "dpo", "grpo_rv_cd"]
    parent = summary["parent_run_id"]
    runs = mlflow.search_runs(experiment_names=["kd-ablation-stages"], output_format="list")
    nested = {r.data.tags["kubedistill.ablation.arm"] for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert nested == set(models)


def test_on_a_cluster_every_arm_trains_on_the_train_roles_gpus(tmp_path: Path) -> None:
    """The ablation compiled with the example cluster settings: the reference arm and every arm in the loop train
    on the train role's GPUs (8, launched on all of them), the evaluations on the serve role's, the rest on CPUs."""
    from kfp import compiler
    from kubedistill_kfp.pipelines import pipeline_function

    from kubedistill_kfp import cluster

    cfg = cluster.load_cluster_config(Path(__file__).resolve().parents[2] / "examples" / "cluster.yaml")
    path = tmp_path / "ablation.yaml"
    compiler.Compiler().compile(cluster.build_pipeline(pipeline_function("ablation"), cfg), package_path=str(path))
    spec, platform = [d for d in yaml.safe_load_all(path.read_text()) if d]
    executors = spec["deploymentSpec"]["executors"]
    gpus = {
        e: x["container"].get("resources", {}).get("accelerator", {}).get("resourceCount") for e, x in executors.items()
    }
    env = {e: {v["name"]: v["value"] for v in x["container"].get("env", [])} for e, x in executors.items()}
    for trainer in ("exec-arm-train-op", "exec-arm-train-op-2", "exec-reward-models-op"):
        assert gpus.pop(trainer) == "8" and env[trainer]["KUBEDISTILL_GPUS"] == "8", trainer
    assert gpus.pop("exec-arm-evaluate-op") == gpus.pop("exec-arm-evaluate-op-2") == "1"
    assert set(gpus.values()) == {None}, gpus  # the pool's stages and the report: CPU tasks
    placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert all("nodeSelector" in placed[e] for e in ("exec-arm-train-op", "exec-arm-train-op-2"))
    assert placed["exec-generate-op"]["podMetadata"]["labels"]["kubedistill.io/role"] == "teacher-bound"
