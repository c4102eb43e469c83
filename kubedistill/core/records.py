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
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from kubedistill.core.errors import BadInputError

SCHEMA_VERSION = 1

Domain = Literal["math", "code", "science", "general"]
#: Finish reasons that mean "the model ended its answer itself" (OpenAI / vLLM: ``stop``; TGI's
#: ``eos_token`` and ``stop_sequence``). Anything else — ``length``, ``content_filter``, ``tool_calls``,
#: ``abort`` — is not a complete answer.
COMPLETE_FINISH_REASONS = frozenset({"stop", "eos_token", "stop_sequence"})
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

    id: str = Field(default="", description="derived from the key fields when absent or empty")
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

    @model_validator(mode="after")
    def _id_from_key(self) -> Sample:
        expected = self.expected_id()
        if not self.id:
            self.id = expected
        elif self.id != expected:
            form = "<rewritten_from>::rw" if self.rewritten_from else "problem_id::teacher::t<temperature>::<index>"
            raise ValueError(
                f"id {self.id!r} does not match its key fields: expected {expected!r} ({form}); "
                "leave the id out to have it derived"
            )
        return self

    def expected_id(self) -> str:
        """The id the key fields define: ``problem_id::teacher::t<temperature>::<sample_index>``, or
        ``<rewritten_from>::rw`` for a rewrite."""
        if self.rewritten_from:
            return f"{self.rewritten_from}::rw"
        return self.make_id(self.problem_id, self.teacher, self.temperature, self.sample_index)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def complete(self) -> bool:
        """Whether this CoT is a finished answer: some text, and a finish reason that says the model
        stopped by itself (``stop`` and its synonyms; ``None`` = not recorded, as in imported datasets).
        ``length`` (truncated), ``content_filter`` and the like are not complete."""
        return bool(self.text.strip()) and (self.finish_reason is None or self.finish_reason in COMPLETE_FINISH_REASONS)

    @staticmethod
    def make_id(problem_id: str, teacher: str, temperature: float, sample_index: int) -> str:
        """``problem_id::teacher::t<temperature>::<sample_index>`` (temperature as ``%g``: ``t0.6``, ``t1``)."""
        return f"{problem_id}::{teacher}::t{temperature:g}::{sample_index}"


def cot_source(sample: Sample) -> str:
    """Where a CoT came from, for per-source funnels and re-sampling: the dataset source it was imported
    from (``metadata["imported_from"]``, set by collect), else its teacher's label."""
    src = sample.metadata.get("imported_from")
    return str(src) if src else sample.teacher


class SourceFunnel:
    """Per-source counts of a CoT stage: ``add_in`` / ``add_out`` as samples pass (streaming-friendly),
    then :meth:`into` writes metrics ``source.<src>.n_in`` / ``source.<src>.n_out`` (summed over shards)."""

    def __init__(self) -> None:
        self.n_in: dict[str, int] = {}
        self.n_out: dict[str, int] = {}

    def add_in(self, sample: Sample) -> None:
        src = cot_source(sample)
        self.n_in[src] = self.n_in.get(src, 0) + 1

    def add_out(self, sample: Sample) -> None:
        src = cot_source(sample)
        self.n_out[src] = self.n_out.get(src, 0) + 1

    def into(self, stats: StageStats) -> None:
        for src in sorted(set(self.n_in) | set(self.n_out)):
            stats.metrics[f"source.{src}.n_in"] = float(self.n_in.get(src, 0))
            stats.metrics[f"source.{src}.n_out"] = float(self.n_out.get(src, 0))

    @classmethod
    def of(cls, stats: StageStats, inputs: Iterable[Sample], outputs: Iterable[Sample]) -> None:
        f = cls()
        for s in inputs:
            f.add_in(s)
        for s in outputs:
            f.add_out(s)
        f.into(stats)


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
    raw_b64: str | None = None  # the row's exact bytes (base64) when they are not UTF-8 text

    def to_json(self) -> dict[str, Any]:
        """The reject as written to a rejects file (``raw_b64`` only when there is one)."""
        data = self.model_dump(mode="json")
        if data.get("raw_b64") is None:
            data.pop("raw_b64", None)
        return data


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
    _sink: Any = PrivateAttr(default=None)

    def stream_rejects(self, sink: Callable[[Reject], None] | None) -> None:
        """From now on, hand each reject to ``sink`` (a streaming stage's rejects file) instead of keeping
        it in ``rejects``: memory does not grow with the rejects. Counts in ``dropped`` are kept either way."""
        self._sink = sink

    def reject(
        self, reason: str, detail: str = "", record: Any = None, where: str | None = None, raw_b64: str | None = None
    ) -> None:
        """Record one dropped row, with its reason (counted in ``dropped`` and kept in ``rejects``, or
        handed to the sink of :meth:`stream_rejects`); ``record`` is the row as it was, ``raw_b64`` its
        bytes when they are not UTF-8 text."""
        self.add_rejects(
            [Reject(stage=self.stage, reason=reason, detail=detail, record=record, where=where, raw_b64=raw_b64)]
        )

    def add_rejects(self, rejects: Iterable[Reject]) -> None:
        for r in rejects:
            self.dropped[r.reason] = self.dropped.get(r.reason, 0) + 1
            if self._sink is not None:
                self._sink(r)
            else:
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
_MAX_DOCUMENT_PROBE = 64 * 1024 * 1024  # a pretty-printed JSON file up to this size is recognised as one


