"""Teacher-client throughput against a local server with fixed latency, and CLI start-up time.

A scripted OpenAI-compatible server (separate process, 127.0.0.1) answers every request after a fixed
latency L with enough capacity, so the ideal throughput of a client holding C requests in flight is
C / L. We measure, side by side in one run:

* ``kubedistill generate`` run as its own process, as a user runs it (progress accounting, the durable
  cache, parsing, sample records): its throughput over the batch — from the first request to the last
  answer committed, as the stage's stats report it — against C / L. Goal: >= 0.9 at C=64, L=0.2 s,
  N=2000. The same run's wall time with interpreter start-up, imports and file I/O is printed too;
* the client alone, in-process in this script (same settings);
* the stock ``openai`` AsyncOpenAI client with a semaphore, when installed (the baseline);
* the CLI's start-up time (``kubedistill --version``, ``kubedistill generate --help``).

Usage: python benchmarks/teacher_client.py [--n 2000] [--concurrency 64] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubedistill.chat import ChatClient, ChatRequest
from kubedistill.chat.config import ClientConfig, EndpointConfig
from kubedistill.testing.openai_server import ServerScript, running_server


def write_problems(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(
                json.dumps({"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i), "source": "bench"})
            )
            f.write("\n")


def bench_cli(url: str, n: int, c: int, workdir: Path) -> tuple[float, float]:
    """(request-phase seconds from the stage's stats, whole-process wall seconds)."""
    problems = workdir / "problems.jsonl"
    write_problems(problems, n)
    cmd = [
        sys.executable,
        "-m",
        "kubedistill.cli",
        "generate",
        "--input",
        str(problems),
        "--output",
        str(workdir / "samples.jsonl"),
        "--teacher-url",
        url,
        "--teacher-model",
        "scripted",
        "--temperature",
        "0.6",
        "--samples",
        "1",
        "--max-tokens",
        "64",
        "--concurrency",
        str(c),
        "--cache-dir",
        str(workdir / "cache"),
        "--no-tracking",
        "--no-progress",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    stats = json.loads((workdir / "samples.stats.json").read_text())
    assert stats["n_out"] == n, stats
    return stats["metrics"]["teacher.elapsed_s"], wall


def bench_in_process(url: str, n: int, c: int, workdir: Path) -> float:
    client = ChatClient(
        [EndpointConfig(url=url, model="scripted")],
        ClientConfig(concurrency=c, cache_dir=workdir / "cache-inproc", progress=False),
    )
    reqs = [
        ChatRequest(
            endpoint="scripted",
            messages=[{"role": "user", "content": f"What is {i} + {i}?"}],
            params={"max_tokens": 64, "temperature": 0.6},
        )
        for i in range(n)
    ]
    t0 = time.perf_counter()
    results = client.run(reqs)
    dt = time.perf_counter() - t0
    assert all(r.ok for r in results)
    return dt


def bench_openai(url: str, n: int, c: int) -> float | None:
    try:
        from openai import AsyncOpenAI
    except ImportError:
        return None

    async def main() -> float:
        client = AsyncOpenAI(base_url=url, api_key="x", max_retries=8)
        sem = asyncio.Semaphore(c)

        async def one(i: int) -> None:
            async with sem:
                await client.chat.completions.create(
                    model="scripted", messages=[{"role": "user", "content": f"What is {i} + {i}?"}], max_tokens=64
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0

    return asyncio.run(main())


def startup(cmd: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--goal", type=float, default=0.9)
    ns = ap.parse_args()
    n, c, lat = ns.n, ns.concurrency, ns.latency
    ideal_rps = c / lat
    ideal_s = n / ideal_rps
    rows: list[tuple[str, float | None]] = []
    with tempfile.TemporaryDirectory() as d, running_server(ServerScript(latency_s=lat)) as url:
        work = Path(d)
        phase, wall = bench_cli(url, n, c, work)
        rows.append(("kubedistill generate: its request phase", phase))
        rows.append(("kubedistill generate: whole wall, start-up incl.", wall))
        rows.append(("ChatClient.run in this process", bench_in_process(url, n, c, work)))
        rows.append(("openai.AsyncOpenAI + semaphore (baseline)", bench_openai(url, n, c)))
    kd = [sys.executable, "-m", "kubedistill.cli"]
    t_version = startup([*kd, "--version"])
    t_help = startup([*kd, "generate", "--help"])

    print(
        f"\nteacher client: N={n} requests, concurrency C={c}, server latency L={lat}s, "
        f"ideal C/L = {ideal_rps:.0f} req/s ({ideal_s:.2f} s)\n"
    )
    print(f"{'client':<50} {'wall s':>8} {'req/s':>8} {'achieved/ideal':>15}")
    for name, dt in rows:
        if dt is None:
            print(f"{name:<50} {'(openai not installed)':>33}")
        else:
            print(f"{name:<50} {dt:8.2f} {n / dt:8.1f} {ideal_s / dt:15.3f}")
    print(
        f"\nceiling for any client holding C in flight: ceil(N/C)*L = {-(-n // c) * lat:.2f} s "
        f"(achieved/ideal {ideal_s / (-(-n // c) * lat):.3f})"
    )
    print(
        f"CLI start-up: `kubedistill --version` {t_version * 1000:.0f} ms, "
        f"`kubedistill generate --help` {t_help * 1000:.0f} ms (median of 5)"
    )
    ratio = ideal_s / rows[0][1]  # type: ignore[operator]
    verdict = "PASS" if ratio >= ns.goal else "FAIL"
    print(f"goal: kubedistill generate achieved/ideal >= {ns.goal}: {ratio:.3f} {verdict}")
    print(
        json.dumps(
            {
                "n": n,
                "concurrency": c,
                "latency_s": lat,
                "ratios": {name: (ideal_s / dt if dt else None) for name, dt in rows},
                "startup_s": {"version": t_version, "generate_help": t_help},
            }
        )
    )
    return 0 if ratio >= ns.goal else 1


if __name__ == "__main__":
    sys.exit(main())
