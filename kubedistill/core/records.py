"""The one record schema every stage reads and writes (documented in docs/data.md).

* :class:`Problem` — a question with its reference (answer, code tests or choices).
* :class:`Sample` — one chain of thought (CoT) produced by a teacher for a problem, plus the labels
  later stages add (correctness, difficulty, RV/CD scores, rewrite provenance).
* :class:`Reject` — a row a stage refused, with the reason; stages never drop silently.
* :class:`StageStats` — in / out / dropped-by-reason counts and metrics of one stage run.

JSONL and Parquet are read and written by :func:`read_records` / :func:`write_records`. Invalid rows
(bad JSON, missing fields, wrong types, empty problem) become :class:`Reject` rows with a reason and
the rest is processed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubedistill.core.errors import BadInputError

SCHEMA_VERSION = 1

Domain = Literal["math", "code", "science", "general"]
Difficulty = Literal["easy", "medium", "hard"]


class _Record(BaseModel):
    """Base of all records: unknown keys are kept in ``metadata`` (nothing lost), never dropped."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys_to_metadata(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        extra = {k: v for k, v in data.items() if k not in known}
        if not extra:
            return data
        kept = {k: v for k, v in data.items() if k in known}
        meta = dict(kept.get("metadata") or {})
        for k, v in extra.items():
            meta.setdefault(k, v)
        kept["metadata"] = meta
        return kept


# --------------------------------------------------------------------------------------------- Problem


class FunctionalTests(BaseModel):
    """HumanEval-style tests: ``code`` defines ``check(candidate)``; the program defines ``entry_point``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["functional"] = "functional"
    code: str = Field(min_length=1)
    entry_point: str = Field(min_length=1)


class StdioCase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str
    output: str


class StdioTests(BaseModel):
    """LiveCodeBench-style tests: the program reads ``input`` on stdin and must print ``output``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["stdio"] = "stdio"
    cases: list[StdioCase] = Field(min_length=1)


CodeTests = Annotated[FunctionalTests | StdioTests, Field(discriminator="kind")]


class Problem(_Record):
    """A problem with its reference.

    ``answer`` is the reference final answer (math, science, general; for multiple choice the letter);
    ``tests`` holds code tests; ``choices`` the options of a multiple-choice question (A, B, ...).
    """

    id: str = Field(min_length=1)
    problem: str
    answer: str | None = None
    domain: Domain = "math"
    source: str = Field(min_length=1)
    tests: CodeTests | None = None
    choices: list[str] | None = None

    @field_validator("problem")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("problem text is empty")
        return v

    @field_validator("answer", mode="before")
    @classmethod
    def _answer_to_str(cls, v: Any) -> Any:
        # Numeric answers are common in datasets; keep them exactly as text.
        if isinstance(v, bool):
            return v
        if isinstance(v, int | float):
            return str(v)
        return v

    @field_validator("choices")
    @classmethod
    def _choices(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) < 2:
            raise ValueError("a multiple-choice problem needs at least 2 choices")
        return v


# ---------------------------------------------------------------------------------------------- Sample


class Usage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Judgement(BaseModel):
    """Provenance of a label set by an LLM judge or a verifier: who, with which prompt, and what it said."""

    model_config = ConfigDict(extra="forbid")
    by: str  # judge model name, or the verifier ("math-verify", "sandbox", "choice")
    prompt: str | None = None  # prompt id@version for LLM judges
    raw: str | None = None  # the judge's raw text (kept for audit)
    attempts: int = 1
    detail: str | None = None


class Sample(_Record):
    """One chain of thought for one problem by one teacher at one temperature.

    ``text`` is the teacher's full output; ``reasoning`` the part inside ``<think>…</think>`` (or the
    server's separate reasoning field); ``final_answer`` what follows it, reduced to the answer where
    one can be found. ``finish_reason == "length"`` marks a truncated CoT — it is kept, marked, and
    never counts as complete.
    """

    id: str = Field(min_length=1)
    problem_id: str = Field(min_length=1)
    teacher: str = Field(min_length=1)
    temperature: float = Field(ge=0.0)
    sample_index: int = Field(ge=0)
    text: str
    reasoning: str = ""
    final_answer: str | None = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    correct: bool | None = None
    difficulty: Difficulty | None = None
    rv: int | None = Field(default=None, ge=0, le=9)
    cd: int | None = Field(default=None, ge=0, le=9)
    rewritten_from: str | None = None
    judgements: dict[str, Judgement] = Field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @staticmethod
    def make_id(problem_id: str, teacher: str, temperature: float, sample_index: int) -> str:
        return f"{problem_id}::{teacher}::t{temperature:g}::{sample_index}"


# ------------------------------------------------------------------------------------ PreferencePair


class PreferencePair(_Record):
    """A DPO pair for one problem: ``chosen`` is a verified CoT, ``rejected`` a corrupted copy of it.

    Both are the assistant turn as the student should (not) produce it:
    ``<think>\n{reasoning}\n</think>\n\n{answer}``; the prompt is rebuilt from the problem at training
    time, exactly as for SFT. ``corruption`` names what was changed (``number``, ``drop_step``,
    ``wrong_conclusion``, ...), ``magnitude`` how much, in [0, 1] (small = subtle = a hard pair);
    ``beta`` is an optional per-pair DPO beta (CogPO-style), None = the trainer's beta."""

    id: str = Field(min_length=1)
    problem_id: str = Field(min_length=1)
    chosen_sample_id: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    corruption: str = Field(min_length=1)
    magnitude: float = Field(ge=0.0, le=1.0)
    beta: float | None = Field(default=None, gt=0.0)


# --------------------------------------------------------------------------------------- rejects, stats


