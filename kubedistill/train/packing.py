"""Packing for SFT: many CoTs per row, no padding, and no attention across CoT boundaries.

Teacher CoTs vary from a few hundred to ~17,000 tokens. Padded batches then spend most of their compute
on padding. Here:

1. :func:`best_fit_decreasing` assigns the tokenized sequences to rows of at most ``capacity`` tokens
   (longest first, each into the fullest row it still fits: rows end up ~99% full);
2. :func:`pack_rows` concatenates each row's sequences, keeps each one's completion-only labels and
   sets the label of every sequence's first token to -100 (so no sequence is trained to predict the
   next one's first token), and records ``seq_lengths``;
3. :class:`PackedCollator` turns rows into model inputs where each sequence is computed exactly as if
   it ran alone: ``position_ids`` restart at 0 for every sequence (RoPE sees the true positions) and
   attention never crosses a sequence boundary. Two layouts:

   * ``"varlen"``: all rows of the batch flattened into one ``[1, N]`` row with ``cu_seq_lens_q/k``
     (sequence boundaries). flash-attention 2/3 uses them natively (its varlen kernel); on SDPA the
     model is switched to :data:`VARLEN_SDPA`, an attention function registered here that runs
     causal SDPA on each sequence separately. No mask is materialised and no attention FLOP is
     spent across sequences.
   * ``"block_mask"``: rows ``[B, L]`` with an explicit 4-D block-diagonal causal mask
     ``[B, 1, L, L]`` (``True`` = may attend; additive float for eager attention). Works with any
     attention implementation that takes a 4-D mask, but computes (and masks) the full L x L scores.

Why our own: TRL 1.16's padding-free path (``packing=True``) flattens the batch into one row and
passes no attention mask. With transformers 5.23 on SDPA that is correct only because the model
re-derives a block-diagonal mask from ``position_ids`` — and only when ``use_cache=False`` (with the
default ``use_cache=True`` the same inputs silently attend across sequences; measured). It also
materialises an ``N x N`` mask for the whole flattened batch. The varlen layout here needs no
mask and fails loudly when the boundaries are missing. ``tests/integration/test_sft_packing.py``
proves that logits and loss of a packed batch equal those of the sequences run alone.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: Name of the segment-wise SDPA attention implementation (registered on import of this module).
VARLEN_SDPA = "kubedistill_varlen_sdpa"
FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3", "flash_attention_4")

PackingAttention = Literal["auto", "varlen", "block_mask"]


# ------------------------------------------------------------------------------------------ bin packing


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Assign item indices to bins of ``capacity``: longest first, each into the bin with the least
    room that still fits it. Deterministic (ties keep input order). Every length must be in
    ``[1, capacity]``. Returns the bins as lists of indices, each in placement order."""
    if capacity < 1:
        raise ValueError("capacity must be >= 1")
    for i, n in enumerate(lengths):
        if not 1 <= n <= capacity:
            raise ValueError(f"item {i} has length {n}, outside [1, {capacity}]")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room left, bin index)
    for i in order:
        n = lengths[i]
        pos = bisect.bisect_left(free, (n, -1))
        if pos == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - n, len(bins) - 1))
        else:
            room, b = free.pop(pos)
            bins[b].append(i)
            bisect.insort(free, (room - n, b))
    return bins


def pack_rows(examples: Sequence[dict[str, Any]], capacity: int) -> list[dict[str, Any]]:
    """Pack tokenized examples (``input_ids``, ``labels``; -100 = no loss) into rows of at most
    ``capacity`` tokens: ``{"input_ids", "labels", "seq_lengths"}``. The first label of every
    sequence becomes -100 (a packed row must not train sequence k to predict sequence k+1)."""
    lengths = [len(e["input_ids"]) for e in examples]
    rows = []
    for b in best_fit_decreasing(lengths, capacity):
        ids: list[int] = []
        labels: list[int] = []
        for i in b:
            e = examples[i]
            if len(e["labels"]) != len(e["input_ids"]):
                raise ValueError(f"example {i}: labels and input_ids differ in length")
            ids.extend(e["input_ids"])
            labels.append(-100)
            labels.extend(e["labels"][1:])
        rows.append({"input_ids": ids, "labels": labels, "seq_lengths": [lengths[i] for i in b]})
    return rows


