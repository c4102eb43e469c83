"""Dedup (exact, duplicate ids, MinHash near duplicates verified exactly) and n-gram decontamination
against benchmark items loaded from local files in their real layout."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from kubedistill.core.config import ConfigError, validate_config
from kubedistill.core.records import Problem, StageStats
from kubedistill.data.benchmarks import load_benchmark
from kubedistill.data.decontaminate import ContaminationIndex, DecontamConfig, decontaminate
from kubedistill.data.dedup import (
    DedupConfig,
    MinHasher,
    batch_shingles,
    dedup,
    hash_tokens,
    jaccard,
    lsh_params,
    rolling_hashes,
)
from kubedistill.data.normalize import dedup_tokens


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _p(pid: str, text: str, source: str = "s", **kw: object) -> Problem:
    return Problem(id=pid, problem=text, source=source, **kw)  # type: ignore[arg-type]


LONG = (
    "A bag contains 7 red marbles, 5 blue marbles and 3 green marbles. Two marbles are drawn at random "
    "without replacement. What is the probability that both marbles have the same colour? Express your "
    "answer as a common fraction in lowest terms and explain each step of the computation carefully."
)


# ------------------------------------------------------------------------------------------- dedup


def test_exact_duplicates_ignore_case_and_whitespace_and_keep_the_first() -> None:
    ps = [_p("a", "What is  2+2?"), _p("b", "what is 2+2?\n"), _p("c", "What is 2+3?")]
    stats = StageStats(stage="t")
    kept = dedup(ps, DedupConfig(near=False), stats)
    assert [p.id for p in kept] == ["a", "c"]
    assert stats.dropped == {"duplicate": 1}
    assert stats.rejects[0].detail == "duplicate of a" and stats.rejects[0].record["id"] == "b"


def test_same_stem_with_different_choices_is_not_a_duplicate() -> None:
    ps = [
        _p("a", "Which is largest?", choices=["1", "2"]),
        _p("b", "Which is largest?", choices=["3", "4"]),
        _p("c", "Which is largest?", choices=["1", "2"]),
    ]
    stats = StageStats(stage="t")
    assert [p.id for p in dedup(ps, DedupConfig(near=False), stats)] == ["a", "b"]


def test_duplicate_id_with_different_text_is_rejected() -> None:
    stats = StageStats(stage="t")
    kept = dedup([_p("x", "first problem"), _p("x", "second problem")], DedupConfig(), stats)
    assert [p.problem for p in kept] == ["first problem"]
    assert stats.dropped == {"duplicate_id": 1}


def test_near_duplicate_dropped_but_similar_problem_survives() -> None:
    near = LONG.replace("lowest terms", "simplest terms")  # one word changed
    # a different problem that shares 93% of its words and 63% of its 5-token shingles
    similar = LONG.replace("without replacement", "with replacement").replace("the same colour", "different colours")
    tokens = [set(zip(*[dedup_tokens(t)[i:] for i in range(5)], strict=False)) for t in (LONG, near, similar)]
    j_near = len(tokens[0] & tokens[1]) / len(tokens[0] | tokens[1])
    j_similar = len(tokens[0] & tokens[2]) / len(tokens[0] | tokens[2])
    assert j_near >= 0.8 > j_similar >= 0.6  # the constructed cases are what they claim to be

    ps = [_p("orig", LONG), _p("other", "Compute 17 * 23."), _p("near", near), _p("similar", similar)]
    stats = StageStats(stage="t")
    kept = dedup(ps, DedupConfig(), stats)
    assert [p.id for p in kept] == ["orig", "other", "similar"]
    assert stats.dropped == {"near_duplicate": 1}
    assert stats.rejects[0].detail.startswith("near duplicate of orig (jaccard 0.")
    assert stats.info["dedup"]["near_duplicate"] == 1


def test_operators_count_short_templated_problems_survive() -> None:
    ps = [
        _p(str(i), t) for i, t in enumerate(["Compute 4 + 1.", "Compute 4 - 1.", "Compute 4 * 1.", "Compute 4 + 1 ."])
    ]
    stats = StageStats(stage="t")
    kept = dedup(ps, DedupConfig(), stats)
    assert [p.id for p in kept] == ["0", "1", "2"]  # the last one is the same tokens as the first
    assert stats.dropped == {"duplicate": 1}  # whitespace alone does not make another problem


def test_near_dedup_exempt_sources_and_determinism() -> None:
    near = LONG.replace("lowest terms", "simplest terms")
    ps = [_p("a", LONG, source="gym"), _p("b", near, source="gym"), _p("c", near, source="hf")]
    stats = StageStats(stage="t")
    kept = dedup(ps, DedupConfig(), stats, near_exempt_sources={"gym"})
    assert [p.id for p in kept] == ["a", "b"]  # c is an exact duplicate of b; a/b are exempt from near dedup
    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(300)]
    texts += [t.replace(t.split()[3], "zzz", 1) for t in texts[:60]]
    ps = [_p(str(i), t) for i, t in enumerate(texts)]
    runs = [[p.id for p in dedup(ps, DedupConfig(), StageStats(stage="t"))] for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 300


def test_batch_shingles_match_per_document_hashing_and_minhash_estimates_jaccard() -> None:
    docs = [["a", "b", "c", "d", "e", "f"], ["x"], [], ["a", "b", "c", "d", "e", "g", "h"]]
    flat, lengths = hash_tokens(docs)
    hashes, counts = batch_shingles(flat, lengths, 3)
    assert counts.tolist() == [4, 1, 0, 5]
    offsets = np.concatenate(([0], np.cumsum(counts)))
    for d in (0, 3):
        own, _ = hash_tokens([docs[d]])
        assert hashes[offsets[d] : offsets[d + 1]].tolist() == rolling_hashes(own, 3).tolist()

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=400, dtype=np.uint64)
    other = np.concatenate([base[:300], rng.integers(0, 2**63, size=100, dtype=np.uint64)])
    sigs = MinHasher(256, 1).signatures(np.concatenate([base, other]), np.array([400, 400]))
    true = jaccard(np.unique(base), np.unique(other))
    assert abs((sigs[0] == sigs[1]).mean() - true) < 0.08
    bands, rows = lsh_params(0.8, 128)
    assert bands * rows <= 128 and 1 - (1 - 0.8**rows) ** bands >= 0.97


# ------------------------------------------------------------------------------------------- decontamination

MATH500_ITEM = {
    "problem": (
        "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates. Enter your answer in the "
        "form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$"
    ),
    "solution": "We have that $r = \\sqrt{0^2 + 3^2} = 3.$ ... $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
    "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
    "subject": "Precalculus",
    "level": 2,
    "unique_id": "test/precalculus/807.json",
}


@pytest.fixture
def math500(tmp_path: Path) -> list[Problem]:
    path = tmp_path / "math500.jsonl"
    other = {**MATH500_ITEM, "problem": "What is $1+1$?", "unique_id": "test/algebra/1.json", "answer": "2"}
    path.write_text(json.dumps(MATH500_ITEM) + "\n" + json.dumps(other) + "\n", encoding="utf-8")
    return load_benchmark("math500", path=str(path))


def test_13_gram_overlap_is_removed_and_12_gram_overlap_stays(math500: list[Problem]) -> None:
    item_words = "convert the point 0 3 in rectangular coordinates to polar coordinates enter your answer"
    words = item_words.split(" ")
    gram13 = " ".join(words[:13])  # "convert ... enter"
    gram12 = " ".join(words[:12])
    contaminated = _p("bad", f"Warm-up. {gram13.capitalize()} quickly, please.")
    clean = _p("ok", f"Warm-up. {gram12.capitalize()} (a different task), please.")
    unrelated = _p("far", "Find the area of a circle of radius 2.")
    stats = StageStats(stage="t")
    kept = decontaminate([contaminated, clean, unrelated], DecontamConfig(), stats, benchmarks={"math500": math500})
    assert [p.id for p in kept] == ["ok", "far"]
    assert stats.dropped == {"contaminated": 1}
    detail = stats.rejects[0].detail
    assert "math500" in detail and "math500:test/precalculus/807.json" in detail and gram13 in detail
    report = stats.info["decontaminate"]
    assert report["benchmarks"]["math500"] == {"items": 2, "removed": 1, "path": None}
    assert report["ngram"] == 13

    stats8 = StageStats(stage="t")
    kept8 = decontaminate(
        [contaminated, clean, unrelated], DecontamConfig(ngram=8), stats8, benchmarks={"math500": math500}
    )
    assert [p.id for p in kept8] == ["far"]


def test_formatting_does_not_hide_an_overlap_and_short_items_match_whole(math500: list[Problem]) -> None:
    latex_variant = _p(
        "fmt",
        "CONVERT the point \\((0, 3)\\) in rectangular coordinates to polar coordinates. Enter your answer now.",
    )
    short_same = _p("short", "What is $1 + 1$?")
    short_other = _p("short2", "What is $1 - 1$?")
    stats = StageStats(stage="t")
    kept = decontaminate(
        [latex_variant, short_same, short_other], DecontamConfig(), stats, benchmarks={"math500": math500}
    )
    assert [p.id for p in kept] == ["short2"]
    assert any("whole item" in r.detail and "test/algebra/1.json" in r.detail for r in stats.rejects)
    ignore = decontaminate(
        [short_same], DecontamConfig(short_items="ignore"), StageStats(stage="t"), benchmarks={"math500": math500}
    )
    assert [p.id for p in ignore] == ["short"]


def test_removals_are_counted_per_benchmark_and_benchmarks_load_by_name(tmp_path: Path) -> None:
    gsm = tmp_path / "gsm8k.jsonl"
    gsm.write_text(
        json.dumps(
            {
                "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
                "in May. How many clips did Natalia sell altogether in April and May?",
                "answer": "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips.\n#### 72",
            }
        )
        + "\n",
        encoding="utf-8",
    )
    cfg = validate_config(
        DecontamConfig, {"benchmarks": [{"name": "gsm8k", "path": str(gsm)}, "humaneval"], "ngram": 10}
    )
    leaked = _p("leak", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips.")
    human = _p(
        "he",
        "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        '    """ Check if in given list of numbers, are any two numbers closer to each other than\n'
        '    given threshold."""',
    )
    stats = StageStats(stage="t")
    kept = decontaminate([leaked, human, _p("fine", "Compute 2 + 2.")], cfg, stats)
    assert [p.id for p in kept] == ["fine"]
    per = stats.info["decontaminate"]["benchmarks"]
    assert per["gsm8k"]["removed"] == 1 and per["humaneval"]["removed"] == 1
    assert per["humaneval"]["items"] == 164 and per["gsm8k"]["path"] == str(gsm)


