"""`kubedistill …`: one subcommand per stage, plus run / compile / submit / serve / chat.

Start-up stays fast: this module imports only the standard library; each subcommand imports what it
needs when it runs (``kubedistill generate`` never imports torch).

Exit codes: 0 done; 2 bad input or configuration (one-line message); 3 the stage ran but some work
failed (e.g. teacher requests after all retries; listed in the rejects file); 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Any]:
    """Register ``add_arguments`` for subcommand ``name``; the handler is ``cmd_<name>``."""

    def deco(add_args: Callable[[argparse.ArgumentParser], None]) -> Callable[[argparse.ArgumentParser], None]:
        _COMMANDS[name] = (add_args, help)
        return add_args

    return deco


# ----------------------------------------------------------------------------------- shared options


def _tracking_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracking")
    g.add_argument("--experiment", default="kubedistill", help="MLflow experiment (default: %(default)s)")
    g.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    g.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")


def _tracking(ns: argparse.Namespace) -> Any:
    from kubedistill.config import TrackingConfig

    return TrackingConfig(experiment=ns.experiment, tracking_uri=ns.tracking_uri, enabled=not ns.no_tracking)


def _outputs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, type=Path, help="output records (.jsonl or .parquet)")
    p.add_argument("--rejects", type=Path, default=None, help="rejects file (default: <output>.rejects.jsonl)")
    p.add_argument("--stats", type=Path, default=None, help="stats file (default: <output>.stats.json)")


def _outputs(ns: argparse.Namespace) -> Any:
    from kubedistill.runner import Outputs

    return Outputs.beside(ns.output, ns.rejects, ns.stats)


def _teacher_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("teachers (repeat --teacher-url/--teacher-model per teacher, in order)")
    g.add_argument(
        "--teacher-url", action="append", default=[], help="OpenAI-compatible base URL, e.g. http://host:8000/v1"
    )
    g.add_argument("--teacher-model", action="append", default=[], help="model name served at that URL")
    g.add_argument("--teacher-name", action="append", default=[], help="label for records (default: the model name)")
    g.add_argument(
        "--teacher-api-key-env", action="append", default=[], help="environment variable holding that teacher's API key"
    )


def _teachers(ns: argparse.Namespace) -> list[dict[str, Any]]:
    from kubedistill.config import ConfigError

    urls, models = ns.teacher_url, ns.teacher_model
    if len(urls) != len(models):
        raise ConfigError(
            f"give one --teacher-model per --teacher-url (got {len(urls)} url(s), {len(models)} model(s))"
        )
    out = []
    for i, (url, model) in enumerate(zip(urls, models, strict=True)):
        t: dict[str, Any] = {"url": url, "model": model}
        if i < len(ns.teacher_name):
            t["name"] = ns.teacher_name[i]
        if i < len(ns.teacher_api_key_env):
            t["api_key_env"] = ns.teacher_api_key_env[i]
        out.append(t)
    return out


def _client_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("teacher client")
    g.add_argument("--concurrency", type=int, default=None, help="requests in flight (default 64)")
    g.add_argument("--max-retries", type=int, default=None, help="retries per request (default 8)")
    g.add_argument(
        "--timeout", type=float, default=None, help="per-attempt timeout in s (default: scales with max tokens)"
    )
    g.add_argument("--cache-dir", type=Path, default=None, help="durable request cache (resume after a kill)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _client(ns: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    c = dict(base or {})
    for key, attr in (
        ("concurrency", "concurrency"),
        ("max_retries", "max_retries"),
        ("timeout_s", "timeout"),
        ("cache_dir", "cache_dir"),
    ):
        v = getattr(ns, attr)
        if v is not None:
            c[key] = str(v) if isinstance(v, Path) else v
    if ns.no_progress:
        c["progress"] = False
    return c


def _config_base(path: Path | None) -> dict[str, Any]:
    from kubedistill.config import ConfigError, load_yaml

    if path is None:
        return {}
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data


# ------------------------------------------------------------------------------------------ generate


@command("generate", "ask teachers for CoTs: problems.jsonl -> samples.jsonl")
def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, type=Path, help="problems (.jsonl or .parquet)")
    _outputs_args(p)
    p.add_argument("--config", type=Path, default=None, help="GenerateConfig YAML; flags override it")
    _teacher_args(p)
    p.add_argument("--temperature", type=float, action="append", default=[], help="repeat for several temperatures")
    p.add_argument("--samples", type=int, default=None, help="CoTs per (problem, teacher, temperature)")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="base seed (each sample derives its own)")
    _client_args(p)
    _tracking_args(p)


def cmd_generate(ns: argparse.Namespace) -> int:
    from kubedistill.config import GenerateConfig, validate_config
    from kubedistill.cot.generate import generate
    from kubedistill.records import Problem
    from kubedistill.runner import run_stage

    data = _config_base(ns.config)
    if ns.teacher_url or ns.teacher_model:
        data["teachers"] = _teachers(ns)
    if ns.temperature:
        data["temperatures"] = ns.temperature
    for key in ("samples", "max_tokens", "top_p", "seed"):
        if getattr(ns, key) is not None:
            data[key] = getattr(ns, key)
    data["client"] = _client(ns, data.get("client"))
    cfg = validate_config(GenerateConfig, data, "generate")
    outputs = _outputs(ns)
    stats = run_stage(
        "generate",
        generate,
        inputs={"problems": (ns.input, Problem)},
        outputs=outputs,
        cfg=cfg,
        tracking=_tracking(ns),
        fatal=("request_failed",),
    )
    _print_stats(stats, outputs)
    return 0


# ------------------------------------------------------------------------------------------ helpers


def _print_stats(stats: Any, outputs: Any) -> None:
    print(stats.summary_line(), file=sys.stderr)
    print(f"wrote {stats.n_out} record(s) to {outputs.output}", file=sys.stderr)
    if stats.n_dropped:
        print(f"rejects ({stats.n_dropped}) in {outputs.rejects}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from kubedistill import __version__

    parser = argparse.ArgumentParser(
        prog="kubedistill",
        description="Distil reasoning from teacher LLMs into small students, as Kubeflow Pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"kubedistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add_args, help_text) in _COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_args(sp)
        sp.set_defaults(handler=globals()[f"cmd_{name.replace('-', '_')}"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os

    # We use no pydantic plugins; looking them up scans every installed package's entry points (~20 ms).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "handler", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    return run_handler(ns.handler, ns)


def run_handler(handler: Handler, ns: argparse.Namespace) -> int:
    from kubedistill.errors import classify

    try:
        return handler(ns)
    except KeyboardInterrupt:
        print("kubedistill: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        code = classify(e)
        if code is None:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"kubedistill: error: {msg}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
