"""Serve a registered student on KServe: render its InferenceService, apply it, wait, smoke-test it.

The student is served by KServe's Hugging Face runtime with the vLLM backend, which exposes OpenAI
routes under ``<url>/openai/v1`` (``chat/completions``, ``completions``, ``models``). Its weights come
straight from the MLflow artifact store: ``register`` logs the Hugging Face directory under the
model's ``artifacts/`` folder, and :func:`student_storage_uri` turns ``models:/NAME/VERSION`` (or
``models:/NAME@champion``) into that folder's URI (``s3://...`` on the cluster), which KServe's storage
initializer downloads with the service account's S3 credentials.

Access is guarded by Istio (the predictor pods carry a sidecar): with ``auth.mode: jwt`` a
RequestAuthentication validates bearer tokens from ``auth.issuer`` and an AuthorizationPolicy admits
only requests with a valid token; with ``auth.mode: principals`` only the listed mesh identities (mTLS)
get in (use it with ``deployment_mode: RawDeployment``, where no activator sits in between). Knative's
probes to ``/healthz`` and ``/metrics`` stay allowed. See docs/cluster.md.

    docs = render("models:/kubedistill-student@champion", settings={"name": "student", "namespace": "ml"})
    print(to_yaml(docs))                                   # what `kubedistill serve --render` prints
    result = deploy("models:/kubedistill-student@champion", settings=...)   # apply, wait, smoke-test
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kubedistill.core.config import StrictModel, validate_config
from kubedistill.core.errors import PartialFailure, UserError

ISVC_GROUP, ISVC_VERSION, ISVC_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
ISTIO_GROUP, ISTIO_VERSION = "security.istio.io", "v1"
PLURALS = {
    "InferenceService": (ISVC_GROUP, ISVC_VERSION, ISVC_PLURAL),
    "RequestAuthentication": (ISTIO_GROUP, ISTIO_VERSION, "requestauthentications"),
    "AuthorizationPolicy": (ISTIO_GROUP, ISTIO_VERSION, "authorizationpolicies"),
}
SERVABLE_SCHEMES = ("s3://", "gs://", "pvc://", "hf://", "https://", "http://", "oci://", "azure://")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
GPU_COUNTS = (0, 1, 2, 4, 8, 16)


class DeployError(PartialFailure, RuntimeError):
    """The student could not be deployed or did not answer (the message says where it stopped)."""


class AuthConfig(StrictModel):
    """Who may call the student's endpoint (Istio; the predictor pods need the sidecar)."""

    mode: Literal["jwt", "principals", "none"] = Field(
        default="jwt", description="jwt: a valid bearer token; principals: listed mesh identities; none: open"
    )
    issuer: str | None = Field(default=None, description="JWT issuer (jwt mode), e.g. your OIDC provider")
    jwks_uri: str | None = Field(default=None, description="its JWKS URL (jwt mode)")
    audiences: list[str] = Field(default_factory=list)
    principals: list[str] = Field(
        default_factory=list, description="mesh identities, e.g. cluster.local/ns/apps/sa/chat (principals mode)"
    )
    allow_knative_probes: bool = Field(default=True, description="let knative-serving reach /healthz and /metrics")

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        if self.mode == "jwt" and not (self.issuer and self.jwks_uri):
            raise ValueError("auth.mode jwt needs auth.issuer and auth.jwks_uri")
        if self.mode == "principals" and not self.principals:
            raise ValueError("auth.mode principals needs auth.principals")
        return self


