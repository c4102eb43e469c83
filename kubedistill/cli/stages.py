"""``kubedistill <stage>``: one subcommand per row of the stage table that has a :class:`~kubedistill.stages.Cli`.

Every subcommand is made from its row: ``--input`` / ``--output`` for the ports the row names, ``--<port>``
for the other ports, ``--rejects`` / ``--stats`` for record stages, ``--config`` (the stage's config as
YAML; flags override it), ``--<param>`` for plain parameters, the row's own options (``--temperature``,
``--judge-url``, ...) and the tracking options. The handler runs :func:`kubedistill.runner.run_stage`
and prints what it did.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kubedistill.cli.common import config_file, tracking, tracking_args
from kubedistill.stages import ClientOptions, EndpointOptions, Option, Stage, cli_stages

_CLIENT_FLAGS: dict[str, tuple[str, type, str]] = {
    "concurrency": ("--concurrency", int, "requests in flight (default 64)"),
    "max_retries": ("--max-retries", int, "retries per request (default 8)"),
    "timeout_s": ("--timeout", float, "per-attempt timeout in s (default: scales with max tokens)"),
    "cache_dir": ("--cache-dir", str, "durable request cache (resume after a kill)"),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_arguments(p: argparse.ArgumentParser, spec: Stage) -> None:
    """The flags of ``kubedistill <spec.command>``."""
    cli = spec.cli
    assert cli is not None
    for port in spec.inputs:
        flag = "--input" if port.name == cli.input else _flag(port.name)
        required = not (port.optional or port.cli_optional)
        many = {"nargs": "+", "metavar": "PATH"} if port.many else {}
        p.add_argument(flag, dest=f"port_{port.name}", required=required, default=None, help=port.help or None, **many)
    for port in spec.outputs:
        if port.name in ("rejects", "metrics"):
            continue
        flag = "--output" if port.name == cli.output else _flag(port.name)
        p.add_argument(flag, dest=f"port_{port.name}", required=flag == "--output", default=None, help=port.help)
    if spec.kind == "records":
        p.add_argument("--rejects", default=None, help="rejects file (default: <output>.rejects.jsonl)")
        p.add_argument("--stats", default=None, help="stats file (default: <output>.stats.json)")
    elif spec.kind == "files" and any(port.records for port in spec.inputs):
        p.add_argument(
            "--rejects",
            default=None,
            help="rejects file, written when rows are refused (default: <output>.rejects.jsonl)",
        )
    if spec.config:
        p.add_argument(
            "--config",
            type=Path,
            required=cli.config_required,
            default=None,
            help="the stage's settings (YAML); flags override them",
        )
    for param in spec.params:
        p.add_argument(_flag(param.name), dest=f"param_{param.name}", type=param.type, default=None, help=param.help)
    for option in cli.options:
        _add_option(p, option)
    if spec.tracked:
        tracking_args(p)


def _add_option(p: argparse.ArgumentParser, option: Any) -> None:
    if isinstance(option, Option):
        kwargs: dict[str, Any] = {"help": option.help, "dest": f"opt_{_dest(option.flag)}"}
        if option.action == "store_true":
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=option.type, default=[] if option.action == "append" else None)
            if option.action == "append":
                kwargs["action"] = "append"
            if option.metavar:
                kwargs["metavar"] = option.metavar
        p.add_argument(option.flag, **kwargs)
    elif isinstance(option, EndpointOptions):
        g = p.add_argument_group(option.title)
        pre = option.prefix
        if option.many:
            g.add_argument(
                f"--{pre}-url", action="append", default=[], help="OpenAI-compatible base URL, e.g. http://host:8000/v1"
            )
            g.add_argument(f"--{pre}-model", action="append", default=[], help="model name served at that URL")
            g.add_argument(
                f"--{pre}-name", action="append", default=[], help="label for records (default: the model name)"
            )
            g.add_argument(
                f"--{pre}-api-key-env",
                action="append",
                default=[],
                help="environment variable holding that endpoint's API key",
            )
        else:
            g.add_argument(f"--{pre}-url", default=None, help="OpenAI-compatible base URL")
            g.add_argument(f"--{pre}-model", default=None, help="model name served there")
            g.add_argument(f"--{pre}-api-key-env", default=None, help="environment variable with its API key")
    elif isinstance(option, ClientOptions):
        g = p.add_argument_group("chat client")
        for key, (flag, typ, help_text) in _CLIENT_FLAGS.items():
            if not option.only or key in option.only:
                g.add_argument(flag, dest=f"client_{key}", type=typ, default=None, help=help_text)
        if not option.only:
            g.add_argument("--no-progress", dest="client_no_progress", action="store_true", help="no progress bar")


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    from kubedistill.core.config import set_dotted

    set_dotted(data, dotted, value)


def _apply_options(spec: Stage, ns: argparse.Namespace, cfg: dict[str, Any], args: dict[str, Any]) -> None:
    from kubedistill.core.config import ConfigError

    assert spec.cli is not None
    for option in spec.cli.options:
        if isinstance(option, Option):
            value = getattr(ns, f"opt_{_dest(option.flag)}")
            if value in (None, [], False):
                continue
            if option.key:
                _set(cfg, option.key, value)
            else:
                args[str(option.arg)] = value
        elif isinstance(option, EndpointOptions):
            pre = option.prefix.replace("-", "_")
            urls, models = getattr(ns, f"{pre}_url"), getattr(ns, f"{pre}_model")
            keys = getattr(ns, f"{pre}_api_key_env")
            if option.many:
                if len(urls) != len(models):
                    raise ConfigError(
                        f"give one --{option.prefix}-model per --{option.prefix}-url "
                        f"(got {len(urls)} url(s), {len(models)} model(s))"
                    )
                names = getattr(ns, f"{pre}_name")
                if urls:
                    endpoints = []
                    for i, (url, model) in enumerate(zip(urls, models, strict=True)):
                        e: dict[str, Any] = {"url": url, "model": model}
                        if i < len(names):
                            e["name"] = names[i]
                        if i < len(keys):
                            e["api_key_env"] = keys[i]
                        endpoints.append(e)
                    cfg[option.key] = endpoints
            elif urls or models:
                if not (urls and models):
                    raise ConfigError(f"give both --{option.prefix}-url and --{option.prefix}-model")
                cfg[option.key] = {"url": urls, "model": models, "api_key_env": keys}
        elif isinstance(option, ClientOptions):
            client = dict(cfg.get(option.key) or {})
            for key in _CLIENT_FLAGS:
                value = getattr(ns, f"client_{key}", None)
                if value is not None:
                    client[key] = value
            if getattr(ns, "client_no_progress", False):
                client["progress"] = False
            if client:
                cfg[option.key] = client


def _count_lines(path: str | Path) -> int:
    """Rows in a JSONL file (0 when there is none)."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def _default_output(primary: Path, port_name: str) -> Path:
    from kubedistill.runner import beside

    return beside(primary, f".{port_name}.jsonl")


