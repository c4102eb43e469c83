"""Text normalisation, stable ids and domain assignment for collected problems.

Two kinds of normalisation live here and must not be confused:

* **Stored text** (:func:`clean_text`): what a :class:`~kubedistill.core.records.Problem` keeps. Unicode
  NFKC (full-width digits and punctuation, ligatures, compatibility spaces become their plain forms),
  except that superscripts, subscripts and vulgar fractions are kept as written (NFKC would turn
  ``x²`` into ``x2`` and change the mathematics); line endings become ``\\n``; control and zero-width
  characters are removed; leading and trailing whitespace is stripped. Line breaks and indentation
  inside the text are kept (code problems and sample inputs depend on them).
* **Matching keys** (:func:`exact_key`, :func:`dedup_tokens`, :func:`match_words`): aggressive forms
  used only to compare texts (full NFKC, math markup canonicalised, case folding, whitespace collapsed
  or split into words). They are never stored as problem text.

Math markup is canonicalised for matching (:func:`canonical_math`, every domain but ``code``), so that
texts that differ only in how the same mathematics is typeset match: math delimiters (``$…$``,
``$$…$$``, ``\\(…\\)``, ``\\[…\\]``) are dropped; ``\\dfrac`` / ``\\tfrac`` / ``\\cfrac{a}{b}``,
``\\frac ab`` and ``a/b`` all become ``a/b`` (``(x+1)/2`` for longer parts); ``\\dbinom`` / ``\\tbinom`` /
``\\binom{n}{k}`` and ``{n \\choose k}`` become ``binom(n,k)``; ``\\left`` / ``\\right`` and spacing
commands go; ``\\le`` / ``\\leq`` / ``≤``, ``\\cdot`` / ``\\times`` / ``×``, ``−`` / ``-`` and the like are one
form each; ``\\text{…}`` / ``\\mathrm{…}`` keep their content; grouping braces go. So ``\\dfrac{1}{2}``,
``\\frac{1}{2}`` and ``1/2`` match, as do ``$\\dbinom{10}{3}$`` and ``\\(\\binom{10}{3}\\)``, and ``$60$``,
``\\(60\\)`` and ``60``.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Literal, get_args

from pydantic import Field

from kubedistill.core.config import StrictModel
from kubedistill.core.records import Domain, Problem

DOMAINS: tuple[str, ...] = get_args(Domain)

# Control characters except \t and \n; zero-width space/joiners' non-printing cousins; BOM; soft hyphen.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u2060\ufeff\u00ad]")
_WORD_RE = re.compile(r"\w+")
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


class NormalizeConfig(StrictModel):
    """How stored problem text is normalised (matching keys are always full NFKC + case folding)."""

    unicode_form: Literal["NFKC", "NFC", "none"] = Field(
        default="NFKC",
        description="NFKC keeps superscripts, subscripts and fractions as written; NFC changes no characters",
    )
    min_chars: int = Field(default=1, ge=1, description="problems shorter than this after cleaning are rejects")


@functools.lru_cache(maxsize=1)
def _protected_re() -> re.Pattern[str]:
    """Characters whose NFKC form loses meaning: <super>, <sub> and <fraction> compatibility forms."""
    chars = []
    for cp in range(0x80, 0x30000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        dec = unicodedata.decomposition(chr(cp))
        if dec.startswith(("<super>", "<sub>", "<fraction>")):
            chars.append(chr(cp))
    return re.compile("[" + "".join(re.escape(c) for c in chars) + "]")


def unicode_normalize(text: str, form: Literal["NFKC", "NFC", "none"] = "NFKC") -> str:
    """Unicode-normalise ``text``; with ``NFKC``, superscripts/subscripts/fractions are kept (NFC)."""
    if form == "none" or text.isascii():
        return text
    if form == "NFC":
        return unicodedata.normalize("NFC", text)
    protected = _protected_re()
    if not protected.search(text):
        return unicodedata.normalize("NFKC", text)
    out: list[str] = []
    pos = 0
    for m in protected.finditer(text):
        out.append(unicodedata.normalize("NFKC", text[pos : m.start()]))
        out.append(m.group())
        pos = m.end()
    out.append(unicodedata.normalize("NFKC", text[pos:]))
    return "".join(out)


def clean_text(text: str, form: Literal["NFKC", "NFC", "none"] = "NFKC") -> str:
    """The stored form of a text: unicode-normalised, ``\\n`` line endings, no control or zero-width
    characters, trailing spaces removed from each line, stripped. Inner line breaks are kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicode_normalize(text, form)
    text = _CONTROL_RE.sub("", text)
    if " \n" in text or "\t\n" in text:
        text = "\n".join(line.rstrip() for line in text.split("\n"))
    return text.strip()


