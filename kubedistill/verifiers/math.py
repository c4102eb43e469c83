"""Math answers checked with math-verify (symbolic and numeric equivalence).

Guarantees of :func:`verify_math`:

* ``correct=True`` only when math-verify finds the prediction equivalent to the gold answer (or, for
  plain numbers, they are equal up to floating-point representation), or when the two answers are the
  same text after trivial normalisation (``$``, ``\\boxed{}``, ``\\text{}``, spaces, a trailing period).
* ``correct=None`` ("cannot tell") when the gold answer cannot be parsed **as a whole**: a gold that
  math-verify reads only a part of (``1 - \\frac{1}{\\mathrm{x}}`` read as ``1``) is never compared by
  that part. Also for a gold that is undefined (``\\frac{1}{0}``), too large to evaluate safely, or a
  check that did not finish.
* ``correct=False`` when no answer can be found (detail ``"no answer found"``), the prediction is
  undefined (``\\boxed{4 0/0}``: division by zero), or the answers differ.
* **Deterministic**: the check runs in worker processes started with ``PYTHONHASHSEED=0`` whose sympy
  and math-verify caches (and sympy's dummy-symbol counter) are reset before every item, so a verdict
  depends on the (gold, response) pair alone — not on the caller's hash seed, on what was verified
  before, on the order or on the number of workers.
* It never hangs: each check has a CPU-time budget in its worker (10 CPU seconds; wall-clock
  timeouts would make a verdict depend on the machine's load), and a worker that does not answer
  within :data:`WORKER_LIMIT_S` is killed (``correct=None`` for both).

Where the answer is read from, in order: ``\\boxed{...}`` (the last one; with a gold of k parts, the
last k boxes when the last box holds fewer parts); else the last answer statement ("Answer:",
"**Final Answer:**", "the answer is", a heading "### Answer" with the answer on the next line), cut at
the first word of prose; else the whole response. Text is normalised first (:func:`normalize_math_text`):
Unicode math, e-notation, mixed numbers, thousands gaps, ``\\mathrm{e}``. The forms handled and the
known limits are listed in docs/verifiers.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from kubedistill.verifiers.verdict import Verdict

__all__ = [
    "WORKER_LIMIT_S",
    "check_math",
    "normalize_math_text",
    "prediction_candidates",
    "unsafe_to_evaluate",
    "verify_math",
]

METHOD = "math-verify"
#: math-verify's own wall-clock timeouts, used only when :func:`check_math` runs outside a worker
#: (seconds; the workers bound each check by CPU time instead, see kubedistill/verifiers/isolated.py).
CALL_TIMEOUT_S: int | None = 5
#: How long a caller waits for one whole check before the worker is killed (seconds).
WORKER_LIMIT_S = 120.0
_MAX_CANDIDATE_CHARS = 1_000
_MAX_RESPONSE_CHARS = 10_000
_MAX_PARTS = 20


def verify_math(gold: str, response: str) -> Verdict:
    """Is the final answer in ``response`` equivalent to ``gold``? See the module docstring.

    Runs :func:`check_math` in a fixed-seed worker process (:mod:`kubedistill.verifiers.isolated`)."""
    from kubedistill.verifiers.isolated import check

    return check("math", gold, response)


# ------------------------------------------------------------------------------------------ the check


def check_math(gold: str, response: str) -> Verdict:
    """The check itself, in this process. Use :func:`verify_math`, which runs it where its verdict cannot
    depend on anything but its arguments."""
    from math_verify import verify

    pred_text = _stated_answer(response)
    if pred_text is not None and _plain(pred_text) == _plain(gold) and _plain(gold):
        return Verdict(True, METHOD, f"same text: {_plain(gold)!r}")
    if unsafe_to_evaluate(gold):
        return Verdict(None, METHOD, f"gold too large or deeply nested to evaluate safely: {gold[:200]!r}")
    gold_parsed = parse_gold(gold)
    if not gold_parsed:
        return Verdict(None, METHOD, f"gold not parsable as a whole: {gold[:200]!r}")
    if _undefined(gold_parsed[0]):
        return Verdict(None, METHOD, f"gold is undefined: {gold[:200]!r}")
    parts = _parts(gold_parsed[0])
    for source, text in prediction_candidates(response, parts=parts):
        if unsafe_to_evaluate(text):
            return Verdict(None, METHOD, f"prediction too large or deeply nested to evaluate safely (from {source})")
        pred = _parse_prediction(text)
        if not pred:
            continue
        shown = f"gold={_show(gold_parsed)} pred={_show(pred)} (from {source})"
        if any(_undefined(p) for p in pred if not isinstance(p, str)):
            return Verdict(False, METHOD, f"undefined prediction (division by zero): {shown}")
        ok = bool(verify(gold_parsed, pred, timeout_seconds=CALL_TIMEOUT_S)) or _same_number(gold_parsed[0], pred[0])
        return Verdict(ok, METHOD, shown)
    return Verdict(False, METHOD, "no answer found")


def parse_gold(gold: str) -> list[Any]:
    """math-verify's parse of the whole gold answer; [] when it cannot be parsed **as a whole**.

    LaTeX and math-like golds are wrapped in ``$...$`` (without delimiters math-verify misreads
    ``10-2\\sqrt{5}`` as 10) and parsed with the LaTeX extraction only — math-verify's fallback to plain
    expressions would otherwise read ``1 - \\frac{1}{\\mathrm{x}}`` as ``1``. A prose gold ("5 apples")
    is parsed with both extractions and kept only if what was read leaves no digits or operators out."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
    from sympy import Basic, MatrixBase

    text = normalize_math_text(gold.strip())
    if not text or len(text) > _MAX_CANDIDATE_CHARS:
        return []
    if _has_math_delimiters(text) or "\\boxed" in text or _looks_like_math(text) or "\\" in text:
        if not _has_math_delimiters(text) and "\\boxed" not in text:
            text = f"${text}$"
        parsed = parse(
            text,
            extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
            extraction_mode="first_match",
            fallback_mode="no_fallback",
            parsing_timeout=CALL_TIMEOUT_S,
        )
    else:
        parsed = parse(
            text,
            extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
            extraction_mode="first_match",
            fallback_mode="first_match",
            parsing_timeout=CALL_TIMEOUT_S,
        )
        read = next((p for p in parsed if isinstance(p, str)), "")
        rest = text.replace(read, " ", 1) if read else text
        if re.search(r"[0-9+\-*/^=\\]", rest):  # something mathematical was left out
            return []
    return [p for p in parsed if isinstance(p, Basic | MatrixBase)]


