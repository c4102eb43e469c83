"""``kubedistill serve`` (a student behind a local OpenAI-compatible server, or on KServe) and
``kubedistill chat`` (a question to such an endpoint)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kubedistill.cli.common import config_file


def serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, a directory, an alias")
    p.add_argument("--served-name", default=None, help="model name clients use (default: derived from --model)")
    p.add_argument(
        "--backend",
        choices=["vllm", "transformers", "auto"],
        default="auto",
        help="vllm (default where installed) or the transformers server",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--log", type=Path, default=None, help="server log file")
    g = p.add_argument_group("KServe (the cluster)")
    g.add_argument(
        "--render", action="store_true", help="print the KServe InferenceService (+ auth policies) for --model"
    )
    g.add_argument("--deploy", action="store_true", help="apply it, wait until Ready, smoke-test a chat completion")
    g.add_argument("--settings", type=Path, default=None, help="KServe serving settings YAML (namespace, GPUs, auth)")
    g.add_argument("--timeout", type=float, default=1800.0, help="--deploy: seconds to wait for Ready")


def cmd_serve(ns: argparse.Namespace) -> int:
    if ns.render or ns.deploy:
        from kubedistill.serve.kserve import deploy, render, to_yaml

        settings = config_file(ns.settings)
        if ns.deploy:
            result = deploy(ns.model, settings=settings, timeout_s=ns.timeout, log=lambda m: print(m, file=sys.stderr))
            print(result.openai_base_url)
            return 0
        docs = render(ns.model, settings=settings)
        note = local_storage_note(docs[0]["spec"]["predictor"]["model"]["storageUri"])
        if note:
            print(f"kubedistill serve: note: {note}", file=sys.stderr)
        print(to_yaml(docs), end="")
        return 0
    from kubedistill.serve.local import serve_forever

    return serve_forever(
        ns.model,
        served_name=ns.served_name,
        backend=ns.backend,
        host=ns.host,
        port=ns.port,
        max_model_len=ns.max_model_len,
        log_path=ns.log,
    )


# what KServe's storage initializer fetches from outside the pod (kserve/storage: Storage.download)
REMOTE_SCHEMES = ("s3://", "gs://", "pvc://", "hf://", "https://", "http://", "hdfs://", "webhdfs://", "oci://")


def local_storage_note(storage_uri: str) -> str | None:
    """A warning for a storageUri the cluster cannot fetch: a path (or ``file://``) or a built-in model name
    of this machine, which the predictor pod would look for in its own filesystem. None for a remote URI."""
    if storage_uri.startswith(REMOTE_SCHEMES):
        return None
    return (
        f"storageUri {storage_uri!r} is not fetched from anywhere: the predictor pod looks for it in its own "
        "filesystem (a model baked into the image). To serve weights from this machine, upload them "
        "(s3://..., pvc://...) or register them in MLflow and give --model models:/NAME/VERSION"
    )


def chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("question", nargs="?", default=None, help="the question (default: read lines from stdin)")
    p.add_argument("--url", default="http://127.0.0.1:8000/v1", help="endpoint base URL (default: %(default)s)")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--api-key-env", default=None, help="environment variable with the endpoint's API key")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0)


def cmd_chat(ns: argparse.Namespace) -> int:
    from kubedistill.chat import ChatClient, ChatRequest, ClientConfig, EndpointConfig
    from kubedistill.core.errors import EXIT_PARTIAL
    from kubedistill.core.text import split_think, with_reasoning

    client = ChatClient(
        [EndpointConfig(url=ns.url, model=ns.model, api_key_env=ns.api_key_env)],
        ClientConfig(progress=False, max_retries=2, timeout_s=600),
    )
    client.check(timeout_s=5.0, attempts=2)
    questions = [ns.question] if ns.question else (line.strip() for line in sys.stdin if line.strip())
    for q in questions:
        messages = ([{"role": "system", "content": ns.system}] if ns.system else []) + [{"role": "user", "content": q}]
        [res] = client.run(
            [
                ChatRequest(
                    endpoint=ns.model,
                    messages=messages,
                    params={"max_tokens": ns.max_tokens, "temperature": ns.temperature},
                )
            ]
        )
        if not res.ok:
            print(f"kubedistill: error: {res.error}", file=sys.stderr)
            return EXIT_PARTIAL
        text = with_reasoning(res.content, res.reasoning)
        split = split_think(text)
        if split.reasoning != split.answer_part:
            print(f"[thinking]\n{split.reasoning}\n[answer]")
        print(split.answer_part if split.closed else text)
        if res.finish_reason == "length":
            print(f"[cut off at {ns.max_tokens} tokens]", file=sys.stderr)
    return 0


COMMANDS: dict[str, tuple[Any, Any, str]] = {
    "serve": (
        serve_args,
        cmd_serve,
        "serve a student (a directory or models:/NAME@ALIAS) as a local OpenAI-compatible server",
    ),
    "chat": (
        chat_args,
        cmd_chat,
        "send a question to an OpenAI-compatible endpoint (e.g. one `kubedistill serve` started)",
    ),
}
