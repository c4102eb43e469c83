"""Memory and throughput of the streaming CoT stages (verify, select) at two corpus sizes, side by side.

Synthetic CoTs of realistic length: long-tailed (log-normal, sigma 1.0, capped at 16x the mean, then scaled so
the mean is ``--mean-kb`` KiB, default 16); ``<think>`` reasoning, then a boxed answer (80 % right, 15 %
wrong, 5 % cut off with finish_reason=length). Problems are sums with their answers (math-verify
checks them). The select input is the same CoTs with ``correct``, RV and CD set.

Each (stage, size) runs in a fresh Python process through :func:`kubedistill.runner.run_stage` — the
very path `kubedistill verify` / `kubedistill select` take: the input file is read lazily, the output
written as it is produced, the rejects streamed to their file. The child reports its own peak RSS
(``ru_maxrss``; verify's math-verify worker processes are reported apart, as ``workers``), wall time,
and CPU seconds (its own and its children's). ``CoTs/s per core`` is CoTs per CPU-second.

With ``--in-memory`` the same sizes also run the pre-streaming shape (the whole file read into a list,
the stage function called on the list), for contrast.

Usage: python benchmarks/cot_stages_memory.py [--sizes 2000 20000] [--mean-kb 16] [--in-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KUBEDISTILL_PROGRESS", "0")


def write_corpus(directory: Path, n: int, mean_kb: float, seed: int = 0) -> dict[str, Path]:
    """``problems.jsonl``, ``samples.jsonl`` (for verify) and ``scored.jsonl`` (for select) under ``directory``."""
    import math

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(2000)] + ["so", "then", "we", "add", "carry", "check", "wait", "+", "="]
    base = " ".join(rng.choice(words) for _ in range(400_000))  # ~2.5 MB to slice reasoning from
    mean = mean_kb * 1024
    sigma = 1.0
    mu = math.log(mean) - sigma * sigma / 2
    n_problems = max(1, n // 4)  # 4 CoTs per problem
    paths = {k: directory / f"{k}.jsonl" for k in ("problems", "samples", "scored")}
    total = 0
    with paths["problems"].open("w") as fp:
        for i in range(n_problems):
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            fp.write(json.dumps({"id": f"p{i}", "problem": f"What is {a} + {b}?", "answer": str(a + b), "source": "s"}))
            fp.write("\n")
    rng_p = random.Random(seed)  # replay the answers
    answers = []
    for _ in range(n_problems):
        a, b = rng_p.randint(10, 999), rng_p.randint(10, 999)
        answers.append(a + b)
    lengths = [min(rng.lognormvariate(mu, sigma), 16 * mean) for _ in range(n)]
    scale = mean / (sum(lengths) / n)  # the cap trims the tail: scale back to the asked mean
    with paths["samples"].open("w") as fs, paths["scored"].open("w") as fc:
        for k in range(n):
            pid = k % n_problems
            length = int(lengths[k] * scale)
            start = rng.randrange(0, len(base) - length - 1)
            reasoning = base[start : start + length]
            roll = rng.random()
            if roll < 0.05:
                text, finish, right = f"<think>\n{reasoning}", "length", False
            else:
                right = roll < 0.85
                ans = answers[pid] if right else answers[pid] + 1
                text, finish = f"<think>\n{reasoning}\n</think>\n\nThe answer is $\\boxed{{{ans}}}$.", "stop"
            total += len(text)
            row = {
                "problem_id": f"p{pid}",
                "teacher": "t",
                "temperature": 0.6,
                "sample_index": k // n_problems,
                "text": text,
                "finish_reason": finish,
            }
            fs.write(json.dumps(row) + "\n")
            fc.write(json.dumps({**row, "correct": right, "rv": rng.randint(0, 9), "cd": rng.randint(0, 9)}) + "\n")
    lens = sorted(lengths)
    print(
        f"  corpus of {n:,} CoTs: mean {total / n / 1024:.1f} KiB ({total / n / 1000:.1f} kB), median "
        f"{lens[n // 2] * scale / 1024:.1f} KiB, p99 {lens[int(n * 0.99)] * scale / 1024:.0f} KiB, "
        f"{total / 2**20:,.0f} MiB of text",
        flush=True,
    )
    return paths


def _peak_rss_mib(pid: int) -> float:
    """VmHWM (the peak resident set) of a live process, from /proc (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(stage: str, directory: str, mode: str) -> None:
    """Run one stage over the corpus in ``directory``; print one JSON line of measurements (imports are
    done before the clock starts; the worker processes verify keeps alive are measured through /proc)."""
    import psutil

    from kubedistill.core.records import Problem, Sample, read_records, write_records
    from kubedistill.cot.select import SelectConfig, select
    from kubedistill.cot.verify import VerifyConfig, verify_samples
    from kubedistill.runner import run_stage

    d = Path(directory)
    me = psutil.Process()
    t0 = time.perf_counter()
    c0 = me.cpu_times()
    if mode == "stream":
        if stage == "verify":
            paths = {"samples": d / "samples.jsonl", "problems": d / "problems.jsonl", "verified": d / "out.jsonl"}
        else:
            paths = {"samples": d / "scored.jsonl", "selected": d / "out.jsonl"}
        result = run_stage(stage, config={}, paths=paths, tracking={"enabled": False})
        n_in, n_out = result.stats.n_in, result.stats.n_out  # type: ignore[union-attr]
    else:  # the pre-streaming shape: whole lists in memory
        samples = read_records(d / ("samples.jsonl" if stage == "verify" else "scored.jsonl"), Sample)
        if stage == "verify":
            problems = read_records(d / "problems.jsonl", Problem)
            out, stats = verify_samples(samples, VerifyConfig(chunk_size=len(samples)), problems=problems)
        else:
            out, stats = select(samples, SelectConfig())
        write_records(d / "out.jsonl", out)
        n_in, n_out = stats.n_in, stats.n_out
    wall = time.perf_counter() - t0
    c1 = me.cpu_times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user)
    cpu += c1.children_system - c0.children_system
    kids = me.children(recursive=True)
    worker_rss = 0.0
    for k in kids:  # live workers (math-verify): their CPU time and peak RSS
        try:
            t = k.cpu_times()
            cpu += t.user + t.system
            worker_rss += _peak_rss_mib(k.pid)
        except (psutil.Error, OSError):
            pass
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"n_in": n_in, "n_out": n_out, "wall_s": wall, "cpu_s": cpu, "rss_mib": own, "workers_mib": worker_rss}
        )
    )


