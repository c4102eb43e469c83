"""Where problems come from: Hugging Face datasets, local files and reasoning-gym generators.

A source is one entry of ``CollectConfig.sources``, a union discriminated by ``kind``:

* ``hf`` (:class:`HFSource`): a dataset by hub id through ``datasets.load_dataset(dataset, subset,
  split=...)``, or the same dataset from local files (``path``: a file, a glob, a hub snapshot
  directory, or a ``save_to_disk`` directory) so an air-gapped cluster loads it without the hub.
  A :class:`FieldMap` says which column holds the problem, answer, id, tests, choices and domain.
  ``preset`` fills dataset id, subset, split and field mapping for well-known datasets
  (:data:`PRESETS`); anything given next to it overrides the preset (``fields`` key by key).
* ``file`` (:class:`FileSource`): local JSONL/Parquet (a path or a glob). Without ``fields`` each row
  is a :class:`~kubedistill.core.records.Problem` already (``source`` and ``id`` are filled in when absent).
* ``reasoning_gym`` (:class:`ReasoningGymSource`): ``reasoning_gym.create_dataset(task, size, seed)``
  for each configured task. Each problem carries ``metadata["reasoning_gym"] = {"task", "entry"}`` so
  the verifier can call the task's own scorer; ids are ``rg-<task>-<seed>-<index>`` (stable across runs).

Guarantees of :func:`load_source`: every input row either becomes one Problem or one reject in
``stats`` with a reason (``missing_problem``, ``invalid_field``, ``invalid_record``,
``unknown_domain``, ``too_short``) — never dropped silently; counts per source go to
``stats.info["sources"][name]``. A configured column that the dataset lacks is a :class:`SourceError`
before any row is read (a typo in a mapping fails fast, it does not reject every row).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import difflib
import glob as globlib
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from kubedistill.core.config import ConfigError, StrictModel, reference
from kubedistill.core.progress import make_bar
from kubedistill.core.records import Domain, Problem, Sample, StageStats, iter_rows, validation_message

from .normalize import resolve_domain, stable_id

STAGE_OF_SOURCES = "collect"


class SourceError(ConfigError):
    """A source cannot be read at all: unknown preset or task, missing files, hub unreachable, or a
    mapped column that the dataset does not have."""


# ------------------------------------------------------------------------------------------ field map


class FieldMap(StrictModel):
    """Which column of a row becomes which field of a Problem. ``None`` = the field is absent.

    Column names may be dotted paths into nested values (``conversations.0.value``)."""

    problem: str = Field(default="problem", description="column with the problem text (required)")
    answer: str | None = Field(default=None, description="column with the reference answer")
    answer_extract: Literal["none", "boxed", "gsm8k"] = Field(
        default="none",
        description="how to read the answer from its column: as is, the last \\boxed{...}, or after '####'",
    )
    id: str | None = Field(default=None, description="column with a row id (ids become '<source>:<value>')")
    tests: str | None = Field(default=None, description="column with code tests")
    tests_format: Literal["problem", "apps"] = Field(
        default="problem",
        description="'problem': our FunctionalTests/StdioTests dict; 'apps': {'inputs': [...], 'outputs': [...]}",
    )
    choices: str | None = Field(default=None, description="column with a list of answer options")
    domain: Domain | None = Field(default=None, description="domain of every row (or of rows the column leaves open)")
    domain_column: str | None = Field(default=None, description="column whose value (via domain_map) is the domain")
    domain_map: dict[str, Domain] = Field(default_factory=dict, description="column value → domain")
    reference_cot: str | None = Field(
        default=None, description="column with an existing chain of thought → metadata['reference_cot']"
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="metadata key → column copied as is")

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_list(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return {str(c): str(c) for c in v}
        return v

    def columns(self) -> list[str]:
        """Every column this mapping reads (top-level names)."""
        cols = [self.problem, self.answer, self.id, self.tests, self.choices, self.domain_column, self.reference_cot]
        cols += list(self.metadata.values())
        return [c.split(".", 1)[0] for c in cols if c]


class CotMap(StrictModel):
    """Which columns of a row hold existing chains of thought, and how to read them into
    :class:`~kubedistill.core.records.Sample` records (one per CoT, beside the row's Problem).

    Every column name may be a dotted path (``conversations.1.value``). A ``text`` column holds one CoT
    (a string) or several (a list of strings: OpenR1-Math's ``generations``); several ``text`` columns
    (DeepMath's ``r1_solution_1..3``) are read in order. The CoTs of one row get ``sample_index`` 0, 1,
    2, ... in that order (a missing or blank CoT keeps its index free, so ids stay stable)."""

    text: list[str] = Field(min_length=1, description="columns holding the CoT text (or a list of CoTs)")
    reasoning: str | None = Field(
        default=None,
        description="a column with the reasoning apart (OpenThoughts' deepseek_reasoning); the text column is "
        "then the answer part, and the CoT is <think>reasoning</think> answer",
    )
    markers: Literal["think", "openthoughts"] = Field(
        default="think",
        description="how the text marks its reasoning: <think>...</think>, or OpenThoughts' "
        "<|begin_of_thought|>...<|end_of_thought|> <|begin_of_solution|>...<|end_of_solution|> "
        "(rewritten as think tags)",
    )
    teacher: str = Field(default="imported", min_length=1, description="teacher label of every CoT (deepseek-r1, ...)")
    teacher_column: str | None = Field(default=None, description="column with the teacher label (else `teacher`)")
    temperature: float = Field(
        default=0.6, ge=0.0, description="sampling temperature recorded on the CoTs (datasets rarely say; R1's is 0.6)"
    )
    finish_reason: str | None = Field(
        default=None, description="column with the finish reason (one value, or a list aligned with the CoTs)"
    )
    correct: str | None = Field(
        default=None,
        description="column with the dataset's own verdicts (a list aligned with the CoTs) → "
        "metadata['dataset_correct']; `verify` decides `correct` itself",
    )
    per_cot: dict[str, str] = Field(
        default_factory=dict, description="metadata key → column holding a list aligned with the CoTs"
    )

    def columns(self) -> list[str]:
        cols = [*self.text, self.reasoning, self.teacher_column, self.finish_reason, self.correct]
        cols += list(self.per_cot.values())
        return [c.split(".", 1)[0] for c in cols if c]


# ------------------------------------------------------------------------------------------- presets

#: Built-in HF sources by short name: hub id, subset, split and field mapping of each dataset's real
#: column layout (see docs/collect.md for what was confirmed and from where).
PRESETS: dict[str, dict[str, Any]] = {
    "openthoughts": {
        # The 'metadata' subset has one flat row per problem; the default subset only has chat turns.
        "dataset": "open-thoughts/OpenThoughts-114k",
        "subset": "metadata",
        "split": "train",
        "fields": {
            "problem": "problem",
            "answer": "ground_truth_solution",
            "answer_extract": "boxed",
            "domain_column": "domain",
            "domain_map": {
                "math": "math",
                "code": "code",
                "biology": "science",
                "chemistry": "science",
                "physics": "science",
                "puzzle": "general",
            },
            "tests": "test_cases",
            "tests_format": "apps",
            "reference_cot": "deepseek_reasoning",
            "metadata": {
                "origin": "source",
                "starter_code": "starter_code",
                "reference_solution": "deepseek_solution",
            },
        },
        "cots": {"text": ["deepseek_solution"], "reasoning": "deepseek_reasoning", "teacher": "deepseek-r1"},
    },
    "openthoughts-conversations": {
        # The default subset: `system` + `conversations` [{from: user, value}, {from: assistant, value}], the
        # assistant turn marked <|begin_of_thought|> ... <|end_of_thought|>
        # <|begin_of_solution|> ... <|end_of_solution|>.
        "dataset": "open-thoughts/OpenThoughts-114k",
        "subset": "default",
        "split": "train",
        "fields": {"problem": "conversations.0.value"},
        "cots": {"text": ["conversations.1.value"], "markers": "openthoughts", "teacher": "deepseek-r1"},
    },
    "openthoughts2": {
        # conversations [{from: human, value}, {from: gpt, value: '<think>...</think>...'}], question, source, id
        "dataset": "open-thoughts/OpenThoughts2-1M",
        "split": "train",
        "fields": {"problem": "question", "id": "id", "metadata": {"origin": "source"}},
        "cots": {"text": ["conversations.1.value"], "teacher": "deepseek-r1"},
    },
    "openthoughts3": {
        # difficulty, source, domain, conversations [{from: human, value}, {from: gpt, value}]; QwQ-32B traces
        "dataset": "open-thoughts/OpenThoughts3-1.2M",
        "split": "train",
        "fields": {
            "problem": "conversations.0.value",
            "domain_column": "domain",
            "domain_map": {"math": "math", "code": "code", "science": "science"},
            "metadata": {"origin": "source", "difficulty": "difficulty"},
        },
        "cots": {"text": ["conversations.1.value"], "teacher": "qwq-32b"},
    },
    "openr1-math": {
        # problem, solution, answer, problem_type, question_type, source, uuid, is_reasoning_complete (list),
        # generations (list), correctness_math_verify (list), correctness_llama (list), finish_reasons (list),
        # correctness_count, messages
        "dataset": "open-r1/OpenR1-Math-220k",
        "subset": "default",
        "split": "train",
        "fields": {
            "problem": "problem",
            "answer": "answer",
            "id": "uuid",
            "domain": "math",
            "metadata": {"origin": "source", "problem_type": "problem_type", "question_type": "question_type"},
        },
        "cots": {
            "text": ["generations"],
            "teacher": "deepseek-r1",
            "finish_reason": "finish_reasons",
            "correct": "correctness_math_verify",
            "per_cot": {"reasoning_complete": "is_reasoning_complete", "correct_llama": "correctness_llama"},
        },
    },
    "deepmath-103k": {
        "dataset": "zwhe99/DeepMath-103K",
        "split": "train",
        "fields": {
            "problem": "question",
            "answer": "final_answer",
            "domain": "math",
            "reference_cot": "r1_solution_1",
            "metadata": {"difficulty": "difficulty", "topic": "topic"},
        },
        "cots": {"text": ["r1_solution_1", "r1_solution_2", "r1_solution_3"], "teacher": "deepseek-r1"},
    },
    "opencodereasoning": {
        # split_1 rows carry '-' as input (the question must be fetched from APPS/TACO): those are
        # rejected as too_short rather than loaded as a problem called '-'.
        "dataset": "nvidia/OpenCodeReasoning",
        "subset": "split_0",
        "split": "split_0",
        "min_problem_chars": 16,
        "fields": {
            "problem": "input",
            "id": "id",
            "domain": "code",
            "reference_cot": "output",
            "metadata": {
                "reference_solution": "solution",
                "origin": "source",
                "origin_dataset": "dataset",
                "origin_split": "split",
                "difficulty": "difficulty",
                "license": "license",
            },
        },
        "cots": {"text": ["output"], "teacher": "deepseek-r1"},
    },
    "numinamath": {
        "dataset": "AI-MO/NuminaMath-CoT",
        "split": "train",
        "fields": {
            "problem": "problem",
            "answer": "solution",
            "answer_extract": "boxed",
            "domain": "math",
            "reference_cot": "solution",
            "metadata": {"origin": "source"},
        },
        # GPT-4o-written solutions, no think tags: the whole text is reasoning and answer part.
        "cots": {"text": ["solution"], "teacher": "gpt-4o"},
    },
}


def list_presets() -> list[str]:
    """Names of the built-in HF source presets."""
    return sorted(PRESETS)


# ---------------------------------------------------------------------------------------------- configs


class _SourceBase(StrictModel):
    name: str | None = Field(default=None, description="label in ids, stats and Problem.source (unique)")
    limit: int | None = Field(default=None, ge=1, description="read at most this many rows (first rows)")
    min_problem_chars: int = Field(default=1, ge=1, description="shorter problem texts are rejects (too_short)")
    near_dedup: bool = Field(default=True, description="take part in near-duplicate removal (exact always applies)")

    @property
    def label(self) -> str:
        assert self.name is not None  # set by every subclass's validator
        return self.name


class HFSource(_SourceBase):
    """A Hugging Face dataset by hub id, or the same dataset from local files (``path``)."""

    kind: Literal["hf"] = "hf"
    preset: str | None = Field(default=None, description=f"one of {sorted(PRESETS)}")
    dataset: str | None = Field(default=None, description="hub id, e.g. zwhe99/DeepMath-103K")
    subset: str | None = Field(default=None, description="the dataset's config name")
    split: str = "train"
    revision: str | None = Field(default=None, description="hub revision (commit, tag or branch) to pin")
    data_files: list[str] | None = Field(default=None, description="files inside the repo (or inside `path`)")
    path: str | None = reference(
        "data_path",
        None,
        description="local copy: a file or glob (json/jsonl/parquet/csv), a hub snapshot dir or a save_to_disk dir",
    )
    fields: FieldMap = Field(default_factory=FieldMap)
    cots: CotMap | None = Field(default=None, description="columns with existing CoTs → Samples (see CotMap)")
    import_cots: bool = Field(
        default=False, description="import the preset's CoTs as Samples (the preset's `cots` mapping)"
    )
    streaming: bool = Field(default=False, description="stream rows instead of downloading the split first")
    cache_dir: str | None = Field(default=None, description="datasets cache (default: HF_DATASETS_CACHE)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("preset"):
            return data
        name = data["preset"]
        if name not in PRESETS:
            close = difflib.get_close_matches(str(name), PRESETS, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown preset {name!r}{hint}; presets: {', '.join(sorted(PRESETS))}")
        merged = copy.deepcopy(PRESETS[name])
        preset_cots = merged.pop("cots", None)
        if data.get("import_cots") and preset_cots is not None:
            merged["cots"] = preset_cots
            merged.get("fields", {}).pop("reference_cot", None)  # the CoT is a Sample now, not a copy in metadata
        for key, value in data.items():
            if key == "fields" and isinstance(value, dict):
                merged["fields"] = {**merged.get("fields", {}), **value}
            elif key == "cots" and isinstance(value, dict) and isinstance(merged.get("cots"), dict):
                merged["cots"] = {**merged["cots"], **value}
            else:
                merged[key] = value
        return merged

    @model_validator(mode="after")
    def _check(self) -> HFSource:
        if not self.dataset and not self.path:
            raise ValueError("an hf source needs `dataset` (hub id), `preset` or `path` (local copy)")
        if self.import_cots and self.cots is None:
            raise ValueError("import_cots: this source has no CoT mapping; give `cots: {text: [COLUMN], ...}`")
        if self.name is None:
            self.name = self.preset or self.dataset or _stem(self.path or "hf")
        return self


class FileSource(_SourceBase):
    """Local JSONL/Parquet files (a path or a glob); rows are Problems unless ``fields`` maps them."""

    kind: Literal["file"] = "file"
    path: str = reference("files", description="a JSONL/Parquet file or a glob of them")
    fields: FieldMap | None = Field(default=None, description="None: rows are Problems (identity)")
    cots: CotMap | None = Field(default=None, description="columns with existing CoTs → Samples (see CotMap)")

    @model_validator(mode="after")
    def _name(self) -> FileSource:
        if self.name is None:
            self.name = _stem(self.path)
        return self


class ReasoningGymSource(_SourceBase):
    """Procedurally generated problems: ``reasoning_gym.create_dataset(task, size=N, seed=seed)``."""

    kind: Literal["reasoning_gym"] = "reasoning_gym"
    tasks: dict[str, int] = reference("reasoning_gym_tasks", min_length=1, description="task name → number of problems")
    seed: int = 0
    domain: Domain = "math"
    task_config: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="task name → extra keyword arguments of create_dataset"
    )
    near_dedup: bool = Field(default=False, description="generated problems share templates: exact dedup only")

    @field_validator("tasks")
    @classmethod
    def _sizes(cls, v: dict[str, int]) -> dict[str, int]:
        for task, n in v.items():
            if n < 1:
                raise ValueError(f"task {task!r}: size must be at least 1 (got {n})")
        return v

    @model_validator(mode="after")
    def _name(self) -> ReasoningGymSource:
        unknown = set(self.task_config) - set(self.tasks)
        if unknown:
            raise ValueError(f"task_config names tasks that are not in `tasks`: {sorted(unknown)}")
        if self.name is None:
            self.name = "reasoning_gym"
        return self


Source = Annotated[HFSource | FileSource | ReasoningGymSource, Field(discriminator="kind")]


def _stem(path: str) -> str:
    name = Path(path.rstrip("/")).name
    for ch in "*?[]{}":
        name = name.replace(ch, "")
    for suffix in (".gz", ".jsonl", ".json", ".ndjson", ".parquet", ".pq", ".csv"):
        name = name.removesuffix(suffix)
    return name.strip("-_.") or "file"


# ----------------------------------------------------------------------------------------- row helpers


class RowError(Exception):
    """A row that cannot become a Problem: ``reason`` is the reject reason, the message the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


_MISSING = object()


def lookup(row: Mapping[str, Any], path: str) -> Any:
    """``row[path]``, or a dotted path into nested dicts/lists (``a.0.b``); missing → None."""
    if path in row:
        return row[path]
    cur: Any = row
    for part in path.split("."):
        if isinstance(cur, Mapping):
            cur = cur.get(part, _MISSING)
        elif isinstance(cur, list | tuple) and part.lstrip("-").isdigit():
            i = int(part)
            cur = cur[i] if -len(cur) <= i < len(cur) else _MISSING
        else:
            cur = _MISSING
        if cur is _MISSING:
            return None
    return cur


def json_safe(obj: Any) -> Any:
    """A JSON-serialisable copy: tuples/sets → lists, numpy scalars → Python numbers, dates → ISO text,
    non-finite floats → None, anything else unknown → ``str(obj)``."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return [json_safe(v) for v in sorted(obj, key=repr)]
    if isinstance(obj, dt.datetime | dt.date | dt.time):
        return obj.isoformat()
    if isinstance(obj, Fraction | Decimal):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe(dataclasses.asdict(obj))
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item) and getattr(obj, "shape", None) == ():
        return json_safe(item())
    tolist = getattr(obj, "tolist", None)  # numpy arrays
    if callable(tolist):
        return json_safe(tolist())
    return str(obj)


def preview(row: Any, max_chars: int | None = None) -> Any:
    """A JSON-safe copy of a rejected row for the rejects file: whole by default (a rejected row is kept
    so that it can be fixed and fed again); with ``max_chars``, long strings cut and lists shortened."""
    if isinstance(row, str):
        if max_chars is None or len(row) <= max_chars:
            return row
        return row[:max_chars] + f"…[{len(row) - max_chars} more chars]"
    if isinstance(row, Mapping):
        return {str(k): preview(v, max_chars) for k, v in row.items()}
    if isinstance(row, list | tuple):
        return [preview(v, max_chars) for v in (row if max_chars is None else row[:50])]
    return json_safe(row)


def _as_text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise RowError("invalid_field", f"field {field!r}: expected text, got a boolean")
    if isinstance(value, int | float | Decimal | Fraction):
        return str(value)
    if isinstance(value, str):
        return value
    raise RowError("invalid_field", f"field {field!r}: expected text, got {type(value).__name__}")


def extract_answer(text: str | None, how: str) -> str | None:
    """The reference answer from an answer column: as is, the last ``\\boxed{}``, or after ``####``."""
    if text is None:
        return None
    if how == "boxed":
        from kubedistill.core.text import last_boxed

        return last_boxed(text)
    if how == "gsm8k":
        if "####" not in text:
            return None
        return text.rsplit("####", 1)[1].strip().replace(",", "") or None
    return text


def _parse_json_text(value: Any, field: str) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise RowError("invalid_field", f"field {field!r}: not valid JSON ({e.msg})") from None
    return value


def apps_tests(value: Any) -> dict[str, Any] | None:
    """APPS/TACO-style ``{"inputs": [...], "outputs": [...]}`` → our stdio tests dict; None when the
    tests are call-based (``fn_name``) or not all text (the caller keeps the raw value in metadata)."""
    data = _parse_json_text(value, "tests")
    if not isinstance(data, Mapping) or data.get("fn_name"):
        return None
    inputs, outputs = data.get("inputs"), data.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs) or not inputs:
        return None
    if not all(isinstance(x, str) for x in inputs) or not all(isinstance(x, str) for x in outputs):
        return None
    return {"kind": "stdio", "cases": [{"input": i, "output": o} for i, o in zip(inputs, outputs, strict=True)]}


@dataclasses.dataclass
class SourceCounts:
    """What loading one source did (stored in ``stats.info['sources'][name]``)."""

    rows: int = 0
    loaded: int = 0
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    no_answer: int = 0
    tests_kept_raw: int = 0
    cots: int = 0  # CoTs imported (sources with `cots`)
    cots_missing: int = 0  # CoT cells that were empty or not text

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def map_row(row: Mapping[str, Any], fields: FieldMap, source: str, counts: SourceCounts | None = None) -> Problem:
    """One dataset row → one Problem through ``fields``; raises :class:`RowError` with the reject reason."""
    raw_problem = lookup(row, fields.problem)
    if raw_problem is None or (isinstance(raw_problem, str) and not raw_problem.strip()):
        raise RowError("missing_problem", f"column {fields.problem!r} is empty or missing")
    problem = _as_text(raw_problem, fields.problem)
    assert problem is not None

    answer = None
    if fields.answer:
        answer = extract_answer(_as_text(lookup(row, fields.answer), fields.answer), fields.answer_extract)
        if answer is not None and not answer.strip():
            answer = None

    raw_id = _as_text(lookup(row, fields.id), fields.id) if fields.id else None
    pid = f"{source}:{raw_id}" if raw_id and raw_id.strip() else stable_id(source, problem)

    metadata: dict[str, Any] = {}
    tests: Any = None
    if fields.tests:
        raw_tests = lookup(row, fields.tests)
        if fields.tests_format == "apps":
            tests = apps_tests(raw_tests) if raw_tests not in (None, "") else None
            if tests is None and raw_tests not in (None, "", "{}"):
                metadata["test_cases"] = json_safe(raw_tests)
                if counts is not None:
                    counts.tests_kept_raw += 1
        else:
            tests = _parse_json_text(raw_tests, fields.tests)

    choices = None
    if fields.choices:
        choices = _parse_json_text(lookup(row, fields.choices), fields.choices)
        if choices is not None and (
            not isinstance(choices, list | tuple) or not all(isinstance(c, str | int | float) for c in choices)
        ):
            raise RowError("invalid_field", f"field {fields.choices!r}: expected a list of options")
        if choices is not None:
            choices = [str(c) for c in choices]

    domain = fields.domain
    if fields.domain_column:
        value = lookup(row, fields.domain_column)
        domain = resolve_domain(value, fields.domain_map, fields.domain)  # type: ignore[assignment]
        if domain is None:
            raise RowError(
                "unknown_domain",
                f"column {fields.domain_column!r} = {value!r} maps to no domain (add it to fields.domain_map)",
            )
    if domain is None:
        domain = "code" if tests else "math"

    if fields.reference_cot:
        cot = lookup(row, fields.reference_cot)
        if isinstance(cot, str) and cot.strip():
            metadata["reference_cot"] = cot
    for key, col in fields.metadata.items():
        value = lookup(row, col)
        if value is not None:
            metadata[key] = json_safe(value)

    try:
        p = Problem.model_validate(
            {
                "id": pid,
                "problem": problem,
                "answer": answer,
                "domain": domain,
                "source": source,
                "tests": tests,
                "choices": choices,
                "metadata": metadata,
            }
        )
    except ValidationError as e:
        raise RowError("invalid_record", validation_message(e)) from None
    if counts is not None and p.answer is None and p.tests is None and p.choices is None:
        counts.no_answer += 1
    return p


_OT_BEGIN_THOUGHT, _OT_END_THOUGHT = "<|begin_of_thought|>", "<|end_of_thought|>"
_OT_BEGIN_SOLUTION, _OT_END_SOLUTION = "<|begin_of_solution|>", "<|end_of_solution|>"


def openthoughts_to_think(text: str) -> str:
    """OpenThoughts-114k's assistant turn (``<|begin_of_thought|> R <|end_of_thought|> <|begin_of_solution|> S
    <|end_of_solution|>``) in the one form our CoTs take: ``<think>\nR\n</think>\n\nS``. A thought that never
    ends stays an open ``<think>`` (a cut-off CoT); text without the markers is returned as it is."""
    from kubedistill.core.text import THINK_OPEN, join_think

    if _OT_BEGIN_THOUGHT not in text:
        return text
    after = text.split(_OT_BEGIN_THOUGHT, 1)[1]
    if _OT_END_THOUGHT not in after:
        return f"{THINK_OPEN}\n{after.strip()}"
    reasoning, _, rest = after.partition(_OT_END_THOUGHT)
    solution = rest.split(_OT_BEGIN_SOLUTION, 1)[1] if _OT_BEGIN_SOLUTION in rest else rest
    solution = solution.split(_OT_END_SOLUTION, 1)[0]
    return join_think(reasoning.strip(), solution.strip())


def _aligned(value: Any, i: int) -> Any:
    """Element ``i`` of a per-CoT list column (None past its end), or the value itself when it is one value."""
    if isinstance(value, list | tuple):
        return value[i] if i < len(value) else None
    tolist = getattr(value, "tolist", None)  # numpy arrays from Arrow
    if callable(tolist) and getattr(value, "ndim", 0) == 1:
        items = tolist()
        return items[i] if i < len(items) else None
    return value


def cot_texts(row: Mapping[str, Any], cots: CotMap) -> list[Any]:
    """The row's CoT cells in ``sample_index`` order: each ``text`` column's string, or its list's items."""
    out: list[Any] = []
    for col in cots.text:
        value = lookup(row, col)
        tolist = getattr(value, "tolist", None)
        if callable(tolist) and not isinstance(value, str):
            value = tolist()
        if isinstance(value, list | tuple):
            out.extend(value)
        else:
            out.append(value)
    return out


def cot_samples(row: Mapping[str, Any], problem: Problem, cots: CotMap, source: str) -> tuple[list[Sample], int]:
    """The existing CoTs of one dataset row as Samples of ``problem``: ``(samples, missing)``.

    Each CoT is split as a generated one is (:func:`kubedistill.core.text.split_think`): ``reasoning`` inside
    the think tags, ``final_answer`` from what follows (None for a CoT cut off inside ``<think>``). With a
    ``reasoning`` column the text column is the answer part and ``text`` becomes ``<think>reasoning</think>
    answer``. ``finish_reason`` is the row's when the dataset records one (else None: not recorded, which
    counts as complete). ``missing`` counts CoT cells that are empty or not text (their index stays free)."""
    from kubedistill.core.text import extract_final_answer, split_think, with_reasoning

    teacher = cots.teacher
    if cots.teacher_column:
        label = lookup(row, cots.teacher_column)
        if isinstance(label, str) and label.strip():
            teacher = label.strip()
    reasoning_col = lookup(row, cots.reasoning) if cots.reasoning else None
    finish = lookup(row, cots.finish_reason) if cots.finish_reason else None
    verdicts = lookup(row, cots.correct) if cots.correct else None
    extra = {key: lookup(row, col) for key, col in cots.per_cot.items()}
    out: list[Sample] = []
    missing = 0
    for i, cell in enumerate(cot_texts(row, cots)):
        if not isinstance(cell, str) or not cell.strip():
            missing += 1
            continue
        text = openthoughts_to_think(cell) if cots.markers == "openthoughts" else cell
        if cots.reasoning:
            reasoning = _aligned(reasoning_col, i)
            text = with_reasoning(text, reasoning if isinstance(reasoning, str) and reasoning.strip() else None)
        split = split_think(text)
        metadata: dict[str, Any] = {"imported_from": source}
        if cots.correct:
            verdict = _aligned(verdicts, i)
            if verdict is not None:
                metadata["dataset_correct"] = json_safe(verdict)
        for key, value in extra.items():
            item = _aligned(value, i)
            if item is not None:
                metadata[key] = json_safe(item)
        reason = _aligned(finish, i) if cots.finish_reason else None
        out.append(
            Sample(
                problem_id=problem.id,
                teacher=teacher,
                temperature=cots.temperature,
                sample_index=i,
                text=text,
                reasoning=split.reasoning,
                final_answer=extract_final_answer(split.answer_part) if split.closed else None,
                finish_reason=str(reason) if isinstance(reason, str) and reason else None,
                metadata=metadata,
            )
        )
    return out, missing


def problem_row(row: Any, source: str) -> Problem:
    """A row already in Problem form; ``source`` and ``id`` are filled in when absent."""
    if not isinstance(row, Mapping):
        raise RowError("invalid_record", "row is not a JSON object")
    data = dict(row)
    text = data.get("problem")
    if not isinstance(text, str) or not text.strip():
        raise RowError("missing_problem", "field 'problem' is empty or missing")
    if not data.get("source"):
        data["source"] = source
    if not data.get("id"):
        data["id"] = stable_id(source, text)
    try:
        return Problem.model_validate(data)
    except ValidationError as e:
        raise RowError("invalid_record", validation_message(e)) from None


def _check_columns(
    fields: FieldMap | None, columns: Iterable[str] | None, source: str, cots: CotMap | None = None
) -> None:
    if columns is None:
        return
    have = set(columns)
    wanted = (fields.columns() if fields is not None else []) + (cots.columns() if cots is not None else [])
    missing = [c for c in dict.fromkeys(wanted) if c not in have]
    if missing:
        raise SourceError(
            f"source {source!r}: mapped column(s) {missing} not in the dataset; columns are {sorted(have)}"
        )


PEEK_ROWS = 1000


def peek_columns(path: str | Path) -> set[str] | None:
    """The columns of one local data file, read cheaply: a Parquet file's schema, a CSV header, or the
    union of keys of the first :data:`PEEK_ROWS` rows of a JSON Lines file (plain or gzipped). ``None``
    when the file is of another kind or cannot be read (the stage itself then says why)."""
    import gzip
    import json

    p = Path(path)
    name = p.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            return set(pq.read_schema(p).names)
        if name.endswith(".csv"):
            import csv

            with p.open(newline="", encoding="utf-8-sig") as f:
                return set(next(csv.reader(f), []))
        if name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".json")):
            opener = gzip.open if name.endswith(".gz") else open
            cols: set[str] = set()
            with opener(p, "rt", encoding="utf-8-sig") as f:  # type: ignore[operator]
                n = 0
                for line in f:
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        return None
                    cols.update(row)
                    n += 1
                    if n >= PEEK_ROWS:
                        break
            return cols or None
    except (OSError, ValueError, UnicodeDecodeError, ImportError):
        return None
    return None


