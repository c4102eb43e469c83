"""Benchmarks by name from local files in each benchmark's real hub layout (what an air-gapped
cluster does), HumanEval from the installed package, and reasoning-gym evaluation sets."""

from __future__ import annotations

import base64
import csv
import json
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kubedistill.core.records import write_records
from kubedistill.data.benchmarks import (
    BENCHMARKS,
    BenchmarkError,
    decode_lcb_tests,
    list_benchmarks,
    load_benchmark,
)


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_humaneval_from_the_installed_package() -> None:
    problems = load_benchmark("humaneval")
    assert len(problems) == 164
    first = problems[0]
    assert first.id == "humaneval:HumanEval/0" and first.domain == "code" and first.source == "humaneval"
    assert first.tests is not None and first.tests.kind == "functional"
    assert first.tests.entry_point == "has_close_elements" and "def check(candidate)" in first.tests.code
    assert first.problem.startswith("from typing import List")
    assert all(p.tests is not None and p.tests.kind == "functional" for p in problems)
    assert len(load_benchmark("humaneval", limit=5)) == 5


def test_gsm8k_answer_after_hashes(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "test.jsonl",
        [
            {"question": "Janet has 3 apples and buys 2 more. How many?", "answer": "3+2=5\n#### 5"},
            {"question": "A farm has 1,200 hens and sells 200. How many?", "answer": "1200-200=1000\n#### 1,000"},
        ],
    )
    problems = load_benchmark("gsm8k", path=path)
    assert [p.answer for p in problems] == ["5", "1000"]
    assert [p.id for p in problems] == ["gsm8k:test-0", "gsm8k:test-1"]
    assert problems[0].metadata["reference_solution"] == "3+2=5"
    bad = _jsonl(tmp_path / "bad.jsonl", [{"question": "Q?", "answer": "no marker"}])
    with pytest.raises(BenchmarkError, match="row 0: answer has no '####'"):
        load_benchmark("gsm8k", path=bad)


def test_math500_layout_and_problem_form_files(tmp_path: Path) -> None:
    rows = [
        {
            "problem": "What is $\\sqrt{16}$?",
            "solution": "$\\boxed{4}$",
            "answer": "4",
            "subject": "Algebra",
            "level": 1,
            "unique_id": "test/algebra/1.json",
        },
        {
            "problem": "Compute $2^5$.",
            "solution": "$\\boxed{32}$",
            "answer": "32",
            "subject": "Algebra",
            "level": 1,
            "unique_id": "test/algebra/2.json",
        },
    ]
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    problems = load_benchmark("math500", path=str(path))
    assert [p.id for p in problems] == ["math500:test/algebra/1.json", "math500:test/algebra/2.json"]
    assert problems[0].answer == "4" and problems[0].metadata["subject"] == "Algebra"
    assert len(load_benchmark("math500", path=str(path), limit=1)) == 1

    saved = tmp_path / "math500-problems.jsonl"
    write_records(saved, problems)
    assert load_benchmark("math500", path=str(saved)) == problems
    custom = load_benchmark("my_eval", path=str(saved))
    assert [p.id for p in custom] == [p.id for p in problems]
    wrong = _jsonl(tmp_path / "wrong.jsonl", [{"text": "x"}])
    with pytest.raises(BenchmarkError, match="match neither"):
        load_benchmark("math500", path=wrong)


def test_aime2024_both_hub_layouts(tmp_path: Path) -> None:
    h4 = tmp_path / "h4.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"id": 60, "problem": "Find n.", "solution": "...", "answer": "204", "url": "https://x", "year": "2024"}]
        ),
        h4,
    )
    maxwell = _jsonl(tmp_path / "mj.jsonl", [{"ID": "2024-I-1", "Problem": "Find m.", "Solution": "...", "Answer": 33}])
    a = load_benchmark("aime2024", path=str(h4))
    b = load_benchmark("aime2024", path=maxwell)
    assert (a[0].id, a[0].answer) == ("aime2024:60", "204")
    assert (b[0].id, b[0].answer, b[0].problem) == ("aime2024:2024-I-1", "33", "Find m.")


def test_gpqa_diamond_csv_choices_shuffled_deterministically(tmp_path: Path) -> None:
    path = tmp_path / "gpqa_diamond.csv"
    header = ["Pre-Revision Question", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
              "Incorrect Answer 3", "Explanation", "Record ID", "High-level domain", "Subdomain"]  # fmt: skip
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(6):
            w.writerow(["old", f"Question {i}: which particle is a lepton?", " Electron\n", "Proton", "Neutron",
                        "Pion", "Leptons ...", f"rec{i:03d}", "Physics", "Particle physics"])  # fmt: skip
    problems = load_benchmark("gpqa_diamond", path=str(path))
    assert len(problems) == 6
    for p in problems:
        assert (
            p.domain == "science"
            and p.choices is not None
            and sorted(p.choices) == sorted(["Electron", "Proton", "Neutron", "Pion"])
        )
        assert p.answer is not None and p.choices["ABCD".index(p.answer)] == "Electron"
    assert len({p.answer for p in problems}) > 1  # the correct option is not always in one place
    again = load_benchmark("gpqa_diamond", path=str(path), limit=3)
    assert [(p.id, p.choices, p.answer) for p in again] == [(p.id, p.choices, p.answer) for p in problems[:3]]
    assert problems[0].id == "gpqa_diamond:rec000" and problems[0].metadata["subdomain"] == "Particle physics"


