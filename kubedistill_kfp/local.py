"""Run a recipe's pipeline on this machine with kfp.local (``kubedistill run --local``).

A local run is the embedded default: a teacher served here (vLLM, or any OpenAI endpoint from the
recipe), MLflow on a SQLite store, kfp.local's SubprocessRunner executing the very components the
cluster runs, with kfp.local's cache on (a re-run repeats only what changed).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubedistill.core.errors import UserError


@dataclass
class LocalRunResult:
    recipe: str
    pipeline: str
    run_dir: Path
    tracking_uri: str
    model_uri: str | None
    elapsed_s: float
    outputs: dict[str, Any] = field(default_factory=dict)


def run_local(
    recipe_path: str | Path,
    *,
    workdir: str | Path = "outputs",
    teacher_url: str | None = None,
    teacher_model: str | None = None,
    teacher_api_key_env: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> LocalRunResult:
    """Run the recipe's pipeline under kfp.local; starts and stops the local teacher when the recipe has one."""
    from kubedistill.chat import ChatClient
    from kubedistill.chat.config import EndpointConfig
    from kubedistill.recipes import load_recipe
    from kubedistill.tracking import resolve_tracking_uri

    t0 = time.perf_counter()
    recipe = load_recipe(recipe_path, overrides)
    work = Path(workdir).resolve() / recipe.name
    work.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"
    tracking_uri = resolve_tracking_uri()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from kubedistill.preflight import check_registered_models

    check_registered_models(recipe, str(recipe_path), tracking_uri)  # models:/ references, before any task
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    teacher = getattr(recipe, "teacher", None)  # recipes that only evaluate have none
    endpoints: list[EndpointConfig] = list(teacher.endpoints) if teacher is not None else []
    if teacher is None and (teacher_url or teacher_model):
        raise UserError(f"recipe {recipe.name!r} has no teacher to replace")
    if teacher_url or teacher_model:
        if not (teacher_url and teacher_model):
            raise UserError("give both --teacher-url and --teacher-model")
        endpoints = [EndpointConfig(url=teacher_url, model=teacher_model, api_key_env=teacher_api_key_env)]
    server = None
    previous = signal.signal(signal.SIGTERM, _interrupt)  # run the cleanup below on `kill`, as on Ctrl-C
    try:
        if teacher is not None and not endpoints and teacher.local is not None:
            from kubedistill.models import resolve_model
            from kubedistill.serve.local import LocalServer

            lt = teacher.local
            print(f"teacher: preparing {lt.model} ...", file=sys.stderr)
            model_dir = resolve_model(lt.model)
            print(
                f"teacher: starting a local {lt.backend} server for {model_dir} (this takes a minute or two)",
                file=sys.stderr,
            )
            server = LocalServer(
                model_dir,
                served_name=lt.served_name,
                backend=lt.backend,
                max_model_len=lt.max_model_len,
                startup_timeout_s=lt.startup_timeout_s,
                log_path=work / "teacher-server.log",
            )
            url = server.start()
            print(f"teacher: {lt.served_name} at {url}", file=sys.stderr)
            # its port changes every run: the request cache knows it by what it serves
            local = EndpointConfig(url=url, model=lt.served_name, name=lt.model, cache_identity=f"local:{lt.model}")
            endpoints = [local]
        # Preflight: every teacher answers before any stage starts (a bad endpoint fails in seconds).
        preflight = endpoints + [m for m in getattr(recipe, "models", {}).values() if isinstance(m, EndpointConfig)]
        if preflight:
            ChatClient(preflight).check(timeout_s=5.0, attempts=3)
        generate = getattr(recipe, "generate", None)
        if generate is not None and generate.client.cache_dir is None:
            # Teacher answers survive a killed or repeated run (kfp.local's cache covers finished tasks).
            generate.client.cache_dir = work / "request-cache"
        args = recipe.pipeline_arguments(endpoints if teacher is not None else None)
        pipeline = getattr(recipe, "pipeline", recipe.recipe)  # cot_source: imported -> <recipe>_imported
        if "work_dir" in _pipeline_parameters(pipeline):
            args["work_dir"] = str(work / "work")
        os.environ["KUBEDISTILL_REPORT_DIR"] = str(work)
        outputs = _run_kfp_local(pipeline, args, work)
    except KeyboardInterrupt:
        _stop_children()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.stop()
    model_uri = outputs.get("model_uri") if isinstance(outputs.get("model_uri"), str) else None
    return LocalRunResult(
        recipe=recipe.name,
        pipeline=getattr(recipe, "pipeline", recipe.recipe),
        run_dir=work,
        tracking_uri=tracking_uri,
        model_uri=model_uri,
        elapsed_s=time.perf_counter() - t0,
        outputs=outputs,
    )


def _pipeline_parameters(pipeline: str) -> set[str]:
    import inspect

    from kubedistill_kfp.pipelines import pipeline_function

    fn = pipeline_function(pipeline)
    return set(inspect.signature(getattr(fn, "pipeline_func", fn)).parameters)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_children() -> None:
    """Stop the task a kfp.local run was executing (its subprocess does not see our signals)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _run_kfp_local(pipeline: str, args: dict[str, Any], work: Path) -> dict[str, Any]:
    import warnings

    from kfp import local
    from kfp.local import subprocess_task_handler

    # kfp.local warns for every image without "python" in its name; ours carry Python and kubedistill.
    warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(work / "pipeline_root"),
        enable_caching=True,
        cache_root=str(work / "kfp_cache"),
    )
    log_path = work / "kfp-tasks.log"
    print(f"pipeline: {pipeline} under kfp.local; every task's full log goes to {log_path}", file=sys.stderr)
    with open(log_path, "a", encoding="utf-8") as log:
        quiet = _QuietTaskOutput(log)
        subprocess_task_handler.print = quiet  # type: ignore[attr-defined]  # the task output printer
        try:
            from kubedistill_kfp.pipelines import pipeline_function

            task = pipeline_function(pipeline)(**args)
        except RuntimeError as e:
            failed = re.search(r"Inner task failed: \S*'([\w-]+)'", str(e))
            if not failed:
                raise
            from kubedistill.core.errors import RunFailed

            raise RunFailed(
                f"pipeline {pipeline} failed at task {failed.group(1)}: {quiet.last_error or 'see the log'} "
                f"(full log: {log_path})"
            ) from None
        finally:
            del subprocess_task_handler.print  # type: ignore[attr-defined]
    return dict(task.outputs) if getattr(task, "outputs", None) else {}


class _QuietTaskOutput:
    """Task output for the terminal without the KFP executor's own INFO lines (its executor-input dump
    runs to hundreds of lines per task); everything still goes to the log file."""

    _ERROR = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Failed)): (.+)$")

    def __init__(self, log: Any) -> None:
        self.log = log
        self.skipping = False
        self.last_error: str | None = None

    def __call__(self, *args: Any, end: str = "\n", **kwargs: Any) -> None:
        import builtins

        line = " ".join(str(a) for a in args)
        self.log.write(line + end)
        m = self._ERROR.match(line)
        if m:
            self.last_error = f"{m.group(1)}: {m.group(2).strip()}"
        if "[KFP Executor" in line:
            self.skipping = " INFO]:" in line  # an INFO line and the block it opens (JSON dumps)
            if self.skipping:
                return
        elif self.skipping and (line.startswith((" ", "{", "}", "\t")) or not line.strip()):
            return
        else:
            self.skipping = False
        if line.strip():
            builtins.print(line, end=end, **kwargs)
