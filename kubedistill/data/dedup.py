"""Duplicate removal: exact (normalised text hash), duplicate ids, and near duplicates (MinHash + LSH).

Guarantees of :func:`dedup`:

* Order is kept and the **first occurrence wins**; every dropped row is a reject naming the id it
  duplicates: ``duplicate`` (same text and choices as tokens after NFKC, math markup
  canonicalisation — ``$60$`` is ``\\(60\\)``, ``\\dfrac{1}{2}`` is ``1/2`` — and case folding:
  kubedistill/data/normalize.py), ``duplicate_id`` (a different text under an id already taken — later
  stages key on problem ids), ``near_duplicate`` (Jaccard similarity of token n-gram sets ≥
  ``threshold``).
* A near duplicate is only dropped after its **exact** Jaccard similarity with a kept problem has
  been computed: MinHash/LSH only proposes candidates, so a problem that merely shares many words
  with another (below the threshold) is never dropped because of an unlucky hash.
* Deterministic: same input and config, same output (token ids are assigned in first-seen order and
  hash parameters come from ``seed``; nothing depends on Python's salted ``hash``).

Tokens for near duplicates are words *and* punctuation/operator characters (``4 + 1`` and ``4 - 1``
differ); shingles are ``ngram`` consecutive tokens (a text shorter than that is one shingle). Sources
with ``near_dedup: false`` (reasoning-gym by default: generated from templates) take part in exact
and id dedup only.

The MinHash is our own numpy implementation (multiply-shift hashing of 64-bit shingle hashes, many
documents per vectorised step); ``benchmarks/collect_dedup.py`` measures it against ``datasketch``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from kubedistill.core.config import StrictModel
from kubedistill.core.progress import make_bar
from kubedistill.core.records import Problem, StageStats

from .normalize import dedup_tokens, exact_key
from .sources import preview

_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial rolling hash (mod 2**64)
_BAND_P = np.uint64(0xC2B2AE3D27D4EB4F)
_EMPTY = np.zeros(0, dtype=np.uint64)


class DedupConfig(StrictModel):
    """Exact and near-duplicate removal."""

    exact: bool = Field(default=True, description="drop repeats of the same normalised text")
    near: bool = Field(default=True, description="drop near duplicates (MinHash + LSH, verified exactly)")
    ngram: int = Field(default=5, ge=1, description="tokens per shingle")
    threshold: float = Field(default=0.8, gt=0, le=1, description="Jaccard similarity at which a row is dropped")
    num_perm: int = Field(default=128, ge=8, le=1024, description="MinHash permutations")
    seed: int = Field(default=1, description="seed of the MinHash hash functions")


# ------------------------------------------------------------------------------------- hashing helpers


def hash_tokens(token_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """All documents' tokens as one array of deterministic 64-bit hashes, plus each document's length.

    Hashing runs in C over the whole batch (``pandas.util.hash_array``, SipHash with a fixed key);
    without pandas a dict assigns ids in first-seen order (slower, equally deterministic)."""
    lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    total = int(lengths.sum())
    if total == 0:
        return _EMPTY, lengths
    flat_tokens = np.empty(total, dtype=object)
    flat_tokens[:] = list(itertools.chain.from_iterable(token_lists))
    try:
        from pandas.util import hash_array
    except ImportError:  # pragma: no cover - pandas comes with datasets
        vocab = _Vocab()
        return np.fromiter(map(vocab.__getitem__, flat_tokens), dtype=np.uint64, count=total), lengths
    return hash_array(flat_tokens, categorize=False).astype(np.uint64, copy=False), lengths


class _Vocab(dict[str, int]):
    def __missing__(self, key: str) -> int:
        value = self[key] = len(self) + 1
        return value


def rolling_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hashes (mod 2**64) of every window of ``n`` consecutive ids: ``len(ids) - n + 1`` values."""
    m = len(ids) - n + 1
    if m <= 0:
        return _EMPTY
    a = ids.astype(np.uint64, copy=False)
    h = a[:m].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            h = h * _P + a[k : k + m]
    return h


def sequence_hash(ids: np.ndarray) -> np.uint64:
    """The same polynomial hash over a whole (short) sequence."""
    h = np.uint64(0)
    with np.errstate(over="ignore"):
        for i in ids.astype(np.uint64, copy=False):
            h = h * _P + i
    return h


