"""Decontamination: drop training problems that share a word n-gram with an evaluation item.

Texts are compared as words (``\\w+`` runs after NFKC, math markup canonicalisation and case folding;
punctuation and LaTeX markup are ignored, so ``$x^2$`` and ``\\(x^2\\)`` match, and so do
``\\dfrac{1}{2}``, ``\\frac{1}{2}`` and ``1/2``: kubedistill/data/normalize.py). A training problem is
contaminated when any ``ngram`` consecutive words of it (default 13, as in the GPT-3 and Tülu
decontamination; open-r1 uses 8) also occur consecutively in an item of a configured benchmark. A
benchmark item shorter than ``ngram`` words has no n-gram; with ``short_items: exact`` (default) a
training problem whose whole text equals such an item (as words and punctuation, so ``1 + 5`` is not
``1 - 5``, after the same canonicalisation) is contaminated too.

Guarantees of :func:`decontaminate`:

* Every removed problem is a reject with reason ``contaminated`` whose detail names the benchmark,
  the item id and the matching n-gram; ``stats.info["decontaminate"]["benchmarks"][name]`` counts
  items and removals per benchmark (a problem matching several is counted for the first benchmark in
  config order, first item in benchmark order).
* A hash only proposes a match: the words themselves are compared before anything is dropped, so a
  hash collision never removes a problem. Order of the kept problems is unchanged.
* No benchmark configured means nothing is removed, and ``stats.info`` says so (decontamination is
  never silently skipped).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from kubedistill.core.config import StrictModel, reference
from kubedistill.core.progress import make_bar
from kubedistill.core.records import Problem, StageStats

from .dedup import hash_tokens, rolling_hashes
from .normalize import dedup_tokens, match_words
from .sources import preview


class BenchmarkRef(StrictModel):
    """An evaluation set to decontaminate against: a name from ``list_benchmarks()``, optionally read
    from local files (``path``), or any name with a ``path`` to a JSONL/Parquet file of Problems."""

    name: str = Field(min_length=1)
    path: str | None = None
    limit: int | None = Field(default=None, ge=1)


class DecontamConfig(StrictModel):
    """n-gram overlap decontamination against evaluation sets."""

    benchmarks: list[BenchmarkRef] = reference(
        "benchmark_refs",
        default_factory=list,
        description="names (strings) or {name, path, limit}; empty = no decontamination",
    )
    ngram: int = Field(default=13, ge=1, description="words per n-gram (open-r1 uses 8)")
    short_items: Literal["exact", "ignore"] = Field(
        default="exact", description="benchmark items shorter than ngram words: match whole text, or ignore"
    )

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _unique(self) -> DecontamConfig:
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark names repeat: {names}")
        return self


@dataclass(frozen=True)
class Contamination:
    """Why a problem is contaminated: which benchmark item it overlaps and the overlapping words."""

    benchmark: str
    item_id: str
    ngram: str
    whole_item: bool = False  # a short item matched as a whole text, not an n-gram

    def describe(self, n: int) -> str:
        what = "whole item" if self.whole_item else f"{n}-gram"
        return f"{self.benchmark}: item {self.item_id}: {what} {self.ngram!r}"


def item_text(p: Problem) -> str:
    """The text of a benchmark item that is indexed: the question as the dataset gives it
    (``metadata["question_text"]`` where a loader added instructions or starter code), else the problem."""
    q = p.metadata.get("question_text")
    return q if isinstance(q, str) and q.strip() else p.problem


class ContaminationIndex:
    """Word n-grams of evaluation items, searchable for many training problems at once."""

    def __init__(
        self,
        benchmarks: Mapping[str, Sequence[Problem]],
        ngram: int = 13,
        short_items: Literal["exact", "ignore"] = "exact",
    ) -> None:
        self.n = ngram
        self.items: list[tuple[str, str, list[str]]] = []  # (benchmark, item id, words)
        self.short: dict[str, int] = {}  # whole word sequence of a short item → item index
        word_lists: list[list[str]] = []
        for bench, problems in benchmarks.items():
            for p in problems:
                words = match_words(item_text(p), p.domain)
                idx = len(self.items)
                self.items.append((bench, p.id, words))
                if len(words) >= ngram:
                    word_lists.append(words)
                else:
                    word_lists.append([])
                    if short_items == "exact" and words:
                        # whole-text match keeps punctuation and operators: "1 + 5" is not "1 - 5"
                        self.short.setdefault(_short_key(item_text(p), p.domain), idx)
        flat, lengths = hash_tokens(word_lists)
        hashes, item_of, pos_of = _windows(flat, lengths, ngram)
        order = np.argsort(hashes, kind="stable")  # stable: earlier benchmark/item first for equal hashes
        self.hashes = hashes[order]
        self.entry_item = item_of[order]
        self.entry_pos = pos_of[order]

    @property
    def n_ngrams(self) -> int:
        return len(self.hashes)

    def _verify(self, words: list[str], start: int, h: np.uint64) -> Contamination | None:
        lo = int(np.searchsorted(self.hashes, h, side="left"))
        hi = int(np.searchsorted(self.hashes, h, side="right"))
        gram = words[start : start + self.n]
        for e in range(lo, hi):
            bench, item_id, item_words = self.items[int(self.entry_item[e])]
            pos = int(self.entry_pos[e])
            if item_words[pos : pos + self.n] == gram:
                return Contamination(bench, item_id, " ".join(gram))
        return None

    def scan(
        self,
        texts: Sequence[str],
        chunk: int = 2000,
        progress: str | None = None,
        domains: Sequence[str | None] | None = None,
    ) -> list[Contamination | None]:
        """For each text (of ``domains[i]``, for the math canonicalisation: not for ``code``): the first
        overlap with an indexed item (in text order), or None."""
        out: list[Contamination | None] = [None] * len(texts)
        doms: Sequence[str | None] = domains if domains is not None else [None] * len(texts)
        bar = make_bar(len(texts), desc=progress or "decontaminate", unit="doc", enabled=progress is not None)
        try:
            for lo in range(0, len(texts), chunk):
                batch = [match_words(t, d) for t, d in zip(texts[lo : lo + chunk], doms[lo : lo + chunk], strict=True)]
                if self.short:
                    for k, words in enumerate(batch):
                        if len(words) >= self.n:
                            continue
                        hit = self.short.get(_short_key(texts[lo + k], doms[lo + k]))
                        if hit is not None:
                            bench, item_id, item_words = self.items[hit]
                            out[lo + k] = Contamination(bench, item_id, " ".join(item_words), whole_item=True)
                if self.n_ngrams:
                    flat, lengths = hash_tokens(batch)
                    windows, doc_of, pos_of = _windows(flat, lengths, self.n)
                    if len(windows):
                        idx = np.searchsorted(self.hashes, windows).clip(max=len(self.hashes) - 1)
                        hits = np.nonzero(self.hashes[idx] == windows)[0]
                        for w in hits.tolist():
                            k = int(doc_of[w])
                            if out[lo + k] is not None:
                                continue
                            found = self._verify(batch[k], int(pos_of[w]), windows[w])
                            if found is not None:
                                out[lo + k] = found
                bar.update(len(batch))
        finally:
            bar.close()
        return out


def _short_key(text: str, domain: str | None = None) -> str:
    return " ".join(dedup_tokens(text, domain))


def _windows(flat: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of every n-word window that lies inside one document, with its document and position."""
    lengths = np.asarray(lengths, dtype=np.int64)
    windows = rolling_hashes(flat, n)
    if len(windows) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return windows, empty, empty
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    doc_of = np.repeat(np.arange(len(lengths)), lengths)[: len(windows)]
    pos = np.arange(len(windows))
    valid = pos + n <= (starts + lengths)[doc_of]
    return windows[valid], doc_of[valid], (pos - starts[doc_of])[valid]