def measure(stage: str, directory: Path, mode: str) -> dict[str, float]:
    env = {**os.environ, "KUBEDISTILL_PROGRESS": "0", "MLFLOW_TRACKING_URI": f"sqlite:///{directory / 'mlflow.db'}"}
    cmd = [sys.executable, __file__, "--child", stage, str(directory), mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} ({mode}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000])
    ap.add_argument("--mean-kb", type=float, default=16.0)
    ap.add_argument("--in-memory", action="store_true", help="also run the pre-streaming (list) shape")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    modes = ["stream", "in-memory"] if args.in_memory else ["stream"]
    rows: dict[tuple[str, str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="kd-bench-") as tmp:
        for n in args.sizes:
            d = Path(tmp) / str(n)
            d.mkdir()
            print(f"size {n:,}:", flush=True)
            write_corpus(d, n, args.mean_kb)
            for stage in ("verify", "select"):
                for mode in modes:
                    rows[(stage, mode, n)] = m = measure(stage, d, mode)
                    print(f"  {stage:<7} {mode:<9} {m['wall_s']:7.1f} s  peak RSS {m['rss_mib']:7.0f} MiB", flush=True)
    small, large = args.sizes
    print()
    print(f"| stage | shape | CoTs/s ({small:,}) | CoTs/s ({large:,}) | CoTs per CPU-s ({small:,}) | "
          f"CoTs per CPU-s ({large:,}) | peak RSS ({small:,}) | peak RSS ({large:,}) | RSS ratio |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for stage in ("verify", "select"):
        for mode in modes:
            a, b = rows[(stage, mode, small)], rows[(stage, mode, large)]
            print(
                f"| {stage} | {mode} | {a['n_in'] / a['wall_s']:,.0f} | {b['n_in'] / b['wall_s']:,.0f} | "
                f"{a['n_in'] / a['cpu_s']:,.0f} | {b['n_in'] / b['cpu_s']:,.0f} | {a['rss_mib']:,.0f} MiB | "
                f"{b['rss_mib']:,.0f} MiB | {b['rss_mib'] / a['rss_mib']:.2f}x |"
            )
    print()
    for n in args.sizes:
        w = rows[("verify", "stream", n)]["workers_mib"]
        print(f"verify at {n:,}: its math-verify worker processes peaked at {w:,.0f} MiB together (not in the table)")


if __name__ == "__main__":
    main()