def batch_shingles(flat: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many documents at once. ``flat`` holds every document's token hashes one
    after the other, ``lengths`` how many belong to each. Returns ``(hashes, counts)``: the shingles of
    document ``d`` are the next ``counts[d]`` hashes. A document shorter than ``n`` has one shingle
    (its whole sequence); an empty document has none."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(flat) == 0:
        return _EMPTY, np.zeros(len(lengths), dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    windows = rolling_hashes(flat, n)
    # a window starting at position p of document d is valid iff p + n <= end of d
    doc_of = np.repeat(np.arange(len(lengths)), lengths)[: len(windows)]
    valid = np.arange(len(windows)) + n <= (starts + lengths)[doc_of]
    counts = np.maximum(lengths - n + 1, 0)
    hashes = windows[valid]
    short = np.nonzero((lengths > 0) & (lengths < n))[0]
    if len(short):
        # splice one whole-sequence shingle per short document into its place
        pieces, pos = [], 0
        offsets = np.concatenate(([0], np.cumsum(counts)))
        for d in short:
            pieces.append(hashes[pos : offsets[d]])
            pieces.append(np.array([sequence_hash(flat[starts[d] : starts[d] + lengths[d]])], dtype=np.uint64))
            pos = offsets[d]
        pieces.append(hashes[pos:])
        hashes = np.concatenate(pieces)
        counts[short] = 1
    return hashes, counts


class MinHasher:
    """MinHash signatures of many documents at once (multiply-shift hashes of 64-bit shingles)."""

    def __init__(self, num_perm: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)

    def signatures(self, hashes: np.ndarray, counts: np.ndarray, chunk: int = 1 << 13) -> np.ndarray:
        """``(len(counts), num_perm)`` uint32 signatures; every document needs at least one shingle."""
        out = np.empty((len(counts), self.num_perm), dtype=np.uint32)
        offsets = np.concatenate(([0], np.cumsum(counts)))
        d = 0
        while d < len(counts):
            # documents [d, e) whose shingles fit in one chunk (at least one document)
            e = int(np.searchsorted(offsets, offsets[d] + chunk, side="right")) - 1
            e = max(e, d + 1)
            e = min(e, len(counts))
            lo, hi = offsets[d], offsets[e]
            h = hashes[lo:hi]
            with np.errstate(over="ignore"):
                perm = np.multiply(self.a[:, None], h[None, :])
                perm += self.b[:, None]
            perm >>= np.uint64(32)
            seg = (offsets[d:e] - lo).astype(np.int64)
            out[d:e] = np.minimum.reduceat(perm, seg, axis=1).T.astype(np.uint32)
            d = e
        return out


def lsh_params(threshold: float, num_perm: int, recall: float = 0.97) -> tuple[int, int]:
    """``(bands, rows)``: the most rows per band (fewest false candidates) such that a pair with
    similarity exactly ``threshold`` still shares a band with probability ≥ ``recall``."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if bands < 1:
            break
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(n, bands)`` uint64 keys: one hash of each band's rows of each signature."""
    n = sigs.shape[0]
    s = sigs[:, : bands * rows].astype(np.uint64).reshape(n, bands, rows)
    keys = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            keys = keys * _BAND_P + s[:, :, r] + np.uint64(1)
    return keys


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of unique values."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


@dataclass(frozen=True)
class NearDuplicate:
    index: int  # the dropped document
    of: int  # the kept document it duplicates
    similarity: float


def find_near_duplicates(
    flat: np.ndarray,
    lengths: np.ndarray,
    *,
    ngram: int = 5,
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    progress: str | None = None,
) -> list[NearDuplicate]:
    """Near duplicates among documents given as token hashes (see :func:`hash_tokens`), first kept.

    Document ``i`` is reported as a duplicate of the earliest-checked kept document ``j < i`` whose
    exact shingle-set Jaccard similarity is ≥ ``threshold``; LSH proposes candidates, MinHash
    estimates order and pre-filter them (estimate ≥ threshold - 0.1), the exact similarity decides.
    Empty documents are never near duplicates."""
    hashes, all_counts = batch_shingles(flat, np.asarray(lengths, dtype=np.int64), ngram)
    return near_duplicates_of_shingles(
        hashes, all_counts, threshold=threshold, num_perm=num_perm, seed=seed, progress=progress
    )


def near_duplicates_of_shingles(
    hashes: np.ndarray,
    all_counts: np.ndarray,
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    progress: str | None = None,
) -> list[NearDuplicate]:
    """:func:`find_near_duplicates` from the documents' shingle hashes (:func:`batch_shingles`): the
    shingles of document ``d`` are the next ``all_counts[d]`` values of ``hashes``. A shingle hash depends
    on the document alone, so shards can compute theirs apart and a merge step decide over all of them."""
    all_counts = np.asarray(all_counts, dtype=np.int64)
    nonempty = np.nonzero(all_counts > 0)[0].tolist()  # empty documents have no shingles
    if len(nonempty) < 2:
        return []
    counts = all_counts[all_counts > 0]
    docs = nonempty
    sigs = MinHasher(num_perm, seed).signatures(hashes, counts)
    bands, rows = lsh_params(threshold, num_perm)
    keys_arr = band_keys(sigs, bands, rows)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    shingle_sets: list[np.ndarray | None] = [None] * len(docs)

    def shingles(k: int) -> np.ndarray:
        s = shingle_sets[k]
        if s is None:
            s = np.unique(hashes[offsets[k] : offsets[k + 1]])
            shingle_sets[k] = s
        return s

    # A document whose key is unique in every band has no candidate and is nobody's candidate: only
    # documents that share at least one band key with another go through the (sequential) LSH loop.
    shared = np.zeros(len(docs), dtype=bool)
    for band in range(bands):
        _, inverse, cnt = np.unique(keys_arr[:, band], return_inverse=True, return_counts=True)
        shared |= cnt[inverse.reshape(-1)] > 1
    colliding = np.nonzero(shared)[0].tolist()
    keys = keys_arr.tolist()

    buckets: list[dict[int, list[int]]] = [{} for _ in range(bands)]
    prefilter = threshold - 0.1
    found: list[NearDuplicate] = []
    bar = make_bar(len(colliding), desc=progress or "near-dedup", unit="doc", enabled=progress is not None)
    try:
        for k in colliding:
            bar.update(1)
            cands: set[int] = set()
            for band, key in enumerate(keys[k]):
                hit = buckets[band].get(key)
                if hit:
                    cands.update(hit)
            dup: NearDuplicate | None = None
            if cands:
                c = np.fromiter(sorted(cands), dtype=np.int64, count=len(cands))
                est = (sigs[c] == sigs[k]).mean(axis=1)
                order = np.argsort(-est, kind="stable")
                for j in c[order][est[order] >= prefilter]:
                    sim = jaccard(shingles(k), shingles(int(j)))
                    if sim >= threshold:
                        dup = NearDuplicate(nonempty[k], nonempty[int(j)], sim)
                        break
            if dup is not None:
                found.append(dup)
                shingle_sets[k] = None
                continue
            for band, key in enumerate(keys[k]):
                buckets[band].setdefault(key, []).append(k)
    finally:
        bar.close()
    return found


# ------------------------------------------------------------------------------------------- the step


def dedup(
    problems: Sequence[Problem],
    cfg: DedupConfig,
    stats: StageStats,
    *,
    near_exempt_sources: Collection[str] = (),
    where_of: Mapping[int, str] | None = None,
) -> list[Problem]:
    """Drop exact duplicates, duplicate ids and near duplicates (see the module docstring); every
    dropped row is a reject in ``stats`` naming the kept id (and, with ``where_of`` — ``id(problem) ->
    "file:line"`` —, where the dropped row came from). Counts go to ``stats.info["dedup"]``."""
    where_of = where_of or {}
    t0 = time.perf_counter()
    kept: list[Problem] = []
    seen_text: dict[str, str] = {}
    seen_id: set[str] = set()
    n_exact = n_ids = 0
    for p in problems:
        if cfg.exact:
            key = exact_key(p.problem, p.choices, p.domain)
            first = seen_text.get(key)
            if first is not None:
                stats.reject(
                    "duplicate",
                    f"duplicate of {first}",
                    record=preview(p.model_dump(mode="json")),
                    where=where_of.get(id(p)),
                )
                n_exact += 1
                continue
            seen_text[key] = p.id
        if p.id in seen_id:
            stats.reject(
                "duplicate_id",
                f"id {p.id} is already taken by a different problem",
                record=preview(p.model_dump(mode="json")),
                where=where_of.get(id(p)),
            )
            n_ids += 1
            continue
        seen_id.add(p.id)
        kept.append(p)
    t_exact = time.perf_counter() - t0

    n_near = 0
    t1 = time.perf_counter()
    if cfg.near and len(kept) > 1:
        candidates = [i for i, p in enumerate(kept) if p.source not in near_exempt_sources]
        flat, lengths = hash_tokens([dedup_tokens(_dedup_text(kept[i]), kept[i].domain) for i in candidates])
        dups = find_near_duplicates(
            flat,
            lengths,
            ngram=cfg.ngram,
            threshold=cfg.threshold,
            num_perm=cfg.num_perm,
            seed=cfg.seed,
            progress="near-dedup",
        )
        drop: set[int] = set()
        for d in dups:
            p, of = kept[candidates[d.index]], kept[candidates[d.of]]
            stats.reject(
                "near_duplicate",
                f"near duplicate of {of.id} (jaccard {d.similarity:.3f})",
                record=preview(p.model_dump(mode="json")),
                where=where_of.get(id(p)),
            )
            drop.add(candidates[d.index])
        n_near = len(drop)
        kept = [p for i, p in enumerate(kept) if i not in drop]
    t_near = time.perf_counter() - t1
    stats.info["dedup"] = {
        "duplicate": n_exact,
        "duplicate_id": n_ids,
        "near_duplicate": n_near,
        "near_exempt_sources": sorted(near_exempt_sources),
        "params": cfg.model_dump(),
        "seconds": {"exact": round(t_exact, 3), "near": round(t_near, 3)},
    }
    return kept


def _dedup_text(p: Problem) -> str:
    if p.choices:
        return p.problem + "\n" + "\n".join(p.choices)
    return p.problem


# ------------------------------------------------------------------------------- across shards (global)


@dataclass
class DedupKeys:
    """What global dedup needs of one shard's problems, in the shard's order: ids, exact keys (64-bit
    hashes of :func:`~kubedistill.data.normalize.exact_key`), whether each takes part in near dedup, and
    its shingle hashes (``counts[d]`` values per document, one after the other). About ``8 × (1 +
    shingles)`` bytes per problem (~1 KB for a 100-token problem): 1M problems are ~1 GB of keys."""

    ids: list[str]
    exact: np.ndarray  # uint64, one per problem
    near: np.ndarray  # bool, one per problem
    shingles: np.ndarray  # uint64, flat
    counts: np.ndarray  # int64, one per problem

    def arrays(self) -> dict[str, np.ndarray]:
        """The keys as named arrays (ids as one UTF-8 JSON text): what :meth:`save` writes."""
        return {
            "ids": json_bytes(self.ids),
            "exact": self.exact,
            "near": self.near,
            "shingles": self.shingles,
            "counts": self.counts,
        }

    @classmethod
    def from_arrays(cls, z: Mapping[str, np.ndarray]) -> DedupKeys:
        return cls(from_json_bytes(z["ids"]), z["exact"], z["near"], z["shingles"], z["counts"])

    def save(self, path: str | Path) -> None:
        """As a ``.npz`` file (no pickles: ids are stored as one JSON text)."""
        np.savez_compressed(path, **self.arrays())

    @classmethod
    def load(cls, path: str | Path) -> DedupKeys:
        with np.load(path, allow_pickle=False) as z:
            return cls.from_arrays(z)


def json_bytes(value: object) -> np.ndarray:
    """``value`` as UTF-8 JSON text in a uint8 array (for ``.npz`` files, which then need no pickles)."""
    import json

    return np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)


def from_json_bytes(array: np.ndarray) -> Any:
    """The inverse of :func:`json_bytes`."""
    import json

    return json.loads(array.tobytes().decode("utf-8"))


def dedup_keys(
    problems: Sequence[Problem], cfg: DedupConfig, near_exempt_sources: Collection[str] = (), *, chunk: int = 4096
) -> DedupKeys:
    """The :class:`DedupKeys` of one shard's problems (computed where the shard is, in parallel), ``chunk``
    problems' tokens at a time (a token's hash depends on the token alone, so chunks agree)."""
    import hashlib

    exact = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(exact_key(p.problem, p.choices, p.domain).encode(), digest_size=8).digest())
            for p in problems
        ),
        dtype=np.uint64,
        count=len(problems),
    )
    near = np.fromiter((p.source not in near_exempt_sources for p in problems), dtype=bool, count=len(problems))
    shingles: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for start in range(0, len(problems), chunk):  # token lists of one chunk at a time: memory does not grow
        flat, lengths = hash_tokens([dedup_tokens(_dedup_text(p), p.domain) for p in problems[start : start + chunk]])
        got, n = batch_shingles(flat, lengths, cfg.ngram)
        shingles.append(got)
        counts.append(n)
    return DedupKeys(
        [p.id for p in problems],
        exact,
        near,
        np.concatenate(shingles) if shingles else _EMPTY,
        np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64),
    )