class RecordsError(BadInputError):
    """A records file cannot be read at all (missing, a directory, empty, another format, not UTF-8 text,
    one JSON document instead of JSON Lines). Bad *rows* become rejects instead."""


def _format(path: Path) -> Literal["jsonl", "parquet"]:
    name = path.name.lower()
    if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if "." not in name:
        return "jsonl"  # KFP artifact paths have no suffix: our artifacts are JSONL
    raise RecordsError(f"{path}: unknown records format (use .jsonl, .jsonl.gz or .parquet)")


def validation_message(err: ValidationError) -> str:
    """A one-line summary of a pydantic error: ``field 'x': message; field 'y': message``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"field '{loc}': {msg}" if loc else msg)
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class RawRow:
    """One row of a records file as it was read.

    ``value`` is the parsed JSON value when the row parsed (an object, or a list / number / string /
    null that a records reader refuses); ``reason`` and ``error`` say why a row cannot be used
    (``invalid_encoding``: not UTF-8; ``invalid_json``: not JSON), and then ``text`` holds the line as
    text (undecodable bytes as ``\\xNN``) and ``raw_b64`` its exact bytes (for ``invalid_encoding``), so
    that the row can be fixed and fed again."""

    where: str
    value: Any = None
    reason: str | None = None
    error: str | None = None
    text: str | None = None
    raw_b64: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _kind_of_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return type(v).__name__


def iter_rows(path: str | os.PathLike[str], *, allow_empty: bool = True) -> Iterator[RawRow]:
    """Every row of a JSONL (optionally gzipped) or Parquet file, streamed (memory does not grow with the
    file), as :class:`RawRow`.

    A row that is not UTF-8 or not JSON comes back with its ``reason`` and its raw text; the rest of the
    file is read on. A UTF-8 byte-order mark at the start is dropped; blank lines are skipped. The file
    as a whole is checked first, and :class:`RecordsError` (one line, exit 2) is raised for a missing
    path, a directory, another kind of file under the name (gzip, zip, Parquet, UTF-16, binary), one
    JSON document (a pretty-printed array or object, or an array of objects on one line) where JSON Lines
    are expected, a corrupt Parquet or gzip file, and — unless ``allow_empty`` — a file with no rows."""
    from kubedistill.core.files import check_file

    p = check_file(path, what="records file", error=RecordsError)
    fmt = _format(p)
    n = 0
    rows = _jsonl_rows(p) if fmt == "jsonl" else _parquet_rows(p)
    for row in rows:
        n += 1
        yield row
    if n == 0 and not allow_empty:
        raise RecordsError(f"{p}: the file is empty (no rows)")


def _open_jsonl(p: Path) -> Any:
    import gzip

    from kubedistill.core.files import sniff

    with open(p, "rb") as f:
        head = f.read(4096)
    kind = sniff(head)
    gz = p.name.lower().endswith(".gz")
    if gz:
        if kind != "a gzip file":
            raise RecordsError(f"{p}: is not a gzip file (name it without .gz)" if kind is None else f"{p}: is {kind}")
        try:
            f = gzip.open(p, "rb")  # noqa: SIM115 - closed by the caller
            inner = sniff(f.peek(4096)[:4096] if hasattr(f, "peek") else b"")
        except (OSError, EOFError) as e:
            raise RecordsError(f"{p}: a corrupt gzip file ({e})") from None
        if inner is not None:
            f.close()
            raise RecordsError(f"{p}: holds {inner}, not JSON Lines")
        return f
    if kind == "a gzip file":
        raise RecordsError(f"{p}: is a gzip file: name it .jsonl.gz")
    if kind == "a Parquet file":
        raise RecordsError(f"{p}: is a Parquet file: name it .parquet")
    if kind is not None:
        raise RecordsError(f"{p}: is {kind}, not JSON Lines (UTF-8 text, one JSON object per line)")
    return open(p, "rb")


class _Lines:
    """The lines of a binary file with their numbers, and a push-back (for looking ahead)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.n = 0
        self.back: list[bytes] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> bytes:
        line = self.back.pop() if self.back else next(self.f)
        self.n += 1
        return line

    def push(self, *lines: bytes) -> None:
        self.back.extend(reversed(lines))
        self.n -= len(lines)


