"""Packed SFT batches compute exactly what the sequences compute alone; train_sft trains with them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kubedistill.core.records import Problem, Sample
from kubedistill.train.packing import (
    VARLEN_SDPA,
    PackedCollator,
    best_fit_decreasing,
    choose_layout,
    pack_rows,
    restore_attention,
)
from kubedistill.train.sft import CurriculumStage, SFTConfig, train_sft

pytestmark = pytest.mark.integration


def test_best_fit_decreasing_places_every_item_once_within_capacity() -> None:
    rng = random.Random(0)
    lengths = [max(1, min(512, int(rng.lognormvariate(4.0, 1.0)))) for _ in range(500)]
    bins = best_fit_decreasing(lengths, 512)
    placed = sorted(i for b in bins for i in b)
    assert placed == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 512 for b in bins)
    fill = sum(lengths) / (512 * len(bins))
    assert fill > 0.95, fill
    assert best_fit_decreasing(lengths, 512) == bins  # deterministic
    assert best_fit_decreasing([3, 3, 2, 2], 5) == [[0, 2], [1, 3]]  # best fit, longest first
    with pytest.raises(ValueError, match="outside"):
        best_fit_decreasing([6], 5)


def _sequences(n: int = 7, seed: int = 0) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(2, 20)
        prompt = rng.randint(1, length - 1)
        ids = [rng.randint(10, 1000) for _ in range(length)]
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def _alone(model, seqs):  # type: ignore[no-untyped-def]
    """Per-sequence logits and (summed NLL, number of loss tokens) with each sequence run alone."""
    import torch
    import torch.nn.functional as F

    logits, nll, count = [], 0.0, 0
    for s in seqs:
        out = model(input_ids=torch.tensor([s["input_ids"]])).logits[0]
        logits.append(out)
        labels = torch.tensor(s["labels"])
        nll = nll + F.cross_entropy(out[:-1], labels[1:], ignore_index=-100, reduction="sum")
        count += int((labels[1:] != -100).sum())
    return logits, nll, count


def _packed_pieces(out, rows, mode):  # type: ignore[no-untyped-def]
    """Cut the packed logits back into sequences, in packing order."""
    pieces = []
    offset = 0
    for k, row in enumerate(rows):
        if mode == "block_mask":
            offset = 0
        for n in row["seq_lengths"]:
            pieces.append(out[0 if mode == "varlen" else k, offset : offset + n])
            offset += n
    return pieces


@pytest.mark.parametrize(
    ("attn", "layout"), [("sdpa", "varlen"), ("sdpa", "block_mask"), ("eager", "block_mask"), ("eager", "auto")]
)
def test_packed_batch_equals_sequences_alone(tiny_model: Path, attn: str, layout: str) -> None:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attn)
    seqs = _sequences()
    alone_logits, alone_nll, count = _alone(model, seqs)
    alone_loss = alone_nll / count
    model.zero_grad()
    alone_loss.backward()
    alone_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    rows = pack_rows(seqs, capacity=32)
    assert 1 < len(rows) < len(seqs)  # several sequences share rows
    order = [i for b in best_fit_decreasing([len(s["input_ids"]) for s in seqs], 32) for i in b]
    mode, mask_dtype = choose_layout(model, layout)  # type: ignore[arg-type]
    assert mode == ("varlen" if layout == "varlen" else "block_mask")
    if mode == "varlen":
        assert model.config._attn_implementation == VARLEN_SDPA
    collator = PackedCollator(pad_token_id=0, mode=mode, mask_dtype=mask_dtype, pad_to_multiple_of=8)
    batch = collator(rows)
    labels = batch.pop("labels")
    # use_cache left at the model default on purpose: correctness must not depend on it
    out = model(**batch).logits
    for piece, i in zip(_packed_pieces(out, rows, mode), order, strict=True):
        torch.testing.assert_close(piece, alone_logits[i], atol=1e-5, rtol=1e-4)
    flat_logits = out[:, :-1].reshape(-1, out.shape[-1])
    flat_labels = labels[:, 1:].reshape(-1)
    assert int((flat_labels != -100).sum()) == count  # the same loss tokens, none across boundaries
    packed_loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100)
    torch.testing.assert_close(packed_loss, alone_loss, atol=1e-5, rtol=1e-5)
    model.zero_grad()
    packed_loss.backward()
    for name, g in alone_grads.items():
        p = dict(model.named_parameters())[name]
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4, msg=name)
    assert collator.real_tokens == sum(len(s["input_ids"]) for s in seqs)
    restore_attention(model, attn)
    assert model.config._attn_implementation == attn


def test_varlen_attention_refuses_batches_without_boundaries(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    choose_layout(model, "varlen")
    with pytest.raises(RuntimeError, match="cu_seq_lens_q"):
        model(input_ids=torch.tensor([[5, 6, 7]]))


def _data(n: int = 24) -> tuple[list[Problem], list[Sample]]:
    problems = [Problem(id=f"p{i}", problem=f"What is {i} + {i}?", answer=str(2 * i), source="t") for i in range(n)]
    samples = []
    for i in range(n):
        steps = " ".join(f"{i} + {k} = {i + k}." for k in range(1 + (i * 7) % 11))  # varied lengths
        samples.append(
            Sample(
                problem_id=f"p{i}",
                teacher="t",
                temperature=0.6,
                sample_index=0,
                text=f"<think>\n{steps} So {i} + {i} = {2 * i}\n</think>\n\nThe answer is \\boxed{{{2 * i}}}.",
                difficulty="medium",
            )
        )
    return problems, samples


def test_train_sft_with_packing_learns_and_saves_a_plain_model(tiny_model: Path, tmp_path: Path) -> None:
    problems, samples = _data()
    cfg = SFTConfig(
        base_model=str(tiny_model),
        learning_rate=3e-3,
        per_device_batch_size=2,
        max_length=512,
        logging_steps=1,
        packing=True,
        curriculum=[CurriculumStage(name="all", difficulties=["medium"], epochs=6)],
    )
    model_dir, stats = train_sft(samples, cfg, problems=problems, model=tmp_path / "model")
    h = stats.info["curriculum"]["all"]
    assert h["sequences"] == 24 and h["packed_rows"] < 24 and h["cut_at_max_length"] == 0
    assert h["useful_token_fraction"] == 1.0  # varlen: no padding at all
    assert h["last_loss"] < 0.8 * h["first_loss"]
    assert stats.n_out == 24
    cfg_json = json.loads((model_dir / "config.json").read_text())
    assert VARLEN_SDPA not in json.dumps(cfg_json)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config._attn_implementation != VARLEN_SDPA
    tok = AutoTokenizer.from_pretrained(model_dir)
    out = model.generate(**tok(["What is 1 + 1?", "2?"], return_tensors="pt", padding=True), max_new_tokens=3)
    assert out.shape[0] == 2


def test_packed_rows_keep_the_completion_only_labels_of_trl(tiny_model: Path) -> None:
    """Packing changes the layout, never which tokens are learnt: TRL's labels, concatenated."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from kubedistill.core.records import StageStats
    from kubedistill.train.data import sft_rows
    from kubedistill.train.packing import PackedCollator
    from kubedistill.train.sft import packed_sft_trainer_class

    problems, samples = _data(8)
    rows = sft_rows(samples, problems, StageStats(stage="t"))
    ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    tok = AutoTokenizer.from_pretrained(tiny_model)
    args = SFTConfig(output_dir="unused", max_length=512, report_to=[], use_cpu=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    plain = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train_dataset
    packed = packed_sft_trainer_class()(
        model=model, args=args, train_dataset=ds, processing_class=tok, data_collator=PackedCollator(0)
    ).train_dataset
    assert len(packed) < len(plain)
    plain_labels = sorted(tuple(x) for x in plain["labels"])
    cut = []
    for row in packed:
        o = 0
        for n in row["seq_lengths"]:
            cut.append(tuple(row["labels"][o : o + n]))
            o += n
    assert sorted(cut) == plain_labels  # prompt tokens masked, completion tokens learnt, as TRL does
    assert all(x == -100 for x in (c[0] for c in cut))


def test_trl_padding_free_batches_on_sdpa_are_correct_only_without_a_cache(tiny_model: Path) -> None:
    """What TRL 1.16's own padding-free path (packing=True) gives a non-flash model, as measured for
    docs/training.md: one flattened row, no mask. transformers 5.23 re-derives the block-diagonal mask
    from position_ids only when no KV cache is created — SFTTrainer passes use_cache=False, a plain
    forward does not. If this test fails after an upgrade, update docs/training.md."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa")
    seqs = _sequences(3)
    alone = [model(input_ids=torch.tensor([s["input_ids"]])).logits[0] for s in seqs]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{"input_ids": s["input_ids"]} for s in seqs]
    )
    batch.pop("labels")
    last = slice(-len(seqs[-1]["input_ids"]), None)
    without_cache = model(**batch, use_cache=False).logits[0]
    torch.testing.assert_close(without_cache[last], alone[-1], atol=1e-5, rtol=1e-4)
    with_cache = model(**batch).logits[0]  # the config's default use_cache=True
    assert (with_cache[last] - alone[-1]).abs().max() > 1e-2  # attends across sequences


def test_lora_with_packing_saves_a_merged_plain_model(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from kubedistill.train.sft import LoraConfig

    problems, samples = _data(12)
    cfg = SFTConfig(
        base_model=str(tiny_model),
        learning_rate=1e-2,
        per_device_batch_size=2,
        max_length=512,
        packing=True,
        lora=LoraConfig(r=4, alpha=8, dropout=0.0),
        curriculum=[CurriculumStage(name="all", difficulties=["medium"], epochs=2)],
    )
    model_dir, stats = train_sft(samples, cfg, problems=problems, model=tmp_path / "lora")
    assert not list(model_dir.glob("adapter*")) and (model_dir / "model.safetensors").exists()
    assert stats.info["curriculum"]["all"]["last_loss"] < stats.info["curriculum"]["all"]["first_loss"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    merged = AutoModelForCausalLM.from_pretrained(model_dir)
    changed = [
        n for (n, a), b in zip(base.named_parameters(), merged.parameters(), strict=True) if not torch.equal(a, b)
    ]
    assert any("q_proj" in n for n in changed)  # the adapter was merged into the weights
