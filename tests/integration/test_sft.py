"""Real TRL training steps on the tiny student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubedistill.core.records import Problem, Sample
from kubedistill.train.sft import CurriculumStage, SFTConfig, train_sft

pytestmark = pytest.mark.integration


def _data(n: int = 32) -> tuple[list[Problem], list[Sample]]:
    problems = [Problem(id=f"p{i}", problem=f"What is {i} + {i}?", answer=str(2 * i), source="t") for i in range(n)]
    samples = [
        Sample(
            problem_id=f"p{i}",
            teacher="t",
            temperature=0.6,
            sample_index=0,
            text=f"<think>\n{i} + {i} = {2 * i}\n</think>\n\nThe answer is \\boxed{{{2 * i}}}.",
            difficulty="medium" if i % 2 else "hard",
        )
        for i in range(n)
    ]
    samples.append(
        Sample(
            problem_id="p0",
            teacher="t",
            temperature=0.6,
            sample_index=1,
            text="<think>\n0 + 0 =",
            finish_reason="length",
        )
    )
    return problems, samples


def _cfg(tiny_model: Path) -> SFTConfig:
    return SFTConfig(
        base_model=str(tiny_model),
        learning_rate=3e-3,
        per_device_batch_size=8,
        max_length=128,
        logging_steps=1,
        curriculum=[
            CurriculumStage(name="medium", difficulties=["medium"], epochs=3),
            CurriculumStage(name="hard", difficulties=["medium", "hard"], epochs=3),
        ],
    )


def test_curriculum_sft_trains_saves_and_reloads(tiny_model: Path, tmp_path: Path) -> None:
    problems, samples = _data()
    model_dir, stats = train_sft(samples, _cfg(tiny_model), problems=problems, model=tmp_path / "model")
    cur = stats.info["curriculum"]
    assert cur["medium"]["rows"] == 16 and cur["hard"]["rows"] == 32  # stage 2 adds the hard CoTs
    for stage in ("medium", "hard"):
        assert cur[stage]["last_loss"] < cur[stage]["first_loss"]  # it learns
    assert cur["hard"]["first_loss"] < cur["medium"]["first_loss"]  # stage 2 starts from stage 1's weights
    assert stats.dropped == {"truncated": 1} and stats.n_out == 32
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    out = model.generate(**tok("What is 1 + 1?", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > 0


def test_finished_curriculum_stages_are_not_trained_again(tiny_model: Path, tmp_path: Path) -> None:
    problems, samples = _data(16)
    cfg = _cfg(tiny_model)
    work = tmp_path / "work"
    train_sft(samples, cfg, problems=problems, model=tmp_path / "m1", work_dir=work)
    # simulate a kill after stage 1: drop stage 2's result, run again
    import shutil

    [run_dir] = list(work.iterdir())  # one directory per (config, data) fingerprint
    shutil.rmtree(run_dir / "1-hard" / "final")
    _, stats = train_sft(samples, cfg, problems=problems, model=tmp_path / "m2", work_dir=work)
    medium = json.loads((run_dir / "0-medium" / "final" / "kubedistill_stage.json").read_text())
    assert stats.info["curriculum"]["medium"] == medium  # taken from disk, not retrained
    assert stats.info["curriculum"]["hard"]["steps"] > 0
    # a changed config never resumes from another config's checkpoints
    changed = cfg.model_copy(update={"learning_rate": 1e-3})
    _, stats3 = train_sft(samples, changed, problems=problems, model=tmp_path / "m3", work_dir=work)
    assert len(list(work.iterdir())) == 2 and stats3.info["curriculum"]["medium"]["steps"] > 0