def _jsonl_rows(p: Path) -> Iterator[RawRow]:
    import base64

    from kubedistill.core.files import UTF8_BOM, utf8_error_message

    f = _open_jsonl(p)
    lines = _Lines(f)
    first = True  # no row read yet
    try:
        for raw in lines:
            lineno = lines.n
            if lineno == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            where = f"{p.name}:{lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                first = False
                yield RawRow(
                    where,
                    reason="invalid_encoding",
                    error=utf8_error_message(raw, e, line=lineno),
                    text=raw.decode("utf-8", "backslashreplace"),
                    raw_b64=base64.b64encode(raw).decode("ascii"),
                )
                continue
            try:
                value = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as e:
                if first and text.lstrip()[:1] in ("[", "{"):
                    rest = f.read(_MAX_DOCUMENT_PROBE + 1)
                    if len(rest) > _MAX_DOCUMENT_PROBE:
                        rest += f.readline()  # finish the line we stopped in
                    else:
                        _refuse_json_document(p, raw, rest)
                    lines.push(*rest.splitlines(keepends=True))
                    lines.n = lineno
                first = False
                yield _json_reject(where, text, e)
                continue
            if first and isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
                ahead = _next_nonblank(lines)
                if ahead is None:
                    raise RecordsError(
                        f"{p}: holds one JSON array of {len(value)} objects, not JSON Lines "
                        f"(write one object per line, e.g. jq -c '.[]' {p.name})"
                    )
                lines.push(ahead)
            first = False
            yield RawRow(where, value=value, text=None if isinstance(value, dict) else text)
    except (OSError, EOFError) as e:  # a gzip stream that ends early, a read error
        raise RecordsError(f"{p}: cannot be read to the end ({type(e).__name__}: {e})") from None
    finally:
        f.close()


def _next_nonblank(lines: _Lines) -> bytes | None:
    for raw in lines:
        if raw.strip():
            return raw
    return None


def _json_reject(where: str, text: str, e: Exception) -> RawRow:
    if isinstance(e, json.JSONDecodeError):
        why = f"invalid JSON: {e.msg} (column {e.colno})"  # a message may end in "at" ("... starting at")
    else:
        why = "invalid JSON: nested too deeply"
    return RawRow(where, reason="invalid_json", error=why, text=text)


