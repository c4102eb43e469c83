"""Tiny students built offline: a byte-level BPE tokenizer and a small Qwen3, for CPU runs and tests.

Nothing is downloaded. The tokenizer is trained in a fraction of a second on a built-in corpus (the
prompt templates, arithmetic reasoning text, reasoning-gym style questions) and can still encode any
text (byte-level). The chat template is ChatML with ``<think>`` tags, as Qwen3 uses. The model shape
keeps vLLM's CPU backend happy (head_dim 32).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Like Qwen3: one token each, but not "special" — decoding with skip_special_tokens keeps them.
THINK_TOKENS = ["<think>", "</think>"]

# ChatML, as Qwen models use; the assistant turn ends with <|im_end|> (the EOS for generation).
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def builtin_corpus(n_arith: int = 400, seed: int = 0) -> list[str]:
    """Deterministic text for tokenizer training: templates, words and numbers the students meet."""
    from kubedistill.prompts import load_prompt

    rng = random.Random(seed)
    texts: list[str] = []
    prompt = load_prompt("generate")
    for tpl in prompt.templates.values():
        texts += [tpl.system or "", tpl.user]
    words = [
        "the",
        "answer",
        "is",
        "final",
        "step",
        "first",
        "then",
        "so",
        "we",
        "have",
        "add",
        "subtract",
        "multiply",
        "divide",
        "sum",
        "total",
        "result",
        "therefore",
        "because",
        "let",
        "compute",
        "number",
        "numbers",
        "equals",
        "problem",
        "solution",
        "check",
        "verify",
        "think",
        "reason",
        "question",
        "correct",
        "value",
        "each",
        "of",
        "and",
        "to",
        "in",
        "is",
        "a",
    ]
    for _ in range(n_arith):
        a, b, c = rng.randint(0, 999), rng.randint(0, 999), rng.randint(0, 99)
        op = rng.choice(["+", "-", "*"])
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        texts.append(
            f"What is {a} {op} {b}? <think>\nFirst, {a} {op} {b} = {value}. Then add {c}: {value} + {c} = "
            f"{value + c}.\n</think>\n\nThe answer is \\boxed{{{value + c}}}. " + " ".join(rng.sample(words, 8))
        )
    texts += [f"<|im_start|>{role}\n" for role in ("system", "user", "assistant")] * 20
    texts.append("".join(chr(i) for i in range(32, 127)))
    return texts


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024):  # -> PreTrainedTokenizerFast
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_qwen3(
    out_dir: str | Path,
    *,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 32,
    intermediate_size: int = 128,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Write a randomly initialised tiny Qwen3 + tokenizer to ``out_dir`` (loadable by transformers and
    vLLM). Deterministic for a given seed."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen3Config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus if corpus is not None else builtin_corpus(), vocab_size)
    cfg = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "kubedistill.json").write_text(
        json.dumps({"built": "tiny-qwen3", "seed": seed, "params": model.num_parameters()})
    )
    return out
