"""What every ``kubedistill`` subcommand shares: the tracking options, config files, error handling.

Imports only the standard library at module level, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def tracking_args(p: argparse.ArgumentParser) -> None:
    """``--experiment``, ``--tracking-uri``, ``--no-tracking``."""
    g = p.add_argument_group("tracking")
    g.add_argument("--experiment", default="kubedistill", help="MLflow experiment (default: %(default)s)")
    g.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    g.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")


def tracking(ns: argparse.Namespace) -> Any:
    """The :class:`~kubedistill.tracking.TrackingConfig` of the tracking options."""
    from kubedistill.tracking import TrackingConfig

    return TrackingConfig(experiment=ns.experiment, tracking_uri=ns.tracking_uri, enabled=not ns.no_tracking)


def config_file(path: Path | str | None) -> dict[str, Any]:
    """A ``--config`` YAML file as a dict (``{}`` without one); ``ConfigError`` unless it is a mapping."""
    from kubedistill.core.config import ConfigError, load_yaml

    if path is None:
        return {}
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data


def run_handler(handler: Handler, ns: argparse.Namespace) -> int:
    """Run a subcommand; errors a user can act on become one line on stderr (redacted: an error may quote
    an endpoint's reply) and their exit code (kubedistill/core/errors.py), Ctrl-C exit 130, anything else
    a traceback."""
    from kubedistill.core.errors import EXIT_INTERRUPTED, exit_code_for

    try:
        return handler(ns)
    except KeyboardInterrupt:
        print("kubedistill: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        code = exit_code_for(e)
        if code is None:
            raise
        from kubedistill.core.secrets import redact

        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"kubedistill: error: {redact(msg)}", file=sys.stderr)
        return code