def test_no_benchmarks_is_reported_and_config_rejects_repeats() -> None:
    stats = StageStats(stage="t")
    assert len(decontaminate([_p("a", "x y z")], DecontamConfig(), stats)) == 1
    assert "nothing was checked" in stats.info["decontaminate"]["note"]
    with pytest.raises(ConfigError, match="repeat"):
        validate_config(DecontamConfig, {"benchmarks": ["math500", "math500"]})


def test_index_verifies_words_not_only_hashes() -> None:
    item = _p("i1", " ".join(f"t{i}" for i in range(20)))
    index = ContaminationIndex({"b": [item]}, ngram=5)
    assert index.n_ngrams == 16
    # force a fake hash hit: the words differ, so the verification must refuse it
    assert index._verify(["q"] * 5, 0, index.hashes[0]) is None
    hits = index.scan(["x t3 t4 t5 t6 t7 y", "t3 t4 t5 t6"])
    assert hits[0] is not None and hits[0].ngram == "t3 t4 t5 t6 t7" and hits[1] is None


# ----------------------------------------------------------------------------- math markup, matching


MATH25 = (
    "A fair coin is tossed until it lands heads twice in a row. Given that the probability of heads on "
    "each toss is {half}, find the expected number of tosses needed in total."
)


@pytest.mark.parametrize("half", ["\\frac{1}{2}", "1/2", "$\\frac12$", "\\(\\tfrac{1}{2}\\)"])
def test_decontamination_sees_through_fraction_markup(half: str) -> None:
    item = _p("b1", MATH25.format(half="$\\dfrac{1}{2}$"))
    train = [_p("t1", MATH25.format(half=half)), _p("t2", "An unrelated question about primes below 100.")]
    stats = StageStats(stage="t")
    kept = decontaminate(train, DecontamConfig(ngram=13), stats, benchmarks={"math500": [item]})
    assert [p.id for p in kept] == ["t2"] and stats.dropped == {"contaminated": 1}


