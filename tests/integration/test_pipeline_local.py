"""The slow-thinking pipeline end to end under kfp.local: real components, a real HTTP teacher (scripted),
real TRL steps on the tiny student, a real transformers server for evaluation, MLflow on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubedistill.orchestrate import run_local
from kubedistill.report import RunSummary
from kubedistill.testing.openai_server import ServerScript, read_log, running_server

pytestmark = pytest.mark.integration


def _recipe(tmp_path: Path, url: str) -> Path:
    recipe = yaml.safe_load(Path("examples/quickstart.yaml").read_text())
    recipe["name"] = "pipeline-test"
    recipe["teacher"] = {"endpoints": [{"url": url, "model": "scripted", "name": "scripted-teacher"}]}
    recipe["collect"]["sources"][0]["tasks"] = {"chain_sum": 24}
    recipe["collect"]["holdout"] = {"fraction": 0.25, "max_items": 4}
    recipe["generate"]["samples"] = 1
    recipe["sft"]["curriculum"] = [{"name": "medium", "difficulties": ["medium"], "epochs": 1}]
    recipe["evaluate"]["max_tokens"] = 8
    recipe["registry"]["name"] = "kd-pipeline-test"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_slow_thinking_runs_end_to_end_under_kfp_local(
    tmp_path: Path, tracking_uri: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    log = tmp_path / "teacher.jsonl"
    with running_server(
        ServerScript(models=["scripted"], log_path=str(log), fail_first_max=1, retry_after_s=0.05)
    ) as url:
        result = run_local(_recipe(tmp_path, url), workdir=tmp_path / "out")
        n_requests = len([r for r in read_log(log) if r["outcome"] == "ok"])

        assert result.model_uri == "models:/kd-pipeline-test/1"
        summary = RunSummary.model_validate_json(Path(result.outputs["summary"].path).read_text())
        funnel = {r.stage: r for r in summary.funnel}
        c = funnel["collect"]
        assert c.n_in == 24 and c.n_out + sum(c.dropped.values()) == 24  # tiny sums repeat: dedup drops some
        n_train = c.n_out - 4  # 4 held out
        assert funnel["generate"].n_in == n_train and funnel["generate"].n_out == 2 * n_train  # 2 temperatures
        assert funnel["verify"].n_in == 2 * n_train and funnel["verify"].n_out > 0
        assert funnel["verify"].n_out + sum(funnel["verify"].dropped.values()) == 2 * n_train
        assert funnel["sft"].n_in == funnel["verify"].n_out
        assert set(summary.evaluation) == {"base", "student"}
        assert summary.evaluation["student"]["heldout"]["n_problems"] == 4
        report = Path(summary.report_html or "")
        assert report.exists() and "data:image/png;base64," in report.read_text()

        import mlflow

        mlflow.set_tracking_uri(tracking_uri)  # another test in this process may have pointed it elsewhere
        runs = mlflow.search_runs(experiment_names=["kubedistill-quickstart"], output_format="list")
        stages = {r.data.tags.get("kubedistill.stage") for r in runs}
        assert {"collect", "generate", "verify", "sft", "evaluate", "register"} <= stages
        pipeline_run = mlflow.get_run(summary.mlflow_run_id)
        assert pipeline_run.data.tags["kubedistill.model_uri"] == result.model_uri

        # A second run is served by kfp.local's cache and the request cache: the teacher sees nothing new,
        # and a new version of the student is registered.
        again = run_local(_recipe(tmp_path, url), workdir=tmp_path / "out")
        assert again.model_uri == "models:/kd-pipeline-test/2"
        assert len([r for r in read_log(log) if r["outcome"] == "ok"]) == n_requests
    results = json.loads(next((tmp_path / "out" / "pipeline-test" / "pipeline_root").rglob("results.json")).read_text())
    assert "pass@1" in results["student"]["heldout"]
