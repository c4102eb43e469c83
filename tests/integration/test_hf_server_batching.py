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


def test_a_request_whose_client_hung_up_is_dropped_before_decoding(tiny_model: Path) -> None:
    """A client that times out and retries must not leave the server decoding for nobody: a queued request
    whose client has gone is dropped (ConnectionResetError), the others are decoded as one batch."""
    import asyncio

    from kubedistill.serve.hf_server import HFGenerator

    gen = HFGenerator(str(tiny_model), threads=1, max_batch=8)
    bodies = [
        {
            "model": "m",
            "messages": [{"role": "user", "content": f"What is {i} + 1?"}],
            "max_tokens": 5,
            "temperature": 0,
        }
        for i in range(4)
    ]

    async def some_gone() -> list:
        return await asyncio.gather(
            *(gen.submit(b, gone=(lambda: True) if i % 2 else None) for i, b in enumerate(bodies)),
            return_exceptions=True,
        )

    results = asyncio.run(some_gone())
    assert [type(r).__name__ for r in results] == ["dict", "ConnectionResetError", "dict", "ConnectionResetError"]
    assert gen.abandoned == 2 and gen.batches == [2]  # only the two live requests were decoded, together


def test_over_http_a_timed_out_client_does_not_pile_work_on_the_server(tiny_model: Path) -> None:
    """Over a real HTTP server on 127.0.0.1: requests whose client gave up while the decoder was busy are
    not decoded afterwards (the server's count of abandoned requests), and a fresh request is answered."""
    import asyncio
    import socket
    import threading
    import time

    import aiohttp
    from aiohttp import web

    from kubedistill.serve.hf_server import HFGenerator, make_app

    gen = HFGenerator(str(tiny_model), threads=1, max_batch=2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(gen, "m"), handler_cancellation=True)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    deadline = time.time() + 30
    while time.time() < deadline:  # up
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
    try:
        with gen.lock:  # the decoder is busy: every request waits in the queue

            async def give_up() -> None:
                async with aiohttp.ClientSession() as session:
                    tasks = [session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=0.5)) for _ in range(5)]
                    for r in await asyncio.gather(*tasks, return_exceptions=True):
                        assert isinstance(r, asyncio.TimeoutError)

            asyncio.run(give_up())
            time.sleep(0.3)  # the server sees the hang-ups
        deadline = time.time() + 30
        while gen.abandoned < 5 and time.time() < deadline:
            time.sleep(0.1)

        async def fresh() -> dict:
            async with aiohttp.ClientSession() as session, session.post(url, json=body) as r:
                return await r.json()

        answer = asyncio.run(fresh())
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert gen.abandoned == 5 and gen.batches == []  # none of the five was decoded
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