def _parse_prediction(text: str) -> list[Any]:
    """A text we wrapped in ``$...$`` is read with the LaTeX extraction only (all of it or nothing, as
    for the gold); anything else by math-verify's own extraction, which prefers the last expression."""
    from math_verify import LatexExtractionConfig, parse

    if text.startswith("$") and text.endswith("$") and text.count("$") == 2:
        parsed = parse(
            text,
            extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
            extraction_mode="first_match",
            parsing_timeout=CALL_TIMEOUT_S,
        )
    else:
        parsed = parse(text, parsing_timeout=CALL_TIMEOUT_S)
    return [p for p in parsed if not isinstance(p, str)] or parsed


def _parts(expr: Any) -> int:
    """How many answers a gold holds: k for a set or tuple of k elements (``2, 3``), else 1."""
    from latex2sympy2_extended.sets import FiniteSet as L2SFiniteSet
    from sympy import FiniteSet, Tuple

    if isinstance(expr, FiniteSet | Tuple | L2SFiniteSet):
        return max(1, min(len(expr.args), _MAX_PARTS))
    return 1


def _undefined(expr: Any) -> bool:
    """Does ``expr`` contain nan, complex infinity or a division by zero (``(4*0)/0``)?"""
    from sympy import Basic, Pow, S, preorder_traversal

    if not isinstance(expr, Basic):
        return False
    for node in preorder_traversal(expr):
        if node is S.NaN or node is S.ComplexInfinity:
            return True
        if isinstance(node, Pow) and node.base.is_zero and node.exp.is_negative:
            return True
    return False