@pytest.mark.parametrize(
    "variant", ["Compute \\(\\dbinom{10}{3}\\).", "Compute $\\binom{10}{3}$.", "Compute ${10 \\choose 3}$."]
)
def test_a_short_item_matches_whatever_the_binomial_markup(variant: str) -> None:
    item = _p("b1", "Compute $\\dbinom{10}{3}$.")
    stats = StageStats(stage="t")
    kept = decontaminate([_p("t1", variant)], DecontamConfig(), stats, benchmarks={"math500": [item]})
    assert kept == [] and "whole item" in stats.rejects[0].detail
    other = decontaminate([_p("t2", "Compute $\\dbinom{10}{4}$.")], DecontamConfig(), StageStats(stage="t"),
                          benchmarks={"math500": [item]})  # fmt: skip
    assert [p.id for p in other] == ["t2"]  # another number is another problem


def test_dedup_sees_through_math_delimiters_but_not_in_code() -> None:
    ps = [
        _p("a", "What is $60$ divided by $\\dfrac{1}{2}$?"),
        _p("b", "What is \\(60\\) divided by \\(\\frac{1}{2}\\)?"),
        _p("c", "What is 60 divided by 1/2?"),
        _p("d", "What is 61 divided by 1/2?"),
        _p("e", "Print $HOME", domain="code"),
        _p("f", "Print HOME", domain="code"),
    ]
    stats = StageStats(stage="t")
    kept = dedup(ps, DedupConfig(near=False), stats)
    assert [p.id for p in kept] == ["a", "d", "e", "f"]
    assert stats.dropped == {"duplicate": 2} and [r.detail for r in stats.rejects] == ["duplicate of a"] * 2