def check_source_columns(source: Any, path: str | Path) -> str | None:
    """Whether the columns an hf or file ``source`` maps (``fields``, ``cots``) are in the local file ``path``
    (:func:`peek_columns`); the problem in one line, or ``None`` (also when the file cannot be peeked)."""
    fields, cots = getattr(source, "fields", None), getattr(source, "cots", None)
    if fields is None and cots is None:
        return None
    columns = peek_columns(path)
    if columns is None:
        return None
    try:
        _check_columns(fields, columns, getattr(source, "label", str(path)), cots)
    except SourceError as e:
        where = "" if str(path).lower().endswith((".parquet", ".pq", ".csv")) else f" (first {PEEK_ROWS:,} rows)"
        return f"{e}{where}"
    return None


# ------------------------------------------------------------------------------------------ HF loading

_BUILDERS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "json",
    ".json": "json",
    ".ndjson": "json",
    ".gz": "json",
    ".csv": "csv",
}


def _builder_for(files: list[str]) -> str:
    kinds = set()
    for f in files:
        suffix = Path(f.split("?", 1)[0]).suffix.lower()
        if suffix not in _BUILDERS:
            raise SourceError(f"{f}: unknown file type (use .jsonl/.json/.parquet/.csv)")
        kinds.add(_BUILDERS[suffix])
    if len(kinds) != 1:
        raise SourceError(f"files of different types in one source: {files[:5]}")
    return kinds.pop()


