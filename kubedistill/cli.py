"""`kubedistill …`: one subcommand per stage, plus run / compile / submit / serve / chat.

Start-up stays fast: this module imports only the standard library; each subcommand imports what it
needs when it runs (``kubedistill generate`` never imports torch).

Exit codes: 0 done; 2 bad input or configuration (one-line message); 3 the stage ran but some work
failed (e.g. teacher requests after all retries; listed in the rejects file); 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Any]:
    """Register ``add_arguments`` for subcommand ``name``; the handler is ``cmd_<name>``."""

    def deco(add_args: Callable[[argparse.ArgumentParser], None]) -> Callable[[argparse.ArgumentParser], None]:
        _COMMANDS[name] = (add_args, help)
        return add_args

    return deco


# ----------------------------------------------------------------------------------- shared options


def _tracking_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracking")
    g.add_argument("--experiment", default="kubedistill", help="MLflow experiment (default: %(default)s)")
    g.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    g.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")


def _tracking(ns: argparse.Namespace) -> Any:
    from kubedistill.config import TrackingConfig

    return TrackingConfig(experiment=ns.experiment, tracking_uri=ns.tracking_uri, enabled=not ns.no_tracking)


def _outputs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, type=Path, help="output records (.jsonl or .parquet)")
    p.add_argument("--rejects", type=Path, default=None, help="rejects file (default: <output>.rejects.jsonl)")
    p.add_argument("--stats", type=Path, default=None, help="stats file (default: <output>.stats.json)")


def _outputs(ns: argparse.Namespace) -> Any:
    from kubedistill.runner import Outputs

    return Outputs.beside(ns.output, ns.rejects, ns.stats)


def _teacher_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("teachers (repeat --teacher-url/--teacher-model per teacher, in order)")
    g.add_argument(
        "--teacher-url", action="append", default=[], help="OpenAI-compatible base URL, e.g. http://host:8000/v1"
    )
    g.add_argument("--teacher-model", action="append", default=[], help="model name served at that URL")
    g.add_argument("--teacher-name", action="append", default=[], help="label for records (default: the model name)")
    g.add_argument(
        "--teacher-api-key-env", action="append", default=[], help="environment variable holding that teacher's API key"
    )


def _teachers(ns: argparse.Namespace) -> list[dict[str, Any]]:
    from kubedistill.config import ConfigError

    urls, models = ns.teacher_url, ns.teacher_model
    if len(urls) != len(models):
        raise ConfigError(
            f"give one --teacher-model per --teacher-url (got {len(urls)} url(s), {len(models)} model(s))"
        )
    out = []
    for i, (url, model) in enumerate(zip(urls, models, strict=True)):
        t: dict[str, Any] = {"url": url, "model": model}
        if i < len(ns.teacher_name):
            t["name"] = ns.teacher_name[i]
        if i < len(ns.teacher_api_key_env):
            t["api_key_env"] = ns.teacher_api_key_env[i]
        out.append(t)
    return out


def _client_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("teacher client")
    g.add_argument("--concurrency", type=int, default=None, help="requests in flight (default 64)")
    g.add_argument("--max-retries", type=int, default=None, help="retries per request (default 8)")
    g.add_argument(
        "--timeout", type=float, default=None, help="per-attempt timeout in s (default: scales with max tokens)"
    )
    g.add_argument("--cache-dir", type=Path, default=None, help="durable request cache (resume after a kill)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _client(ns: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    c = dict(base or {})
    for key, attr in (
        ("concurrency", "concurrency"),
        ("max_retries", "max_retries"),
        ("timeout_s", "timeout"),
        ("cache_dir", "cache_dir"),
    ):
        v = getattr(ns, attr)
        if v is not None:
            c[key] = str(v) if isinstance(v, Path) else v
    if ns.no_progress:
        c["progress"] = False
    return c


def _config_base(path: Path | None) -> dict[str, Any]:
    from kubedistill.config import ConfigError, load_yaml

    if path is None:
        return {}
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data


# ------------------------------------------------------------------------------------------ generate


@command("generate", "ask teachers for CoTs: problems.jsonl -> samples.jsonl")
def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, type=Path, help="problems (.jsonl or .parquet)")
    _outputs_args(p)
    p.add_argument("--config", type=Path, default=None, help="GenerateConfig YAML; flags override it")
    _teacher_args(p)
    p.add_argument("--temperature", type=float, action="append", default=[], help="repeat for several temperatures")
    p.add_argument("--samples", type=int, default=None, help="CoTs per (problem, teacher, temperature)")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="base seed (each sample derives its own)")
    _client_args(p)
    _tracking_args(p)


def cmd_generate(ns: argparse.Namespace) -> int:
    from kubedistill.config import GenerateConfig, validate_config
    from kubedistill.cot.generate import generate
    from kubedistill.records import Problem
    from kubedistill.runner import run_stage

    data = _config_base(ns.config)
    if ns.teacher_url or ns.teacher_model:
        data["teachers"] = _teachers(ns)
    if ns.temperature:
        data["temperatures"] = ns.temperature
    for key in ("samples", "max_tokens", "top_p", "seed"):
        if getattr(ns, key) is not None:
            data[key] = getattr(ns, key)
    data["client"] = _client(ns, data.get("client"))
    cfg = validate_config(GenerateConfig, data, "generate")
    outputs = _outputs(ns)
    stats = run_stage(
        "generate",
        generate,
        inputs={"problems": (ns.input, Problem)},
        outputs=outputs,
        cfg=cfg,
        tracking=_tracking(ns),
        fatal=("request_failed",),
    )
    _print_stats(stats, outputs)
    return 0


# ------------------------------------------------------------------------------- the other stages


@command("collect", "load problems from sources (HF datasets, files, reasoning-gym); dedup, decontaminate, resample")
def _collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="CollectConfig YAML (sources, dedup, ...)")
    _outputs_args(p)
    p.add_argument("--heldout", type=Path, default=None, help="held-out split (default: <output>.heldout.jsonl)")
    _tracking_args(p)


def cmd_collect(ns: argparse.Namespace) -> int:
    from kubedistill import steps

    outputs = _outputs(ns)
    heldout = ns.heldout or outputs.output.with_name(outputs.stats.name.replace(".stats.json", ".heldout.jsonl"))
    m = steps.collect(
        config=_config_base(ns.config),
        tracking=_tracking(ns).model_dump(),
        problems=str(outputs.output),
        heldout=str(heldout),
        rejects=str(outputs.rejects),
        stats=str(outputs.stats),
    )
    _print_metrics("collect", m, outputs)
    print(f"held-out problems in {heldout}", file=sys.stderr)
    return 0


@command("verify", "set `correct` on every CoT (math-verify, sandboxed code, choices) and drop the wrong ones")
def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="samples (.jsonl or .parquet)")
    _outputs_args(p)
    p.add_argument("--keep-all", action="store_true", help="keep wrong CoTs, with correct=false")
    p.add_argument("--config", type=Path, default=None, help="VerifyConfig YAML")
    _tracking_args(p)


def cmd_verify(ns: argparse.Namespace) -> int:
    from kubedistill import steps

    cfg = _config_base(ns.config)
    if ns.keep_all:
        cfg["keep_all"] = True
    outputs = _outputs(ns)
    m = steps.verify(
        config=cfg,
        tracking=_tracking(ns).model_dump(),
        problems=str(ns.problems),
        samples=str(ns.input),
        verified=str(outputs.output),
        rejects=str(outputs.rejects),
        stats=str(outputs.stats),
    )
    _print_metrics("verify", m, outputs)
    return 0


@command("sft", "curriculum SFT of a student on verified CoTs (TRL)")
def _sft_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="verified samples")
    p.add_argument("--output", required=True, type=Path, help="model directory to write")
    p.add_argument("--config", type=Path, default=None, help="SFT settings YAML")
    p.add_argument("--base-model", default=None, help="student to start from (dir, hub id, tiny-qwen3, ...)")
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints, for resuming (default: <output>.work)")
    _tracking_args(p)


def cmd_sft(ns: argparse.Namespace) -> int:
    from kubedistill import steps

    cfg = _config_base(ns.config)
    if ns.base_model:
        cfg["base_model"] = ns.base_model
    m = steps.sft(
        config=cfg,
        tracking=_tracking(ns).model_dump(),
        problems=str(ns.problems),
        samples=str(ns.input),
        model=str(ns.output),
        work_dir=str(ns.work_dir or ""),
    )
    print(f"sft: {json.dumps(m)}", file=sys.stderr)
    print(f"model written to {ns.output}", file=sys.stderr)
    return 0


@command("dpo", "DPO of a (SFT) student on preference pairs, with per-pair beta (TRL)")
def _dpo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="preference pairs (from `kubedistill pairs`)")
    p.add_argument("--output", required=True, type=Path, help="model directory to write")
    p.add_argument("--config", type=Path, default=None, help="DPO settings YAML")
    p.add_argument("--base-model", default=None, help="the student to start from (default: the config's base_model)")
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints, for resuming (default: <output>.work)")
    _tracking_args(p)


def cmd_dpo(ns: argparse.Namespace) -> int:
    from kubedistill import steps

    m = steps.dpo(
        config=_config_base(ns.config),
        tracking=_tracking(ns).model_dump(),
        problems=str(ns.problems),
        pairs=str(ns.input),
        base_model=ns.base_model or "",
        model=str(ns.output),
        work_dir=str(ns.work_dir or ""),
    )
    print(f"dpo: {json.dumps(m)}", file=sys.stderr)
    print(f"model written to {ns.output}", file=sys.stderr)
    return 0


@command("reward-models", "RV and CD regressors distilled from the judge's 0-9 scores (MAE, Spearman held out)")
def _reward_models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="samples scored by `kubedistill score`")
    p.add_argument("--output", required=True, type=Path, help="directory to write <output>/rv, <output>/cd")
    p.add_argument("--config", type=Path, default=None, help="reward-model settings YAML")
    p.add_argument("--base-model", default=None, help="model the regressors start from")
    _tracking_args(p)


def cmd_reward_models(ns: argparse.Namespace) -> int:
    from kubedistill import steps

    cfg = _config_base(ns.config)
    if ns.base_model:
        cfg["base_model"] = ns.base_model
    m = steps.reward_models(
        config=cfg,
        tracking=_tracking(ns).model_dump(),
        problems=str(ns.problems),
        samples=str(ns.input),
        models=str(ns.output),
    )
    print(f"reward-models: {json.dumps(m)}", file=sys.stderr)
    print(f"reward models written to {ns.output}/", file=sys.stderr)
    return 0


@command("grpo", "GRPO with format + accuracy + RV/CD interval rewards (TRL)")
def _grpo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", required=True, type=Path, help="the prompts (with answers / tests to verify)")
    p.add_argument("--output", required=True, type=Path, help="model directory to write")
    p.add_argument("--reward-models", type=Path, default=None, help="directory from `kubedistill reward-models`")
    p.add_argument("--config", type=Path, default=None, help="GRPO settings YAML")
    p.add_argument("--base-model", default=None, help="the policy to start from (default: the config's base_model)")
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints, for resuming (default: <output>.work)")
    _tracking_args(p)


def cmd_grpo(ns: argparse.Namespace) -> int:
    from kubedistill import steps

    m = steps.grpo(
        config=_config_base(ns.config),
        tracking=_tracking(ns).model_dump(),
        problems=str(ns.problems),
        model=str(ns.output),
        reward_models=str(ns.reward_models or ""),
        base_model=ns.base_model or "",
        work_dir=str(ns.work_dir or ""),
    )
    print(f"grpo: {json.dumps(m)}", file=sys.stderr)
    print(f"model written to {ns.output}", file=sys.stderr)
    return 0


@command("register", "register a model directory in the MLflow model registry (with aliases)")
def _register_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--alias", action="append", default=None, help="alias to set (default: candidate)")
    p.add_argument("--results", type=Path, default=None, help="evaluation results dir (its scores are logged)")
    _tracking_args(p)


def cmd_register(ns: argparse.Namespace) -> int:
    from kubedistill import steps

    uri = steps.register(
        config={"name": ns.name, "aliases": ns.alias or ["candidate"]},
        tracking=_tracking(ns).model_dump(),
        model=str(ns.model),
        results=str(ns.results) if ns.results else None,
    )
    print(uri)
    return 0


# ------------------------------------------------------------------------ judge / rewrite / score / ...


def _samples_stage_args(p: argparse.ArgumentParser, *, problems: bool = True, teacher_help: str = "") -> None:
    if problems:
        p.add_argument("--problems", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="samples (.jsonl or .parquet)")
    _outputs_args(p)
    p.add_argument("--config", type=Path, default=None, help="the stage's settings (YAML)")
    if teacher_help:
        g = p.add_argument_group(teacher_help)
        g.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL")
        g.add_argument("--judge-model", default=None, help="model name served there")
        g.add_argument("--judge-api-key-env", default=None, help="environment variable with its API key")
        g.add_argument("--cache-dir", type=Path, default=None, help="durable request cache")
    _tracking_args(p)


def _endpoint_into(cfg: dict[str, Any], key: str, ns: argparse.Namespace) -> dict[str, Any]:
    from kubedistill.config import ConfigError

    if ns.judge_url or ns.judge_model:
        if not (ns.judge_url and ns.judge_model):
            raise ConfigError("give both --judge-url and --judge-model")
        cfg[key] = {"url": ns.judge_url, "model": ns.judge_model, "api_key_env": ns.judge_api_key_env}
    if ns.cache_dir:
        cfg.setdefault("client", {})["cache_dir"] = str(ns.cache_dir)
    return cfg


def _run_samples_stage(name: str, ns: argparse.Namespace, cfg: dict[str, Any], out_kw: str) -> int:
    from kubedistill import steps

    outputs = _outputs(ns)
    kwargs: dict[str, Any] = {
        "config": cfg,
        "tracking": _tracking(ns).model_dump(),
        "samples": str(ns.input),
        out_kw: str(outputs.output),
        "rejects": str(outputs.rejects),
        "stats": str(outputs.stats),
    }
    if getattr(ns, "problems", None) is not None:
        kwargs["problems"] = str(ns.problems)
    _print_metrics(name, getattr(steps, name)(**kwargs), outputs)
    return 0


@command("judge", "LLM judge: each CoT's difficulty for a small student (easy / medium / hard)")
def _judge_args(p: argparse.ArgumentParser) -> None:
    _samples_stage_args(p, teacher_help="judge endpoint")


def cmd_judge(ns: argparse.Namespace) -> int:
    return _run_samples_stage("judge", ns, _endpoint_into(_config_base(ns.config), "judge", ns), "judged")


@command("rewrite", "extend easy CoTs, simplify hard ones (one pass through a rewriter LLM)")
def _rewrite_args(p: argparse.ArgumentParser) -> None:
    _samples_stage_args(p, teacher_help="rewriter endpoint")


def cmd_rewrite(ns: argparse.Namespace) -> int:
    return _run_samples_stage("rewrite", ns, _endpoint_into(_config_base(ns.config), "rewriter", ns), "rewritten")


@command("score", "LLM judge: reasoning verbosity (RV) and cognitive difficulty (CD), 0-9, for each CoT")
def _score_args(p: argparse.ArgumentParser) -> None:
    _samples_stage_args(p, teacher_help="judge endpoint")


def cmd_score(ns: argparse.Namespace) -> int:
    return _run_samples_stage("score", ns, _endpoint_into(_config_base(ns.config), "judge", ns), "scored")


@command("select", "keep the correct CoTs whose RV / CD fit the student (target-aware sampling)")
def _select_args(p: argparse.ArgumentParser) -> None:
    _samples_stage_args(p, problems=False)
    p.add_argument("--profile", default=None, help="small | medium | large (student size)")
    p.add_argument("--per-problem", type=int, default=None, help="at most K CoTs per problem")
    p.add_argument("--target-size", type=int, default=None, help="at most this many CoTs")


def cmd_select(ns: argparse.Namespace) -> int:
    cfg = _config_base(ns.config)
    for key in ("profile", "per_problem", "target_size"):
        if getattr(ns, key) is not None:
            cfg[key] = getattr(ns, key)
    return _run_samples_stage("select", ns, cfg, "selected")


@command("pairs", "DPO preference pairs: a verified CoT vs a corrupted copy of it")
def _pairs_args(p: argparse.ArgumentParser) -> None:
    _samples_stage_args(p)


def cmd_pairs(ns: argparse.Namespace) -> int:
    return _run_samples_stage("pairs", ns, _config_base(ns.config), "pairs")


# ------------------------------------------------------------------------------------------ evaluate


@command("evaluate", "score an endpoint on benchmarks (pass@k, CoT lengths, plots, report); or --compare runs")
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    from kubedistill.evaluate.cli import add_arguments

    add_arguments(p)


def cmd_evaluate(ns: argparse.Namespace) -> int:
    from kubedistill.evaluate.cli import run

    return run(ns)


# ---------------------------------------------------------------------------------------- serve / chat


@command("serve", "serve a student (a directory or models:/NAME@ALIAS) as a local OpenAI-compatible server")
def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, a directory, an alias")
    p.add_argument("--served-name", default=None, help="model name clients use (default: derived from --model)")
    p.add_argument(
        "--backend",
        choices=["vllm", "transformers", "auto"],
        default="auto",
        help="vllm (default where installed) or the transformers server",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--log", type=Path, default=None, help="server log file")
    g = p.add_argument_group("KServe (the cluster)")
    g.add_argument(
        "--render", action="store_true", help="print the KServe InferenceService (+ auth policies) for --model"
    )
    g.add_argument("--deploy", action="store_true", help="apply it, wait until Ready, smoke-test a chat completion")
    g.add_argument("--settings", type=Path, default=None, help="KServe serving settings YAML (namespace, GPUs, auth)")
    g.add_argument("--timeout", type=float, default=1800.0, help="--deploy: seconds to wait for Ready")


def cmd_serve(ns: argparse.Namespace) -> int:
    if ns.render or ns.deploy:
        from kubedistill.serve.kserve import deploy, render, to_yaml

        settings = _config_base(ns.settings)
        if ns.deploy:
            result = deploy(ns.model, settings=settings, timeout_s=ns.timeout, log=lambda m: print(m, file=sys.stderr))
            print(result.openai_base_url)
            return 0
        print(to_yaml(render(ns.model, settings=settings)), end="")
        return 0
    from kubedistill.serve.local import serve_forever

    return serve_forever(
        ns.model,
        served_name=ns.served_name,
        backend=ns.backend,
        host=ns.host,
        port=ns.port,
        max_model_len=ns.max_model_len,
        log_path=ns.log,
    )


@command("chat", "send a question to an OpenAI-compatible endpoint (e.g. one `kubedistill serve` started)")
def _chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("question", nargs="?", default=None, help="the question (default: read lines from stdin)")
    p.add_argument("--url", default="http://127.0.0.1:8000/v1", help="endpoint base URL (default: %(default)s)")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--api-key-env", default=None, help="environment variable with the endpoint's API key")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0)


def cmd_chat(ns: argparse.Namespace) -> int:
    from kubedistill.config import ClientConfig, TeacherConfig
    from kubedistill.cot.parse import split_think
    from kubedistill.teacher import ChatRequest, TeacherClient

    client = TeacherClient(
        [TeacherConfig(url=ns.url, model=ns.model, api_key_env=ns.api_key_env)],
        ClientConfig(progress=False, max_retries=2, timeout_s=600),
    )
    client.check(timeout_s=5.0, attempts=2)
    questions = [ns.question] if ns.question else (line.strip() for line in sys.stdin if line.strip())
    for q in questions:
        messages = ([{"role": "system", "content": ns.system}] if ns.system else []) + [{"role": "user", "content": q}]
        [res] = client.run(
            [
                ChatRequest(
                    teacher=ns.model,
                    messages=messages,
                    params={"max_tokens": ns.max_tokens, "temperature": ns.temperature},
                )
            ]
        )
        if not res.ok:
            print(f"kubedistill: error: {res.error}", file=sys.stderr)
            return EXIT_PARTIAL
        text = f"<think>\n{res.reasoning}\n</think>\n\n{res.content}" if res.reasoning else (res.content or "")
        split = split_think(text)
        if split.reasoning != split.answer_part:
            print(f"[thinking]\n{split.reasoning}\n[answer]")
        print(split.answer_part if split.closed else text)
        if res.finish_reason == "length":
            print(f"[cut off at {ns.max_tokens} tokens]", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------ compile / run


@command("compile", "compile every pipeline to KFP YAML (one file per pipeline) for the Kubeflow UI")
def _compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", type=Path, default=Path("dist"), help="where the YAML goes (default: dist/)")
    p.add_argument("--pipeline", action="append", default=None, help="only these pipelines (default: all)")
    p.add_argument("--image-registry", default=None, help="registry of the kubedistill images")
    p.add_argument("--image-tag", default=None, help="tag of the kubedistill images")
    p.add_argument(
        "--cluster-config",
        type=Path,
        default=None,
        help="cluster settings (examples/cluster.yaml): resources, GPUs, PVC, secrets, node selectors",
    )


def cmd_compile(ns: argparse.Namespace) -> int:
    from kubedistill.orchestrate import compile_all

    for path in compile_all(
        ns.output_dir,
        image_registry=ns.image_registry,
        image_tag=ns.image_tag,
        names=ns.pipeline,
        cluster_config=ns.cluster_config,
    ):
        print(path)
    return 0


@command("submit", "upload a compiled pipeline (or a new version) to Kubeflow Pipelines and start a run")
def _submit_args(p: argparse.ArgumentParser) -> None:
    from kubedistill.submit import add_arguments

    add_arguments(p)


def cmd_submit(ns: argparse.Namespace) -> int:
    from kubedistill.submit import run

    return run(ns)


@command("run", "run a recipe's pipeline: --local runs it here under kfp.local (the embedded default)")
def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, type=Path, help="recipe YAML (examples/*.yaml)")
    p.add_argument("--local", action="store_true", help="run on this machine with kfp.local (required for now)")
    p.add_argument("--workdir", type=Path, default=Path("outputs"), help="local runs write here (default: outputs/)")
    p.add_argument("--teacher-url", default=None, help="use this OpenAI-compatible teacher instead of the recipe's")
    p.add_argument("--teacher-model", default=None, help="its model name")
    p.add_argument("--teacher-api-key-env", default=None, help="environment variable with its API key")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set generate.samples=2 (VALUE is YAML)",
    )


def cmd_run(ns: argparse.Namespace) -> int:
    from kubedistill.errors import UserError
    from kubedistill.orchestrate import run_local
    from kubedistill.report import print_run_summary

    if not ns.local:
        raise UserError("only --local runs start from `kubedistill run`; use `kubedistill submit` for a cluster")
    result = run_local(
        ns.recipe,
        workdir=ns.workdir,
        teacher_url=ns.teacher_url,
        teacher_model=ns.teacher_model,
        teacher_api_key_env=ns.teacher_api_key_env,
        overrides=_overrides(ns.set),
    )
    print_run_summary(result)
    return 0


def _overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    from kubedistill.config import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: use KEY=VALUE, e.g. generate.samples=2")
        out[key.strip()] = yaml.safe_load(value)
    return out


# ------------------------------------------------------------------------------------------ helpers


def _print_metrics(stage: str, m: dict[str, float], outputs: Any) -> None:
    drops = ", ".join(f"{k.removeprefix('dropped.')}={int(v)}" for k, v in m.items() if k.startswith("dropped."))
    print(f"{stage}: in={int(m['n_in'])} out={int(m['n_out'])} dropped: {drops or 'none'}", file=sys.stderr)
    print(f"wrote {int(m['n_out'])} record(s) to {outputs.output}", file=sys.stderr)
    if m.get("n_dropped"):
        print(f"rejects ({int(m['n_dropped'])}) in {outputs.rejects}", file=sys.stderr)


def _print_stats(stats: Any, outputs: Any) -> None:
    print(stats.summary_line(), file=sys.stderr)
    print(f"wrote {stats.n_out} record(s) to {outputs.output}", file=sys.stderr)
    if stats.n_dropped:
        print(f"rejects ({stats.n_dropped}) in {outputs.rejects}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from kubedistill import __version__

    parser = argparse.ArgumentParser(
        prog="kubedistill",
        description="Distil reasoning from teacher LLMs into small students, as Kubeflow Pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"kubedistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add_args, help_text) in _COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_args(sp)
        sp.set_defaults(handler=globals()[f"cmd_{name.replace('-', '_')}"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os

    # We use no pydantic plugins; looking them up scans every installed package's entry points (~20 ms).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "handler", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    return run_handler(ns.handler, ns)


def run_handler(handler: Handler, ns: argparse.Namespace) -> int:
    from kubedistill.errors import classify

    try:
        return handler(ns)
    except KeyboardInterrupt:
        print("kubedistill: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        code = classify(e)
        if code is None:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"kubedistill: error: {msg}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