def _match_form(text: str) -> str:
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", text).casefold()


# ------------------------------------------------------------------------------------------ math markup

_SAME_COMMANDS = {
    "dfrac": "frac",
    "tfrac": "frac",
    "cfrac": "frac",
    "dbinom": "binom",
    "tbinom": "binom",
    "leq": "le",
    "leqslant": "le",
    "geq": "ge",
    "geqslant": "ge",
    "neq": "ne",
}
_SYMBOLS = {"le": " <= ", "ge": " >= ", "ne": " != ", "cdot": " * ", "times": " * ", "div": " / ", "pm": " ± "}
_DROP_COMMANDS = {
    "left", "right", "bigl", "bigr", "Bigl", "Bigr", "big", "Big", "biggl", "biggr", "displaystyle", "textstyle",
    "limits", "nolimits", "quad", "qquad",
}  # fmt: skip
_TEXT_COMMANDS = {
    "text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mathit", "mathsf", "mathtt", "operatorname", "mbox",
    "boldsymbol", "bm",
}  # fmt: skip
_UNICODE_MATH = str.maketrans(
    {"≤": " <= ", "≥": " >= ", "≠": " != ", "×": " * ", "·": " * ", "÷": " / ", "−": "-", "⁄": "/", "√": "\\sqrt "}
)
_COMMAND_RE = re.compile(r"\\([A-Za-z]+)\s*")