def _same_number(gold: Any, pred: Any) -> bool:
    """Two plain real numbers equal up to floating-point representation (``6.02\\times10^{23}`` and
    ``602000000000000000000000``), where math-verify's rounding to 6 decimal places is not the test."""
    from sympy import Basic, Float

    try:
        if not (isinstance(gold, Basic) and isinstance(pred, Basic)):
            return False
        if not (gold.is_number and pred.is_number) or gold.free_symbols or pred.free_symbols:
            return False
        if not (gold.atoms(Float) or pred.atoms(Float)):
            return False  # exact against exact: math-verify's symbolic comparison is the test
        g, p = complex(gold.evalf(30)), complex(pred.evalf(30))
    except (TypeError, ValueError, ArithmeticError, AttributeError):
        return False
    if g.imag or p.imag or g != g or p != p:
        return False
    scale = max(abs(g.real), abs(p.real))
    return scale > 0 and abs(g.real - p.real) <= 1e-9 * scale


_BIG_FACTORIAL = re.compile(r"\d{6,}\s*!")
_MAX_EXPONENT_DIGITS = 6
_MAX_NESTING = 40


def unsafe_to_evaluate(text: str) -> bool:
    """Would sympy risk computing a gigantic number (``9^{9^{9}}``, ``2^{10000000}``, ``1000000!``) or
    the parser spin on brackets nested more than :data:`_MAX_NESTING` deep?

    Such arithmetic runs in C without releasing the GIL, where no timeout can stop it, so these answers
    are not evaluated at all."""
    if _BIG_FACTORIAL.search(text) or _nesting(text) > _MAX_NESTING:
        return True
    for exponent in _exponents(text.replace("**", "^")):
        if "^" in exponent:
            return True
        digits = re.sub(r"[\s{}()]", "", exponent)
        if digits.lstrip("+-").isdigit() and len(digits.lstrip("+-").lstrip("0")) > _MAX_EXPONENT_DIGITS:
            return True
    for exponent in re.findall(r"\d[eE]([+-]?\d+)", text):
        if len(exponent.lstrip("+-").lstrip("0")) > _MAX_EXPONENT_DIGITS:
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
            m = re.match(r"[-+]?[0-9A-Za-z.]*", text[j:])
            yield m.group(0) if m else ""
        i = text.find("^", i + 1)


# -------------------------------------------------------------------------------------- the prediction


def prediction_candidates(response: str, *, parts: int = 1) -> list[tuple[str, str]]:
    """Texts to parse for the predicted answer, best first: ``(source, text)`` pairs.

    ``parts``: how many answers the gold holds; with more than one, an answer spread over the last
    ``parts`` boxes (``$x=\\boxed{2}$ and $y=\\boxed{3}$``) is read as one list."""
    tail = response[-_MAX_RESPONSE_CHARS:]
    out: list[tuple[str, str]] = []
    boxes = [b for b in all_boxed(tail) if b.strip()]
    if boxes:
        last = boxes[-1]
        if parts > 1 and len(boxes) >= parts and _top_level_parts(last) < parts:
            joined = ", ".join(_strip_assignment(b) for b in boxes[-parts:])
            out.append((f"last {parts} boxes", f"$\\boxed{{{normalize_math_text(joined)[:_MAX_CANDIDATE_CHARS]}}}$"))
        out.append(("boxed", f"$\\boxed{{{normalize_math_text(last)[:_MAX_CANDIDATE_CHARS]}}}$"))
    stated = answer_statement(tail)
    if stated is not None:
        text = normalize_math_text(stated)[:_MAX_CANDIDATE_CHARS]
        if not _has_math_delimiters(text):
            text = _leading_math(text)
            if text and _looks_like_math(text):
                text = f"${text}$"
        if text:
            out.append(("answer statement", text))
    whole = normalize_math_text(tail.strip())
    lines = [ln for ln in whole.splitlines() if ln.strip()]
    if len(lines) == 1 and not _has_math_delimiters(whole) and _looks_like_math(whole) and len(whole) <= 200:
        out.append(("whole response", f"${whole}$"))
    elif whole:
        out.append(("whole response", whole))
    return out