@dataclasses.dataclass
class LoadedRows:
    """Rows of one split, with their count and column names when known (streams may not know)."""

    rows: Iterable[Mapping[str, Any]]
    total: int | None
    columns: list[str] | None


def load_hf_rows(
    *,
    dataset: str | None,
    subset: str | None = None,
    split: str = "train",
    revision: str | None = None,
    data_files: list[str] | None = None,
    path: str | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
    limit: int | None = None,
) -> LoadedRows:
    """Rows of ``split`` of a dataset, through ``datasets``.

    With ``path`` nothing is fetched from the hub: a ``save_to_disk`` directory goes through
    ``load_from_disk``; another directory (a hub snapshot) through ``load_dataset(dir, subset)``, or
    its ``data_files`` when given; a file or glob through the json/parquet/csv builder. Without
    ``path``: ``load_dataset(dataset, subset, split=..., revision=...)``, or with ``data_files`` the
    builder of those files over ``hf://datasets/<dataset>@<revision>/<file>`` (for repos whose loading
    script ``datasets`` no longer runs, such as LiveCodeBench's)."""
    import datasets

    kwargs: dict[str, Any] = {"cache_dir": cache_dir} if cache_dir else {}
    where = path or dataset or "?"
    try:
        if path:
            p = Path(path)
            if p.is_dir() and ((p / "state.json").exists() or (p / "dataset_dict.json").exists()):
                obj = datasets.load_from_disk(str(p))
                if isinstance(obj, datasets.DatasetDict):
                    if split not in obj:
                        raise SourceError(f"{path}: no split {split!r} (splits: {sorted(obj)})")
                    obj = obj[split]
                ds: Any = obj.to_iterable_dataset() if streaming else obj
            elif p.is_dir() and data_files:
                files = [str(p / f) for f in data_files]
                absent = [f for f in files if not Path(f).exists()]
                if absent:
                    raise SourceError(f"{path}: missing data file(s) {absent}")
                ds = datasets.load_dataset(
                    _builder_for(files), data_files={split: files}, split=split, streaming=streaming, **kwargs
                )
            elif p.is_dir():
                ds = datasets.load_dataset(str(p), subset, split=split, streaming=streaming, **kwargs)
            else:
                files = sorted(globlib.glob(path, recursive=True))
                if not files:
                    raise SourceError(f"{path}: no such file(s)")
                ds = datasets.load_dataset(
                    _builder_for(files), data_files={split: files}, split=split, streaming=streaming, **kwargs
                )
        elif dataset and data_files:
            rev = f"@{revision}" if revision else ""
            urls = [f"hf://datasets/{dataset}{rev}/{f}" for f in data_files]
            ds = datasets.load_dataset(
                _builder_for(urls), data_files={split: urls}, split=split, streaming=streaming, **kwargs
            )
        elif dataset:
            ds = datasets.load_dataset(dataset, subset, split=split, revision=revision, streaming=streaming, **kwargs)
        else:
            raise SourceError("neither a hub dataset id nor a local path was given")
    except SourceError:
        raise
    except (ConnectionError, OSError, ValueError, RuntimeError) as e:
        offline = "" if path else " (no network? give `path` to a local copy of the dataset)"
        raise SourceError(f"cannot load {where!r} split {split!r}: {type(e).__name__}: {e}{offline}") from None

    columns = list(ds.column_names) if getattr(ds, "column_names", None) else None
    if isinstance(ds, datasets.Dataset):
        if limit is not None and limit < len(ds):
            ds = ds.select(range(limit))
        return LoadedRows(ds, len(ds), columns)
    if limit is not None:
        ds = ds.take(limit)
    return LoadedRows(ds, limit, columns)