class Toleration(StrictModel):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class ServeConfig(StrictModel):
    """How a student is served on KServe (every knob has a default that fits one GPU)."""

    name: str = Field(default="kubedistill-student", description="InferenceService name (DNS label, <= 45 chars)")
    namespace: str | None = Field(
        default=None,
        description="where the student goes; default: the pod's own namespace inside a cluster (the pipeline's, "
        "whose manifests/pipeline-namespace gives the student's service account), else kubedistill",
    )
    served_name: str | None = Field(default=None, description="model name in the OpenAI API (default: name)")
    runtime: str | None = Field(default=None, description="ServingRuntime; None: KServe picks the huggingface one")
    deployment_mode: Literal["Serverless", "RawDeployment"] = "Serverless"
    storage_uri: str | None = Field(default=None, description="serve these weights instead of the registry's")
    service_account: str | None = Field(
        default="kubedistill-student", description="its Secret carries the S3 credentials for the storage initializer"
    )
    gpus: int = 1
    accelerator: str = "nvidia.com/gpu"
    cpu: str = "4"
    memory: str = "24Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    shm_size: str | None = "4Gi"
    ephemeral_storage: str | None = Field(
        default="64Gi",
        description="local disk requested for the weights KServe's storage initializer copies from the object "
        "store into the pod (an emptyDir): schedules the pod where they fit, instead of evicting it later",
    )
    min_replicas: int = Field(default=1, ge=0, description="0 lets an idle student scale to zero (Serverless)")
    max_replicas: int = Field(default=2, ge=1)
    scale_metric: Literal["concurrency", "rps", "cpu", "memory"] = "concurrency"
    scale_target: int = Field(default=16, ge=1, description="in-flight requests per replica before scaling out")
    container_concurrency: int | None = Field(default=None, ge=0, description="hard cap per replica (0: none)")
    timeout_s: int = Field(default=600, ge=1, description="per-request timeout (long CoTs take minutes)")
    max_model_len: int | None = 8192
    dtype: str | None = "bfloat16"
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    vllm_args: list[str] = Field(default_factory=list, description="more vLLM engine flags")
    openai_prefix: str = Field(default="openai", description="route prefix of the OpenAI API (KServe's default)")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    auth: AuthConfig = Field(default_factory=lambda: AuthConfig(mode="none"))
    smoke_via: Literal["auto", "internal", "external"] = Field(
        default="auto",
        description="the URL the smoke test calls: internal (status.address.url, reachable from a pod of the "
        "cluster, e.g. the pipeline's deploy step), external (status.url, through the ingress), auto: internal "
        "inside a cluster, external elsewhere",
    )
    smoke_token_env: str | None = Field(
        default="KUBEDISTILL_STUDENT_TOKEN",
        description="environment variable holding a bearer token for the smoke test (auth.mode jwt needs one: the "
        "student's sidecar refuses a request without it, on the internal URL too)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v) or len(v) > 45:
            raise ValueError(f"{v!r}: an InferenceService name is a DNS label of at most 45 characters")
        return v

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: int) -> int:
        if v not in GPU_COUNTS:
            raise ValueError("gpus must be 0, 1, 2, 4, 8 or 16")
        return v

    @model_validator(mode="after")
    def _replicas(self) -> ServeConfig:
        if self.max_replicas < max(self.min_replicas, 1):
            raise ValueError("max_replicas must be >= min_replicas and >= 1")
        if self.min_replicas == 0 and self.deployment_mode == "RawDeployment":
            raise ValueError("scale to zero (min_replicas 0) needs deployment_mode Serverless")
        return self

    @property
    def model_name(self) -> str:
        return self.served_name or self.name

    @property
    def target_namespace(self) -> str:
        """``namespace``, else this pod's namespace, else ``kubedistill``."""
        return self.namespace or pod_namespace() or "kubedistill"


