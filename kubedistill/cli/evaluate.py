"""``kubedistill evaluate``: score an endpoint on benchmarks, and/or compare evaluation runs.

Evaluate (writes results.json, items/, plots/, report.md/html into --output)::

    kubedistill evaluate --endpoint http://127.0.0.1:8000/v1 --model student \\
        --benchmark math500 --benchmark aime2024 --n 4 --n aime2024=64 --k 1,4 \\
        --temperature 0.6 --top-p 0.95 --max-tokens 32768 --output eval/student

Compare runs side by side (report.md/html, comparison.json, plots/ into --output)::

    kubedistill evaluate --compare base=eval/base --compare student=eval/student --output eval/compare

Both at once: with --endpoint and --compare, the new run is evaluated into --output and compared with
the given runs into ``<output>/compare``.

Wiring: ``add_arguments(parser)`` adds the flags, ``run(namespace)`` executes and returns the exit code
(0 done; 3 some requests failed after every retry — run again to retry only those). Errors the user
must fix are raised as :class:`~kubedistill.core.config.ConfigError` (one line, exit 2 under the main CLI).
``python -m kubedistill.cli.evaluate ...`` runs it standalone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubedistill.cli.common import tracking, tracking_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("endpoint")
    g.add_argument("--endpoint", default=None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--model", default=None, help="model name served at the endpoint")
    g.add_argument("--name", default=None, help="label of this run in reports (default: the model name)")
    g.add_argument("--api-key-env", default=None, help="environment variable holding the endpoint's API key")

    g = p.add_argument_group("benchmarks")
    g.add_argument(
        "--benchmark",
        action="append",
        default=[],
        metavar="B",
        help="math500, aime2024, gpqa_diamond, livecodebench_v2, gsm8k, humaneval, reasoning_gym:<task>, "
        "any NAME given a --benchmark-path, or a Problems file (.jsonl/.parquet); repeat for several",
    )
    g.add_argument(
        "--benchmark-path",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="read benchmark NAME from local files (its hub layout or Problem rows) instead of the hub",
    )
    g.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    g.add_argument("--list-benchmarks", action="store_true", help="print the benchmark names and exit")

    g = p.add_argument_group("protocol")
    g.add_argument(
        "--n",
        action="append",
        default=[],
        metavar="N|NAME=N",
        help="completions per problem; NAME=N for one benchmark (repeat); default 1",
    )
    g.add_argument(
        "--recommended-n",
        action="store_true",
        help="the peers' n per benchmark: aime2024=64, math500=4, gpqa_diamond=8, livecodebench_v2=16",
    )
    g.add_argument("--k", action="append", default=[], help="pass@k values, comma-separated (default 1)")
    g.add_argument("--temperature", type=float, default=None, help="default 0.6")
    g.add_argument("--top-p", type=float, default=None, help="default 0.95")
    g.add_argument("--max-tokens", type=int, default=None, help="default 4096 (the peers use up to 32768)")
    g.add_argument("--seed", default=None, help="base seed, each sample derives its own (default 0; 'none' to omit)")
    g.add_argument("--prompt", default=None, help="prompt template in kubedistill/prompts (default: generate)")
    g.add_argument("--verify-timeout", type=float, default=None, help="seconds per program run (code; default 10)")
    g.add_argument("--verify-workers", type=int, default=None, help="parallel code checks (default 2)")
    g.add_argument("--config", type=Path, default=None, help="EvalConfig YAML (e.g. a recipe's evaluate section)")

    g = p.add_argument_group("client")
    g.add_argument("--concurrency", type=int, default=None, help="requests in flight (default 64)")
    g.add_argument("--max-retries", type=int, default=None, help="retries per request (default 8)")
    g.add_argument("--timeout", type=float, default=None, help="per-attempt timeout in s (default: scales)")
    g.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="request cache (default: OUTPUT.cache beside the output; a rerun resumes)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument(
        "--allow-failed",
        action="store_true",
        help="exit 0 even if requests failed after every retry (they count as unscorable)",
    )

    g = p.add_argument_group("comparison")
    g.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="an evaluation output directory to compare (repeat; the first is the baseline)",
    )
    g.add_argument("--baseline", default=None, help="label of the baseline run (default: the first)")

    p.add_argument("--output", type=Path, default=None, help="output directory")

    tracking_args(p)


# ------------------------------------------------------------------------------------------- parsing


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    from kubedistill.core.config import ConfigError

    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ConfigError(f"{flag} wants NAME=VALUE (got {v!r})")
        if key.strip() in out:
            raise ConfigError(f"{flag}: {key.strip()!r} is given twice")
        out[key.strip()] = val.strip()
    return out


def _int(text: str, flag: str) -> int:
    from kubedistill.core.config import ConfigError

    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not an integer") from None


def eval_config(ns: argparse.Namespace) -> Any:
    """The :class:`EvalConfig` from --config and the flags (flags win)."""
    from kubedistill.core.config import ConfigError, load_yaml, validate_config
    from kubedistill.evaluate.core import RECOMMENDED_N, EvalConfig

    data: dict[str, Any] = {}
    if ns.config is not None:
        loaded = load_yaml(ns.config)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{ns.config}: the top level must be a mapping of keys")
        data = {k: v for k, v in loaded.items() if k in EvalConfig.model_fields}
        ignored = sorted(set(loaded) - set(data))
        if ignored:
            print(f"kubedistill evaluate: ignoring non-evaluation keys in {ns.config}: {ignored}", file=sys.stderr)
    per_bench = dict(data.get("n_per_benchmark") or {})
    if ns.recommended_n:
        per_bench.update(RECOMMENDED_N)
    for s in ns.n:
        if "=" in s:
            name, n = next(iter(_pairs([s], "--n").items()))
            per_bench[name] = _int(n, "--n")
        else:
            data["n"] = _int(s, "--n")
    if per_bench:
        data["n_per_benchmark"] = per_bench
    if ns.k:
        data["k"] = [_int(x.strip(), "--k") for v in ns.k for x in v.split(",") if x.strip()]
    for key in ("temperature", "top_p", "max_tokens", "prompt"):
        if getattr(ns, key) is not None:
            data[key] = getattr(ns, key)
    if ns.seed is not None:
        data["seed"] = None if ns.seed.lower() == "none" else _int(ns.seed, "--seed")
    if ns.verify_timeout is not None:
        data["timeout_s"] = ns.verify_timeout
    if ns.verify_workers is not None:
        data["workers"] = ns.verify_workers
    client = dict(data.get("client") or {})
    for key, attr in (
        ("concurrency", "concurrency"),
        ("max_retries", "max_retries"),
        ("timeout_s", "timeout"),
        ("cache_dir", "cache_dir"),
    ):
        v = getattr(ns, attr)
        if v is not None:
            client[key] = str(v) if isinstance(v, Path) else v
    if ns.no_progress:
        client["progress"] = False
    data["client"] = client
    return validate_config(EvalConfig, data, "evaluate")


# ---------------------------------------------------------------------------------------------- run


def run(ns: argparse.Namespace) -> int:
    """Execute ``kubedistill evaluate`` for parsed arguments; returns the exit code."""
    from kubedistill.core.config import ConfigError

    if ns.list_benchmarks:
        from kubedistill.data.benchmarks import list_benchmarks

        for name, desc in list_benchmarks().items():
            print(f"{name:22s} {desc}")
        return 0
    if ns.output is None:
        raise ConfigError("give --output DIR")
    compare = _pairs(ns.compare, "--compare")
    if ns.endpoint is None and ns.model is None and not ns.benchmark:
        if not compare:
            raise ConfigError(
                "give --endpoint, --model and --benchmark to evaluate, or --compare LABEL=DIR (repeat) to compare runs"
            )
        return _compare(compare, ns.output, ns)
    if not ns.endpoint or not ns.model:
        raise ConfigError("evaluating needs both --endpoint URL and --model NAME")
    if not ns.benchmark:
        raise ConfigError("give at least one --benchmark (see --list-benchmarks)")
    code = _evaluate(ns)
    if compare and code == 0:
        label = ns.name or ns.model
        if label in compare:
            raise ConfigError(f"--compare label {label!r} is this run's label; pick another (or --name)")
        _compare({**compare, label: str(ns.output)}, ns.output / "compare", ns)
    return code


def _evaluate(ns: argparse.Namespace) -> int:
    """Run the `evaluate_endpoint` stage (kubedistill/stages.py) for the flags."""
    from kubedistill.core.errors import EXIT_PARTIAL
    from kubedistill.evaluate.run import EvaluationIncomplete
    from kubedistill.runner import run_stage

    endpoint = {"url": ns.endpoint, "model": ns.model, "name": ns.name, "api_key_env": ns.api_key_env}
    try:
        result = run_stage(
            "evaluate_endpoint",
            config=eval_config(ns),
            tracking=tracking(ns),
            paths={"results": str(ns.output)},
            params={
                "endpoint": {k: v for k, v in endpoint.items() if v is not None},
                "benchmarks": list(ns.benchmark),
                "benchmark_paths": _pairs(ns.benchmark_path, "--benchmark-path"),
                "limit": ns.limit or 0,
                "allow_failed": ns.allow_failed,
            },
        )
    except EvaluationIncomplete as e:
        _print_results(e.results, ns.output)
        print(f"kubedistill evaluate: {e}", file=sys.stderr)
        return EXIT_PARTIAL
    _print_results(result.value, ns.output)
    return 0


def _print_results(results: Any, output: Path) -> None:
    for bench, r in results.items():
        ks = " ".join(f"{k}={v:.3f}" for k, v in r.pass_at_k.items())
        ln = r.lengths
        lens = f"tokens mean {ln.mean:,.0f}"
        if ln.mean_correct is not None or ln.mean_incorrect is not None:
            c = "—" if ln.mean_correct is None else f"{ln.mean_correct:,.0f}"
            i = "—" if ln.mean_incorrect is None else f"{ln.mean_incorrect:,.0f}"
            lens += f" (correct {c}, incorrect {i})"
        print(
            f"{bench}: {ks} accuracy={r.accuracy:.3f}±{r.accuracy_stderr:.3f} "
            f"[{r.n_problems} problems x {r.n}] {lens}; truncated {r.n_truncated}, unscorable {r.n_unscorable}"
        )
    print(f"results: {output / 'results.json'}  report: {output / 'report.html'}")


def _compare(runs: dict[str, str], out: Path, ns: argparse.Namespace) -> int:
    from kubedistill.evaluate.compare import compare_runs
    from kubedistill.evaluate.run import log_comparison

    report = compare_runs(runs, out, baseline=ns.baseline)
    tcfg = tracking(ns)
    if tcfg.enabled:
        log_comparison(out, report.data, tcfg)
    for w in report.data["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"comparison: {report.paths['markdown']}  {report.paths['html']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubedistill evaluate", description="Evaluate an endpoint on benchmarks, or compare evaluation runs."
    )
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m kubedistill.cli.evaluate``), with the main CLI's error handling."""
    from kubedistill.cli.common import run_handler

    ns = build_parser().parse_args(argv)
    return run_handler(run, ns)


COMMANDS: dict[str, tuple[Any, Any, str]] = {
    "evaluate": (
        add_arguments,
        run,
        "score an endpoint on benchmarks (pass@k, CoT lengths, plots, report); or --compare runs",
    ),
}


if __name__ == "__main__":
    sys.exit(main())