def _refuse_json_document(p: Path, first: bytes, rest: bytes) -> None:
    """Raise :class:`RecordsError` when ``first + rest`` is one JSON document (a pretty-printed file)."""
    if len(rest) > _MAX_DOCUMENT_PROBE:
        return
    try:
        doc = json.loads((first + b"\n" + rest).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return
    what = f"an array of {len(doc)} items" if isinstance(doc, list) else "an object"
    raise RecordsError(
        f"{p}: is one JSON document ({what}, spread over several lines), not JSON Lines "
        f"(write one object per line, e.g. jq -c '.[]' {p.name})"
    )


def _parquet_rows(p: Path) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise RecordsError(f"{p}: is not a readable Parquet file ({str(e).splitlines()[0][:200]})") from None
    meta = pf.schema_arrow.metadata or {}
    try:
        json_cols = set(json.loads(meta[_JSON_COLUMNS_KEY])) if _JSON_COLUMNS_KEY in meta else set()
    except (json.JSONDecodeError, TypeError):
        json_cols = set()
    i = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                where = f"{p.name}:row{i}"
                i += 1
                bad = None
                for c in json_cols:
                    if isinstance(row.get(c), str):
                        try:
                            row[c] = json.loads(row[c])
                        except json.JSONDecodeError as e:
                            bad = f"invalid JSON in column {c!r}: {e.msg} (character {e.colno})"
                            break
                if bad is not None:
                    yield RawRow(where, reason="invalid_json", error=bad, text=json.dumps(row, default=str))
                else:
                    yield RawRow(where, value=row)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise RecordsError(f"{p}: a corrupt Parquet file ({str(e).splitlines()[0][:200]})") from None


def iter_raw_rows(path: str | os.PathLike[str], *, allow_empty: bool = True) -> Iterator[tuple[str, Any, str | None]]:
    """``(where, row, error)`` for every row (see :func:`iter_rows`): ``row`` is the parsed value, or the
    line's text when it could not be read (then ``error`` says why)."""
    for r in iter_rows(path, allow_empty=allow_empty):
        yield r.where, (r.value if r.ok else r.text), r.error


def row_reject(row: RawRow, stage: str) -> Reject | None:
    """The reject of a row that is not a JSON object (or could not be read at all), keeping the row as
    it was; None for an object row."""
    if not row.ok:
        return Reject(
            stage=stage,
            reason=row.reason or "invalid_json",
            detail=row.error or "",
            where=row.where,
            record=row.text,
            raw_b64=row.raw_b64,
        )
    if not isinstance(row.value, dict):
        return Reject(
            stage=stage,
            reason="invalid_record",
            detail=f"row is {_kind_of_value(row.value)}, not a JSON object",
            where=row.where,
            record=row.text if row.text is not None else json.dumps(row.value, ensure_ascii=False),
        )
    return None


def _h64(data: bytes) -> int:
    """A 64-bit blake2b hash of ``data`` (an id, a record's JSON)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class _SeenIds:
    """The ids already read from one file, as 64-bit hashes, each with the row's ordinal (40 bits) and a
    24-bit digest of its record (whether a repeat is the same record: wrong once in ~16M different
    records): 16 bytes an id once settled (~0.1 KiB in a Python dict of ints).

    New ids go to a small dict; when it holds more than ``max(8192, settled / 16)`` ids they are sorted and
    inserted into two sorted numpy columns (key; ordinal and digest), one column at a time (a merge holds
    one more column: ~24 bytes an id at its peak), and a bit filter of 16-32 bits a key marks them. A
    lookup is a dict probe and a bit test; a binary search (~3 µs) only where the bit is set (a repeat, or
    ~6 % of new ids).

    Our own rather than a library's set: what it is for is resident memory that does not grow with the
    input, and ``benchmarks/cot_stages_memory.py --sizes 20000 200000`` shows it (verify +8 MiB for
    +180,000 CoTs, +70 MiB with a dict of ints; docs/recipes.md, *Scale*)."""

    def __init__(self) -> None:
        self.recent: dict[int, int] = {}  # hash of the id -> (ordinal << 24) | 24-bit digest
        self.keys: Any = None  # numpy uint64 columns, sorted by key (None until the first merge)
        self.meta: Any = None
        self.bits: Any = memoryview(b"")  # a filter over the settled keys: bit (key & mask) set for each
        self.mask = 0

    def get(self, key: int) -> tuple[int, int] | None:
        """``(ordinal, 24-bit digest)`` of the id whose hash is ``key``, or None when it was not read yet."""
        v = self.recent.get(key)
        bit = key & self.mask
        if v is None and self.keys is not None and self.bits[bit >> 3] & (1 << (bit & 7)):
            import numpy as np

            i = int(np.searchsorted(self.keys, np.uint64(key)))
            if i < len(self.keys) and int(self.keys[i]) == key:
                v = int(self.meta[i])
        return None if v is None else (v >> 24, v & 0xFFFFFF)

    def add(self, key: int, ordinal: int, digest: int) -> None:
        """Note ``key`` as read at row ``ordinal`` (< 2**40) with the record's ``digest`` (64-bit; 24 bits kept)."""
        self.recent[key] = (ordinal << 24) | (digest & 0xFFFFFF)
        if len(self.recent) > max(8192, 0 if self.keys is None else len(self.keys) // 16):
            self._merge()

    def _merge(self) -> None:
        import numpy as np

        keys = np.fromiter(self.recent.keys(), dtype=np.uint64, count=len(self.recent))
        meta = np.fromiter(self.recent.values(), dtype=np.uint64, count=len(self.recent))
        self.recent = {}
        order = np.argsort(keys)
        keys, meta = keys[order], meta[order]
        if self.keys is None:
            self.keys, self.meta = keys, meta
        else:
            at = np.searchsorted(self.keys, keys)
            self.keys = np.insert(self.keys, at, keys)
            self.meta = np.insert(self.meta, at, meta)
        n_bits = 1 << max(16, (16 * len(self.keys) - 1).bit_length())  # >= 16 bits a key: ~6 % false hits
        if n_bits != self.mask + 1:  # (re)built at each doubling, else the new keys marked
            self.mask, self.bits, keys = n_bits - 1, memoryview(np.zeros(n_bits // 8, dtype=np.uint8)), self.keys
        bit = keys & np.uint64(self.mask)
        np.bitwise_or.at(
            np.asarray(self.bits),
            (bit >> np.uint64(3)).astype(np.intp),
            np.left_shift(1, bit & np.uint64(7)).astype(np.uint8),
        )


def iter_records(
    path: str | os.PathLike[str],
    cls: type[R],
    *,
    stage: str = "read",
    allow_empty: bool = True,
    unique_ids: bool = True,
) -> Iterator[R | Reject]:
    """The rows of a records file as ``cls`` records, streamed; every row that cannot be one comes back as
    a :class:`Reject` in its place, with the row as it was (``invalid_encoding``, ``invalid_json``,
    ``invalid_record`` — not an object, a missing or wrong field, a Sample id that contradicts its key
    fields — and, with ``unique_ids``, ``duplicate_id``: an id already read from this file; the first
    one is kept). Raises :class:`RecordsError` for a file that cannot be read at all (see :func:`iter_rows`).

    Memory: the ids already read are kept as 64-bit hashes with the row's ordinal and a digest of the
    record, settled into sorted numpy columns (:class:`_SeenIds`: ~16 bytes a record; the id and location
    strings took ~0.45 KB and made a 200,000-CoT verify grow by 96 MiB). Where the first copy of a repeated
    id was is looked up only when a repeat is met (one more pass over the rows read so far, in files that
    have repeats)."""
    for _, item in _records_where(path, cls, stage=stage, allow_empty=allow_empty, unique_ids=unique_ids):
        yield item


def _records_where(
    path: str | os.PathLike[str],
    cls: type[R],
    *,
    stage: str,
    allow_empty: bool,
    unique_ids: bool,
) -> Iterator[tuple[str, R | Reject]]:
    """:func:`iter_records` with each row's location (``name:line`` in JSONL, ``name:row N`` in Parquet)."""
    seen = _SeenIds()
    wheres: list[str] | None = None  # every row's location, built at the first repeat
    ordinal = -1
    for row in iter_rows(path, allow_empty=allow_empty):
        ordinal += 1
        if wheres is not None:
            wheres.append(row.where)
        bad = row_reject(row, stage)
        if bad is not None:
            yield row.where, bad
            continue
        try:
            rec = cls.model_validate(row.value)
        except ValidationError as e:
            yield (
                row.where,
                Reject(
                    stage=stage,
                    reason="invalid_record",
                    detail=validation_message(e),
                    where=row.where,
                    record=row.value,
                ),
            )
            continue
        rid = getattr(rec, "id", None)
        if unique_ids and isinstance(rid, str):
            key, digest = _h64(rid.encode("utf-8")), _h64(rec.model_dump_json().encode("utf-8"))
            prev = seen.get(key)
            if prev is not None:
                if wheres is None:  # the first repeat: the locations of the rows read so far, once
                    rows = iter_rows(path, allow_empty=allow_empty)
                    wheres = [r.where for _, r in zip(range(ordinal + 1), rows, strict=False)]
                first_where = wheres[prev[0]]
                same = (
                    "the same record" if prev[1] == digest & 0xFFFFFF else "a different record; the first one is kept"
                )
                yield (
                    row.where,
                    Reject(
                        stage=stage,
                        reason="duplicate_id",
                        detail=f"id {rid!r} was already read at {first_where} ({same})",
                        where=row.where,
                        record=row.value,
                    ),
                )
                continue
            seen.add(key, ordinal, digest)
        yield row.where, rec


def read_records(
    path: str | os.PathLike[str],
    cls: type[R],
    *,
    stage: str = "read",
    stats: StageStats | None = None,
    allow_empty: bool = True,
    unique_ids: bool = True,
) -> list[R]:
    """Read a JSONL/Parquet file of ``cls`` records (:func:`iter_records`). Rows that cannot be records go
    to ``stats`` as rejects (or raise :class:`RecordsError` listing the first problems when no ``stats``
    is given)."""
    out: list[R] = []
    rejects: list[Reject] = []
    for item in iter_records(path, cls, stage=stage, allow_empty=allow_empty, unique_ids=unique_ids):
        if isinstance(item, Reject):
            rejects.append(item)
        else:
            out.append(item)
    if stats is not None:
        stats.add_rejects(rejects)
    elif rejects:
        first = "; ".join(f"{r.where}: {r.detail}" for r in rejects[:3])
        raise RecordsError(f"{path}: {len(rejects)} invalid row(s): {first}")
    return out


def _atomic_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


class JsonlWriter:
    """Rows written one at a time to a JSONL file that appears whole, atomically, on :meth:`close` (a
    temporary file beside it until then; :meth:`abort` removes it). Every line goes through the redaction
    step (kubedistill/core/secrets.py): known secret values are replaced in data rows; ``diagnostics``
    rows (rejects) are masked in full (credential keys, bearer tokens, API-key shapes, URL credentials)."""

    def __init__(self, path: str | os.PathLike[str], *, diagnostics: bool = False) -> None:
        from kubedistill.core.secrets import known_secrets

        self.path = Path(path)
        self.diagnostics = diagnostics
        self.secrets = known_secrets()
        self.tmp = _atomic_path(self.path)
        self.f = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed by close() / abort()
        self.n = 0

    def write(self, r: Any) -> None:
        from kubedistill.core.secrets import mask, redact_values

        if self.diagnostics:
            obj = r.to_json() if isinstance(r, Reject) else r
            obj = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
            line = json.dumps(mask(obj, self.secrets), ensure_ascii=False, default=str)
        elif isinstance(r, BaseModel):
            line = r.model_dump_json()
        else:
            line = json.dumps(r, ensure_ascii=False, default=str)
        self.f.write(redact_values(line, self.secrets) if self.secrets else line)
        self.f.write("\n")
        self.n += 1

    def close(self) -> int:
        if not self.f.closed:
            self.f.close()
            os.replace(self.tmp, self.path)
        return self.n

    def abort(self) -> None:
        import contextlib

        self.f.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any], *, diagnostics: bool = False) -> int:
    """Write rows (pydantic models or JSON-able objects) as JSONL, atomically, as the iterable yields them
    (:class:`JsonlWriter`). Returns the row count."""
    w = JsonlWriter(path, diagnostics=diagnostics)
    try:
        for r in rows:
            w.write(r)
    except BaseException:
        w.abort()
        raise
    return w.close()


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write a JSON document for people to read (stats, summaries), atomically and masked in full
    (:func:`kubedistill.core.secrets.mask`)."""
    from kubedistill.core.secrets import mask

    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    p = Path(path)
    tmp = _atomic_path(p)
    tmp.write_text(json.dumps(mask(obj), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, p)


def write_records(path: str | os.PathLike[str], records: Iterable[BaseModel]) -> int:
    """Write records as JSONL or Parquet (by suffix), atomically: a reader never sees half a file. Known
    secret values are redacted (see :func:`write_jsonl`). JSONL is written as the iterable yields (a
    generator is never held in memory whole); Parquet is built in memory."""
    p = Path(path)
    if _format(p) == "jsonl":
        return write_jsonl(p, records)
    records = list(records)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kubedistill.core.secrets import mask_values

    rows = [mask_values(r.model_dump(mode="json")) for r in records]
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
    """Write rejects as JSONL, masked in full (a rejected row or an error body may carry a key)."""
    return write_jsonl(path, rejects, diagnostics=True)


class RecordSpool:
    """Records kept on disk, not in memory: :meth:`append` writes each one to a temporary JSONL file as it
    comes; iterating reads them back one at a time (in order, as ``cls``). The file is removed by
    :meth:`close`, or when the spool is garbage-collected. Used where a stage meets records it may only
    emit later (collect's imported CoTs, which wait for dedup, decontamination and the held-out split)."""

    def __init__(self, cls: type[R], directory: str | os.PathLike[str] | None = None) -> None:
        import tempfile
        import weakref

        self.cls = cls
        self.n = 0
        fd, name = tempfile.mkstemp(prefix="kubedistill-spool-", suffix=".jsonl", dir=directory)
        self.path = Path(name)
        self._f = os.fdopen(fd, "wb")
        self._finalizer = weakref.finalize(self, _remove_spool, self._f, self.path)

    def append(self, record: BaseModel) -> None:
        self._f.write(record.model_dump_json().encode("utf-8"))
        self._f.write(b"\n")
        self.n += 1

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        self._f.flush()
        with open(self.path, "rb") as f:
            for line in f:
                yield self.cls.model_validate_json(line)

    def close(self) -> None:
        self._finalizer()


def _remove_spool(f: Any, path: Path) -> None:
    import contextlib

    with contextlib.suppress(OSError):
        f.close()
    with contextlib.suppress(OSError):
        path.unlink()


class RecordStream:
    """A records file read lazily — and read again on every iteration — for stages that stream
    (verify, select): memory does not grow with the file. Rows that cannot be records (and, with
    ``unique_ids``, repeated ids) go to ``on_reject`` on the first full pass only; ``keep`` filters the
    records (a shard). ``n_rejected`` counts what the first pass refused."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        cls: type[BaseModel],
        *,
        stage: str = "read",
        on_reject: Callable[[Reject], None] | None = None,
        keep: Callable[[Any], bool] | None = None,
        allow_empty: bool = True,
    ) -> None:
        self.path = Path(path)
        self.cls = cls
        self.stage = stage
        self.on_reject = on_reject
        self.keep = keep
        self.allow_empty = allow_empty
        self.passes = 0
        self.n_rejected = 0
        self.rows = 0  # rows of the first pass (records and rejects)
        self.empty = False

    def check(self) -> None:
        """Raise :class:`RecordsError` now (before any work) for a file that cannot be read at all."""
        for _ in iter_rows(self.path, allow_empty=self.allow_empty):
            break

    def __iter__(self) -> Iterator[Any]:
        first = self.passes == 0
        n = 0
        for item in iter_records(self.path, self.cls, stage=self.stage, allow_empty=self.allow_empty):
            n += 1
            if isinstance(item, Reject):
                if first:
                    self.n_rejected += 1
                    if self.on_reject is not None:
                        self.on_reject(item)
                continue
            if self.keep is None or self.keep(item):
                yield item
        if first:
            self.rows = n
            self.empty = n == 0
        self.passes += 1


class RecordIndex(Mapping[str, Any]):
    """The records of a JSONL file by id, read from the file on demand: what a streaming stage looks up
    by id in a file other than its stream (the problems of ``verify`` / ``select`` / ``judge`` /
    ``score`` / ``pairs``), without holding the records.

    Built by one pass of :func:`iter_records` (the same rejects, ``duplicate_id`` included: the first copy
    is the one indexed, handed to ``on_reject``) and one pass over the lines for their byte offsets;
    then it holds two sorted numpy ``uint64`` columns — the id's 64-bit hash and the line's byte offset:
    16 bytes a record (a list of :class:`Problem` objects: ~0.8 KiB each). A lookup is a binary search,
    a seek and one row parsed and validated (~20 µs), with the last ``cache`` records kept (LRU). A hash
    that matches another id is told apart by the id read back (a miss). Iterating yields the ids in file
    order (the file read again).

    Only for plain ``.jsonl`` files; for gzipped JSONL and Parquet use :func:`records_index`, which falls
    back to a dict. Raises :class:`RecordsError` as :func:`iter_rows` does; a file changed under the index
    after it was built gives misses, never another record (the id read back is compared). Our own, not an
    embedded database: ``benchmarks/cot_stages_memory.py`` measures the memory it saves (a list of 50,000
    problems held ~39 MiB)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        cls: type[BaseModel],
        *,
        stage: str = "read",
        on_reject: Callable[[Reject], None] | None = None,
        allow_empty: bool = True,
        cache: int = 1024,
    ) -> None:
        import numpy as np

        self.path = Path(path)
        self.cls = cls
        self.cache_size = cache
        self._cache: OrderedDict[str, Any] = OrderedDict()
        keys = array("Q")  # hashes of the ids
        lines = array("Q")  # 1-based line numbers of the indexed records, ascending
        for where, item in _records_where(self.path, cls, stage=stage, allow_empty=allow_empty, unique_ids=True):
            if isinstance(item, Reject):
                if on_reject is not None:
                    on_reject(item)
                continue
            keys.append(_h64(str(getattr(item, "id")).encode("utf-8")))  # noqa: B009 - any record class with an id
            lines.append(int(where.rsplit(":", 1)[1]))
        offsets = np.zeros(len(lines), dtype=np.uint64)
        if lines:
            with open(self.path, "rb") as f:
                pos, k = 0, 0
                for n, line in enumerate(f, start=1):
                    if n == lines[k]:
                        offsets[k] = pos
                        k += 1
                        if k == len(lines):
                            break
                    pos += len(line)
        key_col = np.frombuffer(keys, dtype=np.uint64).copy()
        del keys, lines
        order = np.argsort(key_col, kind="stable")
        self._keys, self._offsets = key_col[order], offsets[order]

    def _read_at(self, offset: int) -> Any:
        from kubedistill.core.files import UTF8_BOM

        with open(self.path, "rb") as f:
            f.seek(offset)
            raw = f.readline()
        if offset == 0 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM) :]
        return self.cls.model_validate(json.loads(raw))

    def __getitem__(self, key: str) -> Any:
        import numpy as np

        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if not isinstance(key, str):
            raise KeyError(key)
        h = np.uint64(_h64(key.encode("utf-8")))
        i = int(np.searchsorted(self._keys, h))
        while i < len(self._keys) and self._keys[i] == h:  # hashes that collide: each read back
            try:
                rec = self._read_at(int(self._offsets[i]))
            except ValueError:  # not the row indexed (the file changed): a miss
                rec = None
            if rec is not None and getattr(rec, "id", None) == key:
                self._cache[key] = rec
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
                return rec
            i += 1
        raise KeyError(key)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        for offset in sorted(int(o) for o in self._offsets):
            yield str(getattr(self._read_at(offset), "id"))  # noqa: B009


