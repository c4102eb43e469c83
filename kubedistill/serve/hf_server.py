"""A small OpenAI-compatible server over transformers ``generate``, for machines without vLLM.

vLLM is the server kubedistill uses (locally from ``.venv/serve``, on the cluster in the serve image
and KServe's Hugging Face runtime). This one exists for the cases vLLM does not cover: tests that
need a real model behind a real endpoint in seconds (vLLM takes ~1 minute to start on a CPU), and CPU
hosts where vLLM is not installed. It answers ``/v1/chat/completions`` (one request at a time,
greedy or sampled, with usage and finish_reason) and ``/v1/models``.

Usage: ``python -m kubedistill.serve.hf_server --model DIR --served-model-name NAME --port 8000``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from typing import Any


class HFGenerator:
    def __init__(self, model_dir: str, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir)
        self.model.eval()
        self.lock = threading.Lock()
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 4096))

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        import torch

        messages = body["messages"]
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        temperature = float(body.get("temperature", 1.0) or 0.0)
        enc = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        n_prompt = int(enc["input_ids"].shape[1])
        max_tokens = max(1, min(max_tokens, self.max_len - n_prompt))
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=float(body.get("top_p", 1.0)))
        else:
            kwargs.update(do_sample=False)
        with self.lock:
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            with torch.no_grad():
                out = self.model.generate(**enc, **kwargs)
        new = out[0, n_prompt:]
        eos = self.tokenizer.eos_token_id
        ended = eos is not None and bool((new == eos).any())
        n_completion = int((new == eos).nonzero()[0][0]) + 1 if ended and eos is not None else int(new.shape[0])
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        for stop in body.get("stop") or []:
            if stop and stop in text:
                text, ended = text.split(stop, 1)[0], True
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
        result = await asyncio.get_running_loop().run_in_executor(None, gen.chat, body)
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
    ns = ap.parse_args(argv)
    gen = HFGenerator(ns.model, ns.threads)
    web.run_app(make_app(gen, ns.served_model_name), host=ns.host, port=ns.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