# --------------------------------------------------------------------------------------------- loading


CotSink = Callable[[Problem, Sample], None]


def load_source(
    src: HFSource | FileSource | ReasoningGymSource,
    stats: StageStats,
    where_of: dict[int, str] | None = None,
    cots: CotSink | None = None,
    shard: tuple[int, int] = (0, 1),
    place_of: dict[int, int] | None = None,
) -> list[Problem]:
    """All problems of one source; unusable rows become rejects in ``stats`` (reason per row) and the
    per-source counts go to ``stats.info["sources"][src.label]``. Rows are read in source order.
    ``where_of``, when given, gets ``id(problem) -> "file:line"`` (or the row's place in the source) for
    every problem, so that later steps can say where a row they drop came from. ``cots``, when given,
    receives every existing CoT of a source with a ``cots`` mapping as a :class:`Sample` of its problem, as
    the row is read (so that a caller can spool them to disk: memory does not hold the CoTs); a rejected
    row's CoTs go with it (the row is the reject).

    ``shard`` ``(index, count)``: only the rows whose place in the source (0-based, before ``limit``)
    is ``index`` modulo ``count`` — one task's part of a sharded collect (:func:`kubedistill.data.collect.
    collect_shard_stage`); the counts in ``stats`` are then this shard's, and the shards' counts sum to
    the whole source's. ``place_of``, when given, gets ``id(problem) -> place`` (the row's 0-based place in
    the source): the order a sharded collect's merge puts the shards' problems back in."""
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard {index} of {count}: the index must be in 0..count-1")
    counts = SourceCounts()
    checked = False  # mapped columns checked against the dataset's columns
    rows: Iterable[tuple[str, Any]]
    total: int | None
    if isinstance(src, ReasoningGymSource):
        rows = reasoning_gym_rows(src)
        generated = sum(src.tasks.values())
        total = generated if src.limit is None else min(generated, src.limit)
    elif isinstance(src, HFSource):
        loaded = load_hf_rows(
            dataset=src.dataset,
            subset=src.subset,
            split=src.split,
            revision=src.revision,
            data_files=src.data_files,
            path=src.path,
            streaming=src.streaming,
            cache_dir=src.cache_dir,
            limit=src.limit,
        )
        _check_columns(src.fields, loaded.columns, src.label, src.cots if cots is not None else None)
        checked = loaded.columns is not None
        rows = ((f"{src.label}:row{i}", r) for i, r in enumerate(loaded.rows))
        total = loaded.total
    else:
        rows = _file_rows(src)
        total = None

    fields = src.fields if not isinstance(src, ReasoningGymSource) else None
    cot_map = None if isinstance(src, ReasoningGymSource) or cots is None else src.cots
    if cot_map is not None and fields is None:
        checked = False
    out: list[Problem] = []
    bar = make_bar(total, desc=f"load {src.label}", unit="row")
    try:
        for place, (where, row) in enumerate(rows):
            if src.limit is not None and place >= src.limit:
                break
            bar.update(1)
            if place % count != index:
                continue
            counts.rows += 1
            try:
                if isinstance(row, Problem):
                    p = row
                elif isinstance(row, BadRow):
                    raise RowError(row.reason, row.detail)
                else:
                    if not checked and isinstance(row, Mapping):
                        _check_columns(fields, row.keys(), src.label, cot_map)
                        checked = True
                    if fields is None:
                        own = {c.split(".", 1)[0] for c in cot_map.columns()} if cot_map is not None else set()
                        bare = {k: v for k, v in row.items() if k not in own} if isinstance(row, Mapping) else row
                        p = problem_row(bare, src.label)
                    else:
                        p = map_row(row, fields, src.label, counts)
                if len(p.problem.strip()) < src.min_problem_chars:
                    raise RowError("too_short", f"problem text shorter than {src.min_problem_chars} characters")
                imported: list[Sample] = []
                if cot_map is not None and isinstance(row, Mapping):
                    try:
                        imported, missing = cot_samples(row, p, cot_map, src.label)
                    except ValidationError as e:
                        raise RowError("invalid_cot", validation_message(e)) from None
                    counts.cots_missing += missing
            except RowError as e:
                counts.rejected[e.reason] = counts.rejected.get(e.reason, 0) + 1
                record = row.raw if isinstance(row, BadRow) else row
                raw_b64 = row.raw_b64 if isinstance(row, BadRow) else None
                stats.reject(e.reason, f"source {src.label}: {e}", record=preview(record), where=where, raw_b64=raw_b64)
                continue
            out.append(p)
            if cots is not None:
                for sample in imported:
                    cots(p, sample)
                counts.cots += len(imported)
            if where_of is not None:
                where_of[id(p)] = where
            if place_of is not None:
                place_of[id(p)] = place
    finally:
        bar.close()
    counts.loaded = len(out)
    stats.info.setdefault("sources", {})[src.label] = counts.as_dict()
    return out


