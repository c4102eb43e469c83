"""The transformers server decodes concurrent greedy requests as one batch, with the same answers as alone."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_greedy_requests_arriving_together_are_batched_with_the_answers_they_get_alone(tiny_model: Path) -> None:
    import asyncio

    from kubedistill.serve.hf_server import HFGenerator

    gen = HFGenerator(str(tiny_model), threads=1, max_batch=4)
    bodies = [
        {
            "model": "m",
            "messages": [{"role": "user", "content": "What is " + "1 + " * i + "1?"}],
            "max_tokens": 6 + i,
            "temperature": 0.0,
        }
        for i in range(6)
    ]
    alone = [gen.chat(b) for b in bodies]
    assert gen.batches == []

    async def together() -> list[dict]:
        return await asyncio.gather(*(gen.submit(b) for b in bodies))

    batched = asyncio.run(together())
    assert sorted(gen.batches) == [2, 4]  # six requests, at most four at a time
    for a, b in zip(alone, batched, strict=True):
        assert b["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]
        assert b["usage"] == a["usage"] and b["choices"][0]["finish_reason"] == a["choices"][0]["finish_reason"]
    # each request keeps its own max_tokens in a batch that runs to the largest
    assert [r["usage"]["completion_tokens"] <= 6 + i for i, r in enumerate(batched)] == [True] * 6
    # sampled requests are decoded alone (a seed reproduces), never batched
    sampled = {**bodies[1], "temperature": 1.0, "seed": 3}
    first, second = gen.chat(sampled), gen.chat(sampled)
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    with pytest.raises(ValueError, match="only greedy"):
        gen.chat_batch([sampled, bodies[0]])