def pack_dataset(dataset: Any, capacity: int) -> Any:
    """:func:`pack_rows` over a ``datasets.Dataset`` with ``input_ids`` and ``labels`` columns."""
    from datasets import Dataset

    cols = dataset.select_columns(["input_ids", "labels"]).to_dict()
    examples = [{"input_ids": a, "labels": b} for a, b in zip(cols["input_ids"], cols["labels"], strict=True)]
    return Dataset.from_list(pack_rows(examples, capacity))


# ---------------------------------------------------------------------------------------------- collator


@dataclass
class PackedCollator:
    """Model inputs from packed rows (or plain examples: a row without ``seq_lengths`` is one sequence).

    ``mode="varlen"`` flattens the batch to ``[1, N]`` and adds ``position_ids``, ``cu_seq_lens_q/k``
    and ``max_length_q/k`` (for flash-attention's varlen kernel or :data:`VARLEN_SDPA`).
    ``mode="block_mask"`` keeps rows ``[B, L]`` (right-padded; the padding is a causal block of its own
    so no query row is fully masked) with a 4-D block-diagonal causal ``attention_mask``: bool (True =
    attend, for SDPA) or, when ``mask_dtype`` is a float dtype, additive (0 / dtype min, for eager).

    ``real_tokens`` and ``processed_tokens`` count what went through (for the padding statistics)."""

    pad_token_id: int
    mode: Literal["varlen", "block_mask"] = "varlen"
    mask_dtype: Any = None
    pad_to_multiple_of: int | None = None
    real_tokens: int = field(default=0, init=False)
    processed_tokens: int = field(default=0, init=False)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        rows = []
        for e in examples:
            ids = list(e["input_ids"])
            labels = list(e.get("labels", ids))
            lens = list(e.get("seq_lengths") or [len(ids)])
            if sum(lens) != len(ids) or len(labels) != len(ids):
                raise ValueError("packed row: seq_lengths, input_ids and labels disagree")
            starts = [0]
            for n in lens[:-1]:
                starts.append(starts[-1] + n)
            for s in starts:
                labels[s] = -100
            rows.append((ids, labels, lens))
        self.real_tokens += sum(len(r[0]) for r in rows)
        if self.mode == "varlen":
            ids = [t for r in rows for t in r[0]]
            labels = [t for r in rows for t in r[1]]
            lens = [n for r in rows for n in r[2]]
            extra = _pad_amount(len(ids), self.pad_to_multiple_of)
            if extra:  # the padding is a sequence of its own, without loss
                ids += [self.pad_token_id] * extra
                labels += [-100] * extra
                lens.append(extra)
            self.processed_tokens += len(ids)
            cu = torch.tensor([0, *_cumsum(lens)], dtype=torch.int32)
            return {
                "input_ids": torch.tensor([ids], dtype=torch.long),
                "labels": torch.tensor([labels], dtype=torch.long),
                "position_ids": torch.cat([torch.arange(n) for n in lens])[None],
                "cu_seq_lens_q": cu,
                "cu_seq_lens_k": cu,
                "max_length_q": max(lens),
                "max_length_k": max(lens),
            }
        if self.mode != "block_mask":
            raise ValueError(f"unknown packing mode {self.mode!r}")
        width = max(len(r[0]) for r in rows)
        width += _pad_amount(width, self.pad_to_multiple_of)
        b = len(rows)
        input_ids = torch.full((b, width), self.pad_token_id, dtype=torch.long)
        label_t = torch.full((b, width), -100, dtype=torch.long)
        position_ids = torch.zeros((b, width), dtype=torch.long)
        allowed = torch.zeros((b, 1, width, width), dtype=torch.bool)
        for k, (ids, labels, lens) in enumerate(rows):
            input_ids[k, : len(ids)] = torch.tensor(ids)
            label_t[k, : len(ids)] = torch.tensor(labels)
            blocks = list(lens) + ([width - len(ids)] if width > len(ids) else [])
            o = 0
            for n in blocks:
                position_ids[k, o : o + n] = torch.arange(n)
                allowed[k, 0, o : o + n, o : o + n] = torch.ones(n, n, dtype=torch.bool).tril()
                o += n
        self.processed_tokens += b * width
        if self.mask_dtype is None or self.mask_dtype == torch.bool:
            mask = allowed
        else:
            mask = torch.zeros(allowed.shape, dtype=self.mask_dtype)
            mask.masked_fill_(~allowed, torch.finfo(self.mask_dtype).min)
        return {"input_ids": input_ids, "labels": label_t, "position_ids": position_ids, "attention_mask": mask}