def _compress(cases: list[dict[str, str]]) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def _lcb_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stdin_row = {
        "question_title": "Overall Winner",
        "question_content": "Takahashi and Aoki played N games. Print the overall winner.\n\nInput\nN\nS",
        "platform": "atcoder",
        "question_id": "abc301_a",
        "contest_id": "abc301",
        "contest_date": "2023-05-13T00:00:00",
        "starter_code": "",
        "difficulty": "easy",
        "public_test_cases": json.dumps([{"input": "5\nTTAAT\n", "output": "T\n", "testtype": "stdin"}]),
        "private_test_cases": _compress([{"input": "1\nA\n", "output": "A\n", "testtype": "stdin"}]),
        "metadata": "{}",
    }
    functional_row = {
        "question_title": "add-two",
        "question_content": "Return the sum of a and b.",
        "platform": "leetcode",
        "question_id": "3000",
        "contest_id": "weekly-contest-1",
        "contest_date": "2023-08-20T00:00:00",
        "starter_code": "class Solution:\n    def addTwo(self, a: int, b: List[int]) -> List[int]:\n        ",
        "difficulty": "medium",
        "public_test_cases": json.dumps([{"input": "1\n[2, 3]", "output": "[3, 4]", "testtype": "functional"}]),
        "private_test_cases": _compress([{"input": "0\n[]", "output": "[]", "testtype": "functional"}]),
        "metadata": json.dumps({"func_name": "addTwo"}),
    }
    return [stdin_row], [functional_row]


def test_livecodebench_v2_from_the_release_files(tmp_path: Path) -> None:
    first, second = _lcb_rows()
    _jsonl(tmp_path / "test.jsonl", first)
    _jsonl(tmp_path / "test2.jsonl", second)
    _jsonl(tmp_path / "test3.jsonl", first)  # release_v3 only: must not be read for v2
    problems = load_benchmark("livecodebench_v2", path=str(tmp_path))
    assert [p.id for p in problems] == ["livecodebench_v2:abc301_a", "livecodebench_v2:3000"]
    stdio, functional = problems
    assert stdio.tests is not None and stdio.tests.kind == "stdio"
    assert [(c.input, c.output) for c in stdio.tests.cases] == [("5\nTTAAT\n", "T\n"), ("1\nA\n", "A\n")]
    assert stdio.problem == first[0]["question_content"]

    assert functional.tests is not None and functional.tests.kind == "functional"
    assert functional.tests.entry_point == "Solution" and "class Solution" in functional.problem
    assert functional.metadata["question_text"] == "Return the sum of a and b."
    # the starter code's annotations need typing names: the item says what to put before a program
    good = functional.metadata["program_prefix"] + (
        "class Solution:\n    def addTwo(self, a: int, b: List[int]) -> List[int]:\n        return [a + x for x in b]\n"
    )
    scope: dict[str, Any] = {}
    exec(good + "\n" + functional.tests.code, scope)
    scope["check"](scope["Solution"])
    wrong = good.replace("a + x", "a - x")
    scope = {}
    exec(wrong + "\n" + functional.tests.code, scope)
    with pytest.raises(AssertionError, match="expected"):
        scope["check"](scope["Solution"])


def test_lcb_private_tests_refuse_pickled_code() -> None:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("echo owned",))  # not print: a kfp.local test may leave builtins.print patched

    evil = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(ValueError, match="neither JSON nor"):
        decode_lcb_tests(evil)
    assert decode_lcb_tests(_compress([{"input": "1", "output": "2"}])) == [{"input": "1", "output": "2"}]
    assert decode_lcb_tests("") == []


def test_reasoning_gym_benchmarks_and_names() -> None:
    a = load_benchmark("reasoning_gym:chain_sum", limit=4)
    b = load_benchmark("reasoning_gym:chain_sum:5", limit=4)
    assert [p.id for p in a] == [f"rg-chain_sum-10000-{i}" for i in range(4)]
    assert b[0].id == "rg-chain_sum-5-0" and a[0].metadata["reasoning_gym"]["task"] == "chain_sum"
    assert a == load_benchmark("reasoning_gym:chain_sum", limit=4)
    with pytest.raises(BenchmarkError, match="unknown reasoning-gym task"):
        load_benchmark("reasoning_gym:nope", limit=1)
    names = list_benchmarks()
    assert {"math500", "aime2024", "gpqa_diamond", "livecodebench_v2", "gsm8k", "humaneval"} <= set(names)
    with pytest.raises(BenchmarkError, match="unknown benchmark 'math5000'"):
        load_benchmark("math5000")
    hub = {n: (s.hub_id, s.subset, s.split) for n, s in BENCHMARKS.items()}
    assert hub["math500"] == ("HuggingFaceH4/MATH-500", None, "test")
    assert hub["gsm8k"] == ("openai/gsm8k", "main", "test")
    assert hub["gpqa_diamond"] == ("Idavidrein/gpqa", "gpqa_diamond", "train")


def test_hub_by_name_offline_fails_with_a_hint() -> None:
    with pytest.raises(BenchmarkError, match="path"):
        load_benchmark("math500")