class Reject(BaseModel):
    """A row a stage refused. ``where`` points at the input (file:line) when there is one."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    reason: str
    detail: str = ""
    where: str | None = None
    record: Any = None


class StageStats(BaseModel):
    """What one stage run did: counts in and out, drops by reason, and stage metrics."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    n_in: int = 0
    n_out: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    elapsed_s: float = 0.0
    rejects: list[Reject] = Field(default_factory=list, exclude=True)

    def reject(self, reason: str, detail: str = "", record: Any = None, where: str | None = None) -> None:
        """Record one dropped row, with its reason (counted in ``dropped`` and kept in ``rejects``)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.rejects.append(Reject(stage=self.stage, reason=reason, detail=detail, record=record, where=where))

    def add_rejects(self, rejects: Iterable[Reject]) -> None:
        for r in rejects:
            self.dropped[r.reason] = self.dropped.get(r.reason, 0) + 1
            self.rejects.append(r)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def summary_line(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        return f"{self.stage}: in={self.n_in} out={self.n_out} dropped: {drops}"


class Timer:
    """``with Timer() as t: ...; t.elapsed`` — wall time of a block."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.elapsed = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start


# ------------------------------------------------------------------------------------------------- IO

R = TypeVar("R", bound=BaseModel)

_JSON_COLUMNS_KEY = b"kubedistill.json_columns"


class RecordsError(BadInputError):
    """A records file cannot be read at all (missing, unknown format). Bad *rows* become rejects instead."""


def _format(path: Path) -> Literal["jsonl", "parquet"]:
    name = path.name.lower()
    if name.endswith((".jsonl", ".json", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if "." not in name:
        return "jsonl"  # KFP artifact paths have no suffix: our artifacts are JSONL
    raise RecordsError(f"{path}: unknown records format (use .jsonl or .parquet)")


def validation_message(err: ValidationError) -> str:
    """A one-line summary of a pydantic error: ``field 'x': message; field 'y': message``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "record"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"field '{loc}': {msg}")
    return "; ".join(parts)


def iter_raw_rows(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any, str | None]]:
    """Yield ``(where, row, error)`` for every row of a JSONL or Parquet file.

    ``row`` is the parsed object (``None`` when the line is not JSON, then ``error`` says why)."""
    p = Path(path)
    if not p.exists():
        raise RecordsError(f"{p}: no such file")
    fmt = _format(p)
    if fmt == "jsonl":
        import gzip

        opener = gzip.open if p.name.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{p.name}:{lineno}"
                try:
                    yield where, json.loads(line), None
                except json.JSONDecodeError as e:
                    yield where, line.rstrip("\n")[:2000], f"invalid JSON: {e.msg} at column {e.colno}"
        return
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    meta = table.schema.metadata or {}
    json_cols = set(json.loads(meta[_JSON_COLUMNS_KEY])) if _JSON_COLUMNS_KEY in meta else set()
    for i, row in enumerate(table.to_pylist()):
        for c in json_cols:
            if isinstance(row.get(c), str):
                row[c] = json.loads(row[c])
        yield f"{p.name}:row{i}", row, None


def read_records(
    path: str | os.PathLike[str], cls: type[R], *, stage: str = "read", stats: StageStats | None = None
) -> list[R]:
    """Read a JSONL/Parquet file of ``cls`` records. Invalid rows go to ``stats`` as rejects (or raise
    :class:`RecordsError` listing the first problems when no ``stats`` is given)."""
    out: list[R] = []
    rejects: list[Reject] = []
    for where, row, err in iter_raw_rows(path):
        if err is not None:
            rejects.append(Reject(stage=stage, reason="invalid_json", detail=err, where=where, record=row))
            continue
        if not isinstance(row, dict):
            rejects.append(Reject(stage=stage, reason="invalid_record", detail="row is not a JSON object", where=where))
            continue
        try:
            out.append(cls.model_validate(row))
        except ValidationError as e:
            rejects.append(
                Reject(stage=stage, reason="invalid_record", detail=validation_message(e), where=where, record=row)
            )
    if stats is not None:
        stats.add_rejects(rejects)
    elif rejects:
        first = "; ".join(f"{r.where}: {r.detail}" for r in rejects[:3])
        raise RecordsError(f"{path}: {len(rejects)} invalid row(s): {first}")
    return out


def _atomic_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> int:
    """Write rows (pydantic models or JSON-able objects) as JSONL, atomically. Returns the row count."""
    p = Path(path)
    tmp = _atomic_path(p)
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            if isinstance(r, BaseModel):
                f.write(r.model_dump_json())
            else:
                f.write(json.dumps(r, ensure_ascii=False, default=str))
            f.write("\n")
            n += 1
    os.replace(tmp, p)
    return n


def write_records(path: str | os.PathLike[str], records: Sequence[BaseModel]) -> int:
    """Write records as JSONL or Parquet (by suffix), atomically: a reader never sees half a file."""
    p = Path(path)
    if _format(p) == "jsonl":
        return write_jsonl(p, records)
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [r.model_dump(mode="json") for r in records]
    json_cols = sorted({k for row in rows for k, v in row.items() if isinstance(v, dict | list)})
    for row in rows:
        for c in json_cols:
            if c in row:
                row[c] = json.dumps(row[c], ensure_ascii=False)
    table = pa.Table.from_pylist(rows)
    table = table.replace_schema_metadata({_JSON_COLUMNS_KEY: json.dumps(json_cols).encode()})
    tmp = _atomic_path(p)
    pq.write_table(table, tmp)
    os.replace(tmp, p)
    return len(rows)


def write_rejects(path: str | os.PathLike[str], rejects: Iterable[Reject]) -> int:
    return write_jsonl(path, rejects)