def _settings(settings: ServeConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> ServeConfig:
    if isinstance(settings, ServeConfig):
        return settings.model_copy(update=dict(overrides)) if overrides else settings
    data = {**dict(settings or {}), **dict(overrides)}
    return validate_config(ServeConfig, data, "serve")


# ---------------------------------------------------------------------------------- the registry


@dataclass
class ResolvedModel:
    model_uri: str  # models:/NAME/VERSION (pinned)
    name: str | None
    version: str | None
    storage_uri: str


def student_storage_uri(model_uri: str, *, tracking_uri: str | None = None) -> ResolvedModel:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` → the URI of the Hugging Face directory that
    ``register`` stored under the model's ``artifacts/`` folder (read from its MLmodel file)."""
    import os
    import tempfile

    import mlflow
    import yaml

    from kubedistill.tracking import resolve_registered, resolve_tracking_uri

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    name, version, pinned = resolve_registered(model_uri)
    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    root = client.get_model_version_download_uri(name, version).rstrip("/")
    with tempfile.TemporaryDirectory() as d:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=d)
        except Exception as e:
            raise UserError(f"{pinned}: cannot read its MLmodel at {root} ({e})") from None
        with open(local, encoding="utf-8") as f:
            mlmodel = yaml.safe_load(f)
    try:
        rel = mlmodel["flavors"]["python_function"]["artifacts"]["hf_model"]["path"]
    except (KeyError, TypeError):
        raise UserError(f"{pinned}: not a kubedistill student (no hf_model artifact in its MLmodel)") from None
    storage = f"{root}/{str(rel).strip('/')}"
    if storage.startswith("mlflow-artifacts:"):
        raise UserError(
            f"{pinned}: its artifacts are proxied by the MLflow server ({storage}); KServe reads object storage "
            "directly: run the server with --no-serve-artifacts --default-artifact-root s3://..., or give storage_uri"
        )
    return ResolvedModel(model_uri=pinned, name=name, version=version, storage_uri=storage)


# -------------------------------------------------------------------------------------- render


def render(
    model: str,
    *,
    settings: ServeConfig | Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """The manifests that serve ``model`` (``models:/...`` from the registry, or a storage URI such as
    ``s3://...``, ``pvc://...``, ``hf://...``): the InferenceService and, per ``auth``, Istio's
    RequestAuthentication and AuthorizationPolicy. Validated against the kserve SDK's typed models."""
    s = _settings(settings, overrides)
    if s.storage_uri:
        resolved = ResolvedModel(model_uri=model, name=None, version=None, storage_uri=s.storage_uri)
    elif model.startswith("models:/"):
        resolved = student_storage_uri(model, tracking_uri=tracking_uri)
    else:
        resolved = ResolvedModel(model_uri=model, name=None, version=None, storage_uri=model)
    docs = [inference_service(s, resolved)]
    docs += auth_policies(s)
    validate_inference_service(docs[0])
    return docs


def inference_service(s: ServeConfig, resolved: ResolvedModel) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/part-of": "kubedistill",
        "app.kubernetes.io/component": "student",
        **({"kubedistill.io/model": _label(resolved.name)} if resolved.name else {}),
        **({"kubedistill.io/model-version": _label(resolved.version)} if resolved.version else {}),
        **s.labels,
    }
    annotations = {
        "serving.kserve.io/deploymentMode": s.deployment_mode,
        "kubedistill.io/model-uri": resolved.model_uri,
        **s.annotations,
    }
    args = [f"--model_name={s.model_name}", "--backend=vllm"]
    if s.max_model_len:
        args.append(f"--max_model_len={s.max_model_len}")
    if s.dtype:
        args.append(f"--dtype={s.dtype}")
    if s.gpus > 1:
        args.append(f"--tensor-parallel-size={s.gpus}")
    if s.gpu_memory_utilization:
        args.append(f"--gpu-memory-utilization={s.gpu_memory_utilization}")
    args += list(s.vllm_args)
    requests: dict[str, str] = {"cpu": s.cpu, "memory": s.memory}
    limits: dict[str, str] = {"memory": s.memory_limit or s.memory}
    if s.cpu_limit:
        limits["cpu"] = s.cpu_limit
    if s.gpus:
        requests[s.accelerator] = str(s.gpus)
        limits[s.accelerator] = str(s.gpus)
    if s.ephemeral_storage and not resolved.storage_uri.startswith("pvc://"):  # a PVC is mounted, not copied
        requests["ephemeral-storage"] = s.ephemeral_storage
    env = [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}]
    if s.openai_prefix != "openai":
        env.append({"name": "KSERVE_OPENAI_ROUTE_PREFIX", "value": s.openai_prefix})
    model: dict[str, Any] = {
        "modelFormat": {"name": "huggingface"},
        "storageUri": resolved.storage_uri,
        "args": args,
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if s.runtime:
        model["runtime"] = s.runtime
    predictor: dict[str, Any] = {
        "minReplicas": s.min_replicas,
        "maxReplicas": s.max_replicas,
        "scaleMetric": s.scale_metric,
        "scaleTarget": s.scale_target,
        "timeout": s.timeout_s,
        "model": model,
    }
    if s.auth.mode != "none":  # the policies are enforced by the pods' Istio sidecar
        predictor["annotations"] = {"sidecar.istio.io/inject": "true"}
    if s.container_concurrency is not None:
        predictor["containerConcurrency"] = s.container_concurrency
    if s.service_account:
        predictor["serviceAccountName"] = s.service_account
    if s.node_selector:
        predictor["nodeSelector"] = dict(s.node_selector)
    if s.tolerations:
        predictor["tolerations"] = [t.model_dump(exclude_none=True) for t in s.tolerations]
    elif s.gpus:  # GPU nodes are commonly tainted with the accelerator's resource name (NVIDIA's GPU operator)
        predictor["tolerations"] = [{"key": s.accelerator, "operator": "Exists", "effect": "NoSchedule"}]
    if s.shm_size:
        predictor["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": s.shm_size}}]
        model["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    return {
        "apiVersion": f"{ISVC_GROUP}/{ISVC_VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": s.name, "namespace": s.target_namespace, "labels": labels, "annotations": annotations},
        "spec": {"predictor": predictor},
    }


def auth_policies(s: ServeConfig) -> list[dict[str, Any]]:
    """Istio RequestAuthentication (jwt mode) and AuthorizationPolicy for the student's pods."""
    a = s.auth
    if a.mode == "none":
        return []
    selector = {"matchLabels": {"serving.kserve.io/inferenceservice": s.name}}
    meta = {"namespace": s.target_namespace, "labels": {"app.kubernetes.io/part-of": "kubedistill"}}
    docs: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    if a.mode == "jwt":
        rule: dict[str, Any] = {"issuer": a.issuer, "jwksUri": a.jwks_uri, "forwardOriginalToken": True}
        if a.audiences:
            rule["audiences"] = list(a.audiences)
        docs.append(
            {
                "apiVersion": f"{ISTIO_GROUP}/{ISTIO_VERSION}",
                "kind": "RequestAuthentication",
                "metadata": {"name": f"{s.name}-jwt", **meta},
                "spec": {"selector": selector, "jwtRules": [rule]},
            }
        )
        rules.append({"from": [{"source": {"requestPrincipals": [f"{a.issuer}/*"]}}]})
    else:
        rules.append({"from": [{"source": {"principals": list(a.principals)}}]})
    if a.allow_knative_probes:
        rules.append(
            {
                "from": [{"source": {"namespaces": ["knative-serving"]}}],
                "to": [{"operation": {"paths": ["/healthz", "/healthz/*", "/metrics", "/wait-for-drain"]}}],
            }
        )
    docs.append(
        {
            "apiVersion": f"{ISTIO_GROUP}/{ISTIO_VERSION}",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": f"{s.name}-access", **meta},
            "spec": {"selector": selector, "action": "ALLOW", "rules": rules},
        }
    )
    return docs


def _label(v: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", v).strip("-_.")[:63]
    return out.strip("-_.") or "x"


def to_yaml(docs: Sequence[Mapping[str, Any]]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(dict(d), sort_keys=False) for d in docs)


# ----------------------------------------------------------------------- typed validation (kserve SDK)

_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "date": (str,),
    "datetime": (str,),
}
# Types named in the kserve SDK's models that are free-form or absent from the kubernetes client.
_OPAQUE = {"ResourceQuantity", "V1beta1MetricQuantity", "IntOrString"}


def _model_class(name: str) -> Any:
    import kserve.models as km
    from kubernetes.client import models as k8s

    return getattr(km, name, None) or getattr(k8s, name, None)


def _typed(data: Any, klass: str, path: str) -> Any:
    if klass.startswith("list["):
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list")
        inner = klass[5:-1]
        return [_typed(x, inner, f"{path}[{i}]") for i, x in enumerate(data)]
    if klass.startswith("dict("):
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping")
        inner = re.match(r"dict\(([^,]*), (.*)\)", klass).group(2)  # type: ignore[union-attr]
        return {k: _typed(v, inner, f"{path}.{k}") for k, v in data.items()}
    if klass in _PRIMITIVES:
        if klass != "object" and not isinstance(data, _PRIMITIVES[klass]):
            raise ValueError(f"{path}: expected {klass}, got {type(data).__name__} {data!r}")
        if klass == "int" and isinstance(data, bool):
            raise ValueError(f"{path}: expected int, got bool")
        return data
    if klass in _OPAQUE:
        if not isinstance(data, str | int | float):
            raise ValueError(f"{path}: expected a quantity, got {data!r}")
        return data
    cls = _model_class(klass)
    if cls is None:  # a type newer than the installed kubernetes client: check it is at least a mapping
        if not isinstance(data, dict | list | str | int | float | bool):
            raise ValueError(f"{path}: unexpected value for {klass}")
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a {klass} mapping, got {type(data).__name__}")
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs = {}
    for key, value in data.items():
        attr = by_json.get(key)
        if attr is None:
            raise ValueError(f"{path}.{key}: unknown field of {klass}")
        kwargs[attr] = _typed(value, cls.openapi_types[attr], f"{path}.{key}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {klass}: {e}") from None


def validate_inference_service(obj: Mapping[str, Any]) -> Any:
    """Check an InferenceService dict field by field against the kserve SDK's typed models (unknown
    fields, wrong types and missing required fields are errors naming the path); returns the typed
    ``V1beta1InferenceService``."""
    if obj.get("apiVersion") != f"{ISVC_GROUP}/{ISVC_VERSION}" or obj.get("kind") != "InferenceService":
        raise ValueError(f"not a {ISVC_GROUP}/{ISVC_VERSION} InferenceService")
    if not (obj.get("spec") or {}).get("predictor"):
        raise ValueError("spec.predictor is required")
    return _typed(dict(obj), "V1beta1InferenceService", "")


# -------------------------------------------------------------------------------- apply and wait


def _api_client(api_client: Any | None) -> Any:
    if api_client is not None:
        return api_client
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except Exception as e:
            raise DeployError(f"no Kubernetes access: not in a cluster and no usable kubeconfig ({e})") from None
    return client.ApiClient()


def apply_manifests(docs: Sequence[Mapping[str, Any]], api_client: Any | None = None) -> list[str]:
    """Create each object, or replace it when it exists. Returns ``created/replaced Kind/name`` lines."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(_api_client(api_client))
    done = []
    for doc in docs:
        kind = doc["kind"]
        if kind not in PLURALS:
            raise DeployError(f"cannot apply a {kind}")
        group, version, plural = PLURALS[kind]
        ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
        try:
            existing = api.get_namespaced_custom_object(group, version, ns, plural, name)
        except ApiException as e:
            if e.status != 404:
                raise DeployError(f"{kind}/{name} in {ns}: {_api_error(e)}") from None
            existing = None
        try:
            if existing is None:
                api.create_namespaced_custom_object(group, version, ns, plural, dict(doc))
                done.append(f"created {kind}/{name}")
            else:
                body = json.loads(json.dumps(doc))
                body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                api.replace_namespaced_custom_object(group, version, ns, plural, name, body)
                done.append(f"replaced {kind}/{name}")
        except ApiException as e:
            raise DeployError(f"{kind}/{name} in {ns}: {_api_error(e)}") from None
    return done


def _api_error(e: Any) -> str:
    try:
        msg = json.loads(e.body).get("message")
    except Exception:
        msg = None
    return f"HTTP {e.status}: {msg or e.reason}"


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def _not_ready_reason(obj: Mapping[str, Any]) -> str:
    conds = _conditions(obj)
    bad = [
        f"{t}={c.get('status')}" + (f" ({c.get('reason')}: {c.get('message')})" if c.get("reason") else "")
        for t, c in conds.items()
        if c.get("status") != "True"
    ]
    return "; ".join(bad) or "no status yet"


def wait_ready(
    name: str,
    namespace: str,
    *,
    api_client: Any | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 5.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Poll the InferenceService until it is Ready (for its current generation); returns it. Fails at
    once when KServe reports that the model failed to load, and after ``timeout_s`` otherwise."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(_api_client(api_client))
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        try:
            obj = api.get_namespaced_custom_object(ISVC_GROUP, ISVC_VERSION, namespace, ISVC_PLURAL, name)
        except ApiException as e:
            raise DeployError(f"InferenceService/{name} in {namespace}: {_api_error(e)}") from None
        status = obj.get("status") or {}
        generation = (obj.get("metadata") or {}).get("generation")
        observed = status.get("observedGeneration")
        current = generation is None or observed is None or observed >= generation
        ready = _conditions(obj).get("Ready", {}).get("status") == "True"
        if ready and current and status.get("url"):
            return obj
        model_status = status.get("modelStatus") or {}
        states = model_status.get("states") or {}
        if model_status.get("transitionStatus") in ("InvalidSpec", "BlockedByFailedLoad") or (
            states.get("targetModelState") == "FailedToLoad"
        ):
            failure = model_status.get("lastFailureInfo") or {}
            raise DeployError(
                f"InferenceService/{name}: the model failed to load "
                f"({failure.get('reason', model_status.get('transitionStatus'))}: {failure.get('message', '')})"
            )
        reason = _not_ready_reason(obj) if current else f"generation {generation} not yet observed"
        if log and reason != last:
            log(f"waiting for InferenceService/{name}: {reason}")
        last = reason
        if time.monotonic() >= deadline:
            raise DeployError(f"InferenceService/{name} in {namespace} not Ready after {timeout_s:g}s: {reason}")
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------ smoke test


def openai_base_url(url: str, prefix: str = "openai") -> str:
    """The OpenAI API base of a KServe endpoint: ``<url>/openai/v1`` (``<url>/v1`` with no prefix)."""
    url = url.rstrip("/")
    prefix = prefix.strip("/")
    return f"{url}/{prefix}/v1" if prefix else f"{url}/v1"


def smoke_test(
    base_url: str,
    model: str,
    *,
    token: str | None = None,
    prompt: str = "What is 2 + 3? Answer with the number.",
    max_tokens: int = 32,
    timeout_s: float = 120.0,
    attempts: int = 5,
    backoff_s: float = 2.0,
) -> str:
    """One chat completion through the OpenAI route; returns the answer's text. Retries connection errors,
    429 and 5xx (a Serverless student may still be starting); raises DeployError with the status and the
    body otherwise, or when the answer has no text."""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
    ).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = f"{base_url.rstrip('/')}/chat/completions"
    last = ""
    for attempt in range(1, attempts + 1):
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode("utf-8", "replace")
            last = f"HTTP {e.code}: {detail}"
            if e.code in (401, 403):
                raise DeployError(f"smoke test: {url} refused the request ({last}); check the token / auth") from None
            if e.code != 429 and e.code < 500:
                raise DeployError(f"smoke test: {url} answered {last}") from None
        except (urllib.error.URLError, OSError) as e:
            last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        else:
            try:
                data = json.loads(raw)
                message = data["choices"][0]["message"]
                text = (message.get("content") or message.get("reasoning_content") or "").strip()
            except (ValueError, KeyError, IndexError, TypeError):
                raise DeployError(
                    f"smoke test: {url} answered a body that is not a chat completion: {raw[:300]!r}"
                ) from None
            if not text:
                raise DeployError(f"smoke test: {url} answered an empty completion")
            return text
        if attempt < attempts:
            time.sleep(backoff_s * attempt)
    raise DeployError(f"smoke test: {url} did not answer after {attempts} attempts ({last})")


# ---------------------------------------------------------------------------------------- deploy


@dataclass
class DeployResult:
    name: str
    namespace: str
    url: str
    openai_base_url: str
    model_uri: str
    storage_uri: str
    applied: list[str]
    answer: str | None


def deploy(
    model: str,
    *,
    settings: ServeConfig | Mapping[str, Any] | None = None,
    api_client: Any | None = None,
    tracking_uri: str | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 5.0,
    smoke: bool = True,
    endpoint_url: str | None = None,
    token: str | None = None,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> DeployResult:
    """Render, apply (create or replace), wait until Ready, smoke-test one chat completion.

    ``endpoint_url`` replaces the InferenceService's ``status.url`` for the smoke test (e.g. its
    ``status.address.url`` from inside the cluster, or a port-forward); ``token`` is the bearer token
    when auth is on. Raises DeployError naming the step that failed."""
    s = _settings(settings, overrides)
    token = token or (os.environ.get(s.smoke_token_env) if s.smoke_token_env else None)
    if smoke and s.auth.mode == "jwt" and not token:
        raise DeployError(
            f"auth.mode jwt: the smoke test needs a bearer token (set ${s.smoke_token_env or 'smoke_token_env'}, "
            "e.g. from a Secret) or turn the smoke test off"
        )
    docs = render(model, settings=s, tracking_uri=tracking_uri)
    isvc = docs[0]
    storage = isvc["spec"]["predictor"]["model"]["storageUri"]
    if not storage.startswith(SERVABLE_SCHEMES):
        raise DeployError(f"KServe cannot read {storage}: give an s3://, gs://, pvc://, hf:// or https:// URI")
    applied = apply_manifests(docs, api_client)
    for line in applied:
        if log:
            log(line)
    obj = wait_ready(s.name, s.target_namespace, api_client=api_client, timeout_s=timeout_s, poll_s=poll_s, log=log)
    url = endpoint_url or smoke_url(obj, s.smoke_via)
    base = openai_base_url(url, s.openai_prefix)
    answer = smoke_test(base, s.model_name, token=token) if smoke else None
    return DeployResult(
        name=s.name,
        namespace=s.target_namespace,
        url=obj["status"]["url"],
        openai_base_url=base,
        model_uri=isvc["metadata"]["annotations"]["kubedistill.io/model-uri"],
        storage_uri=storage,
        applied=applied,
        answer=answer,
    )


def in_cluster(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs in a pod of a Kubernetes cluster (the API server's address is set)."""
    return bool((os.environ if environ is None else environ).get("KUBERNETES_SERVICE_HOST"))


def pod_namespace() -> str | None:
    """The namespace of this pod (its service account's), or ``$KUBEDISTILL_NAMESPACE``, or None."""
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    return os.environ.get("KUBEDISTILL_NAMESPACE") or None


def smoke_url(obj: Mapping[str, Any], via: str = "auto", environ: Mapping[str, str] | None = None) -> str:
    """The URL of a Ready InferenceService the smoke test calls: ``status.address.url`` (the cluster-internal
    one) for ``internal``, and for ``auto`` inside a cluster; ``status.url`` (through the ingress) otherwise."""
    status = obj.get("status") or {}
    internal = (status.get("address") or {}).get("url")
    if via == "internal" or (via == "auto" and in_cluster(environ)):
        if not internal:
            raise DeployError("the InferenceService reports no status.address.url (its cluster-internal URL)")
        return internal
    return status["url"]


def deploy_uri(settings: ServeConfig, *, model_uri: str) -> str:
    """Stage `deploy`: serve ``model_uri`` with KServe (:func:`deploy`: render, apply, wait until Ready,
    smoke-test one chat completion); returns the OpenAI base URL. A namespace left unset is the pipeline's
    own (the pod's: :attr:`ServeConfig.target_namespace`), where manifests/pipeline-namespace gives the
    student's service account and the deploy step's RBAC. Raises :class:`DeployError` (exit 3) naming the
    step that failed."""
    return deploy(model_uri, settings=settings, log=print).openai_base_url
