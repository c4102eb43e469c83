"""Memory and time of a sharded collect (``collect_shard`` × N → ``collect_merge``) at two corpus sizes, side by
side with one ``collect`` task over the same corpus.

Synthetic imported corpus: one JSONL file source with ``--cots`` CoTs per problem (``cots`` mapping), problems of
~40 random words (distinct, so dedup keeps nearly all; 1 % exact copies planted at random places, so copies
fall in other shards), CoTs of ``--cot-kb`` KiB. Each task runs in a fresh Python process through
:func:`kubedistill.runner.run_stage` (the path `kubedistill collect-shard` / `collect-merge` / `collect` take)
and reports its own peak RSS (``ru_maxrss``) and wall time. The shards run one after the other here; on a
cluster they run side by side, so their wall time is the slowest shard's.

Usage: python benchmarks/sharded_collect.py [--sizes 20000 100000] [--shards 4] [--cots 2] [--cot-kb 4]
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


def write_corpus(path: Path, n: int, cots: int, cot_kb: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    filler = " ".join(rng.choice(words) for _ in range(int(cot_kb * 1024 / 5)))[: int(cot_kb * 1024)]
    texts: list[str] = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            if texts and rng.random() < 0.01:
                text = rng.choice(texts)  # an exact copy of an earlier problem, anywhere in the file
            else:
                text = " ".join(rng.choice(words) for _ in range(40)) + f" item {i}"
                if len(texts) < 10_000:
                    texts.append(text)
            row = {"id": f"q{i}", "problem": text, "answer": str(i % 97)}
            row.update({f"c{k}": f"<think>{filler}</think> {i % 97}" for k in range(cots)})
            f.write(json.dumps(row) + "\n")


def config(path: Path, cots: int) -> dict:
    return {
        "sources": [
            {"kind": "file", "name": "corpus", "path": str(path), "cots": {"text": [f"c{k}" for k in range(cots)]}}
        ]
    }


def child(stage: str, spec: str) -> None:
    from kubedistill.runner import run_stage

    args = json.loads(spec)
    t0 = time.perf_counter()
    result = run_stage(
        stage, config=args["config"], paths=args["paths"], params=args.get("params"), tracking={"enabled": False}
    )
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rss_mib": rss, "wall_s": wall, "n_out": result.metrics.get("n_out", 0)}))


def measure(stage: str, spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", stage, json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_size(directory: Path, n: int, shards: int, cots: int, cot_kb: float) -> dict[str, dict]:
    corpus = directory / "corpus.jsonl"
    write_corpus(corpus, n, cots, cot_kb)
    cfg = config(corpus, cots)
    out: dict[str, dict] = {}
    parts: dict[str, list[str]] = {"parts": [], "part_samples": [], "part_keys": [], "part_rejects": []}
    shard_rss, shard_wall = [], []
    for i in range(shards):
        paths = {k: str(directory / f"s{i}.{k}.jsonl") for k in ("problems", "samples", "rejects")}
        paths["keys"] = str(directory / f"s{i}.keys")
        r = measure(
            "collect_shard", {"config": cfg, "paths": paths, "params": {"shard_index": i, "shard_count": shards}}
        )
        shard_rss.append(r["rss_mib"])
        shard_wall.append(r["wall_s"])
        for port, key in (
            ("parts", "problems"),
            ("part_samples", "samples"),
            ("part_keys", "keys"),
            ("part_rejects", "rejects"),
        ):
            parts[port].append(paths[key])
    out["collect_shard (largest)"] = {"rss_mib": max(shard_rss), "wall_s": max(shard_wall)}
    merged = {k: str(directory / f"merged.{k}.jsonl") for k in ("problems", "heldout", "samples", "rejects")}
    out["collect_merge"] = measure("collect_merge", {"config": cfg, "paths": {**parts, **merged}})
    single = {k: str(directory / f"single.{k}.jsonl") for k in ("problems", "heldout", "samples", "rejects")}
    out["collect (one task)"] = measure("collect", {"config": cfg, "paths": single})
    same = all(Path(merged[k]).read_bytes() == Path(single[k]).read_bytes() for k in ("problems", "heldout"))
    out["collect_merge"]["same"] = same and _line_set(merged["samples"]) == _line_set(single["samples"])
    return out


def _line_set(path: str) -> tuple[int, int]:
    """(rows, an order-free digest of them): the merge's CoTs come shard by shard, collect's in file order."""
    import hashlib

    n = total = 0
    with open(path, "rb") as f:
        for line in f:
            n += 1
            total = (total + int.from_bytes(hashlib.blake2b(line, digest_size=8).digest(), "little")) % (1 << 64)
    return n, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs=2, default=[20000, 100000], help="problems, small then large")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--cots", type=int, default=2, help="imported CoTs per problem")
    ap.add_argument("--cot-kb", type=float, default=4.0)
    ap.add_argument("--child", nargs=2, metavar=("STAGE", "SPEC"))
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    results = {}
    for n in a.sizes:
        with tempfile.TemporaryDirectory() as d:
            results[n] = run_size(Path(d), n, a.shards, a.cots, a.cot_kb)
    small, large = a.sizes
    print(f"problems: {small:,} vs {large:,}; {a.cots} CoTs of {a.cot_kb} KiB each; {a.shards} shards")
    print("| task | peak RSS, small | peak RSS, large | ratio | wall s, small | wall s, large |")
    print("|---|---:|---:|---:|---:|---:|")
    for task in results[small]:
        lo, hi = results[small][task], results[large][task]
        print(
            f"| {task} | {lo['rss_mib']:.0f} MiB | {hi['rss_mib']:.0f} MiB | {hi['rss_mib'] / lo['rss_mib']:.2f}× "
            f"| {lo['wall_s']:.1f} | {hi['wall_s']:.1f} |"
        )
    same = all(results[n]["collect_merge"]["same"] for n in a.sizes)
    print("the merge's problems and held-out files are one collect's byte for byte, its CoTs the same set:", same)


if __name__ == "__main__":
    main()
