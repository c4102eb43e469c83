"""`kubedistill …`: one subcommand per stage (derived from the stage table), plus evaluate, serve, chat,
compile, run and submit.

Start-up stays fast: the CLI imports only the standard library and the stage table; each subcommand
imports what it needs when it runs (``kubedistill generate`` never imports torch).

Exit codes (kubedistill/core/errors.py): 0 done; 2 bad input or configuration (one-line message); 3 the
stage ran but some work failed (e.g. teacher requests after all retries; listed in the rejects file);
130 interrupted; 1 anything unexpected (with its traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kubedistill.cli import evaluate, pipelines, serve, stages
from kubedistill.cli.common import run_handler
from kubedistill.core.errors import EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    """The ``kubedistill`` parser: every subcommand, each with its handler as ``handler``."""
    from kubedistill import __version__

    parser = argparse.ArgumentParser(
        prog="kubedistill",
        description="Distil reasoning from teacher LLMs into small students, as Kubeflow Pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"kubedistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, handler in stages.register(sub).items():
        sub.choices[name].set_defaults(handler=handler)
    for module in (evaluate, serve, pipelines):
        for name, (add_args, handler, help_text) in module.COMMANDS.items():
            sp = sub.add_parser(name, help=help_text, description=help_text)
            add_args(sp)
            sp.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``kubedistill ...``: parse, run the subcommand, return its exit code."""
    import os

    # We use no pydantic plugins; looking them up scans every installed package's entry points (~20 ms).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "handler", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    return run_handler(ns.handler, ns)


__all__ = ["build_parser", "main", "run_handler"]

if __name__ == "__main__":
    sys.exit(main())
