"""`kubedistill submit`: upload a compiled pipeline (or a new version of it) and start a run of a recipe.

    kubedistill compile --cluster-config examples/cluster.yaml --output-dir dist/
    kubedistill submit --recipe examples/slow_thinking.yaml --package dist/slow_thinking.yaml \\
        --host https://kubeflow.example.com/pipeline --namespace team-ml --experiment distill \\
        --token-env KFP_TOKEN [--dry-run] [--wait]

The recipe's parameters come from ``load_recipe(...).pipeline_arguments()`` (one JSON object per stage).
Everything is checked before anything is sent: the package is the recipe's pipeline, every parameter is
one the package declares, none is over KFP's ~10 KB parameter limit (kubeflow/pipelines#12510), no
parameter holds a secret value (secrets travel as Kubernetes Secrets, by name), and every name follows
the KFP server's rules (:func:`check_names`: the compiled pipeline's name ``^[a-z0-9][a-z0-9-]{0,127}$``,
pipeline and version names DNS-1123 subdomains, the server's length limits). The pipeline is looked up
in the namespace it is uploaded to (multi-user KFP lists namespaced pipelines only when asked for that
namespace), so a second submission finds it instead of uploading it again. The pipeline version is
named after the package's content hash, so submitting the same package again reuses its version.
``--dry-run`` prints what would happen (host, pipeline, version, experiment, run, parameters with
secrets masked) and contacts nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubedistill.core.errors import RunFailed, UserError
from kubedistill.core.secrets import mask, mask_url, secret_paths

PARAM_LIMIT = 10_000  # characters; kubeflow/pipelines#12510
# The KFP server's naming rules (kubeflow/pipelines backend/src/apiserver, release 2.17): the compiled
# pipeline's name (common.ValidatePipelineName), Kubernetes object names where pipelines are stored as
# Kubernetes resources (IsDNS1123Subdomain), and the database's column limits (validation/length.go).
SPEC_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_PIPELINE_NAME, MAX_VERSION_NAME, MAX_EXPERIMENT_NAME, MAX_NAMESPACE = 128, 127, 128, 63


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
    notes: list[str] = field(default_factory=list)  # what the user should know before it runs

    def describe(self) -> str:
        masked = mask(self.arguments)
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
        lines += [f"note: {n}" for n in self.notes]
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
    # the Kubernetes settings (PVC, GPUs, node selectors, secrets) are a second document, `platforms:`
    spec = {**spec, "_has_platform_spec": any(isinstance(d, dict) and "platforms" in d for d in docs)}
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
    from kubedistill.chat.config import EndpointConfig
    from kubedistill.recipes import load_recipe

    rec = load_recipe(recipe, overrides, here=False)  # it runs in the cluster's pods
    teachers = None
    if teacher_url or teacher_model:
        if not (teacher_url and teacher_model):
            raise UserError("give both --teacher-url and --teacher-model")
        teachers = [EndpointConfig(url=teacher_url, model=teacher_model, api_key_env=teacher_api_key_env)]
    arguments = rec.pipeline_arguments(teachers)
    pipeline = getattr(rec, "pipeline", rec.recipe)  # cot_source: imported -> <recipe>_imported
    pkg = Path(package) if package else Path("dist") / f"{pipeline}.yaml"
    spec, sha = _read_package(pkg)
    compiled_name = spec["pipelineInfo"].get("name", "")
    if compiled_name != pipeline.replace("_", "-"):
        raise UserError(f"{pkg} is the pipeline {compiled_name!r}, but the recipe runs {pipeline.replace('_', '-')}")
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
    leaks = secret_paths(arguments)
    if leaks:
        raise UserError(
            f"parameter(s) {', '.join(leaks)} hold a secret value; give secrets as environment variables "
            "from Kubernetes Secrets (cluster config `secrets:`) and name them with *_env keys"
        )
    name = pipeline_name or compiled_name
    result = SubmitPlan(
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
        notes=[]
        if spec["_has_platform_spec"]
        else [
            f"{pkg} was compiled without cluster settings (kubedistill compile --cluster-config ...): its tasks "
            "get no storage PVC, GPU requests, node selectors or secrets — a training task will find no GPU, "
            "and request caches and checkpoints do not outlive a pod"
        ],
    )
    check_names(
        spec_name=compiled_name,
        pipeline_name=result.pipeline_name,
        version_name=result.version_name,
        experiment=result.experiment,
        run_name=result.run_name,
        namespace=namespace,
    )
    return result


def check_names(
    *, spec_name: str, pipeline_name: str, version_name: str, experiment: str, run_name: str, namespace: str | None
) -> None:
    """Raise ``UserError`` (one line) for a name the KFP server would refuse — before anything is sent.

    ``spec_name`` (the compiled ``pipelineInfo.name``) must match ``^[a-z0-9][a-z0-9-]{0,127}$``; the pipeline
    and version names must be DNS-1123 subdomains (lower-case letters, digits, '-' and '.', starting and
    ending with a letter or digit) of at most 128 / 127 characters, ``<pipeline>-<version>`` at most 253;
    the experiment at most 128 characters; the run name not empty; the namespace a DNS-1123 label."""
    if not SPEC_NAME.match(spec_name):
        raise UserError(
            f"the compiled pipeline is named {spec_name!r}, which KFP refuses: lower-case letters, digits and '-', "
            "starting with a letter or digit, at most 128 characters (rename it in @dsl.pipeline and recompile)"
        )
    for what, name, limit in (
        ("pipeline", pipeline_name, MAX_PIPELINE_NAME),
        ("version", version_name, MAX_VERSION_NAME),
    ):
        if not DNS1123_SUBDOMAIN.match(name) or len(name) > limit:
            raise UserError(
                f"{what} name {name!r} is not one KFP accepts: lower-case letters, digits, '-' and '.', starting and "
                f"ending with a letter or digit, at most {limit} characters"
            )
    if len(f"{pipeline_name}-{version_name}") > 253:
        raise UserError(f"pipeline and version names together exceed 253 characters: {pipeline_name}-{version_name}")
    if not experiment.strip() or len(experiment) > MAX_EXPERIMENT_NAME:
        raise UserError(f"experiment name {experiment!r}: 1 to {MAX_EXPERIMENT_NAME} characters")
    if not run_name.strip():
        raise UserError("the run name is empty")
    if namespace is not None and (not DNS1123_LABEL.match(namespace) or len(namespace) > MAX_NAMESPACE):
        raise UserError(f"namespace {namespace!r} is not a Kubernetes namespace name")


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
    for note in p.notes:
        say(f"kubedistill submit: note: {note}")
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
    # Look in the namespace the pipeline is uploaded to: kfp.Client.get_pipeline_id lists without one and, on
    # multi-user KFP, never sees a namespaced pipeline (it would upload it again: HTTP 409).
    found = kfp_client.list_pipelines(filter=_filter(p.pipeline_name), namespace=p.namespace, page_size=2).pipelines
    if found and len(found) > 1:
        raise UserError(f"{len(found)} pipelines are named {p.pipeline_name} in this namespace: pass --pipeline-name")
    pipeline_id = found[0].pipeline_id if found else None
    just_created = False
    if pipeline_id is None:
        try:
            created = kfp_client.upload_pipeline(p.package, pipeline_name=p.pipeline_name, namespace=p.namespace)
        except Exception as e:
            if getattr(e, "status", None) == 409:
                raise UserError(
                    f"KFP already has a pipeline named {p.pipeline_name} in namespace {p.namespace or '(shared)'} "
                    "that its list does not show under that display name: pass --pipeline-name"
                ) from None
            raise
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