def load_benchmarks(refs: Sequence[BenchmarkRef]) -> dict[str, list[Problem]]:
    """The configured evaluation sets, by name, through :func:`kubedistill.data.benchmarks.load_benchmark`."""
    from kubedistill.data.benchmarks import load_benchmark

    return {r.name: load_benchmark(r.name, path=r.path, limit=r.limit) for r in refs}


def decontaminate(
    problems: Sequence[Problem],
    cfg: DecontamConfig,
    stats: StageStats,
    *,
    benchmarks: Mapping[str, Sequence[Problem]] | None = None,
    where_of: Mapping[int, str] | None = None,
) -> list[Problem]:
    """Drop problems that overlap an evaluation item (see the module docstring). ``benchmarks``
    (name → items) replaces loading ``cfg.benchmarks`` (tests, or a caller that already has them)."""
    t0 = time.perf_counter()
    if benchmarks is None:
        benchmarks = load_benchmarks(cfg.benchmarks)
    paths = {r.name: r.path for r in cfg.benchmarks}
    report: dict[str, Any] = {
        "ngram": cfg.ngram,
        "benchmarks": {
            name: {"items": len(items), "removed": 0, "path": paths.get(name)} for name, items in benchmarks.items()
        },
        "removed": 0,
    }
    if not benchmarks:
        report["note"] = "no benchmarks configured: nothing was checked"
        stats.info["decontaminate"] = report
        return list(problems)
    t_load = time.perf_counter() - t0
    index = ContaminationIndex(benchmarks, cfg.ngram, cfg.short_items)
    report["indexed_ngrams"] = index.n_ngrams
    found = index.scan([p.problem for p in problems], progress="decontaminate", domains=[p.domain for p in problems])
    kept: list[Problem] = []
    for p, c in zip(problems, found, strict=True):
        if c is None:
            kept.append(p)
            continue
        stats.reject(
            "contaminated",
            c.describe(cfg.ngram),
            record=preview(p.model_dump(mode="json")),
            where=(where_of or {}).get(id(p)),
        )
        report["benchmarks"][c.benchmark]["removed"] += 1
        report["removed"] += 1
    report["seconds"] = {"load": round(t_load, 3), "scan": round(time.perf_counter() - t0 - t_load, 3)}
    stats.info["decontaminate"] = report
    return kept