def run(spec: Stage, ns: argparse.Namespace) -> int:
    """The handler of ``kubedistill <spec.command>``."""
    from kubedistill.runner import beside, run_stage

    cli = spec.cli
    assert cli is not None
    cfg = config_file(ns.config) if spec.config else {}
    args: dict[str, Any] = {}
    _apply_options(spec, ns, cfg, args)
    paths: dict[str, Any] = {}
    for port in (*spec.inputs, *spec.outputs):
        value = getattr(ns, f"port_{port.name}", None)
        if value is not None:
            paths[port.name] = value
    primary = Path(paths[cli.output]) if cli.output else None
    if primary is not None:
        for port in spec.record_outputs:
            if port.name not in paths:
                paths[port.name] = str(_default_output(primary, port.name))
        for port in spec.outputs:
            if port.suffix and port.name not in paths:
                paths[port.name] = str(beside(primary, port.suffix))
        if spec.kind == "records":
            paths["rejects"] = ns.rejects or str(beside(primary, ".rejects.jsonl"))
            paths["stats"] = ns.stats or str(beside(primary, ".stats.json"))
        elif getattr(ns, "rejects", None):
            paths["rejects"] = ns.rejects
    params = {p.name: getattr(ns, f"param_{p.name}") for p in spec.params if getattr(ns, f"param_{p.name}") is not None}
    params.update({k: v for k, v in args.items() if k in {p.name for p in spec.params}})
    paths.update({k: v for k, v in args.items() if k not in params})
    result = run_stage(
        spec.name,
        config=cfg if spec.config else None,
        tracking=tracking(ns) if spec.tracked else None,
        paths=paths,
        params=params,
        allow_empty_inputs=False,  # the files are a person's: an empty one is a mistake, said in one line
    )
    if spec.kind == "task":
        if result.value is not None:
            print(result.value)
        return 0
    m = result.metrics
    if spec.kind == "records":
        drops = ", ".join(f"{k.removeprefix('dropped.')}={int(v)}" for k, v in m.items() if k.startswith("dropped."))
        print(
            f"{spec.name}: in={int(m.get('n_in', 0))} out={int(m.get('n_out', 0))} dropped: {drops or 'none'}",
            file=sys.stderr,
        )
        counts = {port: int(m[metric]) for port, metric in cli.counts if metric in m}  # several record outputs
        print(f"wrote {counts.get(str(cli.output), int(m.get('n_out', 0)))} record(s) to {primary}", file=sys.stderr)
        for port in spec.record_outputs:
            if port.name != cli.output:
                n = f"{counts[port.name]} record(s): " if port.name in counts else ""
                print(f"{port.name}: {n}{paths[port.name]}", file=sys.stderr)
        others = {k.removeprefix("input_rejects."): int(v) for k, v in m.items() if k.startswith("input_rejects.")}
        for port_name, n in others.items():
            print(f"{port_name}: {n} row(s) refused while reading (not counted in `in`)", file=sys.stderr)
        written = _count_lines(paths["rejects"])  # some drops are counts only (collect's resampled_out)
        if written:
            print(f"rejects ({written}) in {paths['rejects']}", file=sys.stderr)
    else:
        print(f"{spec.command}: {json.dumps(m)}", file=sys.stderr)
        print(f"{cli.output} written to {primary}", file=sys.stderr)
        if result.rejects is not None:
            print(f"rejects in {result.rejects}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> dict[str, Any]:  # type: ignore[type-arg]
    """Add every stage subcommand to ``sub``; returns ``{command: handler}``."""
    handlers: dict[str, Any] = {}
    for spec in cli_stages():
        p = sub.add_parser(spec.command, help=spec.help, description=spec.help)
        add_arguments(p, spec)
        handlers[spec.command] = lambda ns, spec=spec: run(spec, ns)
    return handlers
