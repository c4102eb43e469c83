"""Errors and exit codes, defined once for every front-end (CLI, KFP component, ``python -m``).

Each error a user can act on derives from one of two bases, and the base decides the exit code:

* :class:`BadInputError` — exit 2: the user must fix an input, a config or an argument; the message is
  one line and names what is wrong (a key, a file, a flag). Nothing was written.
* :class:`PartialFailure` — exit 3: the work ran, but some of it failed after every retry (listed in a
  rejects file or named in the message); finished teacher requests are cached, so the same command
  again redoes only what failed.

Anything else is a bug: exit 1 with the traceback. Modules raise their own subclasses (``ConfigError``,
``RecordsError``, ``EndpointError``, ``StageFailed``...), and :func:`exit_code_for` never needs to import
them, so this module imports nothing of kubedistill's.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130


class KubedistillError(Exception):
    """Base of the errors kubedistill reports as one line (no traceback)."""

    exit_code = EXIT_BUG


class BadInputError(KubedistillError):
    """The user must fix an input, a config or an argument (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class PartialFailure(KubedistillError):
    """Work ran but some of it failed after every retry; running the same command again resumes (exit 3)."""

    exit_code = EXIT_PARTIAL


class UserError(BadInputError, RuntimeError):
    """Anything else the user must fix (a missing model, a bad argument combination)."""


class NoTrainingDataError(UserError, ValueError):
    """A trainer got nothing usable to train on (no CoTs, no pairs, no scores, no problems)."""


class RunFailed(PartialFailure, RuntimeError):
    """A pipeline run stopped at a failed task (the message names it and its error)."""


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code of an exception reported as one line; None for a bug (show the traceback)."""
    if isinstance(exc, KubedistillError):
        return exc.exit_code
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        return EXIT_BAD_INPUT
    return None