def records_index(
    path: str | os.PathLike[str],
    cls: type[BaseModel],
    *,
    stage: str = "read",
    on_reject: Callable[[Reject], None] | None = None,
    allow_empty: bool = True,
) -> Mapping[str, Any]:
    """The records of ``path`` by id: a :class:`RecordIndex` for a plain ``.jsonl`` file, else (gzipped
    JSONL, Parquet: not seekable by line) a dict of the records read. Rows refused go to ``on_reject``
    (the first copy of a repeated id is the one kept)."""
    p = Path(path)
    if _format(p) == "jsonl" and not p.name.lower().endswith(".gz"):
        return RecordIndex(p, cls, stage=stage, on_reject=on_reject, allow_empty=allow_empty)
    out: dict[str, Any] = {}
    for item in iter_records(p, cls, stage=stage, allow_empty=allow_empty):
        if isinstance(item, Reject):
            if on_reject is not None:
                on_reject(item)
        else:
            out[str(getattr(item, "id"))] = item  # noqa: B009
    return out


def records_by_id(records: Iterable[R] | Mapping[str, R]) -> Mapping[str, R]:
    """``records`` by their ``id``: a mapping as it is (the runner's :class:`RecordIndex`), a list as a
    dict (a later record with the same id wins, as in ``{r.id: r for r in records}``)."""
    if isinstance(records, Mapping):
        return records
    return {r.id: r for r in records}  # type: ignore[attr-defined]


def chunked(items: Iterable[R], size: int) -> Iterator[list[R]]:
    """``items`` as lists of ``size`` (the last one shorter), read lazily: how the streaming stages take
    their input ``chunk_size`` records at a time (``itertools.batched`` from Python 3.12)."""
    from itertools import islice

    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