@dataclass(frozen=True)
class GlobalDrop:
    """A problem that global dedup drops: where it is (``part``, ``position``), why, and the kept id."""

    part: int
    position: int
    id: str
    reason: str  # duplicate | duplicate_id | near_duplicate
    detail: str


def global_dedup(
    parts: Sequence[DedupKeys], cfg: DedupConfig, *, order: Iterable[tuple[int, int]] | None = None
) -> list[GlobalDrop]:
    """Dedup over every shard's keys at once, visiting the problems in ``order`` (``(part, position)``
    pairs; default: shard order, then row order) — the same decisions :func:`dedup` makes on the problems in
    that order (first occurrence kept; exact keys, then ids, then near duplicates among the rest, decided
    on exact shingle-set Jaccard), so a duplicate whose two copies fall in different shards is caught.
    Returns the drops, sorted by part and position (applied by :func:`~kubedistill.data.collect.collect_merge_stage`,
    or per shard by :func:`apply_drops`)."""
    drops: list[GlobalDrop] = []
    seen_key: dict[int, str] = {}
    seen_id: set[str] = set()
    survivors: list[tuple[int, int]] = []
    exacts = [part.exact.tolist() for part in parts]
    visit = order if order is not None else ((pi, pos) for pi, part in enumerate(parts) for pos in range(len(part.ids)))
    for pi, pos in visit:
        pid = parts[pi].ids[pos]
        if cfg.exact:
            key = exacts[pi][pos]
            first = seen_key.get(key)
            if first is not None:
                drops.append(GlobalDrop(pi, pos, pid, "duplicate", f"duplicate of {first}"))
                continue
            seen_key[key] = pid
        if pid in seen_id:
            drops.append(GlobalDrop(pi, pos, pid, "duplicate_id", f"id {pid} is already taken by a different problem"))
            continue
        seen_id.add(pid)
        survivors.append((pi, pos))
    if cfg.near:
        offsets = [np.concatenate(([0], np.cumsum(part.counts))) for part in parts]
        eligible = [(pi, pos) for pi, pos in survivors if parts[pi].near[pos]]
        if len(eligible) > 1:
            pieces = [parts[pi].shingles[offsets[pi][pos] : offsets[pi][pos + 1]] for pi, pos in eligible]
            counts = np.fromiter((len(x) for x in pieces), dtype=np.int64, count=len(pieces))
            hashes = np.concatenate(pieces) if pieces else _EMPTY
            for d in near_duplicates_of_shingles(
                hashes,
                counts,
                threshold=cfg.threshold,
                num_perm=cfg.num_perm,
                seed=cfg.seed,
                progress="global near-dedup",
            ):
                pi, pos = eligible[d.index]
                oi, opos = eligible[d.of]
                of_id = parts[oi].ids[opos]
                drops.append(
                    GlobalDrop(
                        pi,
                        pos,
                        parts[pi].ids[pos],
                        "near_duplicate",
                        f"near duplicate of {of_id} (jaccard {d.similarity:.3f})",
                    )
                )
    return sorted(drops, key=lambda d: (d.part, d.position))


def apply_drops(
    problems: Sequence[Problem],
    drops: Sequence[GlobalDrop],
    stats: StageStats,
    *,
    where_of: Mapping[int, str] | None = None,
) -> list[Problem]:
    """One shard's problems without its global drops (``drops`` of this shard, by position), each a
    reject in ``stats`` naming the kept id; counts in ``stats.info["dedup"]`` with ``"global": true``."""
    where_of = where_of or {}
    by_pos = {d.position: d for d in drops}
    kept: list[Problem] = []
    counts = {"duplicate": 0, "duplicate_id": 0, "near_duplicate": 0}
    for i, p in enumerate(problems):
        d = by_pos.get(i)
        if d is None:
            kept.append(p)
            continue
        if d.id != p.id:
            raise ValueError(f"drop list does not match the shard: row {i} is {p.id!r}, the drop names {d.id!r}")
        stats.reject(d.reason, d.detail, record=preview(p.model_dump(mode="json")), where=where_of.get(id(p)))
        counts[d.reason] += 1
    stats.info["dedup"] = {**counts, "global": True}
    return kept