def _cumsum(xs: Sequence[int]) -> list[int]:
    out, s = [], 0
    for x in xs:
        s += x
        out.append(s)
    return out


def _pad_amount(n: int, multiple: int | None) -> int:
    return (-n) % multiple if multiple else 0


# ------------------------------------------------------------------------------- segment-wise attention


def varlen_sdpa_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: Any = None,
    cu_seq_lens_k: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Causal SDPA on each packed sequence separately (``query``: ``[1, heads, N, dim]``).

    The sequences are given by ``cu_seq_lens_q`` (from :class:`PackedCollator`, ``mode="varlen"``).
    Without them it refuses to run: silently attending across sequences is the failure it exists to
    prevent. Switch the model back to ``sdpa`` for inference (:func:`restore_attention`)."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import repeat_kv

    if cu_seq_lens_q is None:
        raise RuntimeError(
            f"attention {VARLEN_SDPA!r} needs cu_seq_lens_q (batches from PackedCollator(mode='varlen')); "
            "set the model's attention back to 'sdpa' for anything else"
        )
    if query.shape[0] != 1:
        raise RuntimeError(f"{VARLEN_SDPA}: expected one flattened row, got a batch of {query.shape[0]}")
    if kwargs.get("sliding_window"):
        raise NotImplementedError(f"{VARLEN_SDPA}: sliding-window attention layers are not supported")
    if cu_seq_lens_k is not None and not torch.equal(cu_seq_lens_k, cu_seq_lens_q):
        raise NotImplementedError(f"{VARLEN_SDPA}: query and key boundaries must be equal (self-attention)")
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    bounds = cu_seq_lens_q.tolist()
    outs = [
        F.scaled_dot_product_attention(
            query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout, scale=scaling, is_causal=True
        )
        for s, e in itertools.pairwise(bounds)
        if e > s
    ]
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    return out.transpose(1, 2).contiguous(), None


def register_varlen_sdpa() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_attention)


def choose_layout(model: Any, attention: PackingAttention = "auto") -> tuple[Literal["varlen", "block_mask"], Any]:
    """Pick the packed layout for ``model`` and switch its attention if needed.

    Returns ``(mode, mask_dtype)`` for :class:`PackedCollator`. ``auto``: flash-attention keeps its
    native varlen kernel; SDPA is switched to :data:`VARLEN_SDPA`; eager attention gets the 4-D mask
    (additive, in the model's dtype). ``varlen``/``block_mask`` force a layout."""
    import torch

    impl = model.config._attn_implementation or "sdpa"
    if attention == "auto":
        attention = "block_mask" if impl == "eager" else "varlen"
    if attention == "varlen":
        if impl in FLASH_IMPLEMENTATIONS or impl == VARLEN_SDPA:
            return "varlen", None
        if impl != "sdpa":
            raise ValueError(f"packing: varlen layout needs sdpa or flash attention, the model uses {impl!r}")
        register_varlen_sdpa()
        model.set_attn_implementation(VARLEN_SDPA)
        return "varlen", None
    if impl in FLASH_IMPLEMENTATIONS or impl == "flex_attention":
        raise ValueError(f"packing: a 4-D mask does not work with {impl!r}; use packing_attention='varlen'")
    if impl == VARLEN_SDPA:
        model.set_attn_implementation("sdpa")
        impl = "sdpa"
    return "block_mask", (torch.bool if impl == "sdpa" else model.dtype)


def restore_attention(model: Any, original: str | None) -> None:
    """Undo :func:`choose_layout`'s switch (the saved model must not name our training-only kernel)."""
    if model.config._attn_implementation == VARLEN_SDPA:
        model.set_attn_implementation(original if original and original != VARLEN_SDPA else "sdpa")