def test_canonical_math_forms() -> None:
    from kubedistill.data.normalize import canonical_math, match_words

    assert match_words("\\dfrac{1}{2}") == match_words("\\frac{1}{2}") == match_words("1/2") == ["1", "2"]
    assert canonical_math("\\frac{x+1}{2}") == "(x+1)/2"
    assert canonical_math("\\frac{\\frac{1}{2}}{3}") == "(1/2)/3"
    assert "binom(10,3)" in canonical_math("$\\tbinom{10}{3}$")
    assert canonical_math("x \\leq 3").split() == canonical_math("x ≤ 3").split() == ["x", "<=", "3"]
    assert canonical_math("\\text{5 cm}").strip() == "5 cm"
    assert canonical_math("no markup at all") == "no markup at all"
    assert "/" not in canonical_math("\\frac{1}{")  # unbalanced: not guessed into a fraction


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("$60$", "\\(60\\)"),  # the pair
        ("$60$", "60"),
        ("\\[x^2 = 4\\]", "$$x^2 = 4$$"),
        ("Find $\\dfrac{3}{4}$ of 8.", "Find \\(\\frac34\\) of 8."),
        ("Is $x \\geq 2$?", "Is x ≥ 2?"),
    ],
)
def test_problems_that_differ_only_in_math_markup_are_duplicates(a: str, b: str) -> None:
    stats = StageStats(stage="t")
    kept = dedup([_p("a", a), _p("b", b), _p("c", "$61$")], DedupConfig(near=False), stats)
    assert [p.id for p in kept] == ["a", "c"] and stats.dropped == {"duplicate": 1}