def _group(text: str, i: int) -> tuple[str, int] | None:
    """The argument of a LaTeX command at ``text[i:]``: a balanced ``{...}`` group or one character
    (spaces before it skipped). Returns (its content, the index after it), or None."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":
        if text[i] in "}\\":
            return None
        return text[i], i + 1
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
    return None  # unbalanced: leave it as it is


def _atom(s: str) -> str:
    s = s.strip()
    return s if re.fullmatch(r"[\w.]+", s) else f"({s})"


def _rewrite_commands(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        m = _COMMAND_RE.match(text, i) if text[i] == "\\" else None
        if m is None:
            out.append(text[i])
            i += 1
            continue
        name = _SAME_COMMANDS.get(m.group(1), m.group(1))
        end = m.end()
        if name in ("frac", "binom"):
            a = _group(text, end)
            b = _group(text, a[1]) if a else None
            if a and b:
                x, y = _rewrite_commands(a[0]), _rewrite_commands(b[0])
                out.append(f"{_atom(x)}/{_atom(y)}" if name == "frac" else f"binom({x.strip()},{y.strip()})")
                i = b[1]
                continue
        elif name == "sqrt":
            a = _group(text, end)
            if a:
                out.append(f"sqrt({_rewrite_commands(a[0]).strip()})")
                i = a[1]
                continue
        elif name in _TEXT_COMMANDS:
            a = _group(text, end)
            if a:
                out.append(f" {_rewrite_commands(a[0])} ")
                i = a[1]
                continue
        elif name in _SYMBOLS:
            out.append(_SYMBOLS[name])
            i = end
            continue
        elif name in _DROP_COMMANDS:
            out.append(" ")
            i = end
            continue
        out.append(f"\\{name} ")
        i = end
    return "".join(out)


_CHOOSE_RE = re.compile(r"\{\s*([^{}]+?)\s*\\choose\s*([^{}]+?)\s*\}")


def canonical_math(text: str) -> str:
    """``text`` with math markup in one canonical form, for matching only (see the module docstring):
    delimiters dropped, fraction and binomial commands as ``a/b`` and ``binom(n,k)``, spacing and sizing
    commands gone, relation and operator symbols in one form, grouping braces dropped."""
    if "\\" not in text and "$" not in text and "{" not in text and text.isascii():
        return text
    text = text.translate(_UNICODE_MATH)
    text = text.replace("\\$", " ").replace("\\%", "%").replace("\\\\", " ")
    text = re.sub(r"\\[()\[\]]", " ", text)  # \( \) \[ \]
    text = text.replace("$", " ")
    text = re.sub(r"\\[,;:! ]", " ", text)  # thin / medium / thick / negative spaces
    text = _CHOOSE_RE.sub(lambda m: f"\\binom{{{m.group(1)}}}{{{m.group(2)}}}", text)
    text = _rewrite_commands(text)
    text = text.replace("{", " ").replace("}", " ").replace("~", " ")
    return text


def _matchable(text: str, domain: str | None) -> str:
    """The matching form of a text: NFKC, math markup canonicalised (not for code), case-folded."""
    if domain != "code":
        text = canonical_math(text)
    return _match_form(text)


def exact_key(text: str, choices: list[str] | None = None, domain: str | None = None) -> str:
    """A hash that two problems share iff their texts (and choices) are equal as tokens (words and single
    punctuation or operator characters) after NFKC, math canonicalisation (:func:`canonical_math`; not
    for ``code``) and case folding — so whitespace and math markup do not tell them apart."""
    parts = [" ".join(_TOKEN_RE.findall(_matchable(text, domain)))]
    for c in choices or ():
        parts.append(" ".join(_TOKEN_RE.findall(_matchable(c, domain))))
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).hexdigest()


def dedup_tokens(text: str, domain: str | None = None) -> list[str]:
    """Tokens for near-duplicate detection: words and single punctuation/operator characters
    (``4 + 1`` and ``4 - 1`` differ), after NFKC, math canonicalisation (not for ``code``) and case folding."""
    return _TOKEN_RE.findall(_matchable(text, domain))


def match_words(text: str, domain: str | None = None) -> list[str]:
    """Words for contamination n-grams: ``\\w+`` runs after NFKC, math canonicalisation (not for ``code``)
    and case folding; punctuation and LaTeX markup are dropped so formatting differences do not hide an
    overlap."""
    return _WORD_RE.findall(_matchable(text, domain))


def stable_id(source: str, text: str) -> str:
    """An id for a problem whose source has none: ``<source>-<16 hex>`` of source + matching form of
    the text, so the same problem from the same source gets the same id in every run."""
    norm = " ".join(_match_form(text).split())
    digest = hashlib.sha256(f"{source}\n{norm}".encode()).hexdigest()[:16]
    return f"{source}-{digest}"


def resolve_domain(
    value: object,
    mapping: Mapping[str, str] | None = None,
    default: str | None = None,
) -> str | None:
    """The domain of a row: ``mapping[value]`` (case-insensitive keys), else ``value`` when it is itself
    a domain name, else ``default``; None when nothing applies (the caller rejects the row)."""
    if isinstance(value, str) and value.strip():
        v = value.strip()
        if mapping:
            lowered = {str(k).lower(): d for k, d in mapping.items()}
            if v.lower() in lowered:
                return lowered[v.lower()]
        if v.lower() in DOMAINS:
            return v.lower()
    return default


def normalize_problem(problem: Problem, cfg: NormalizeConfig | None = None) -> Problem:
    """A copy of ``problem`` with clean text, answer and choices (empty answer → None).

    Raises ``ValueError`` when the problem text is shorter than ``cfg.min_chars`` after cleaning."""
    cfg = cfg or NormalizeConfig()
    text = clean_text(problem.problem, cfg.unicode_form)
    if len(text) < cfg.min_chars:
        raise ValueError(f"problem text has {len(text)} characters after cleaning (min_chars={cfg.min_chars})")
    answer = clean_text(problem.answer, cfg.unicode_form) if problem.answer is not None else None
    choices = [clean_text(c, cfg.unicode_form) for c in problem.choices] if problem.choices else problem.choices
    if text == problem.problem and answer == problem.answer and choices == problem.choices:
        return problem
    return problem.model_copy(update={"problem": text, "answer": answer or None, "choices": choices})