def all_boxed(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, in order (braces balanced)."""
    found: list[str] = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth = 0
        for j in range(m.end() - 1, len(text)):
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[m.end() : j].strip())
                    break
    return found


def _top_level_parts(text: str) -> int:
    depth, n = 0, 1
    for c in text:
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == "," and depth == 0:
            n += 1
    return n


def _strip_assignment(text: str) -> str:
    """``x = 2`` -> ``2`` (one part of a multi-part answer)."""
    m = re.fullmatch(r"\s*[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(.+)", text, re.DOTALL)
    return m.group(1).strip() if m else text.strip()


_MARKDOWN = r"[\s*_`#>]*"
_STATEMENTS = [
    # "Answer: X", "**Answer:** X", "**Final Answer**: X", "The final answer is X", "answer = X", "Answer — X"
    re.compile(
        r"(?:final\s+answer|\banswer)(?:\s*\([^)\n]{0,40}\))?(?:[ \t]+(?:to|for|of|in)\b[^\n:=]{0,60}?)?"
        + _MARKDOWN
        + r"(?:\bis\b|:|=|—|–)[ \t*_`:]*([^\n]+)",
        re.IGNORECASE,
    ),
    # "### Answer" or "**Final Answer**" alone on its line, the answer on the next non-empty line
    re.compile(r"^[ \t#>*_]*(?:final\s+answer|answer)[ \t*_:]*\n\s*([^\n]+)", re.IGNORECASE | re.MULTILINE),
]


def answer_statement(text: str) -> str | None:
    """The value of the last answer statement in ``text``, markdown removed (``**Answer:** 10 - 2√5``
    -> ``10 - 2√5``); None if there is none."""
    best: tuple[int, str] | None = None
    for pattern in _STATEMENTS:
        for m in pattern.finditer(text):
            if best is None or m.start(1) > best[0]:
                best = (m.start(1), m.group(1))
    if best is None:
        return None
    value = best[1].strip()
    value = re.sub(r"^[*_`\s]+|[*_`\s]+$", "", value)
    value = value.rstrip(".").strip()
    return value or None


def _stated_answer(response: str) -> str | None:
    """The answer as written (for the exact-text shortcut): last boxed, else answer statement, else a
    one-line response."""
    boxes = all_boxed(response)
    if boxes:
        return boxes[-1]
    stated = answer_statement(response)
    if stated is not None:
        return stated
    lines = [ln.strip() for ln in response.strip().splitlines() if ln.strip()]
    return lines[0] if len(lines) == 1 else None


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|textrm|operatorname)\s*\{([^{}]*)\}")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_MATH_WORDS = re.compile(
    r"\b(?:sin|cos|tan|cot|sec|csc|arcsin|arccos|arctan|sinh|cosh|tanh|log|ln|exp|sqrt|pi|inf|mod|gcd|lcm|max|"
    r"min|i|e)\b"
)


def _plain(text: str) -> str:
    """Trivial normalisation for the exact-text comparison."""
    t = text.strip()
    boxes = all_boxed(t)
    if boxes:
        t = boxes[-1]
    t = _TEXT_WRAPPER.sub(r"\1", t)
    t = t.replace("\\$", "").replace("$", "").replace("\\!", "").replace("\\,", "").replace("\\ ", " ")
    t = re.sub(r"^[*_`]+|[*_`]+$", "", t.strip())
    return re.sub(r"\s+", " ", t).strip().rstrip(".").strip()


def _has_math_delimiters(text: str) -> bool:
    """``$`` (not an escaped ``\\$``), ``\\(`` or ``\\[`` present."""
    return "$" in text.replace("\\$", "") or "\\(" in text or "\\[" in text


def _masked(text: str) -> str:
    """``text`` with LaTeX commands, ``\\text{...}`` groups and function names blanked out (same length)."""
    blank = lambda m: " " * len(m.group(0))  # noqa: E731
    rest = _TEXT_WRAPPER.sub(blank, text)
    rest = _LATEX_COMMAND.sub(blank, rest)
    return _MATH_WORDS.sub(blank, rest)


def _looks_like_math(text: str) -> bool:
    """No prose: after removing LaTeX commands, ``\\text{}`` and function names, no word of 2+ letters."""
    return re.search(r"[A-Za-z]{2,}", _masked(text)) is None


def _leading_math(text: str) -> str:
    """The answer before the first word of prose: ``3 because 1+2=3`` -> ``3``, ``10 - 2\\sqrt{5}
    (about 5.53)`` -> ``10 - 2\\sqrt{5}``, ``5 apples`` -> ``5``."""
    m = re.search(r"[A-Za-z]{2,}", _masked(text))
    if m is None:
        return text.strip()
    head = text[: m.start()]
    return re.sub(r"[\s(\[,;:=]+$|\s+(?:or|and)$", "", head).strip()


# ------------------------------------------------------------------------------- normalisation

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
# 6.02e23, 1e-05, 2.5E+3 (not 2e, not x1e5, not 1e5x)
_E_NOTATION = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?)0*(\d+)(?![\w.])")
# 2 1/4, -1 3/8 (a whole number, a space, a proper fraction)
_MIXED_NUMBER = re.compile(r"(?<![\w.,/^{}\\])(\d+)[ \t]+(\d+)[ \t]*/[ \t]*(\d+)(?![\w./])")
_POWER_RUN = re.compile(r"\^\s*(-?\d{2,}|-\d)(?![\d.])")
_PY_POWER = re.compile(r"(?<=[\w)\]}])\s*\*\*\s*(?=[\w(\-{])")
_EULER = re.compile(r"\\(?:mathrm|text|operatorname|mathit|rm)\s*\{\s*e\s*\}")
_OPERATOR_NAMES = re.compile(r"\\operatorname\s*\{\s*(arc(?:sin|cos|tan|cot|sec|csc)|sinh|cosh|tanh|coth)\s*\}")


def normalize_math_text(text: str) -> str:
    """Rewrite answer text into LaTeX math-verify reads well.

    * Unicode math: ``10-2√5`` -> ``10-2\\sqrt{5}``, ``π``, ``×``, ``−``, ``²``, ``½``, ``°``...; ASCII
      ``sqrt(5)``/``sqrt5``;
    * thousands gaps: ``1 000 000``, ``1\\,000`` -> ``1000000``, ``1000``;
    * e-notation: ``6.02e23`` -> ``6.02\\times 10^{23}`` (not Euler's number);
    * mixed numbers: ``2 1/4`` -> ``2\\frac{1}{4}`` (= 9/4; only a proper fraction after a whole number);
    * powers: ``10^23`` -> ``10^{23}`` (as plain text means, not 10²·3), ``2**10`` -> ``2^{10}``;
    * ``\\mathrm{e}`` -> ``e`` (Euler's number), ``\\operatorname{arccot}`` -> ``\\arccot``."""
    text = _THOUSANDS_GAP.sub("", text)
    text = _ASCII_SQRT.sub("√", text)
    text = _E_NOTATION.sub(lambda m: f"{m.group(1)}\\times 10^{{{m.group(2).replace('+', '')}{m.group(3)}}}", text)
    text = _MIXED_NUMBER.sub(_mixed, text)
    text = _PY_POWER.sub("^", text)
    text = _POWER_RUN.sub(lambda m: f"^{{{m.group(1)}}}", text)
    text = _EULER.sub("e", text)
    text = _OPERATOR_NAMES.sub(lambda m: f"\\{m.group(1)}", text)
    if text.isascii():
        return text
    for uni, latex in _UNICODE_SIMPLE.items():
        text = text.replace(uni, latex)
    text = _SUPERSCRIPT_RUN.sub(lambda m: "^{" + m.group(0).translate(_SUPERSCRIPTS) + "}", text)
    text = _roots_with_parentheses(text)
    return _ROOT_ATOM.sub(lambda m: f"\\sqrt{_ROOT_INDEX[m.group(1)]}{{{m.group(2)}}}", text)


def _mixed(m: re.Match[str]) -> str:
    whole, num, den = m.group(1), int(m.group(2)), int(m.group(3))
    if den == 0 or num >= den:
        return m.group(0)  # not a mixed number (``4 0/0``, ``2 5/4``): leave it to the parser
    return f"{whole}\\frac{{{num}}}{{{den}}}"


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


def _show(parsed: list[Any]) -> str:
    return str(parsed[0])[:120] if parsed else "[]"
