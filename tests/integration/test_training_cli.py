"""`kubedistill dpo`, `reward-models` and `grpo` on the tiny student (real TRL steps), and training on
several processes the way a multi-GPU pod runs it (torchrun; here 2 CPU processes with gloo stand in for
2 GPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubedistill.cli import main
from kubedistill.core.records import PreferencePair, Problem, Sample, write_records

pytestmark = pytest.mark.integration


def _write_data(root: Path, n: int = 24) -> dict[str, Path]:
    problems = [Problem(id=f"p{i}", problem=f"What is {i} + {i}?", answer=str(2 * i), source="t") for i in range(n)]
    samples = [
        Sample(
            problem_id=f"p{i}",
            teacher="t",
            temperature=0.6,
            sample_index=0,
            text=f"<think>\n{i} + {i} = {2 * i}\n</think>\n\nThe answer is \\boxed{{{2 * i}}}.",
            difficulty="medium",
            rv=i % 10,
            cd=(3 * i) % 10,
        )
        for i in range(n)
    ]
    pairs = [
        PreferencePair(
            id=f"pair{i}",
            problem_id=f"p{i}",
            chosen_sample_id=samples[i].id,
            chosen=samples[i].text,
            rejected=samples[i].text.replace(str(2 * i), str(2 * i + 7)),
            corruption="number",
            magnitude=0.3,
        )
        for i in range(n)
    ]
    paths = {k: root / f"{k}.jsonl" for k in ("problems", "samples", "pairs")}
    write_records(paths["problems"], problems)
    write_records(paths["samples"], samples)
    write_records(paths["pairs"], pairs)
    configs = {
        "sft": {
            "learning_rate": 3e-3,
            "per_device_batch_size": 4,
            "max_length": 128,
            "logging_steps": 1,
            "curriculum": [{"name": "medium", "difficulties": ["medium"], "epochs": 2}],
        },
        "dpo": {
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "per_device_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "max_length": 128,
            "logging_steps": 1,
        },
        "rm": {"learning_rate": 3e-3, "per_device_batch_size": 4, "max_length": 128, "eval_fraction": 0.25},
        "grpo": {
            "learning_rate": 1e-3,
            "per_device_batch_size": 4,
            "num_generations": 4,
            "max_completion_length": 8,
            "max_steps": 2,
            "logging_steps": 1,
        },
    }
    for name, cfg in configs.items():
        paths[f"{name}.yaml"] = root / f"{name}.yaml"
        paths[f"{name}.yaml"].write_text(yaml.safe_dump(cfg))
    return paths


def test_dpo_reward_models_and_grpo_subcommands_train_log_and_reload(
    tiny_model: Path, tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM

    from kubedistill.train.reward_model import load_scorer

    d = _write_data(tmp_path)
    common = ["--problems", str(d["problems"]), "--base-model", str(tiny_model)]
    assert main(["dpo", *common, "--input", str(d["pairs"]), "--output", str(tmp_path / "dpo"),
                 "--config", str(d["dpo.yaml"])]) == 0  # fmt: skip
    assert main(["reward-models", *common, "--input", str(d["samples"]), "--output", str(tmp_path / "rm"),
                 "--config", str(d["rm.yaml"])]) == 0  # fmt: skip
    assert main(["grpo", "--problems", str(d["problems"]), "--base-model", str(tmp_path / "dpo"),
                 "--reward-models", str(tmp_path / "rm"), "--output", str(tmp_path / "grpo"),
                 "--config", str(d["grpo.yaml"])]) == 0  # fmt: skip
    err = capsys.readouterr().err
    dpo = json.loads(_metrics_line(err, "dpo"))
    assert dpo["n_out"] == 24 and dpo["steps"] == 6
    grpo = json.loads(_metrics_line(err, "grpo"))
    assert grpo["steps"] == 2 and "rewards.rv.mean.mean" in grpo and "rewards.cd.mean.mean" in grpo
    for model in ("dpo", "grpo"):
        AutoModelForCausalLM.from_pretrained(tmp_path / model)
    scorer = load_scorer(tmp_path / "rm" / "rv")
    (value,) = scorer.score_many(["What is 2 + 2?"], ["<think>\n2 + 2 = 4\n</think>\n\n4"])
    assert 0.0 <= value <= 1.0

    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["kubedistill"], output_format="list")
    by_stage = {r.data.tags.get("kubedistill.stage"): r for r in runs}
    assert {"dpo", "reward_models", "grpo"} <= set(by_stage)
    assert by_stage["grpo"].data.params["reward_models"] == str(tmp_path / "rm")  # the input, logged
    assert "rv.mae" in by_stage["reward_models"].data.metrics


def test_dpo_with_no_usable_pairs_fails_in_one_line_or_passes_the_model_through(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _write_data(tmp_path)
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    args = ["dpo", "--problems", str(d["problems"]), "--input", str(empty), "--base-model", str(tiny_model),
            "--no-tracking"]  # fmt: skip
    assert main([*args, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kubedistill: error: dpo: 0 usable pairs < min_pairs 1") and "too_few_pairs" in err[-1]
    assert not (tmp_path / "out").exists()
    skip = tmp_path / "skip.yaml"
    skip.write_text("too_few_pairs: skip\n")
    assert main([*args, "--output", str(tmp_path / "out"), "--config", str(skip)]) == 0
    assert "skipped" in capsys.readouterr().err
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()


def _metrics_line(stderr: str, name: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith(f"{name}: {{")).split(": ", 1)[1]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubedistill.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_training_runs_on_every_gpu_of_the_pod_cpu_processes_stand_in_for_gpus(
    tiny_model: Path, tmp_path: Path, tracking_uri: str
) -> None:
    """KUBEDISTILL_GPUS=2 (what the compiled pipeline sets on a 2-GPU train pod): the step runs itself
    under torchrun with 2 processes (gloo on CPU here, NCCL on GPUs); each sees half the batches, only
    rank 0 logs to MLflow and writes the model."""
    d = _write_data(tmp_path)
    env = {**os.environ, "KUBEDISTILL_GPUS": "2", "MLFLOW_TRACKING_URI": tracking_uri, "OMP_NUM_THREADS": "1"}
    base = ["--problems", str(d["problems"]), "--input", str(d["samples"]), "--base-model", str(tiny_model)]
    sft = _cli(["sft", *base, "--output", str(tmp_path / "sft"), "--config", str(d["sft.yaml"])], env)
    assert sft.returncode == 0, sft.stderr[-3000:]
    assert "sft: 2 processes: " in sft.stderr and "torch.distributed.run --nproc-per-node=2" in sft.stderr
    metrics = json.loads(_metrics_line(sft.stderr, "sft"))
    assert metrics["medium.steps"] == 24 / (4 * 2) * 2  # 2 epochs of 24 CoTs, batch 4 on each of 2 ranks
    rm = _cli(["reward-models", *base, "--output", str(tmp_path / "rm"), "--config", str(d["rm.yaml"])], env)
    assert rm.returncode == 0, rm.stderr[-3000:]
    assert (
        json.loads(_metrics_line(rm.stderr, "reward-models"))["rv.steps"] == 6
    )  # 2 epochs x ceil(18 train CoTs / (2 ranks x 4))
    assert (tmp_path / "rm" / "rv" / "kubedistill_reward.json").exists()

    import mlflow
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "sft")
    mlflow.set_tracking_uri(tracking_uri)
    stages = [r.data.tags.get("kubedistill.stage") for r in mlflow.search_runs(experiment_names=["kubedistill"],
                                                                             output_format="list")]  # fmt: skip
    assert sorted(stages) == ["reward_models", "sft"]  # one run per stage: rank 0 only