@dataclasses.dataclass
class BadRow:
    """A row that could not be read or converted, carried to :func:`load_source` to become a reject."""

    reason: str
    detail: str
    raw: Any
    raw_b64: str | None = None


def _file_rows(src: FileSource) -> Iterator[tuple[str, Any]]:
    """The rows of a file source's files, in order. A file that cannot be read at all — none matches,
    a directory, an empty file, another format, not UTF-8 text — is a :class:`SourceError` (exit 2); a
    row that cannot be read is a :class:`BadRow` with its reason and its raw text (and bytes)."""
    from kubedistill.core.records import RecordsError, row_reject

    files = sorted(globlib.glob(src.path, recursive=True)) if globlib.has_magic(src.path) else [src.path]
    if not files or (not globlib.has_magic(src.path) and not Path(src.path).exists()):
        raise SourceError(f"source {src.label!r}: {src.path}: no such file(s)")
    for f in files:
        try:
            for row in iter_rows(f, allow_empty=False):
                bad = row_reject(row, STAGE_OF_SOURCES)
                if bad is not None:
                    yield row.where, BadRow(bad.reason, bad.detail, bad.record, bad.raw_b64)
                else:
                    yield row.where, row.value
        except RecordsError as e:
            raise SourceError(f"source {src.label!r}: {e}") from None


