"""A progress bar for request batches: done/total, requests/s, tokens/s, failures.

tqdm on stderr; in a terminal it refreshes twice a second, in a log (KFP pod, CI) every 10 seconds so
logs stay readable. ``KUBEDISTILL_PROGRESS=0`` turns every bar off.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def progress_enabled(default: bool = True) -> bool:
    env = os.environ.get("KUBEDISTILL_PROGRESS")
    if env is not None:
        return env.strip().lower() not in ("0", "false", "no", "off", "")
    return default


def make_bar(total: int | None, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True) -> Any:
    """A tqdm bar tuned for terminals and for logs alike (``disable`` when progress is off)."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        mininterval=0.5 if tty else 10.0,
        dynamic_ncols=tty,
        disable=not progress_enabled(enabled),
        leave=True,
    )


class RequestProgress:
    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True) -> None:
        self.bar = make_bar(total, desc, unit="req", initial=initial, enabled=enabled)
        self.start = time.perf_counter()
        self.done = 0
        self.tokens = 0
        self.failed = 0
        self._last_postfix = 0.0

    def update(self, completion_tokens: int, failed: bool = False) -> None:
        self.done += 1
        self.tokens += completion_tokens
        self.failed += int(failed)
        self.bar.update(1)
        now = time.perf_counter()
        if now - self._last_postfix >= 1.0:
            self._last_postfix = now
            self._set_postfix(now)

    def _set_postfix(self, now: float) -> None:
        dt = max(now - self.start, 1e-9)
        post = f"{self.done / dt:.1f} req/s, {self.tokens / dt:.0f} tok/s"
        if self.failed:
            post += f", failed={self.failed}"
        self.bar.set_postfix_str(post, refresh=False)

    def close(self) -> None:
        self._set_postfix(time.perf_counter())
        self.bar.close()
