"""Multiple-choice answers: which letter did the response pick?

Guarantees of :func:`verify_choice`:

* The gold may be a letter (``"B"``, ``"(B)"``, ``"B."``, ``\\boxed{B}``) or the text of one of the
  ``choices`` (mapped to its letter). A gold that is neither (or a letter outside the choices) gives
  ``correct=None``.
* Only letters within range count: with 4 choices, ``E`` is never read as an answer; without
  ``choices`` the range is A-J.
* ``correct=False`` with detail ``"no choice found"`` when the response names no letter and quotes no
  choice text in its final statement.

What counts as the response's choice, by priority (the last match of the first rule that matches):
``\\boxed{B}``; an explicit statement ("Answer: B", "the answer is (B)", "correct option is **B**");
a bold letter ``**B**``; a line that is only a letter (``B``, ``(B)``, ``B.``); the response ending in
a letter (``... so it is B.``); the text of exactly one choice in the final statement or last line.
"""

from __future__ import annotations

import re
import string

from kubedistill.core.text import last_boxed
from kubedistill.verifiers.verdict import Verdict

__all__ = ["extract_choice", "gold_letter", "verify_choice"]

METHOD = "choice"
_DEFAULT_LETTERS = string.ascii_uppercase[:10]


def verify_choice(gold: str, response: str, choices: list[str] | None = None) -> Verdict:
    """Does ``response`` pick the same choice as ``gold``? See the module docstring."""
    letters = _letters(choices)
    want = gold_letter(gold, choices)
    if want is None:
        return Verdict(None, METHOD, f"gold {gold[:80]!r} is not a choice letter ({letters[0]}-{letters[-1]}) or text")
    got = extract_choice(response, choices)
    if got is None:
        return Verdict(False, METHOD, f"no choice found (gold={want})")
    return Verdict(got == want, METHOD, f"gold={want} pred={got}")


def gold_letter(gold: str, choices: list[str] | None = None) -> str | None:
    """The letter of the gold answer: a letter in range, or the letter of the choice whose text it is."""
    letters = _letters(choices)
    letter = _bare_letter(gold, letters)
    if letter is not None:
        return letter
    if choices:
        key = _norm(gold)
        for i, choice in enumerate(choices):
            if key and _norm(choice) == key:
                return letters[i]
    return None


def extract_choice(response: str, choices: list[str] | None = None) -> str | None:
    """The letter ``response`` picks (see the module docstring for the rules), or None."""
    letters = _letters(choices)
    boxed = last_boxed(response)
    if boxed is not None:
        picked = _bare_letter(boxed, letters) or _leading_letter(boxed, letters) or _choice_text(boxed, choices)
        if picked:
            return picked
    cls = f"[{letters}]"
    for pattern in _letter_patterns(cls):
        found = pattern.findall(response)
        if found:
            return str(found[-1])
    statement = _final_statement(response)
    for text in (statement, _last_line(response)):
        if text:
            picked = _choice_text(text, choices)
            if picked:
                return picked
    return None


# ------------------------------------------------------------------------------------------- helpers


def _letters(choices: list[str] | None) -> str:
    return string.ascii_uppercase[: len(choices)] if choices else _DEFAULT_LETTERS


_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}")


def _strip_wrappers(text: str) -> str:
    t = _WRAPPERS.sub(r"\1", text.strip())
    inner = last_boxed(t)
    if inner is not None:
        t = inner
    return t.replace("$", "").replace("*", "").strip()


def _bare_letter(text: str, letters: str) -> str | None:
    """``B``, ``(B)``, ``[B]``, ``B.``, ``B)``, ``\\text{B}``, ``**B**`` -> ``B`` (if in range)."""
    m = re.fullmatch(r"[\(\[]?\s*([A-Z])\s*[\)\]]?\s*[.:]?", _strip_wrappers(text))
    return m.group(1) if m and m.group(1) in letters else None


def _leading_letter(text: str, letters: str) -> str | None:
    """``(B) 42`` or ``B) 42`` or ``B. 42`` -> ``B``."""
    m = re.match(r"\s*\(?([A-Z])[\).:]\s+\S", _strip_wrappers(text))
    return m.group(1) if m and m.group(1) in letters else None


def _letter_patterns(cls: str) -> list[re.Pattern[str]]:
    end = r"(?![A-Za-z0-9])"
    opening = r"(?:\*\*|__|\$|\\text\{|\\textbf\{|\\boxed\{)*\s*[\(\[]?\s*"
    statement = (
        r"(?i:\b(?:final\s+answer|answer|correct\s+(?:option|choice|answer)|option|choice)\b)"
        r"(?:\s*\*\*)?(?:\s+(?i:is|would\s+be|should\s+be|will\s+be))?\s*(?i:option|choice)?\s*[:：=]?\s*"
    )
    return [
        re.compile(statement + opening + f"({cls}){end}"),
        re.compile(rf"\*\*\s*[\(\[]?({cls})[\)\]]?[.:]?\s*\*\*"),
        re.compile(rf"^[ \t]*[\(\[]?({cls})[\)\]]?[.:]?[ \t]*$", re.MULTILINE),
        re.compile(rf"(?:^|[\s(\[])[\(\[]?({cls})[\)\]]?[.!]?\s*\Z"),
    ]


_STATEMENT = re.compile(r"(?:final\s+answer|\banswer)\s*(?:is|:|=)\s*(.+)", re.IGNORECASE)


def _final_statement(text: str) -> str | None:
    found = _STATEMENT.findall(text)
    return found[-1] if found else None


def _last_line(text: str) -> str | None:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _norm(text: str) -> str:
    t = _strip_wrappers(text).casefold()
    t = re.sub(r"\s+", " ", t)
    return t.strip(" \t\"'`“”‘’.,;:!")


def _choice_text(text: str, choices: list[str] | None) -> str | None:
    """The letter of the one choice whose text ``text`` is (or, failing that, uniquely contains)."""
    if not choices:
        return None
    key = _norm(text)
    if not key:
        return None
    norms = [_norm(c) for c in choices]
    exact = [i for i, c in enumerate(norms) if c and c == key]
    if len(exact) == 1:
        return string.ascii_uppercase[exact[0]]
    contained = [i for i, c in enumerate(norms) if c and re.search(rf"(?<!\w){re.escape(c)}(?!\w)", key)]
    # a choice contained in a longer matching choice ("5" in "15") does not count on its own
    maximal = [i for i in contained if not any(j != i and norms[i] in norms[j] for j in contained)]
    return string.ascii_uppercase[maximal[0]] if len(maximal) == 1 else None
