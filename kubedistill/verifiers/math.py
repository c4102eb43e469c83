"""Math answers checked with math-verify (symbolic and numeric equivalence).

Guarantees of :func:`verify_math`:

* ``correct=True`` only when math-verify finds the prediction equivalent to the gold answer, or when
  the two answers are the same text after trivial normalisation (``$``, ``\\boxed{}``, ``\\text{}``,
  spaces, a trailing period).
* ``correct=None`` when the gold answer cannot be parsed and the texts differ: an unparsable gold is
  "cannot tell", never "correct" (open-r1 once rewarded 1.0 there).
* ``correct=False`` when no answer can be found in the response (detail ``"no answer found"``) or the
  answers differ.
* It never hangs: in the main thread math-verify's own SIGALRM timeouts apply (and a timer the caller
  had set is restored afterwards); in other threads those timeouts cannot work, so the check runs in
  a helper thread and the caller stops waiting after :data:`WORKER_THREAD_LIMIT_S` (``correct=None``,
  detail says so; the helper thread may go on computing in the background).

Where the answer is read from, in order: the last ``\\boxed{...}`` of the response; else the last
"answer is/:" statement; else the whole response (math-verify's own extraction, which prefers the
last expression). Unicode math (``√``, ``π``, ``×``, ``−``, ``²``, ``½``, ``°``...) is rewritten to LaTeX
first. Known false negatives that remain are listed in docs/verifiers.md.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from kubedistill.core.text import last_boxed
from kubedistill.verifiers.verdict import Verdict

__all__ = [
    "WORKER_THREAD_LIMIT_S",
    "normalize_math_text",
    "prediction_candidates",
    "unsafe_to_evaluate",
    "verify_math",
]

METHOD = "math-verify"
#: math-verify's per-call timeout in the main thread (seconds; it takes whole seconds).
CALL_TIMEOUT_S = 5
#: How long a caller in a non-main thread waits for one whole check.
WORKER_THREAD_LIMIT_S = 20.0
_MAX_CANDIDATE_CHARS = 1_000
_MAX_RESPONSE_CHARS = 10_000

log = logging.getLogger(__name__)


def verify_math(gold: str, response: str) -> Verdict:
    """Is the final answer in ``response`` equivalent to ``gold``? See the module docstring."""
    if threading.current_thread() is threading.main_thread():
        with _preserve_real_timer():
            return _verify(gold, response, timeout=CALL_TIMEOUT_S)
    return _in_helper_thread(gold, response)


# ------------------------------------------------------------------------------------------ the check


def _verify(gold: str, response: str, *, timeout: int | None) -> Verdict:
    from math_verify import parse, verify

    pred_text = _stated_answer(response)
    if pred_text is not None and _plain(pred_text) == _plain(gold) and _plain(gold):
        return Verdict(True, METHOD, f"same text: {_plain(gold)!r}")
    if unsafe_to_evaluate(gold):
        return Verdict(None, METHOD, f"gold too large or deeply nested to evaluate safely: {gold[:200]!r}")
    gold_parsed = _parse_gold(gold, timeout)
    if not gold_parsed:
        return Verdict(None, METHOD, f"gold not parsable: {gold[:200]!r}")
    for source, text in prediction_candidates(response):
        if unsafe_to_evaluate(text):
            return Verdict(None, METHOD, f"prediction too large or deeply nested to evaluate safely (from {source})")
        pred = parse(text, parsing_timeout=timeout)  # type: ignore[arg-type]
        if pred:
            ok = bool(verify(gold_parsed, pred, timeout_seconds=timeout))
            return Verdict(ok, METHOD, f"gold={_show(gold_parsed)} pred={_show(pred)} (from {source})")
    return Verdict(False, METHOD, "no answer found")


_BIG_FACTORIAL = re.compile(r"\d{6,}\s*!")
_MAX_EXPONENT_DIGITS = 6
_MAX_NESTING = 40


def unsafe_to_evaluate(text: str) -> bool:
    """Would sympy risk computing a gigantic number (``9^{9^{9}}``, ``2^{10000000}``, ``1000000!``) or
    the parser spin on brackets nested more than :data:`_MAX_NESTING` deep?

    Such arithmetic runs in C without releasing the GIL, where neither SIGALRM nor a watchdog thread
    can stop it, so these answers are not evaluated at all."""
    if _BIG_FACTORIAL.search(text) or _nesting(text) > _MAX_NESTING:
        return True
    for exponent in _exponents(text.replace("**", "^")):
        if "^" in exponent:
            return True
        digits = re.sub(r"[\s{}()]", "", exponent)
        if digits.isdigit() and len(digits.lstrip("0")) > _MAX_EXPONENT_DIGITS:
            return True
    return False


def _nesting(text: str) -> int:
    depth = deepest = 0
    for c in text:
        if c in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")}]":
            depth = max(depth - 1, 0)
    return deepest


def _exponents(text: str) -> Iterator[str]:
    """The exponent after each ``^``: a balanced ``{...}``/``(...)`` group or a run of digits/letters."""
    i = text.find("^")
    while i >= 0:
        j = i + 1
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] in "{(":
            close = {"{": "}", "(": ")"}[text[j]]
            depth, k = 0, j
            while k < len(text):
                depth += 1 if text[k] == text[j] else -1 if text[k] == close else 0
                if depth == 0:
                    break
                k += 1
            yield text[j + 1 : k]
        else:
            m = re.match(r"[0-9A-Za-z.]*", text[j:])
            yield m.group(0) if m else ""
        i = text.find("^", i + 1)


def _parse_gold(gold: str, timeout: int | None) -> list[Any]:
    """math-verify's parse of the gold answer; [] when nothing mathematical (no sympy object) is found.

    Bare LaTeX (``\\frac{1}{2}``, ``10-2\\sqrt{5}``) is wrapped in ``$...$`` first: without the
    delimiters math-verify misreads it (``10-2\\sqrt{5}`` -> 10) or finds nothing."""
    from math_verify import parse
    from sympy import Basic, MatrixBase

    text = gold.strip()
    if not text or len(text) > _MAX_CANDIDATE_CHARS:
        return []
    if not _has_math_delimiters(text) and "\\boxed" not in text and (_looks_like_math(text) or "\\" in text):
        text = f"${text}$"
    parsed = parse(normalize_math_text(text), parsing_timeout=timeout)  # type: ignore[arg-type]
    return parsed if any(isinstance(p, Basic | MatrixBase) for p in parsed) else []


def prediction_candidates(response: str) -> list[tuple[str, str]]:
    """Texts to parse for the predicted answer, best first: ``(source, text)`` pairs."""
    tail = response[-_MAX_RESPONSE_CHARS:]
    out: list[tuple[str, str]] = []
    boxed = last_boxed(tail)
    if boxed is not None and boxed.strip():
        out.append(("boxed", f"$\\boxed{{{normalize_math_text(boxed)[:_MAX_CANDIDATE_CHARS]}}}$"))
    stated = _answer_statement(tail)
    if stated is not None:
        text = normalize_math_text(stated)[:_MAX_CANDIDATE_CHARS]
        wrap = not _has_math_delimiters(text) and _looks_like_math(text)
        out.append(("answer statement", f"${text}$" if wrap else text))
    whole = normalize_math_text(tail.strip())
    lines = [ln for ln in whole.splitlines() if ln.strip()]
    if len(lines) == 1 and not _has_math_delimiters(whole) and _looks_like_math(whole) and len(whole) <= 200:
        out.append(("whole response", f"${whole}$"))
    elif whole:
        out.append(("whole response", whole))
    return out


_ANSWER_STATEMENT = re.compile(r"(?:final\s+answer|\banswer)\s*(?:is|:|=)\s*(.+)", re.IGNORECASE)


def _answer_statement(text: str) -> str | None:
    matches = _ANSWER_STATEMENT.findall(text)
    if not matches:
        return None
    stated = matches[-1].strip().rstrip(".").strip()
    stated = re.sub(r"^\*\*(.*)\*\*$", r"\1", stated).strip()
    return stated or None


def _stated_answer(response: str) -> str | None:
    """The answer as written (for the exact-text shortcut): last boxed, else answer statement, else a
    one-line response."""
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed
    stated = _answer_statement(response)
    if stated is not None:
        return stated
    lines = [ln.strip() for ln in response.strip().splitlines() if ln.strip()]
    return lines[0] if len(lines) == 1 else None


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|textrm)\{([^{}]*)\}")


def _plain(text: str) -> str:
    """Trivial normalisation for the exact-text comparison."""
    t = text.strip()
    inner = last_boxed(t)
    if inner is not None:
        t = inner
    t = _TEXT_WRAPPER.sub(r"\1", t)
    t = t.replace("\\$", "").replace("$", "").replace("\\!", "").replace("\\,", "").replace("\\ ", " ")
    return re.sub(r"\s+", " ", t).strip().rstrip(".").strip()


def _has_math_delimiters(text: str) -> bool:
    """``$`` (not an escaped ``\\$``), ``\\(`` or ``\\[`` present."""
    return "$" in text.replace("\\$", "") or "\\(" in text or "\\[" in text


_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_MATH_WORDS = re.compile(r"\b(?:sin|cos|tan|cot|sec|csc|log|ln|exp|sqrt|pi|inf|mod|gcd|lcm|max|min|i)\b")


def _looks_like_math(text: str) -> bool:
    """No prose: after removing LaTeX commands, ``\\text{}`` and function names, no word of 2+ letters."""
    rest = _TEXT_WRAPPER.sub(" ", text)
    rest = _LATEX_COMMAND.sub(" ", rest)
    rest = _MATH_WORDS.sub(" ", rest)
    return re.search(r"[A-Za-z]{2,}", rest) is None


# ------------------------------------------------------------------------------------- unicode -> LaTeX

_UNICODE_SIMPLE = {
    "\u2212": "-",  # minus sign
    "\u2013": "-",  # en dash
    "\u00d7": "\\times ",
    "\u22c5": "\\cdot ",
    "\u00b7": "\\cdot ",
    "\u00f7": "\\div ",
    "\u03c0": "\\pi ",
    "\u221e": "\\infty ",
    "\u2264": "\\le ",
    "\u2265": "\\ge ",
    "\u2260": "\\ne ",
    "\u00b0": "^\\circ",
    "\u00bd": "\\frac{1}{2}",
    "\u2153": "\\frac{1}{3}",
    "\u2154": "\\frac{2}{3}",
    "\u00bc": "\\frac{1}{4}",
    "\u00be": "\\frac{3}{4}",
}
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_SUPERSCRIPT_RUN = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+")
_ROOT_ATOM = re.compile(r"([√∛∜])\s*([0-9]+(?:\.[0-9]+)?|[A-Za-z](?![A-Za-z])|\\[A-Za-z]+)")
_ROOT_INDEX = {"√": "", "∛": "[3]", "∜": "[4]"}


_THOUSANDS_GAP = re.compile(r"(?<=\d)(?:\\,|\{,\}|\\ |[ \u00a0\u202f\u2009])(?=\d{3}(?!\d))")
_ASCII_SQRT = re.compile(r"(?<![A-Za-z\\])sqrt(?=\s*\(|[0-9])")


def normalize_math_text(text: str) -> str:
    """Rewrite answer text into LaTeX math-verify reads well: Unicode math (``10-2√5`` ->
    ``10-2\\sqrt{5}``, ``π``, ``×``, ``²``, ``½``...), ASCII ``sqrt(5)``/``sqrt5`` and thousands gaps
    (``1 000 000``, ``1\\,000`` -> ``1000000``, ``1000``)."""
    text = _THOUSANDS_GAP.sub("", text)
    text = _ASCII_SQRT.sub("√", text)
    if text.isascii():
        return text
    for uni, latex in _UNICODE_SIMPLE.items():
        text = text.replace(uni, latex)
    text = _SUPERSCRIPT_RUN.sub(lambda m: "^{" + m.group(0).translate(_SUPERSCRIPTS) + "}", text)
    text = _roots_with_parentheses(text)
    return _ROOT_ATOM.sub(lambda m: f"\\sqrt{_ROOT_INDEX[m.group(1)]}{{{m.group(2)}}}", text)


def _roots_with_parentheses(text: str) -> str:
    """``√(a+b)`` -> ``\\sqrt{a+b}`` (balanced parentheses)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        j = i + 1
        if c in _ROOT_INDEX and j < len(text) and text[j] == "(":
            depth, k = 0, j
            while k < len(text):
                depth += {"(": 1, ")": -1}.get(text[k], 0)
                if depth == 0:
                    break
                k += 1
            if depth == 0:
                out.append(f"\\sqrt{_ROOT_INDEX[c]}{{{_roots_with_parentheses(text[j + 1 : k])}}}")
                i = k + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


# ------------------------------------------------------------------------------------ thread handling


@contextlib.contextmanager
def _preserve_real_timer() -> Iterator[None]:
    """math-verify's SIGALRM timeouts cancel any ITIMER_REAL timer the caller had (e.g. pytest-timeout);
    put what is left of it back afterwards."""
    delay, interval = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    try:
        yield
    finally:
        if delay > 0:
            remaining = max(delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, interval)


def _in_helper_thread(gold: str, response: str) -> Verdict:
    """Run the check without signal timeouts in a daemon thread; stop waiting after the limit."""
    box: list[Verdict] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            box.append(_verify(gold, response, timeout=None))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    helper = threading.Thread(target=work, name="math-verify", daemon=True)
    helper.start()
    helper.join(WORKER_THREAD_LIMIT_S)
    if errors:
        raise errors[0]
    if not box:
        log.warning("math-verify did not finish within %.0f s (gold=%r)", WORKER_THREAD_LIMIT_S, gold[:80])
        return Verdict(None, METHOD, f"math-verify did not finish within {WORKER_THREAD_LIMIT_S:.0f} s")
    return box[0]


def _show(parsed: list[Any]) -> str:
    return str(parsed[0])[:120] if parsed else "[]"
