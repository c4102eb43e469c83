"""What every verifier returns: a :class:`Verdict`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Method = Literal["math-verify", "choice", "sandbox", "reasoning-gym", "none"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check."""

    correct: bool | None  # None = cannot tell (no reference, unparsable gold): NEVER counted as correct
    method: str  # "math-verify" | "choice" | "sandbox" | "reasoning-gym" | "none"
    detail: str = ""  # why: parsed gold / parsed prediction, first failing test, timeout, ...
