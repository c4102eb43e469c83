"""Sources: HF presets through `datasets` on local files in each dataset's real column layout, local
files of Problems, reasoning-gym generation, normalisation, and the collect stage end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kubedistill.core.config import ConfigError, validate_config
from kubedistill.core.records import Problem, StageStats, write_records
from kubedistill.data.collect import CollectConfig, collect
from kubedistill.data.normalize import clean_text, exact_key, normalize_problem, stable_id
from kubedistill.data.sources import (
    PRESETS,
    FileSource,
    HFSource,
    ReasoningGymSource,
    SourceError,
    apps_tests,
    json_safe,
    list_presets,
    load_source,
)


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the datasets cache of each test in its tmp dir."""
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


# ------------------------------------------------------------------------------------- HF presets


def _openthoughts_rows() -> list[dict[str, Any]]:
    base = {"deepseek_solution": "", "starter_code": "", "test_cases": "", "source": "numina_math"}
    return [
        {
            **base,
            "problem": "Return your final response within \\boxed{}. Find $x$ if $2x + 3 = 11$.",
            "deepseek_reasoning": "We subtract 3 and divide by 2, so x = 4.",
            "deepseek_solution": "The answer is \\boxed{4}.",
            "ground_truth_solution": "Subtract 3: $2x = 8$, so $x = \\boxed{4}$.",
            "domain": "math",
        },
        {
            **base,
            "problem": "Read two integers a and b and print their sum.",
            "deepseek_reasoning": "Read the line, split, add.",
            "ground_truth_solution": "a, b = map(int, input().split())\nprint(a + b)",
            "domain": "code",
            "source": "apps",
            "test_cases": json.dumps({"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}),
        },
        {
            **base,
            "problem": "Implement the function add(a, b).",
            "deepseek_reasoning": "Return a + b.",
            "ground_truth_solution": "def add(a, b): return a + b",
            "domain": "code",
            "source": "taco",
            "test_cases": json.dumps({"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}),
        },
        {
            **base,
            "problem": "Which organelle makes ATP?",
            "deepseek_reasoning": "Mitochondria.",
            "ground_truth_solution": "The mitochondrion.",
            "domain": "biology",
        },
        {**base, "problem": "What is your star sign?", "deepseek_reasoning": "", "ground_truth_solution": "",
         "domain": "astrology"},
        {**base, "problem": "   ", "deepseek_reasoning": "", "ground_truth_solution": "", "domain": "math"},
    ]  # fmt: skip


def test_openthoughts_preset_maps_the_metadata_layout(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "train-00000-of-00001.parquet", _openthoughts_rows())
    src = _hf(preset="openthoughts", path=str(path))
    assert (src.dataset, src.subset, src.split) == ("open-thoughts/OpenThoughts-114k", "metadata", "train")
    stats = StageStats(stage="collect")
    problems = load_source(src, stats)

    assert [p.domain for p in problems] == ["math", "code", "code", "science"]
    math, stdio, call_based, bio = problems
    assert math.answer == "4"
    assert math.metadata["reference_cot"].startswith("We subtract 3")
    assert math.metadata["origin"] == "numina_math"
    assert "Find $x$" in math.problem  # the Problem stays a problem: no CoT in its text
    assert stdio.tests is not None and stdio.tests.kind == "stdio"
    assert [c.output for c in stdio.tests.cases] == ["3\n", "12\n"]
    assert call_based.tests is None and json.loads(call_based.metadata["test_cases"])["fn_name"] == "add"
    assert bio.answer is None and bio.source == "openthoughts"
    assert stats.dropped == {"unknown_domain": 1, "missing_problem": 1}
    info = stats.info["sources"]["openthoughts"]
    assert info["rows"] == 6 and info["loaded"] == 4 and info["tests_kept_raw"] == 1
    assert {r.reason for r in stats.rejects} == {"unknown_domain", "missing_problem"}
    assert all(r.where and r.where.startswith("openthoughts:row") for r in stats.rejects)


def _deepmath_rows() -> list[dict[str, Any]]:
    return [
        {
            "question": f"Evaluate the limit of (1 + {k}/n)^n as n tends to infinity.",
            "final_answer": f"e^{k}",
            "difficulty": 5.0 + k / 2,
            "topic": "Mathematics -> Calculus -> Limits",
            "r1_solution_1": f"<think>This is the definition of e^{k}.</think> \\boxed{{e^{k}}}",
            "r1_solution_2": "second",
            "r1_solution_3": "third",
        }
        for k in range(1, 4)
    ]


def test_deepmath_preset_from_jsonl_gives_stable_ids(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "deepmath.jsonl", _deepmath_rows())
    src = _hf(preset="deepmath-103k", path=str(path))
    first = load_source(src, StageStats(stage="t"))
    again = load_source(src, StageStats(stage="t"))
    assert [p.id for p in first] == [p.id for p in again]
    assert len({p.id for p in first}) == 3 and all(p.id.startswith("deepmath-103k-") for p in first)
    p = first[1]
    assert p.answer == "e^2" and p.domain == "math" and p.source == "deepmath-103k"
    assert p.metadata["difficulty"] == 6.0 and p.metadata["topic"].startswith("Mathematics")
    assert p.metadata["reference_cot"].startswith("<think>")
    assert "r1_solution_2" not in p.metadata


def test_hub_snapshot_directory_and_save_to_disk_directory(tmp_path: Path) -> None:
    import datasets

    snap = tmp_path / "DeepMath-103K"
    (snap / "data").mkdir(parents=True)
    _parquet(snap / "data" / "train-00000-of-00001.parquet", _deepmath_rows())
    from_snapshot = load_source(_hf(preset="deepmath-103k", path=str(snap)), StageStats(stage="t"))

    disk = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(_deepmath_rows())}).save_to_disk(str(disk))
    from_disk = load_source(_hf(preset="deepmath-103k", path=str(disk)), StageStats(stage="t"))
    assert [p.id for p in from_snapshot] == [p.id for p in from_disk]
    assert len(from_disk) == 3


def test_opencodereasoning_preset_rejects_split1_placeholders(tmp_path: Path) -> None:
    rows = [
        {
            "id": "3c8a2fcb8f8e1b7f0a36e1f4a8bb0c9e",
            "input": "You are given an array of n integers. Print the maximum element.\n\nInput\nn, then the array.",
            "output": "<think>\nScan the array.\n</think>\n```python\nprint(max(map(int, input().split())))\n```",
            "source": "codeforces",
            "license": "cc-by-4.0",
            "dataset": "code_contests",
            "split": "train",
            "difficulty": "7",
            "solution": "n=int(input());print(max(map(int,input().split())))",
        },
        {
            "id": "77aa",
            "input": "-",
            "output": "...",
            "source": "taco",
            "license": "apache-2.0",
            "dataset": "taco",
            "split": "train",
            "difficulty": "MEDIUM",
            "solution": "print(1)",
        },
    ]
    path = _parquet(tmp_path / "ocr.parquet", rows)
    stats = StageStats(stage="t")
    problems = load_source(_hf(preset="opencodereasoning", path=str(path)), stats)
    assert len(problems) == 1
    p = problems[0]
    assert p.id == "opencodereasoning:3c8a2fcb8f8e1b7f0a36e1f4a8bb0c9e" and p.domain == "code"
    assert p.metadata["reference_solution"].startswith("n=int(input())")
    assert p.metadata["reference_cot"].startswith("<think>")
    assert p.metadata["origin_dataset"] == "code_contests"
    assert stats.dropped == {"too_short": 1}


def test_numinamath_preset_reads_boxed_answer_and_limit(tmp_path: Path) -> None:
    rows = [
        {
            "source": "cn_k12",
            "problem": f"Compute {k} + {k}.",
            "solution": f"Adding gives $\\boxed{{{2 * k}}}$.",
            "messages": [{"role": "user", "content": f"Compute {k} + {k}."}, {"role": "assistant", "content": "..."}],
        }
        for k in range(5)
    ]
    path = _parquet(tmp_path / "numina.parquet", rows)
    problems = load_source(_hf(preset="numinamath", path=str(path), limit=3), StageStats(stage="t"))
    assert [p.answer for p in problems] == ["0", "2", "4"]
    assert problems[0].metadata["origin"] == "cn_k12"


def test_every_preset_has_a_real_hub_id_and_a_valid_mapping() -> None:
    assert list_presets() == sorted(PRESETS)
    assert {"openthoughts", "deepmath-103k", "opencodereasoning", "numinamath"} <= set(PRESETS)
    for name in PRESETS:
        src = _hf(preset=name)
        assert src.dataset and "/" in src.dataset and src.name == name


def test_preset_override_is_key_by_key_and_typos_fail_fast(tmp_path: Path) -> None:
    src = _hf(preset="deepmath-103k", fields={"answer": "final_answr"}, path="x.jsonl")
    assert src.fields.problem == "question" and src.fields.answer == "final_answr"
    path = _jsonl(tmp_path / "deepmath.jsonl", _deepmath_rows())
    src = _hf(preset="deepmath-103k", fields={"answer": "final_answr"}, path=str(path))
    with pytest.raises(SourceError, match="final_answr"):
        load_source(src, StageStats(stage="t"))
    with pytest.raises(ConfigError, match=r"unknown preset 'deepmath'.*deepmath-103k"):
        _hf(preset="deepmath")
    with pytest.raises(ConfigError, match="unknown key"):
        _hf(preset="deepmath-103k", fields={"question": "question"})


def test_hub_by_name_offline_is_a_clear_error(tmp_path: Path) -> None:
    # conftest sets HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: loading by name must fail fast, saying how to fix it.
    with pytest.raises(SourceError, match="path"):
        load_source(_hf(dataset="zwhe99/DeepMath-103K", fields={"problem": "question"}), StageStats(stage="t"))
    with pytest.raises(SourceError, match="no such file"):
        load_source(_hf(preset="numinamath", path=str(tmp_path / "missing.parquet")), StageStats(stage="t"))


# ------------------------------------------------------------------------------------- file sources


def test_file_source_of_problems_with_glob_and_rejects(tmp_path: Path) -> None:
    good = Problem(id="own-1", problem="What is 2+2?", answer="4", source="mine")
    write_records(tmp_path / "part-0.parquet", [good])
    (tmp_path / "part-1.jsonl").write_text(
        json.dumps({"problem": "What is 3+3?", "answer": 6, "domain": "math"})
        + "\n{not json\n"
        + json.dumps({"problem": "x", "tests": {"kind": "stdio", "cases": []}})
        + "\n"
        + json.dumps({"answer": "1"})
        + "\n",
        encoding="utf-8",
    )
    src = validate_config(FileSource, {"kind": "file", "path": str(tmp_path / "part-*")})
    assert src.name == "part"
    stats = StageStats(stage="t")
    problems = load_source(src, stats)
    assert [p.problem for p in problems] == ["What is 2+2?", "What is 3+3?"]
    assert problems[0].id == "own-1" and problems[0].source == "mine"
    assert problems[1].source == src.name and problems[1].id == stable_id(src.label, "What is 3+3?")
    assert problems[1].answer == "6"
    assert stats.dropped == {"invalid_json": 1, "invalid_record": 1, "missing_problem": 1}
    assert {r.where for r in stats.rejects} == {"part-1.jsonl:2", "part-1.jsonl:3", "part-1.jsonl:4"}


def test_file_source_with_field_mapping(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "mcq.jsonl",
        [
            {"q": "Which is a noble gas?", "opts": ["Neon", "Iron"], "key": "A", "uid": 7, "area": "chemistry"},
            {"q": "Which is a metal?", "opts": "Iron", "key": "A", "uid": 8, "area": "chemistry"},
        ],
    )
    src = validate_config(
        FileSource,
        {
            "kind": "file",
            "name": "quiz",
            "path": str(path),
            "fields": {
                "problem": "q",
                "choices": "opts",
                "answer": "key",
                "id": "uid",
                "domain_column": "area",
                "domain_map": {"chemistry": "science"},
            },
        },
    )
    stats = StageStats(stage="t")
    problems = load_source(src, stats)
    assert len(problems) == 1
    assert problems[0].id == "quiz:7" and problems[0].choices == ["Neon", "Iron"] and problems[0].domain == "science"
    assert stats.dropped == {"invalid_field": 1}


# ------------------------------------------------------------------------------------- reasoning gym


def test_reasoning_gym_generation_is_stable_and_scorable() -> None:
    import reasoning_gym

    src = validate_config(
        ReasoningGymSource, {"kind": "reasoning_gym", "tasks": {"chain_sum": 5, "basic_arithmetic": 4}, "seed": 3}
    )
    problems = load_source(src, StageStats(stage="t"))
    again = load_source(src, StageStats(stage="t"))
    assert [p.model_dump() for p in problems] == [p.model_dump() for p in again]
    assert [p.id for p in problems[:2]] == ["rg-chain_sum-3-0", "rg-chain_sum-3-1"]
    assert problems[5].id == "rg-basic_arithmetic-3-0"
    scorers = {task: reasoning_gym.create_dataset(task, size=1, seed=0) for task in src.tasks}
    for p in problems:
        rg = p.metadata["reasoning_gym"]
        json.dumps(rg)  # JSON-safe
        assert p.domain == "math" and p.answer == str(rg["entry"]["answer"])
        assert scorers[rg["task"]].score_answer(answer=p.answer, entry=rg["entry"]) == 1.0


def test_reasoning_gym_unknown_task_and_task_config_ids() -> None:
    bad = validate_config(ReasoningGymSource, {"kind": "reasoning_gym", "tasks": {"chain_summ": 2}})
    with pytest.raises(SourceError, match="did you mean chain_sum"):
        load_source(bad, StageStats(stage="t"))
    with pytest.raises(ConfigError, match="task_config"):
        validate_config(ReasoningGymSource, {"tasks": {"chain_sum": 2}, "task_config": {"leg_counting": {}}})
    cfg = {"tasks": {"chain_sum": 2}, "task_config": {"chain_sum": {"min_terms": 2, "max_terms": 2}}}
    p = load_source(validate_config(ReasoningGymSource, cfg), StageStats(stage="t"))
    assert p[0].id.startswith("rg-chain_sum-0-") and p[0].id != "rg-chain_sum-0-0"


# ------------------------------------------------------------------------------------- normalisation


def test_clean_text_normalises_but_keeps_meaning() -> None:
    assert clean_text("  \ufeffＦｉｎｄ　ｘ：\r\n x² + ½ = 1\u200b  \r\n") == "Find x:\n x² + ½ = 1"
    assert clean_text("ﬁnd", "NFC") == "ﬁnd" and clean_text("ﬁnd") == "find"
    assert clean_text("def f():\n    return 1   \n") == "def f():\n    return 1"
    assert exact_key("Find  X\n") == exact_key("find x") != exact_key("find y")
    p = normalize_problem(Problem(id="a", problem=" １+１ ", answer=" ", source="s"))
    assert p.problem == "1+1" and p.answer is None
    assert json_safe({"t": (1, 2), "s": {3}, "f": float("nan")}) == {"t": [1, 2], "s": [3], "f": None}
    assert apps_tests('{"inputs": ["1\\n"], "outputs": ["2\\n"]}') == {
        "kind": "stdio",
        "cases": [{"input": "1\n", "output": "2\n"}],
    }


# ------------------------------------------------------------------------------------- the stage


def test_collect_end_to_end_counts_every_row(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "deepmath.jsonl", [*_deepmath_rows(), _deepmath_rows()[0], {"question": None}])
    cfg = validate_config(
        CollectConfig,
        {
            "sources": [
                {"kind": "hf", "preset": "deepmath-103k", "path": str(path)},
                {"kind": "reasoning_gym", "tasks": {"chain_sum": 6}},
            ],
            "mix": {"math": 1.0},
            "size": 7,
            "seed": 1,
        },
    )
    extra = [
        Problem(id="given-1", problem="Evaluate the limit of (1 + 1/n)^n as n tends to infinity.", source="x"),
        Problem(id="given-2", problem="\u200b\u200b", source="x"),  # nothing left after cleaning
    ]
    out, stats = collect(extra, cfg)
    assert stats.n_in == 5 + 6 + 2
    assert stats.n_in == stats.n_out + sum(stats.dropped.values())
    assert stats.dropped["duplicate"] == 2 and stats.dropped["missing_problem"] == 1
    assert stats.dropped["too_short"] == 1 and stats.info["sources"]["input"]["rejected"] == {"too_short": 1}
    assert sum(info["out"] for info in stats.info["sources"].values()) == 7
    assert stats.dropped["resampled_out"] == 2 and len(out) == 7
    assert stats.info["sources"]["deepmath-103k"]["rows"] == 5 and stats.info["sources"]["input"]["rows"] == 2
    assert stats.info["dedup"]["near_exempt_sources"] == ["reasoning_gym"]
    assert stats.info["decontaminate"]["note"].startswith("no benchmarks")
    assert sum(stats.info["out_by_source"].values()) == 7
    again, _ = collect(extra, cfg)
    assert [p.id for p in again] == [p.id for p in out]


def test_collect_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sources\.0\.hf\.datset: unknown key"):
        validate_config(CollectConfig, {"sources": [{"kind": "hf", "datset": "x/y"}]})
    with pytest.raises(ConfigError, match="source names repeat"):
        validate_config(CollectConfig, {"sources": [{"kind": "file", "path": "a.jsonl"}] * 2})
    with pytest.raises(ConfigError, match="unknown domain"):
        validate_config(CollectConfig, {"mix": {"maths": 1.0}})
    with pytest.raises(ConfigError, match="needs `dataset`"):
        validate_config(CollectConfig, {"sources": [{"kind": "hf"}]})
