"""A verdict depends on its (problem, response) pair alone: one batch verified in several orders, with
several worker counts, in processes started with different ``PYTHONHASHSEED`` values, gives the same
verdicts every time (issue 13: ``\\boxed{4 0/0}`` against ``0`` used to flip with the seed and with what
was verified before it)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("bwrap_sandbox")]

MATH = [
    ("0", "\\boxed{4 0/0}"),
    ("0", "\\boxed{0/0}"),
    ("1", "\\boxed{4 0/0}"),
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{1}{2}", "The answer is 1/2."),
    ("3", "First \\boxed{4}, then corrected: \\boxed{3}"),
    ("2\\sqrt{2}", "$\\boxed{\\sqrt{8}}$"),
    ("[1,2)", "\\boxed{[1,2)}"),
    ("(1,2]", "\\boxed{[1,2)}"),
    ("\\{1,2\\}", "\\boxed{\\{2,1\\}}"),
    ("10\\%", "\\boxed{0.1}"),
    ("30^\\circ", "30°"),
    ("x^2+1", "\\boxed{1+x^2}"),
    ("x^2+1", "\\boxed{x^2-1}"),
    ("\\frac{5}{2}", "\\boxed{2\\frac{1}{2}}"),
    ("\\frac{3}{4}", "\\boxed{2 1/4}"),
    ("\\frac{5}{4}", "The answer is 1 1/4"),
    ("1e-05", "\\boxed{0.00001}"),
    ("6.02e23", "\\boxed{6.02 \\times 10^{23}}"),
    ("2, 3", "So $x=\\boxed{2}$ and $y=\\boxed{3}$."),
    ("10 - 2\\sqrt{5}", "**Answer:** 10 - 2√5"),
    ("1 - \\frac{1}{\\mathrm{e}}", "\\boxed{1}"),
    ("2 + \\operatorname{arccot}(3)", "\\boxed{2}"),
    ("\\frac{\\pi}{2}", "Answer: π/2"),
    ("\\frac{1}{3}", "\\boxed{0.333}"),
    ("\\pi", "\\boxed{3.14159}"),
    ("x \\in [2, 5]", "\\boxed{2 \\le x \\le 5}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}"),
    ("\\text{Evelyn}", "The answer is Evelyn."),
    ("Evelyn", "\\boxed{\\text{Bob}}"),
    ("\\sin^2 x + \\cos^2 x", "\\boxed{1}"),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\cos(\\pi/6)}"),
    ("2^{10}", "\\boxed{1024}"),
    ("\\dfrac{14}{3}", "\\boxed{4.6667}"),
]
CHOICE = [("B", "I would pick B — ..."), ("C", "answer: c"), ("A", "The answer is a function of x.")]
SET_PROGRAM = "print(' '.join(sorted({'pear', 'apple', 'fig'})), list({'pear', 'apple', 'fig', 'kiwi'})[0])"

RUNNER = """
import json, random, sys
from kubedistill.core.records import Problem
from kubedistill.verifiers import verify_many
items = json.loads(open(sys.argv[1]).read())
problems = [(Problem.model_validate(p), r) for p, r in items]
out = {}
for order, workers in (("forward", 1), ("reversed", 3), ("shuffled", 2)):
    idx = list(range(len(problems)))
    if order == "reversed":
        idx.reverse()
    elif order == "shuffled":
        random.Random(workers).shuffle(idx)
    verdicts = verify_many([problems[i] for i in idx], workers=workers, timeout_s=10, memory_mb=512)
    by_id = {problems[i][0].id: [v.correct, v.method] for i, v in zip(idx, verdicts)}
    out[f"{order}/{workers} workers"] = by_id
print(json.dumps(out))
"""


def _items() -> list[tuple[dict, str]]:
    items: list[tuple[dict, str]] = []
    for i, (gold, response) in enumerate(MATH):
        items.append(({"id": f"math-{i}", "problem": "q", "source": "t", "answer": gold}, response))
    for i, (gold, response) in enumerate(CHOICE):
        items.append(({"id": f"choice-{i}", "problem": "q", "source": "t", "answer": gold,
                       "choices": ["w", "x", "y", "z"]}, response))  # fmt: skip
    tests = {"kind": "stdio", "cases": [{"input": "", "output": "apple fig pear\nkiwi\n"}]}
    items.append(({"id": "code-set", "problem": "q", "source": "t", "domain": "code", "tests": tests},
                  f"```python\n{SET_PROGRAM}\n```"))  # fmt: skip
    return items


def test_verdicts_do_not_depend_on_order_workers_or_hash_seed(tmp_path: Path) -> None:
    items = _items()
    random.Random(0).shuffle(items)
    data = tmp_path / "items.json"
    data.write_text(json.dumps(items))
    runs: dict[str, dict[str, list]] = {}
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, str(data)], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        for key, verdicts in json.loads(done.stdout.splitlines()[-1]).items():
            runs[f"seed {seed}/{key}"] = verdicts
    reference_key, reference = next(iter(runs.items()))
    for key, verdicts in runs.items():
        assert verdicts == reference, f"{key} differs from {reference_key}"
    # and they are the right ones where the issue named them
    assert reference["math-0"] == [False, "math-verify"]  # \boxed{4 0/0} vs 0: undefined, every time
    assert reference["math-16"] == [True, "math-verify"]  # 1 1/4 = 5/4
    assert reference["choice-1"] == [True, "choice"]
    print(f"\n{len(runs)} runs x {len(reference)} items: identical verdicts")
