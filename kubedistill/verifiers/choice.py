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
``\\boxed{B}``; an explicit statement — "Answer: B", "the answer is (B)", "correct option is **B**",
"I would pick B", "After checking all four, I choose C.", "I'll go with (D)", "B is correct", and a
lowercase letter when the statement ends with it ("answer: c"); a bold letter ``**B**``; a line that is
only a letter (``B``, ``(B)``, ``B.``); the response ending in a letter (``... so it is B.``); the text
of exactly one choice in the final statement or last line.
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
    explicit = _explicit_choices(response, letters)
    if explicit:
        return explicit[-1][1]
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


# what may stand between an anchor and the letter: markdown, "option", "(", "$\\text{"...
_OPENING = r"(?:\*\*|__|\$|\\text\{|\\textbf\{|\\boxed\{|[ \t])*[\(\[]?[ \t]*"
_ANCHORS = [
    # "Answer: B", "the final answer is (B)", "correct option is **B**", "answer is option B", "answer: c"
    r"\b(?:final\s+answer|answer|correct\s+(?:option|choice|answer)|best\s+(?:option|choice|answer)|option|choice)\b"
    r"(?:\s*\*\*)?(?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be))?(?:\s*\*\*)?\s*"
    r"(?:option|choice)?\s*[:：=]?",
    # "I would pick B", "After checking all four, I choose C.", "I'll go with (D)", "we select A", "opt for B"
    r"\b(?:pick|picks|picked|choose|chooses|chose|select|selects|selected|go\s+with|going\s+with|opt\s+for)\b"
    r"(?:\s+(?:option|choice|answer|letter))?\s*[:：]?",
]
_EXPLICIT = [re.compile(f"(?i:{anchor}){_OPENING}", re.MULTILINE) for anchor in _ANCHORS]
# "B is correct", "(C) is the right answer", "**D** is the answer"
_LETTER_FIRST = re.compile(
    r"(?:^|[\s(\[*])[\(\[]?([A-Z])[\)\]]?(?:\*\*)?\s+is\s+(?:the\s+)?(?:correct|right|best|answer)\b",
    re.MULTILINE,
)


def _explicit_choices(text: str, letters: str) -> list[tuple[int, str]]:
    """(position, letter) of every explicit statement of a choice, in order.

    After an anchor ("answer:", "I choose"), an uppercase letter in range counts when no letter or
    digit follows it; a lowercase one only when the statement ends right after it (end of line or
    punctuation), so the article in "the answer is a prime" is not read as (A)."""
    found: list[tuple[int, str]] = []
    for pattern in _EXPLICIT:
        for m in pattern.finditer(text):
            rest = text[m.end() :]
            upper = re.match(r"([A-Z])(?![A-Za-z0-9])", rest)
            lower = re.match(r"([a-z])[\)\]]?(?:\*\*)?[ \t]*(?=$|\n|[.,;!?)\]—–]|\s[-—–])", rest)
            letter = upper.group(1) if upper else lower.group(1).upper() if lower else None
            if letter is not None and letter in letters:
                found.append((m.end(), letter))
    for m in _LETTER_FIRST.finditer(text):
        if m.group(1) in letters:
            found.append((m.start(1), m.group(1)))
    return sorted(found)


def _letter_patterns(cls: str) -> list[re.Pattern[str]]:
    return [
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
