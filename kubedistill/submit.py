"""`kubedistill submit`: upload a compiled pipeline (or a new version of it) and start a run of a recipe.

    kubedistill compile --cluster-config examples/cluster.yaml --output-dir dist/
    kubedistill submit --recipe examples/slow_thinking.yaml --package dist/slow_thinking.yaml \\
        --host https://kubeflow.example.com/pipeline --namespace team-ml --experiment distill \\
        --token-env KFP_TOKEN [--dry-run] [--wait]

The recipe's parameters come from ``load_recipe(...).pipeline_arguments()`` (one JSON object per stage).
Everything is checked before anything is sent: the package is the recipe's pipeline, every parameter is
one the package declares, none is over KFP's ~10 KB parameter limit (kubeflow/pipelines#12510), and no
parameter holds a secret value (secrets travel as Kubernetes Secrets, by name). The pipeline version is
named after the package's content hash, so submitting the same package again reuses its version.
``--dry-run`` prints what would happen (host, pipeline, version, experiment, run, parameters with
secrets masked) and contacts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubedistill.cluster import is_secret_name
from kubedistill.errors import RunFailed, UserError

PARAM_LIMIT = 10_000  # characters; kubeflow/pipelines#12510
_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
MASK = "***"


@dataclass
class SubmitPlan:
    """What a submission does (printed by --dry-run, then carried out)."""

    host: str
    namespace: str | None
    package: str
    package_sha256: str
    pipeline_name: str
    version_name: str
    experiment: str
    run_name: str
    service_account: str | None
    arguments: dict[str, Any]

    def describe(self) -> str:
        masked = mask_secrets(self.arguments)
        lines = [
            f"host:            {mask_url(self.host) or '(from $KF_PIPELINES_ENDPOINT / kubeconfig)'}",
            f"namespace:       {self.namespace or '(single-user / default)'}",
            f"package:         {self.package} (sha256 {self.package_sha256[:12]})",
            f"pipeline:        {self.pipeline_name} (uploaded if missing)",
            f"version:         {self.version_name} (uploaded if missing)",
            f"experiment:      {self.experiment}",
            f"run:             {self.run_name}",
            f"service account: {self.service_account or '(the namespace default)'}",
            "parameters:",
        ]
        for k, v in masked.items():
            lines.append(f"  {k}: {json.dumps(v, sort_keys=True)}")
        return "\n".join(lines)


@dataclass
class SubmitResult:
    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    run_id: str
    run_url: str
    state: str | None = None
    actions: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ masking


def _env_secrets() -> set[str]:
    from kubedistill.cluster import secret_values

    return secret_values()


def mask_url(url: str | None) -> str | None:
    return _URL_CREDENTIALS.sub(r"\1" + MASK + "@", url) if url else url


def mask_secrets(obj: Any, secrets: set[str] | None = None) -> Any:
    """A copy of ``obj`` with credential-like keys (not ``*_env`` names), credentials in URLs and values of
    secret environment variables replaced by ``***``."""
    secrets = _env_secrets() if secrets is None else secrets

    def walk(o: Any, key: str = "") -> Any:
        if isinstance(o, Mapping):
            return {
                k: (MASK if is_secret_name(str(k)) and v not in (None, "") else walk(v, str(k))) for k, v in o.items()
            }
        if isinstance(o, list | tuple):
            return [walk(x, key) for x in o]
        if isinstance(o, str):
            s = mask_url(o) or o
            for sec in secrets:
                s = s.replace(sec, MASK)
            return s
        return o

    return walk(obj)


def _secrets_in(arguments: Mapping[str, Any]) -> list[str]:
    """Parameter paths that hold a secret value (so the run would carry it in its spec)."""
    secrets = _env_secrets()
    found: list[str] = []

    def walk(o: Any, path: str) -> None:
        if isinstance(o, Mapping):
            for k, v in o.items():
                p = f"{path}.{k}" if path else str(k)
                if is_secret_name(str(k)) and v not in (None, "", {}, []):
                    found.append(p)
                else:
                    walk(v, p)
        elif isinstance(o, list | tuple):
            for i, x in enumerate(o):
                walk(x, f"{path}.{i}")
        elif isinstance(o, str) and (_URL_CREDENTIALS.search(o) or any(s in o for s in secrets)):
            found.append(path)

    walk(arguments, "")
    return found


# --------------------------------------------------------------------------------------- planning


def _read_package(path: Path) -> tuple[dict[str, Any], str]:
    import yaml

    if not path.is_file():
        raise UserError(f"{path}: no such pipeline package (compile it first: kubedistill compile --output-dir dist/)")
    raw = path.read_bytes()
    try:
        docs = [d for d in yaml.safe_load_all(raw) if d]
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not a KFP pipeline YAML ({str(e).splitlines()[0]})") from None
    spec = docs[0] if docs else {}
    if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
        raise UserError(f"{path}: not a compiled KFP pipeline (no pipelineInfo/root)")
    return spec, hashlib.sha256(raw).hexdigest()


def plan(
    recipe: str | os.PathLike[str],
    package: str | os.PathLike[str] | None = None,
    *,
    host: str | None = None,
    namespace: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    pipeline_name: str | None = None,
    version: str | None = None,
    overrides: dict[str, Any] | None = None,
    teacher_url: str | None = None,
    teacher_model: str | None = None,
    teacher_api_key_env: str | None = None,
    service_account: str | None = None,
) -> SubmitPlan:
    """Validate everything and decide names; contacts nothing."""
    from kubedistill.config import TeacherConfig
    from kubedistill.recipes import load_recipe

    rec = load_recipe(recipe, overrides)
    teachers = None
    if teacher_url or teacher_model:
        if not (teacher_url and teacher_model):
            raise UserError("give both --teacher-url and --teacher-model")
        teachers = [TeacherConfig(url=teacher_url, model=teacher_model, api_key_env=teacher_api_key_env)]
    arguments = rec.pipeline_arguments(teachers)
    pkg = Path(package) if package else Path("dist") / f"{rec.recipe}.yaml"
    spec, sha = _read_package(pkg)
    compiled_name = spec["pipelineInfo"].get("name", "")
    if compiled_name != rec.recipe.replace("_", "-"):
        raise UserError(f"{pkg} is the pipeline {compiled_name!r}, but the recipe is a {rec.recipe} recipe")
    declared = set(((spec["root"].get("inputDefinitions") or {}).get("parameters") or {}).keys())
    unknown = sorted(set(arguments) - declared)
    if unknown:
        raise UserError(f"{pkg} does not declare the parameter(s) {', '.join(unknown)}: recompile it")
    too_long = [k for k, v in arguments.items() if len(json.dumps(v)) > PARAM_LIMIT]
    if too_long:
        raise UserError(
            f"parameter(s) {', '.join(too_long)} exceed KFP's {PARAM_LIMIT}-character limit "
            "(kubeflow/pipelines#12510): move large values to files"
        )
    leaks = _secrets_in(arguments)
    if leaks:
        raise UserError(
            f"parameter(s) {', '.join(leaks)} hold a secret value; give secrets as environment variables "
            "from Kubernetes Secrets (cluster config `secrets:`) and name them with *_env keys"
        )
    name = pipeline_name or compiled_name
    return SubmitPlan(
        host=host or os.environ.get("KF_PIPELINES_ENDPOINT", ""),
        namespace=namespace,
        package=str(pkg),
        package_sha256=sha,
        pipeline_name=name,
        version_name=version or f"{name}-{sha[:12]}",
        experiment=experiment or rec.tracking.experiment,
        run_name=run_name or f"{rec.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
        service_account=service_account,
        arguments=arguments,
    )


# -------------------------------------------------------------------------------------- submitting


def make_client(
    host: str | None,
    namespace: str | None = None,
    *,
    token: str | None = None,
    ssl_ca_cert: str | None = None,
) -> Any:
    """A kfp.Client for ``host`` (a bearer ``token`` when given; else kfp's own auth discovery)."""
    import warnings

    import kfp

    if host:
        _preflight(host, token=token, ssl_ca_cert=ssl_ca_cert)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(
            host=host or None,
            namespace=namespace or "kubeflow",
            existing_token=token,
            ssl_ca_cert=ssl_ca_cert,
        )


def _preflight(host: str, *, token: str | None, ssl_ca_cert: str | None, timeout_s: float = 15.0) -> None:
    """One GET of the KFP healthz endpoint, so a wrong host or token fails in seconds with a clear message
    (kfp.Client itself retries it five times, five seconds apart, then raises a bare TimeoutError)."""
    import ssl
    import urllib.error
    import urllib.request

    url = f"{host.rstrip('/')}/apis/v2beta1/healthz"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    ctx = ssl.create_default_context(cafile=ssl_ca_cert) if ssl_ca_cert else None
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=ctx) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("error_message") or detail
        hint = " (check --token-env)" if e.code in (401, 403) else ""
        raise UserError(f"KFP API at {mask_url(host)}: HTTP {e.code}: {detail}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"KFP API at {mask_url(host)} is not reachable: {getattr(e, 'reason', e)}") from None


def _filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def submit(
    recipe: str | os.PathLike[str],
    package: str | os.PathLike[str] | None = None,
    *,
    host: str | None = None,
    namespace: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    pipeline_name: str | None = None,
    version: str | None = None,
    overrides: dict[str, Any] | None = None,
    teacher_url: str | None = None,
    teacher_model: str | None = None,
    teacher_api_key_env: str | None = None,
    service_account: str | None = None,
    token: str | None = None,
    ssl_ca_cert: str | None = None,
    dry_run: bool = False,
    wait: bool = False,
    timeout_s: float = 24 * 3600,
    client: Any | None = None,
    out: Callable[[str], None] | None = None,
) -> SubmitPlan | SubmitResult:
    """Upload the package (a new pipeline, or a new version when the content changed) and start a run.

    ``dry_run``: return (and print through ``out``) the plan, contacting nothing. ``wait``: wait for the
    run to finish and raise RunFailed unless it succeeded. ``client``: a ready kfp.Client (tests)."""
    p = plan(
        recipe,
        package,
        host=host,
        namespace=namespace,
        experiment=experiment,
        run_name=run_name,
        pipeline_name=pipeline_name,
        version=version,
        overrides=overrides,
        teacher_url=teacher_url,
        teacher_model=teacher_model,
        teacher_api_key_env=teacher_api_key_env,
        service_account=service_account,
    )
    say = out or (lambda line: print(line, file=sys.stderr))
    if dry_run:
        say("kubedistill submit: dry run, nothing is sent")
        say(p.describe())
        return p
    # kfp.Client prints its UI links on stdout; keep stdout for our own result.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            kfp_client = client or make_client(p.host, p.namespace, token=token, ssl_ca_cert=ssl_ca_cert)
            result = _submit(kfp_client, p)
        except Exception as e:
            status = getattr(e, "status", None)
            if status is None or type(e).__name__ != "ApiException":
                raise
            reason = _api_message(e)
            raise UserError(f"KFP API at {mask_url(p.host) or 'the default host'}: HTTP {status}: {reason}") from None
    for line in result.actions:
        say(line)
    if wait:
        say(f"waiting for run {result.run_id} ...")
        with contextlib.redirect_stdout(sys.stderr):
            done = kfp_client.wait_for_run_completion(result.run_id, timeout=int(timeout_s))
        result.state = str(getattr(done, "state", "") or "")
        say(f"run {result.run_id}: {result.state}")
        if result.state.upper() != "SUCCEEDED":
            raise RunFailed(f"run {p.run_name} ({result.run_id}) ended {result.state}: {result.run_url}")
    return result


def _api_message(e: Any) -> str:
    try:
        body = json.loads(e.body)
        return str(body.get("error_message") or body.get("message") or e.reason)
    except Exception:
        return str(getattr(e, "reason", "") or e)


def _submit(kfp_client: Any, p: SubmitPlan) -> SubmitResult:
    actions: list[str] = []
    pipeline_id = kfp_client.get_pipeline_id(p.pipeline_name)
    just_created = False
    if pipeline_id is None:
        created = kfp_client.upload_pipeline(p.package, pipeline_name=p.pipeline_name, namespace=p.namespace)
        pipeline_id = created.pipeline_id
        just_created = True
        actions.append(f"uploaded pipeline {p.pipeline_name} ({pipeline_id})")
    # Runs always use the version named after the package's content (KFP names the version that comes
    # with a new pipeline after the pipeline, so a new pipeline gets its content-named version too).
    versions = (
        []
        if just_created
        else kfp_client.list_pipeline_versions(pipeline_id, filter=_filter(p.version_name)).pipeline_versions or []
    )
    if versions:
        version_id, version_name = versions[0].pipeline_version_id, versions[0].display_name
        actions.append(f"reused version {version_name} ({version_id})")
    else:
        v = kfp_client.upload_pipeline_version(p.package, p.version_name, pipeline_id=pipeline_id)
        version_id, version_name = v.pipeline_version_id, v.display_name or p.version_name
        actions.append(f"uploaded version {version_name} ({version_id})")
    exp = kfp_client.create_experiment(p.experiment, namespace=p.namespace)
    run = kfp_client.run_pipeline(
        experiment_id=exp.experiment_id,
        job_name=p.run_name,
        params=p.arguments,
        pipeline_id=pipeline_id,
        version_id=version_id,
        service_account=p.service_account,
    )
    url_prefix = kfp_client._get_url_prefix() if hasattr(kfp_client, "_get_url_prefix") else (p.host or "")
    return SubmitResult(
        pipeline_id=pipeline_id,
        version_id=version_id,
        version_name=version_name,
        experiment_id=exp.experiment_id,
        run_id=run.run_id,
        run_url=f"{mask_url(url_prefix)}/#/runs/details/{run.run_id}",
        actions=[*actions, f"started run {p.run_name} ({run.run_id}) in experiment {p.experiment}"],
    )


# --------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `kubedistill submit`."""
    p.add_argument("--recipe", required=True, type=Path, help="recipe YAML (its sections become the parameters)")
    p.add_argument("--package", type=Path, default=None, help="compiled pipeline (default: dist/<recipe kind>.yaml)")
    p.add_argument("--host", default=None, help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT, else kubeconfig)")
    p.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user KFP)")
    p.add_argument("--experiment", default=None, help="KFP experiment (default: the recipe's tracking.experiment)")
    p.add_argument("--run-name", default=None, help="run name (default: <recipe name>-<UTC timestamp>)")
    p.add_argument("--pipeline-name", default=None, help="pipeline name in KFP (default: the compiled name)")
    p.add_argument("--version", default=None, help="pipeline version name (default: <pipeline>-<content hash>)")
    p.add_argument("--service-account", default=None, help="Kubernetes service account of the run's pods")
    p.add_argument(
        "--token-env",
        default="KF_PIPELINES_TOKEN",
        metavar="VAR",
        help="environment variable holding a bearer token for the KFP API (default: %(default)s; unset: none)",
    )
    p.add_argument("--ca-cert", default=None, help="CA bundle for the KFP API's TLS certificate")
    p.add_argument("--teacher-url", default=None, help="use this OpenAI-compatible teacher instead of the recipe's")
    p.add_argument("--teacher-model", default=None, help="its model name")
    p.add_argument("--teacher-api-key-env", default=None, help="environment variable with its API key (in the pods)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value (VALUE is YAML)"
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be done; contact nothing")
    p.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 3 unless it succeeded")
    p.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to wait with --wait")
    p.add_argument("--json", action="store_true", help="print the result (or the plan) as JSON on stdout")


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


def run(ns: argparse.Namespace) -> int:
    """The handler of `kubedistill submit`."""
    token = os.environ.get(ns.token_env) if ns.token_env else None
    result = submit(
        ns.recipe,
        ns.package,
        host=ns.host,
        namespace=ns.namespace,
        experiment=ns.experiment,
        run_name=ns.run_name,
        pipeline_name=ns.pipeline_name,
        version=ns.version,
        overrides=_overrides(ns.set),
        teacher_url=ns.teacher_url,
        teacher_model=ns.teacher_model,
        teacher_api_key_env=ns.teacher_api_key_env,
        service_account=ns.service_account,
        token=token,
        ssl_ca_cert=ns.ca_cert,
        dry_run=ns.dry_run,
        wait=ns.wait,
        timeout_s=ns.timeout,
    )
    if ns.json:
        data = asdict(result)
        if isinstance(result, SubmitPlan):
            data["arguments"] = mask_secrets(data["arguments"])
            data["host"] = mask_url(data["host"])
        print(json.dumps(data, indent=2, sort_keys=True))
    elif isinstance(result, SubmitResult):
        print(result.run_url)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m kubedistill.submit ...`` (the same as `kubedistill submit` once the CLI wires it)."""
    from kubedistill.cli import run_handler

    parser = argparse.ArgumentParser(prog="kubedistill submit", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_handler(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
