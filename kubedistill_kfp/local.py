"""Run a recipe's pipeline on this machine with kfp.local (``kubedistill run --local``).

A local run is the embedded default: a teacher served here (vLLM, or any OpenAI endpoint from the
recipe), MLflow on a SQLite store, kfp.local's SubprocessRunner executing the very components the
cluster runs, with kfp.local's cache on (a re-run repeats only what changed). Models and large outputs
go by path through ``<workdir>/<recipe>/storage``, as they go through the PVC on a cluster
(kubedistill_kfp/storage.py): the same DAG, the same components, the same references. (kfp.local's own
pipeline workspace is deleted at the end of every run, which would leave a cached task pointing at
nothing; the storage folder stays.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubedistill.chat.local import BROKER_ENV
from kubedistill.core.errors import UserError
from kubedistill.core.paths import REQUEST_CACHE_ENV
from kubedistill_kfp.storage import STORAGE_ENV, read_ref


@dataclass
class LocalRunResult:
    recipe: str
    pipeline: str
    run_dir: Path
    tracking_uri: str
    model_uri: str | None
    elapsed_s: float
    outputs: dict[str, Any] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)  # tasks that ran, in order
    reused: list[str] = field(default_factory=list)  # tasks kfp.local's cache answered
    teacher_started: bool | None = None  # None: the run had no local teacher


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
    broker = None
    # the folders the user chose (else the run's own); everything set here is restored below
    saved_env = {k: os.environ.get(k) for k in (BROKER_ENV, REQUEST_CACHE_ENV, STORAGE_ENV, "KUBEDISTILL_REPORT_DIR")}
    previous = signal.signal(signal.SIGTERM, _interrupt)  # run the cleanup below on `kill`, as on Ctrl-C
    tasks = _TaskLog(on_task=lambda name: _release_for(broker, name))
    try:
        if teacher is not None and not endpoints and teacher.local is not None:
            # Started by the first task with a request no cache answers (kubedistill/serve/lazy.py): a re-run
            # whose answers are all cached starts nothing, and `local://NAME` keeps the tasks' inputs stable.
            broker = _lazy_teacher(teacher.local, work)
            os.environ[BROKER_ENV] = broker.start()
            endpoints = [local_teacher_endpoint(teacher.local)]
        # Preflight: every remote endpoint answers before any stage starts (a bad endpoint fails in seconds).
        preflight = [e for e in endpoints if not e.url.startswith("local://")] + [
            m for m in getattr(recipe, "models", {}).values() if isinstance(m, EndpointConfig)
        ]
        if preflight:
            ChatClient(preflight).check(timeout_s=5.0, attempts=3)
        # Every teacher-bound task keeps its answers here (one sub-directory per stage): a killed or changed
        # run never pays twice for an answer. An environment variable, not a task input: the tasks' inputs
        # hold no path of this run (kfp.local's cache keys stay the same from one run to the next).
        os.environ[REQUEST_CACHE_ENV] = saved_env[REQUEST_CACHE_ENV] or str(work / "request-cache")
        args = recipe.pipeline_arguments(endpoints if teacher is not None else None)
        pipeline = getattr(recipe, "pipeline", recipe.recipe)  # cot_source: imported -> <recipe>_imported
        if "work_dir" in _pipeline_parameters(pipeline):
            args["work_dir"] = str(work / "work")
        os.environ["KUBEDISTILL_REPORT_DIR"] = str(work)
        os.environ[STORAGE_ENV] = saved_env[STORAGE_ENV] or str(work / "storage")
        with tasks:
            outputs = _run_kfp_local(pipeline, args, work)
    except KeyboardInterrupt:
        _stop_children()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if broker is not None:
            broker.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    model_uri = outputs.get("model_uri") if isinstance(outputs.get("model_uri"), str) else None
    return LocalRunResult(
        recipe=recipe.name,
        pipeline=getattr(recipe, "pipeline", recipe.recipe),
        run_dir=work,
        tracking_uri=tracking_uri,
        model_uri=model_uri,
        elapsed_s=time.perf_counter() - t0,
        outputs=outputs,
        executed=tasks.executed,
        reused=tasks.reused,
        teacher_started=None if broker is None else bool(broker.started),
    )


_MACHINE_ROLES = ("train", "serve")  # tasks that want every core (and, on a cluster, the GPUs)


def _release_for(broker: Any, task: str) -> None:
    """Before a training or evaluation task, stop the local teacher: an idle vLLM CPU server keeps a core
    busy. A later teacher-bound task starts it again through the broker."""
    if broker is None:
        return
    from kubedistill_kfp.cluster import DEFAULT_ROLES

    component = re.sub(r"-\d+$", "", task)  # kfp.local names a component's second task "<name>-2"
    if DEFAULT_ROLES.get(component) in _MACHINE_ROLES and broker.release():
        print(f"teacher: stopped before {task} (it starts again if a later task asks it)", file=sys.stderr)


def local_teacher_endpoint(lt: Any) -> Any:
    """The endpoint a recipe's local teacher (``teacher.local``) is to the tasks: ``local://SERVED_NAME``,
    labelled by the model it serves; the same in every run, whatever port the server gets."""
    from kubedistill.chat.config import EndpointConfig

    return EndpointConfig(url=f"local://{lt.served_name}", model=lt.served_name, name=lt.model)


def _lazy_teacher(lt: Any, work: Path) -> Any:
    """The broker that starts the recipe's local teacher (``teacher.local``) when a task first needs it."""
    from kubedistill.chat import ChatClient
    from kubedistill.chat.config import EndpointConfig
    from kubedistill.models import resolve_model
    from kubedistill.serve.lazy import LazyTeacher
    from kubedistill.serve.local import LocalServer

    servers: list[Any] = []

    def start() -> str:
        print(f"teacher: a task has requests no cache answers; preparing {lt.model} ...", file=sys.stderr)
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
        servers.append(server)
        url = server.start()
        ChatClient([EndpointConfig(url=url, model=lt.served_name)]).check(timeout_s=5.0, attempts=3)
        print(f"teacher: {lt.served_name} at {url}", file=sys.stderr)
        return url

    def stop() -> None:
        for server in servers:
            server.stop()

    return LazyTeacher({lt.served_name: start}, {lt.served_name: stop})