def _task_id_part(src: ReasoningGymSource, task: str) -> str:
    extra = src.task_config.get(task)
    if not extra:
        return f"{task}-{src.seed}"
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{task}-{src.seed}-{digest}"


def reasoning_gym_problem(
    task: str, index: int, entry: Mapping[str, Any], *, id_part: str, source: str, domain: str
) -> Problem:
    """One reasoning-gym entry → a Problem with ``metadata["reasoning_gym"] = {"task", "entry"}``."""
    question = entry.get("question")
    if not isinstance(question, str) or not question.strip():
        raise RowError("missing_problem", f"reasoning-gym {task}[{index}] has no question")
    answer = entry.get("answer")
    return Problem(
        id=f"rg-{id_part}-{index}",
        problem=question,
        answer=None if answer is None else str(answer),
        domain=domain,  # type: ignore[arg-type]
        source=source,
        metadata={"reasoning_gym": {"task": task, "entry": json_safe(dict(entry))}},
    )


def reasoning_gym_rows(src: ReasoningGymSource) -> Iterator[tuple[str, Problem | BadRow]]:
    """``(where, Problem)`` for every generated entry, in task order then index order; an entry
    without a question comes as a :class:`BadRow`. Unknown tasks or bad task options raise."""
    try:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise SourceError(f"reasoning_gym is not installed: {e}") from None
    for task in src.tasks:
        if task not in DATASETS:
            close = difflib.get_close_matches(task, list(DATASETS), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise SourceError(f"source {src.label!r}: unknown reasoning-gym task {task!r}{hint}")
    for task, size in src.tasks.items():
        try:
            ds = reasoning_gym.create_dataset(task, size=size, seed=src.seed, **src.task_config.get(task, {}))
        except (TypeError, ValueError, AssertionError) as e:
            raise SourceError(f"source {src.label!r}: reasoning-gym task {task!r}: {e}") from None
        id_part = _task_id_part(src, task)
        for i in range(size):
            where = f"{src.label}:{task}[{i}]"
            try:
                yield where, reasoning_gym_problem(task, i, ds[i], id_part=id_part, source=src.label, domain=src.domain)
            except RowError as e:
                yield where, BadRow(e.reason, str(e), {"task": task, "index": i})
