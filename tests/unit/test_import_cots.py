"""Existing CoT datasets as CoTs: each preset's real column layout (local JSONL / Parquet files, no hub),
its rows as Problems *and* Samples (teacher, sample_index, think split, finish state), the hub loader
path on a local dataset directory, and the collect stage's `samples` output (training problems only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kubedistill.core.config import ConfigError, validate_config
from kubedistill.core.records import Problem, Sample, StageStats, read_records
from kubedistill.data.collect import CollectConfig, collect_stage
from kubedistill.data.sources import HFSource, load_source, openthoughts_to_think


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _hf(**kw: Any) -> HFSource:
    return validate_config(HFSource, {"kind": "hf", **kw})


def _load(src: HFSource) -> tuple[list[Problem], list[Sample], StageStats]:
    stats = StageStats(stage="collect")
    samples: list[Sample] = []
    problems = load_source(src, stats, cots=lambda _p, s: samples.append(s))
    return problems, samples, stats


# --------------------------------------------------------------------------- the real layouts, row by row

OT_ASSISTANT = (
    "<|begin_of_thought|>\n\nSubtract 3 from both sides: 2x = 8, so x = 4.\n\n<|end_of_thought|>\n\n"
    "<|begin_of_solution|>\n\nSubtracting 3 and halving gives $x = \\boxed{4}$.\n\n<|end_of_solution|>"
)


def test_openthoughts_metadata_subset_reasoning_and_solution_columns_make_one_cot(tmp_path: Path) -> None:
    row = {
        "problem": "Find $x$ if $2x + 3 = 11$.",
        "deepseek_reasoning": "We subtract 3 and divide by 2, so x = 4.",
        "deepseek_solution": "The answer is \\boxed{4}.",
        "ground_truth_solution": "$x = \\boxed{4}$",
        "domain": "math",
        "source": "numina_math",
        "test_cases": "",
        "starter_code": "",
    }
    src = _hf(preset="openthoughts", import_cots=True, path=str(_parquet(tmp_path / "t.parquet", [row])))
    assert src.fields.reference_cot is None  # imported as a Sample, not copied into the Problem
    problems, samples, stats = _load(src)
    (p,), (s,) = problems, samples
    assert "reference_cot" not in p.metadata
    assert s.problem_id == p.id and s.teacher == "deepseek-r1" and s.sample_index == 0
    assert s.text == "<think>\nWe subtract 3 and divide by 2, so x = 4.\n</think>\n\nThe answer is \\boxed{4}."
    assert s.reasoning == "We subtract 3 and divide by 2, so x = 4." and s.final_answer == "4"
    assert s.finish_reason is None and s.complete and s.id == f"{p.id}::deepseek-r1::t0.6::0"
    assert s.metadata["imported_from"] == "openthoughts"
    assert stats.info["sources"]["openthoughts"]["cots"] == 1


def test_openthoughts_default_subset_markers_become_think_tags(tmp_path: Path) -> None:
    row = {
        "system": "Your role as an assistant involves thoroughly exploring questions ...",
        "conversations": [
            {"from": "user", "value": "Return your final response within \\boxed{}. Find $x$ if $2x + 3 = 11$."},
            {"from": "assistant", "value": OT_ASSISTANT},
        ],
    }
    src = _hf(preset="openthoughts-conversations", import_cots=True, path=str(_jsonl(tmp_path / "d.jsonl", [row])))
    assert (src.dataset, src.subset) == ("open-thoughts/OpenThoughts-114k", "default")
    (p,), (s,), _ = _load(src)
    assert p.problem.startswith("Return your final response")
    assert s.text.startswith("<think>\nSubtract 3") and "<|" not in s.text
    assert s.reasoning == "Subtract 3 from both sides: 2x = 8, so x = 4." and s.final_answer == "4"
    # a thought that never ends is a cut-off CoT (open <think>, no answer)
    assert openthoughts_to_think("<|begin_of_thought|>\n\nhalf a thought") == "<think>\nhalf a thought"
    assert openthoughts_to_think("no markers at all") == "no markers at all"


def test_openthoughts2_and_3_conversations_with_think(tmp_path: Path) -> None:
    ot2 = {
        "conversations": [
            {"from": "human", "value": "What is 6 times 7?"},
            {"from": "gpt", "value": "<think>\n6*7 = 42.\n</think>\n\nThe answer is $\\boxed{42}$."},
        ],
        "question": "What is 6 times 7?",
        "source": "ai2-adapt-dev/openmath-2-math",
        "id": 17,
    }
    (p,), (s,), _ = _load(_hf(preset="openthoughts2", import_cots=True, path=str(_jsonl(tmp_path / "2.jsonl", [ot2]))))
    assert p.id == "openthoughts2:17" and p.metadata["origin"] == "ai2-adapt-dev/openmath-2-math"
    assert (s.teacher, s.reasoning, s.final_answer) == ("deepseek-r1", "6*7 = 42.", "42")

    ot3 = {
        "difficulty": 6,
        "source": "nvidia/OpenCodeReasoning",
        "domain": "code",
        "conversations": [
            {"from": "human", "value": "Read n and print n squared."},
            {"from": "gpt", "value": "<think>\nsquare it\n</think>\n\n```python\nn=int(input())\nprint(n*n)\n```"},
        ],
    }
    path = _parquet(tmp_path / "3.parquet", [ot3])
    (p,), (s,), _ = _load(_hf(preset="openthoughts3", import_cots=True, path=str(path)))
    assert p.domain == "code" and p.metadata["difficulty"] == 6 and s.teacher == "qwq-32b"
    assert s.reasoning == "square it" and "print(n*n)" in s.text


def _deepmath_row(k: int, third: str | None = "<think>third way</think> so \\boxed{2}") -> dict[str, Any]:
    return {
        "question": f"How many real roots does x^2 - {k} = 0 have?",
        "final_answer": "2",
        "difficulty": 4.5,
        "topic": "Mathematics -> Algebra -> Polynomials",
        "r1_solution_1": "<think>\nA positive constant: two roots.\n</think>\n\n\\boxed{2}",
        "r1_solution_2": "<think>\nDiscriminant is positive.\n</think>\n\nThe answer is \\boxed{2}.",
        "r1_solution_3": third,
    }


def test_deepmath_three_solutions_are_three_samples_with_indices(tmp_path: Path) -> None:
    rows = [_deepmath_row(4), _deepmath_row(9, third="")]
    problems, samples, stats = _load(
        _hf(preset="deepmath-103k", import_cots=True, path=str(_jsonl(tmp_path / "m.jsonl", rows)))
    )
    assert len(problems) == 2 and len(samples) == 5
    first = [s for s in samples if s.problem_id == problems[0].id]
    assert [s.sample_index for s in first] == [0, 1, 2]
    assert [s.final_answer for s in first] == ["2", "2", "2"]
    assert len({s.id for s in samples}) == 5
    second = [s.sample_index for s in samples if s.problem_id == problems[1].id]
    assert second == [0, 1]  # the blank third solution is missing, counted, and its index stays free
    info = stats.info["sources"]["deepmath-103k"]
    assert info["cots"] == 5 and info["cots_missing"] == 1
    assert "reference_cot" not in problems[0].metadata


def test_deepmath_without_import_cots_keeps_the_old_reference_cot(tmp_path: Path) -> None:
    src = _hf(preset="deepmath-103k", path=str(_jsonl(tmp_path / "m.jsonl", [_deepmath_row(4)])))
    problems, samples, _ = _load(src)
    assert samples == [] and problems[0].metadata["reference_cot"].startswith("<think>")


def test_opencodereasoning_output_is_the_cot(tmp_path: Path) -> None:
    row = {
        "id": "a1b2",
        "input": "Given an integer n on one line, print the sum 1 + 2 + ... + n.",
        "output": "<think>\nGauss: n(n+1)/2.\n</think>\n\n```python\nn = int(input())\nprint(n * (n + 1) // 2)\n```",
        "source": "codeforces",
        "license": "cc-by-4.0",
        "dataset": "code_contests",
        "split": "train",
        "difficulty": "7",
        "solution": "n = int(input())\nprint(n * (n + 1) // 2)",
    }
    src = _hf(preset="opencodereasoning", import_cots=True, path=str(_parquet(tmp_path / "c.parquet", [row])))
    (p,), (s,), _ = _load(src)
    assert p.id == "opencodereasoning:a1b2" and p.domain == "code"
    assert s.teacher == "deepseek-r1" and s.reasoning == "Gauss: n(n+1)/2." and "print(n * (n + 1)" in s.text


def test_numinamath_solution_without_think_tags(tmp_path: Path) -> None:
    row = {
        "source": "synthetic_math",
        "problem": "Compute $3 + 4$.",
        "solution": "Adding, $3 + 4 = \\boxed{7}$.",
        "messages": [{"role": "user", "content": "Compute $3 + 4$."}, {"role": "assistant", "content": "..."}],
    }
    src = _hf(preset="numinamath", import_cots=True, path=str(_jsonl(tmp_path / "n.jsonl", [row])))
    (p,), (s,), _ = _load(src)
    assert p.answer == "7" and s.teacher == "gpt-4o"
    assert s.reasoning == s.text == "Adding, $3 + 4 = \\boxed{7}$." and s.final_answer == "7"


def _openr1_row() -> dict[str, Any]:
    return {
        "problem": "Find the remainder when $2^{10}$ is divided by 7.",
        "solution": "$2^3 \\equiv 1$, so $2^{10} \\equiv 2$.",
        "answer": "2",
        "problem_type": "Number Theory",
        "question_type": "math-word-problem",
        "source": "olympiads",
        "uuid": "5f0c-11",
        "is_reasoning_complete": [True, False],
        "generations": [
            "<think>\n2^3 = 8 = 1 mod 7, 2^10 = 2 mod 7.\n</think>\n\nThe remainder is $\\boxed{2}$.",
            "<think>\nLet me compute 2^10 = 1024, and 1024 = 7 * 146 +",
        ],
        "correctness_math_verify": [True, False],
        "correctness_llama": None,
        "finish_reasons": ["stop", "length"],
        "correctness_count": 1,
        "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
    }


def test_openr1_math_generations_with_finish_reasons_and_verdicts(tmp_path: Path) -> None:
    src = _hf(preset="openr1-math", import_cots=True, path=str(_parquet(tmp_path / "r.parquet", [_openr1_row()])))
    (p,), samples, _ = _load(src)
    assert p.id == "openr1-math:5f0c-11" and p.answer == "2" and p.metadata["problem_type"] == "Number Theory"
    done, cut = samples
    assert (done.sample_index, done.finish_reason, done.final_answer, done.complete) == (0, "stop", "2", True)
    assert done.metadata["dataset_correct"] is True and done.metadata["reasoning_complete"] is True
    assert (cut.sample_index, cut.finish_reason, cut.final_answer, cut.truncated) == (1, "length", None, True)
    assert cut.metadata["dataset_correct"] is False and "correct_llama" not in cut.metadata


def test_hub_loader_path_on_a_local_dataset_directory(tmp_path: Path) -> None:
    """`dataset:` (no `path:`) goes through datasets.load_dataset(name, subset, split=...): the hub code path,
    here on a local folder laid out as the hub repo is (default/train-*.parquet)."""
    repo = tmp_path / "OpenR1-Math-220k"
    (repo / "data").mkdir(parents=True)
    _parquet(repo / "data" / "train-00000-of-00001.parquet", [_openr1_row()])
    src = _hf(preset="openr1-math", import_cots=True, dataset=str(repo))
    assert src.path is None and src.subset == "default"
    (p,), samples, _ = _load(src)
    assert p.id == "openr1-math:5f0c-11" and [s.finish_reason for s in samples] == ["stop", "length"]


def test_a_saved_dataset_directory_and_a_teacher_column(tmp_path: Path) -> None:
    import datasets

    rows = [
        {"q": "What is 1 + 1?", "cot": "<think>one and one</think> \\boxed{2}", "model": "QwQ-32B"},
        {"q": "What is 2 + 2?", "cot": "<think>two and two</think> \\boxed{4}", "model": ""},
    ]
    disk = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(disk))
    src = _hf(
        name="mine",
        path=str(disk),
        fields={"problem": "q"},
        cots={"text": ["cot"], "teacher": "deepseek-r1-0528", "teacher_column": "model", "temperature": 1.0},
    )
    _, samples, _ = _load(src)
    assert [(s.teacher, s.temperature) for s in samples] == [("QwQ-32B", 1.0), ("deepseek-r1-0528", 1.0)]


def test_config_errors_are_fast_and_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="import_cots: this source has no CoT mapping"):
        _hf(dataset="x/y", import_cots=True)
    path = _jsonl(tmp_path / "m.jsonl", [_deepmath_row(4)])
    src = _hf(preset="deepmath-103k", import_cots=True, cots={"text": ["r1_solution_9"]}, path=str(path))
    from kubedistill.data.sources import SourceError

    with pytest.raises(SourceError, match=r"r1_solution_9"):
        _load(src)


def test_file_source_rows_are_problems_plus_cot_columns(tmp_path: Path) -> None:
    from kubedistill.data.sources import FileSource

    rows = [{"id": "p1", "problem": "What is 2 + 3?", "answer": "5", "source": "own", "r1": "<think>2+3</think> 5"}]
    src = validate_config(
        FileSource, {"kind": "file", "path": str(_jsonl(tmp_path / "own.jsonl", rows)), "cots": {"text": ["r1"]}}
    )
    stats = StageStats(stage="collect")
    samples: list[Sample] = []
    (p,) = load_source(src, stats, cots=lambda _p, s: samples.append(s))
    assert "r1" not in p.metadata and samples[0].problem_id == "p1" and samples[0].teacher == "imported"


# ------------------------------------------------------------------------------------- the collect stage


def test_collect_stage_outputs_cots_of_training_problems_only(tmp_path: Path) -> None:
    rows = [_deepmath_row(k) for k in range(2, 12)]
    rows.append(dict(rows[0]))  # the same problem again: dropped by dedup, with its CoTs
    path = _jsonl(tmp_path / "m.jsonl", rows)
    cfg = validate_config(
        CollectConfig,
        {
            "sources": [{"kind": "hf", "preset": "deepmath-103k", "import_cots": True, "path": str(path)}],
            "holdout": {"fraction": 0.2},
        },
    )
    out, stats = collect_stage(cfg)
    train, held = out["problems"], out["heldout"]
    samples = list(out["samples"])
    assert len(train) == 8 and len(held) == 2
    assert {s.problem_id for s in samples} == {p.id for p in train}
    assert len(samples) == 24 and len({s.id for s in samples}) == 24
    assert stats.info["cots"] == {
        "read": 33,
        "out": 24,
        "dropped": {"heldout": 6, "problem_dropped": 0, "repeated_problem_id": 3},
    }
    assert stats.metrics["cots_in"] == 33 and stats.metrics["cots_out"] == 24
    assert stats.info["sources"]["deepmath-103k"]["cots_out"] == 24


def test_collect_cli_writes_the_samples_file_and_verify_reads_it(tmp_path: Path) -> None:
    from kubedistill.runner import run_stage

    path = _parquet(tmp_path / "r.parquet", [_openr1_row()])
    out = tmp_path / "problems.jsonl"
    samples_path = tmp_path / "problems.samples.jsonl"
    run_stage(
        "collect",
        config={"sources": [{"kind": "hf", "preset": "openr1-math", "import_cots": True, "path": str(path)}]},
        paths={"problems": out, "heldout": tmp_path / "held.jsonl", "samples": samples_path},
        tracking={"enabled": False},
    )
    samples = read_records(samples_path, Sample)
    assert [s.sample_index for s in samples] == [0, 1]
    result = run_stage(
        "verify",
        config={"keep_all": True},
        paths={"samples": samples_path, "problems": out, "verified": tmp_path / "verified.jsonl"},
        tracking={"enabled": False},
    )
    verified = read_records(tmp_path / "verified.jsonl", Sample)
    assert [s.correct for s in verified] == [True, False]  # the truncated one is never correct
    assert verified[1].judgements["correct"].by == "truncated"
    assert result.stats is not None and result.stats.n_in == 2


def test_the_collect_command_says_how_many_records_went_to_each_output(tmp_path: Path, capsys) -> None:
    """`kubedistill collect` writes three record files; each count is that file's, not collect's n_out."""
    import yaml

    from kubedistill.cli import main

    cfg = tmp_path / "collect.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {
                        "kind": "hf",
                        "preset": "openr1-math",
                        "import_cots": True,
                        "path": str(
                            Path(__file__).resolve().parents[2] / "examples" / "data" / "openr1_math_tiny.jsonl"
                        ),
                    }
                ],
                "holdout": {"fraction": 0.25, "max_items": 4},
                "seed": 5,
            }
        )
    )
    out = tmp_path / "p.jsonl"
    assert main(["collect", "--config", str(cfg), "--output", str(out), "--no-tracking"]) == 0
    err = capsys.readouterr().err
    lines = {
        p: len((tmp_path / f"p{s}.jsonl").read_text().splitlines())
        for p, s in (("problems", ""), ("heldout", ".heldout"), ("samples", ".samples"))
    }
    assert f"wrote {lines['problems']} record(s) to {out}" in err
    assert f"heldout: {lines['heldout']} record(s): " in err and f"samples: {lines['samples']} record(s): " in err
    assert lines["problems"] + lines["heldout"] == 13 and lines["samples"] == 20