class _TaskLog(logging.Filter):
    """Which tasks kfp.local ran and which its cache answered, read from its log records (a filter on the
    root logger: kfp.local replaces the root logger's handlers while a pipeline runs, not its filters)."""

    _ANSI = re.compile(r"\x1b\[[0-9;]*m")
    _RAN = re.compile(r"^Executing task '?([\w.-]+)'?")
    _HIT = re.compile(r"^Task '?([\w.-]+)'? cache hit")

    def __init__(self, on_task: Any = None) -> None:
        super().__init__()
        self.on_task = on_task  # called with the name of each task about to execute
        self.executed: list[str] = []
        self.reused: list[str] = []
        self._level = logging.NOTSET

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = self._ANSI.sub("", record.getMessage())
        except Exception:
            return True
        if m := self._RAN.match(msg):
            self.executed.append(m.group(1))
            if self.on_task is not None:
                self.on_task(m.group(1))
        elif m := self._HIT.match(msg):
            self.reused.append(m.group(1))
        return True

    def __enter__(self) -> _TaskLog:
        root = logging.getLogger()
        self._level = root.level
        if root.getEffectiveLevel() > logging.INFO:  # kfp.local logs cache hits outside its own INFO context
            root.setLevel(logging.INFO)
        root.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeFilter(self)
        root.setLevel(self._level)


def _pipeline_parameters(pipeline: str) -> set[str]:
    import inspect

    from kubedistill_kfp.pipelines import pipeline_function

    fn = pipeline_function(pipeline)
    return set(inspect.signature(getattr(fn, "pipeline_func", fn)).parameters)


EXIT_GRACE_S = 15.0  # after a `kill`, how long the run may take to unwind before it exits regardless


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM: stop the running tasks, then unwind as on Ctrl-C. Inside a ``dsl.ParallelFor`` kfp.local
    waits for the loop's threads before the interrupt reaches the caller, and a task with a retry policy
    would wait out its backoff and start again (measured: a killed run went on for minutes); so the run
    exits with 130 after ``EXIT_GRACE_S`` whatever kfp.local's threads are doing."""
    import threading
    import time

    _stop_children()

    def exit_regardless() -> None:
        time.sleep(EXIT_GRACE_S)
        _stop_children()
        print("kubedistill: interrupted", file=sys.stderr, flush=True)
        os._exit(130)

    threading.Thread(target=exit_regardless, name="kubedistill-exit", daemon=True).start()
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
    outputs = dict(task.outputs) if getattr(task, "outputs", None) else {}
    for value in outputs.values():  # an output kept on storage: hand out the stored file, not the reference
        ref = read_ref(value.path) if hasattr(value, "path") else None
        if ref is not None:
            value.path = ref.path
    return outputs


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
