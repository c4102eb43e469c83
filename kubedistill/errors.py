"""Which exceptions are the user's to fix (one line, exit 2), which mean partial failure (exit 3)."""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3


def classify(exc: BaseException) -> int | None:
    """Exit code for an exception the CLI reports as one line; None for a bug (show the traceback)."""
    from kubedistill.config import ConfigError
    from kubedistill.prompts import PromptError
    from kubedistill.records import RecordsError
    from kubedistill.runner import StageFailed
    from kubedistill.teacher.client import TeacherError

    if isinstance(exc, StageFailed):
        return EXIT_PARTIAL
    if isinstance(exc, ConfigError | RecordsError | PromptError | TeacherError | FileNotFoundError):
        return EXIT_BAD_INPUT
    if isinstance(exc, UserError):
        return EXIT_BAD_INPUT
    if isinstance(exc, RunFailed):
        return EXIT_PARTIAL
    from kubedistill.launch import LaunchFailed

    if isinstance(exc, LaunchFailed):
        return EXIT_PARTIAL
    return None


class UserError(RuntimeError):
    """Anything else the user must fix (a missing model, a bad argument combination)."""


class NoTrainingDataError(UserError, ValueError):
    """A trainer got nothing usable to train on (no CoTs, no pairs, no scores, no problems)."""


class RunFailed(RuntimeError):
    """A pipeline run stopped at a failed task (the message names it and its error)."""
