"""A small OpenAI-compatible server over transformers ``generate``, for machines without vLLM.

vLLM is the server kubedistill uses (locally from ``.venv/serve``, on the cluster in the serve image
and KServe's Hugging Face runtime). This one exists for the cases vLLM does not cover: tests that
need a real model behind a real endpoint in seconds (vLLM takes ~1 minute to start on a CPU), and CPU
hosts where vLLM is not installed. It answers ``/v1/chat/completions`` (greedy requests that arrive
together are decoded as one batch, sampled ones one at a time so that a seed reproduces; with usage and
finish_reason) and ``/v1/models``.

Usage: ``python -m kubedistill.serve.hf_server --model DIR --served-model-name NAME --port 8000``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any


class HFGenerator:
    """transformers ``generate`` behind the chat route. Greedy requests that arrive together are decoded as
    one left-padded batch (up to ``max_batch``): on a CPU that is several times the throughput of one request
    at a time, and the evaluation harness sends its greedy requests concurrently. Sampled requests run one at
    a time, so that a request's ``seed`` gives the same completion every time."""

    def __init__(self, model_dir: str, threads: int | None = None, max_batch: int = 16) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir)
        self.model.eval()
        self.lock = threading.RLock()  # held while decoding; _drain takes its batch under it too
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 4096))
        self.max_batch = max(1, max_batch)
        # (body, future, its loop, whether its client has hung up)
        self._queue: list[
            tuple[dict[str, Any], asyncio.Future[dict[str, Any]], asyncio.AbstractEventLoop, Callable[[], bool] | None]
        ] = []
        self._queue_lock = threading.Lock()
        self.batches: list[int] = []  # sizes of the greedy batches decoded (for tests and logs)
        self.abandoned = 0  # queued requests dropped undecoded: their client had hung up

    @staticmethod
    def _greedy(body: dict[str, Any]) -> bool:
        return not float(body.get("temperature", 1.0) or 0.0) > 0

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request (greedy or sampled), decoded alone."""
        return self.chat_batch([body])[0]

    def chat_batch(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decode ``bodies`` together: all greedy, or a single sampled request. Each gets its own
        ``max_tokens`` (the batch runs to the largest), stop strings, usage and finish_reason."""
        import torch

        if len(bodies) > 1 and not all(self._greedy(b) for b in bodies):
            raise ValueError("only greedy requests are decoded as a batch")
        prompts = [
            self.tokenizer.apply_chat_template(b["messages"], add_generation_prompt=True, tokenize=False)
            for b in bodies
        ]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        width = int(enc["input_ids"].shape[1])
        n_prompts = [int(m.sum()) for m in enc["attention_mask"]]
        limits = [
            max(1, min(int(b.get("max_tokens") or b.get("max_completion_tokens") or 256), self.max_len - n))
            for b, n in zip(bodies, n_prompts, strict=True)
        ]
        kwargs: dict[str, Any] = {"max_new_tokens": max(limits), "pad_token_id": self.tokenizer.pad_token_id}
        first = bodies[0]
        if not self._greedy(first):
            kwargs.update(
                do_sample=True, temperature=float(first.get("temperature", 1.0)), top_p=float(first.get("top_p", 1.0))
            )
        else:
            kwargs.update(do_sample=False)
        with self.lock:
            if first.get("seed") is not None and not self._greedy(first):
                torch.manual_seed(int(first["seed"]))
            with torch.no_grad():
                out = self.model.generate(**enc, **kwargs)
            if len(bodies) > 1:
                self.batches.append(len(bodies))
        eos = self.tokenizer.eos_token_id
        results = []
        for row, body, n_prompt, limit in zip(out, bodies, n_prompts, limits, strict=True):
            new = row[width : width + limit]
            ended = eos is not None and bool((new == eos).any())
            n_completion = int((new == eos).nonzero()[0][0]) + 1 if ended and eos is not None else int(new.shape[0])
            new = new[:n_completion]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            for stop in body.get("stop") or []:
                if stop and stop in text:
                    text, ended = text.split(stop, 1)[0], True
            results.append(_completion(body, text, ended, n_prompt, n_completion))
        return results

    async def submit(self, body: dict[str, Any], gone: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Queue a request; greedy ones waiting together are decoded as one batch. ``gone`` says whether the
        client has hung up (a timed-out request its client will send again): such a request is dropped
        before decoding (``ConnectionResetError``), not decoded for nobody. Without that, a client that
        times out and retries while a long batch decodes adds its retries to the queue behind the
        abandoned originals, and the server ends up decoding only requests nobody waits for (observed:
        SmolLM2 on 2 cores answered 14 of 100 evaluation requests, then none in 10 minutes)."""
        loop = asyncio.get_running_loop()
        if not self._greedy(body):
            return await loop.run_in_executor(None, self.chat, body)
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        with self._queue_lock:
            self._queue.append((body, fut, loop, gone))
        await asyncio.sleep(0.02)  # let the requests sent together arrive
        await loop.run_in_executor(None, self._drain)
        return await fut

    def _drain(self) -> None:
        """Decode the queued greedy requests, ``max_batch`` at a time (one thread decodes; others wait, then
        find the queue empty). A batch is taken only once the decoder is free, so a request whose client
        hung up while it waited is seen as gone and dropped."""
        while True:
            with self.lock:
                with self._queue_lock:
                    batch = []
                    while self._queue and len(batch) < self.max_batch:
                        item = self._queue.pop(0)
                        _, fut, loop, gone = item
                        if fut.done() or (gone is not None and gone()):  # nobody waits for it any more
                            self.abandoned += 1
                            loop.call_soon_threadsafe(_set_exception, fut, ConnectionResetError("the client hung up"))
                            continue
                        batch.append(item)
                if not batch:
                    return
                try:
                    outs = self.chat_batch([b for b, _, _, _ in batch])
                except Exception as e:  # every waiting request learns of it
                    for _, fut, loop, _ in batch:
                        loop.call_soon_threadsafe(_set_exception, fut, e)
                    continue
            for (_, fut, loop, _), res in zip(batch, outs, strict=True):
                loop.call_soon_threadsafe(_set_result, fut, res)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _completion(body: dict[str, Any], text: str, ended: bool, n_prompt: int, n_completion: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop" if ended else "length",
            }
        ],
        "usage": {
            "prompt_tokens": n_prompt,
            "completion_tokens": n_completion,
            "total_tokens": n_prompt + n_completion,
        },
    }


def make_app(gen: HFGenerator, served_name: str) -> Any:
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": {"message": "invalid JSON"}}, status=400)
        if body.get("model") != served_name:
            return web.json_response({"error": {"message": f"model {body.get('model')!r} not served"}}, status=404)
        if not isinstance(body.get("messages"), list):
            return web.json_response({"error": {"message": "messages must be a list"}}, status=400)

        def gone() -> bool:
            transport = request.transport
            return transport is None or transport.is_closing()

        try:
            result = await gen.submit(body, gone=gone)
        except ValueError as e:
            return web.json_response({"error": {"message": str(e)}}, status=400)
        return web.json_response(result)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": served_name, "object": "model"}]})

    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", lambda _: web.Response(text="ok"))
    return app


def main(argv: list[str] | None = None) -> None:
    from aiohttp import web

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--served-model-name", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-batch", type=int, default=16, help="greedy requests decoded together")
    ns = ap.parse_args(argv)
    gen = HFGenerator(ns.model, ns.threads, ns.max_batch)
    web.run_app(
        make_app(gen, ns.served_model_name),
        host=ns.host,
        port=ns.port,
        print=None,
        access_log=None,
        handler_cancellation=True,  # a client that hangs up cancels its queued request (HFGenerator.submit)
    )


if __name__ == "__main__":
    main()
