"""The slow-thinking pipeline end to end under kfp.local: real components, a real HTTP teacher (scripted),
real TRL steps on the tiny student, a real transformers server for evaluation, MLflow on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubedistill.report import RunSummary
from kubedistill.testing.openai_server import ServerScript, read_log, running_server
from kubedistill_kfp.local import run_local

pytestmark = pytest.mark.integration


def _recipe(tmp_path: Path, url: str) -> Path:
    recipe = yaml.safe_load(Path("examples/quickstart.yaml").read_text())
    recipe["name"] = "pipeline-test"
    recipe["teacher"] = {"endpoints": [{"url": url, "model": "scripted", "name": "scripted-teacher"}]}
    recipe["collect"]["sources"][0]["tasks"] = {"chain_sum": 24}
    recipe["collect"]["holdout"] = {"fraction": 0.25, "max_items": 4}
    recipe["generate"]["num_generations"] = 1
    recipe["shards"] = 2  # generate / judge / rewrite as 2 parallel tasks each, merged before verify
    recipe["sft"]["curriculum"] = [{"name": "medium", "difficulties": ["medium"], "epochs": 1}]
    recipe["sft"]["base_model"] = "tiny-qwen3"  # the quickstart's SmolLM2 student trains for minutes
    recipe["sft"].pop("lora", None)
    recipe["dpo"].pop("lora", None)
    recipe["evaluate"]["max_tokens"] = 8
    recipe["registry"]["name"] = "kd-pipeline-test"
    recipe["registry"]["gate"] = {"metric": "student.heldout.n_problems", "min": 1}  # passes: champion
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_slow_thinking_runs_end_to_end_under_kfp_local(
    tmp_path: Path, tracking_uri: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    log = tmp_path / "teacher.jsonl"
    answers = [(r"Classify the chain of thought", "Balanced.\n<difficulty>medium</difficulty>")]
    script = ServerScript(models=["scripted"], log_path=str(log), fail_first_max=1, retry_after_s=0.05, answers=answers)
    with running_server(script) as url:
        result = run_local(_recipe(tmp_path, url), workdir=tmp_path / "out")
        n_requests = len([r for r in read_log(log) if r["outcome"] == "ok"])

        assert result.model_uri == "models:/kd-pipeline-test/1"
        summary = RunSummary.model_validate_json(Path(result.outputs["summary"].path).read_text())
        funnel = {r.stage: r for r in summary.funnel}
        c = funnel["collect"]
        assert c.n_in == 24 and c.n_out + sum(c.dropped.values()) == 24  # tiny sums repeat: dedup drops some
        n_train = c.n_out - 4  # 4 held out
        assert funnel["generate"].n_in == n_train and funnel["generate"].n_out == 2 * n_train  # 2 temperatures
        assert funnel["judge"].n_out == 2 * n_train and funnel["rewrite"].n_out == 2 * n_train  # all medium
        assert funnel["verify"].n_in == 2 * n_train and funnel["verify"].n_out > 0
        assert funnel["verify"].n_out + sum(funnel["verify"].dropped.values()) == 2 * n_train
        assert funnel["pairs"].n_in == funnel["verify"].n_out and funnel["pairs"].n_out > 0
        assert funnel["sft"].n_in == funnel["verify"].n_out
        assert funnel["dpo"].n_in == funnel["pairs"].n_out and funnel["dpo"].n_out > 0  # DPO on the SFT student
        assert {"sft", "dpo"} <= set(summary.training) and summary.training["dpo"]["steps"] >= 1
        assert set(summary.evaluation) == {"base", "student"}
        assert summary.evaluation["student"]["heldout"]["n_problems"] == 4
        report = Path(summary.report_html or "")
        assert report.exists() and "data:image/png;base64," in report.read_text()

        import mlflow

        mlflow.set_tracking_uri(tracking_uri)  # another test in this process may have pointed it elsewhere
        runs = mlflow.search_runs(experiment_names=["kubedistill-quickstart"], output_format="list")
        stages = {r.data.tags.get("kubedistill.stage") for r in runs}
        assert {
            "collect_shard",  # collect, as its shard(s) and their merge
            "collect_merge",
            "generate",
            "judge",
            "rewrite",
            "verify",
            "pairs",
            "sft",
            "dpo",
            "evaluate",
            "register",
        } <= stages
        champion = mlflow.MlflowClient().get_model_version_by_alias("kd-pipeline-test", "champion")
        assert str(champion.version) == "1"  # the evaluation gate promoted the candidate
        pipeline_run = mlflow.get_run(summary.mlflow_run_id)
        assert pipeline_run.data.tags["kubedistill.model_uri"] == result.model_uri

        # A second run is served by kfp.local's cache: every task reused (the sharded ones too) but the
        # preflight, which checks the run as it is now and is never cached; the teacher sees nothing new, and
        # the run reports the student it registered the first time.
        again = run_local(_recipe(tmp_path, url), workdir=tmp_path / "out")
        assert again.executed == ["preflight-op"] and set(again.reused) == set(result.executed) - {"preflight-op"}
        assert again.model_uri == "models:/kd-pipeline-test/1"
        assert len([r for r in read_log(log) if r["outcome"] == "ok"]) == n_requests
    root = tmp_path / "out" / "pipeline-test" / "pipeline_root"
    # the students went by path: KFP's artifacts are references to content-addressed folders on storage
    from kubedistill_kfp.storage import digest, read_ref

    for trainer in ("sft-op", "dpo-op"):
        [artifact] = [p for p in root.rglob(f"{trainer}/model") if p.is_file()][:1]
        ref = read_ref(artifact)
        assert ref is not None and artifact.stat().st_size < 1000, trainer
        stored = Path(ref.path)
        assert stored.parent == tmp_path / "out" / "pipeline-test" / "storage" / "objects"
        assert stored.name == ref.sha256 == digest(stored)[0] and (stored / "config.json").is_file()
    assert not any((tmp_path / "out" / "pipeline-test" / "storage" / "staging").iterdir())
    results = json.loads(next(root.rglob("evaluate-op/results/results.json")).read_text())
    assert "pass@1" in results["student"]["heldout"] and "pass@1" in results["base"]["heldout"]
    compare = next(root.rglob("evaluate-op/results/compare/report.html")).read_text()
    assert "student" in compare and "data:image/png;base64," in compare


def test_a_run_whose_selection_keeps_nothing_fails_clearly(
    tmp_path: Path, tracking_uri: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubedistill.core.errors import RunFailed

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    recipe = yaml.safe_load(Path("examples/adaptive_thinking.yaml").read_text())
    # every CoT scores CD 7: outside the small profile's 0-5 window, so nothing fits the student
    answers = [(r"REASONING VERBOSITY", "Short.\n<score>2</score>"), (r"COGNITIVE DIFFICULTY", "<score>7</score>")]
    with running_server(ServerScript(models=["scripted"], answers=answers)) as url:
        recipe["teacher"] = {"endpoints": [{"url": url, "model": "scripted"}]}
        recipe["collect"]["sources"][0]["tasks"] = {"chain_sum": 8}
        recipe["collect"]["holdout"] = {"fraction": 0.25, "max_items": 2}
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        with pytest.raises(RunFailed, match=r"failed at task sft-op: NoTrainingDataError: sft: no CoTs to train on"):
            run_local(path, workdir=tmp_path / "out")


def test_adaptive_thinking_selects_and_plots(
    tmp_path: Path, tracking_uri: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    recipe = yaml.safe_load(Path("examples/adaptive_thinking.yaml").read_text())
    answers = [(r"REASONING VERBOSITY", "Short.\n<score>2</score>"), (r"COGNITIVE DIFFICULTY", "<score>3</score>")]
    with running_server(ServerScript(models=["scripted"], answers=answers)) as url:
        recipe["teacher"] = {"endpoints": [{"url": url, "model": "scripted"}]}
        recipe["collect"]["sources"][0]["tasks"] = {"chain_sum": 16}
        recipe["collect"]["holdout"] = {"fraction": 0.25, "max_items": 3}
        recipe["sft"]["curriculum"][0]["epochs"] = 1
        recipe["evaluate"]["max_tokens"] = 8
        recipe["registry"]["name"] = "kd-adaptive-test"
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        monkeypatch.setenv("KUBEDISTILL_INLINE_LIMIT", "0")  # every dataset goes by path too
        result = run_local(path, workdir=tmp_path / "out")
    assert result.model_uri == "models:/kd-adaptive-test/1"
    from kubedistill_kfp.storage import read_ref

    root = tmp_path / "out" / "adaptive-thinking" / "pipeline_root"
    selected = next(p for p in root.rglob("select-op/selected") if p.is_file())
    ref = read_ref(selected)
    assert ref is not None and Path(ref.path).is_file() and ref.bytes > 0
    summary = RunSummary.model_validate_json(Path(result.outputs["summary"].path).read_text())
    funnel = {r.stage: r for r in summary.funnel}
    assert funnel["select"].n_out > 0 and funnel["sft"].n_in == funnel["select"].n_out
    html = Path(summary.report_html or "").read_text()
    assert "RV / CD distribution" in html


def test_grpo_recipe_distils_reward_models_and_trains_the_policy(
    tmp_path: Path, tracking_uri: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    recipe = yaml.safe_load(Path("examples/grpo.yaml").read_text())
    answers = [(r"REASONING VERBOSITY", "Short.\n<score>2</score>"), (r"COGNITIVE DIFFICULTY", "<score>6</score>")]
    with running_server(ServerScript(models=["scripted"], answers=answers)) as url:
        recipe["teacher"] = {"endpoints": [{"url": url, "model": "scripted"}]}
        recipe["collect"]["sources"][0]["tasks"] = {"chain_sum": 12}
        recipe["collect"]["holdout"] = {"fraction": 0.25, "max_items": 3}
        recipe["reward_models"]["epochs"] = 1
        recipe["grpo"]["max_steps"] = 2
        recipe["evaluate"]["max_tokens"] = 8
        recipe["registry"]["name"] = "kd-grpo-test"
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        result = run_local(path, workdir=tmp_path / "out")
    assert result.model_uri == "models:/kd-grpo-test/1"
    summary = RunSummary.model_validate_json(Path(result.outputs["summary"].path).read_text())
    funnel = {r.stage: r for r in summary.funnel}
    assert funnel["reward_models"].n_in == funnel["score"].n_out  # keep_all: every CoT, right or wrong
    assert funnel["grpo"].n_in == funnel["collect"].n_out - 3
    assert summary.training["grpo"]["steps"] == 2 and "rv.mae" in summary.training["reward_models"]
    root = tmp_path / "out" / "grpo" / "pipeline_root"
    from kubedistill_kfp.storage import read_ref

    ref = read_ref(next(root.rglob("reward-models-op/models")))  # the reward models went by path
    assert ref is not None
    models = Path(ref.path)
    assert (models / "rv" / "config.json").exists() and (models / "cd" / "config.json").exists()

    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["kubedistill-grpo"], output_format="list")
    rm_run = next(r for r in runs if r.data.tags.get("kubedistill.stage") == "reward_models")
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(rm_run.info.run_id, "reward_models")}
    assert artifacts == {"reward_models/rv", "reward_models/cd"}


def test_reward_models_recipe_registers_scorers_that_load_back(
    tmp_path: Path, tracking_uri: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    recipe = yaml.safe_load(Path("examples/reward_models.yaml").read_text())
    answers = [(r"REASONING VERBOSITY", "<score>2</score>"), (r"COGNITIVE DIFFICULTY", "Hard.\n<score>6</score>")]
    with running_server(ServerScript(models=["scripted"], answers=answers)) as url:
        recipe["teacher"] = {"endpoints": [{"url": url, "model": "scripted"}]}
        recipe["collect"]["sources"][0]["tasks"] = {"chain_sum": 12}
        recipe["generate"]["temperatures"] = [0.6]
        recipe["reward_models"]["epochs"] = 1
        recipe["registry"]["name"] = "kd-rm-test"
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        result = run_local(path, workdir=tmp_path / "out")
    assert result.model_uri == "models:/kd-rm-test-rv/1,models:/kd-rm-test-cd/1"
    summary = RunSummary.model_validate_json(Path(result.outputs["summary"].path).read_text())
    assert {"rv.mae", "cd.mae", "rv.steps"} <= set(summary.training["reward_models"])
    assert "evaluate" not in {r.stage for r in summary.funnel} and not summary.evaluation

    import mlflow
    import pandas as pd

    from kubedistill.models import resolve_model
    from kubedistill.train.reward_model import load_scorer

    mlflow.set_tracking_uri(tracking_uri)
    scorer = mlflow.pyfunc.load_model("models:/kd-rm-test-cd@candidate")  # served as {problem, cot} -> score
    (value,) = scorer.predict(pd.DataFrame([{"problem": "What is 2 + 3?", "cot": "<think>2 + 3 = 5</think> 5"}]))
    assert 0.0 <= value <= 1.0
    direct = load_scorer(resolve_model("models:/kd-rm-test-cd@candidate"))  # what GRPO loads
    assert direct("What is 2 + 3?", "<think>2 + 3 = 5</think> 5") == pytest.approx(value)


def test_evaluate_recipe_compares_registered_student_with_base(
    tmp_path: Path, tracking_uri: str, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubedistill.registry import register_student

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    register_student(tiny_model, "kubedistill-quickstart", aliases=["candidate"], experiment="t")
    recipe = yaml.safe_load(Path("examples/evaluate.yaml").read_text())
    recipe["limit"] = 2
    recipe["evaluate"]["max_tokens"] = 8
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_local(path, workdir=tmp_path / "out")
    root = tmp_path / "out" / "evaluate" / "pipeline_root"
    results = json.loads(next(root.rglob("evaluate-models-op/results/results.json")).read_text())
    assert set(results) == {"base", "student"}
    for label in ("base", "student"):
        assert set(results[label]) == {"reasoning_gym:chain_sum", "humaneval"}
        assert results[label]["humaneval"]["n_problems"] == 2 and "pass@2" in results[label]["humaneval"]
    assert "student" in Path(result.outputs["Output"].path).read_text()  # the side-by-side HTML report
