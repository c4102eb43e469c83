"""Cluster settings for the compiled pipelines: resources, GPUs, node placement, storage, secrets.

A :class:`ClusterConfig` (YAML, unknown keys are errors; see ``examples/cluster.yaml``) is fixed at
COMPILE time: the pod settings travel in the compiled YAML's Kubernetes platform spec, so one file
describes a cluster (kfp-kubernetes 2.17 would also take a Secret's or a PVC's name as a pipeline
parameter, and any GPU count; the config keeps them fixed so that a run cannot point a task elsewhere).
Each task of a pipeline has a *role*:

``cpu``            collect, verify, select, pairs, register, report, deploy: plain CPU pods
``teacher_bound``  generate, judge, rewrite, score: CPU pods that wait on teachers (teacher API keys)
``train``          sft, dpo, reward models, grpo: GPU pods (DeepSpeed; shared memory for NCCL)
``serve``          evaluate: a GPU pod that serves the student with vLLM

and :func:`apply` gives a task its role's settings with kfp-kubernetes. Pipelines are built when their
module is imported (``@dsl.pipeline`` runs the function then), so compiling with cluster settings
rebuilds the pipeline under the config::

    cfg = load_cluster_config("examples/cluster.yaml")
    compiler.Compiler().compile(build_pipeline(slow_thinking, cfg), "dist/slow_thinking.yaml")
    check_no_secret_values("dist/slow_thinking.yaml")

The config also holds what every task must reach and where large files live, validated when the config
is loaded (so a compile for the cluster fails in one line, before anything runs): ``tracking.uri`` (the
MLflow server; a SQLite file, a local path or a localhost URL is refused: it would live and die inside
each pod), ``object_store`` (the S3 endpoint, bucket and Secret name MLflow's artifacts go to) and
``storage`` (the PVC where model weights and large datasets are passed between tasks by path,
kubedistill_kfp/storage.py). ``kfp_version`` names the oldest KFP server the pipeline must run on
(kubedistill_kfp/versions.py): settings that server cannot read are dropped when that is safe (the pod
security context: the images run as uid 1000 anyway) and refused otherwise.

Without a current config :func:`apply` does nothing, so ``kubedistill run --local`` and a plain
``kubedistill compile`` are unchanged. Under ``kfp.local`` the settings would be meaningless (and
the environment variables pointing at the PVC harmful), so :func:`apply` warns and ignores them.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from kubedistill.core.config import ConfigError, StrictModel, load_config
from kubedistill.core.secrets import has_url_credentials, is_secret_name, secret_values
from kubedistill.stages import ROLES, Role, component_roles
from kubedistill_kfp.versions import DEFAULT_KFP_VERSION, SINCE, KfpVersion, at_least

# Environment variables the config sets itself (from tracking, object_store, storage): not in `env:`.
MANAGED_ENV = {
    "KUBEDISTILL_TRAINJOB": "roles.train.nodes",
    "MLFLOW_TRACKING_URI": "tracking.uri",
    "MLFLOW_S3_ENDPOINT_URL": "object_store.endpoint",
    "AWS_ENDPOINT_URL_S3": "object_store.endpoint",
    "KUBEDISTILL_STORAGE": "storage",
    "KUBEDISTILL_INLINE_LIMIT": "storage.inline_limit_mib",
    "KUBEDISTILL_REQUEST_CACHE": "storage.request_cache_dir",
    "KUBEDISTILL_ON_CLUSTER": "(always set)",
}
_POD_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "[::1]"}

# Which role each component runs as (component names as KFP writes them: collect_op -> "collect-op"),
# from the stage table; each pipeline's preflight (components/__init__.py: not a row) is a CPU task.
DEFAULT_ROLES: dict[str, Role] = {**component_roles(), "preflight-op": "cpu"}

_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")  # what KFP's set_cpu_request/limit accept
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")  # what set_memory_request/limit accept
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class ClusterConfigError(ConfigError):
    """A cluster config cannot be used (the message names the key)."""


class ClusterSettingsIgnored(UserWarning):
    """Cluster settings were given to a task that runs under kfp.local, where they have no meaning."""


class DroppedForServer(UserWarning):
    """A setting was left out of the compiled pipeline because the target KFP server cannot read it."""


# --------------------------------------------------------------------------------------------- model


def _quantity(kind: str, pattern: re.Pattern[str], v: str | int | float | None) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    if not pattern.match(s):
        example = "'500m' or '4'" if kind == "cpu" else "'16Gi' or '512Mi'"
        raise ValueError(f"not a Kubernetes {kind} quantity KFP accepts (e.g. {example})")
    return s


class Toleration(StrictModel):
    """A Kubernetes toleration (e.g. for tainted GPU nodes)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0, description="only with effect NoExecute")

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.operator == "Equal" and not self.key:
            raise ValueError("a toleration with operator Equal needs a key")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("toleration_seconds applies only to effect NoExecute")
        return self


class RoleConfig(StrictModel):
    """Pod settings for every task of one role."""

    cpu_request: str | None = Field(default=None, description="e.g. '2' or '500m'")
    cpu_limit: str | None = None
    memory_request: str | None = Field(default=None, description="e.g. '8Gi'")
    memory_limit: str | None = None
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs per pod (one node's worth at most)")
    nodes: int = Field(
        default=1,
        ge=1,
        le=512,
        description="train role: above 1, each train stage runs as a Kubeflow Trainer TrainJob of `nodes` x `gpus` "
        "(torchrun on every node, the storage PVC mounted) and its KFP task is a small pod that launches and awaits "
        "it (kubedistill/launch.py); 1: the stage trains in its KFP pod",
    )
    trainjob_runtime: str = Field(
        default="torch-distributed", description="the (Cluster)TrainingRuntime a multi-node train stage runs on"
    )
    accelerator: str = Field(default="nvidia.com/gpu", description="the GPU resource name (or KFP accelerator type)")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    shm_size: str | None = Field(
        default=None, description="shared memory for NCCL / vLLM: an emptyDir (medium Memory) at /dev/shm of this size"
    )
    env: dict[str, str] = Field(default_factory=dict, description="plain environment variables (never secrets)")
    timeout_s: int | None = Field(default=None, ge=1, description="the pod's active deadline")
    caching: bool | None = Field(default=None, description="false: never reuse a cached result for this role")
    labels: dict[str, str] = Field(default_factory=dict, description="pod labels")
    annotations: dict[str, str] = Field(default_factory=dict, description="pod annotations")

    @field_validator("cpu_request", "cpu_limit", mode="before")
    @classmethod
    def _cpu(cls, v: str | int | float | None) -> str | None:
        return _quantity("cpu", _CPU, v)

    @field_validator("memory_request", "memory_limit", "shm_size", mode="before")
    @classmethod
    def _memory(cls, v: str | int | None) -> str | None:
        return _quantity("memory", _MEMORY, v)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_plain_env(v)


def _check_plain_env(env: Mapping[str, str]) -> dict[str, str]:
    for k, val in env.items():
        if not _ENV_NAME.match(k):
            raise ValueError(f"{k!r} is not an environment variable name")
        if k in MANAGED_ENV:
            raise ValueError(f"{k} is set from {MANAGED_ENV[k]}: set it there, not in env")
        if is_secret_name(k):
            raise ValueError(f"{k} looks like a credential: give it through `secrets:` (a Kubernetes Secret)")
        if has_url_credentials(str(val)):
            raise ValueError(f"{k} holds a URL with credentials: give it through `secrets:` (a Kubernetes Secret)")
    return {k: str(v) for k, v in env.items()}


class RolesConfig(StrictModel):
    cpu: RoleConfig = Field(default_factory=lambda: RoleConfig(cpu_request="1", memory_request="2Gi"))
    teacher_bound: RoleConfig = Field(default_factory=lambda: RoleConfig(cpu_request="2", memory_request="4Gi"))
    train: RoleConfig = Field(
        default_factory=lambda: RoleConfig(cpu_request="8", memory_request="64Gi", gpus=1, shm_size="16Gi")
    )
    serve: RoleConfig = Field(
        default_factory=lambda: RoleConfig(cpu_request="4", memory_request="32Gi", gpus=1, shm_size="8Gi")
    )


class SecretEnvConfig(StrictModel):
    """Keys of one Kubernetes Secret exposed as environment variables (by name: no value is ever here)."""

    name: str = Field(description="the Secret's name")
    keys: dict[str, str] = Field(description="secret key -> environment variable")
    roles: list[Role] = Field(default_factory=lambda: list(ROLES), description="the roles that get it")
    optional: bool = Field(default=False, description="start the pod even when the Secret or a key is missing")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS1123.match(v) or len(v) > 253:
            raise ValueError(f"{v!r} is not a Kubernetes Secret name (lower-case DNS-1123)")
        return v

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("give at least one `secret key: ENV_VAR`")
        for key, env in v.items():
            if not _SECRET_KEY.match(key):
                raise ValueError(f"{key!r} is not a Secret key")
            if not _ENV_NAME.match(env):
                raise ValueError(f"{env!r} is not an environment variable name")
        return v


class StorageConfig(StrictModel):
    """The PersistentVolumeClaim every task mounts: model weights and large datasets passed between tasks by
    path (content-addressed, kubedistill_kfp/storage.py), the Hugging Face cache, request caches."""

    pvc: str = Field(default="kubedistill-data", description="the claim's name (created by manifests/ or pvc_manifest)")
    mount_path: str = "/mnt/kubedistill"
    size: str = Field(default="500Gi", description="for pvc_manifest()")
    storage_class: str | None = Field(
        default=None, description="for pvc_manifest(); None: the cluster's default class (kubeflow/pipelines#11396)"
    )
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod", "ReadOnlyMany"]] = Field(
        default_factory=lambda: ["ReadWriteMany"], description="ReadWriteMany lets tasks on different nodes share it"
    )
    hf_home: str = Field(default="hf", description="HF_HOME, relative to mount_path")
    cache_dir: str = Field(default="cache", description="KUBEDISTILL_CACHE (built models), relative to mount_path")
    artifacts_dir: str = Field(
        default="artifacts",
        description="KUBEDISTILL_STORAGE, relative to mount_path: model weights and outputs over inline_limit_mib",
    )
    inline_limit_mib: int = Field(
        default=256,
        ge=0,
        description="outputs up to this size (MiB) go through KFP's artifact store; larger ones, and every model, "
        "to artifacts_dir (0: everything but metrics and reports)",
    )
    request_cache_dir: str = Field(
        default="request-cache",
        description="KUBEDISTILL_REQUEST_CACHE (every teacher-bound stage's answers, one directory per stage and "
        "shard), relative to mount_path: a re-run or a retried pod never pays twice for an answer",
    )

    @field_validator("pvc")
    @classmethod
    def _pvc(cls, v: str) -> str:
        if not _DNS1123.match(v):
            raise ValueError(f"{v!r} is not a PVC name (lower-case DNS-1123)")
        return v

    @field_validator("mount_path")
    @classmethod
    def _mount(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") in ("", "/dev/shm"):
            raise ValueError("mount_path must be an absolute path (and not / or /dev/shm)")
        return v.rstrip("/")

    @field_validator("hf_home", "cache_dir", "artifacts_dir")
    @classmethod
    def _relative(cls, v: str) -> str:
        v = v.strip("/")
        if not v or ".." in v.split("/"):
            raise ValueError("give a folder relative to mount_path")
        return v

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        return _quantity("memory", _MEMORY, v) or v

    def env(self) -> dict[str, str]:
        """The variables that point the tasks into the volume."""
        return {
            "HF_HOME": f"{self.mount_path}/{self.hf_home}",
            "KUBEDISTILL_CACHE": f"{self.mount_path}/{self.cache_dir}",
            "KUBEDISTILL_STORAGE": f"{self.mount_path}/{self.artifacts_dir}",
            "KUBEDISTILL_INLINE_LIMIT": str(self.inline_limit_mib * 1024 * 1024),
            "KUBEDISTILL_REQUEST_CACHE": f"{self.mount_path}/{self.request_cache_dir.strip('/')}",
        }


class SecurityContextConfig(StrictModel):
    run_as_user: int | None = 1000
    run_as_group: int | None = 1000
    run_as_non_root: bool | None = True


def check_tracking_uri(uri: str) -> str:
    """``uri`` if every pod of a run can reach the same MLflow store through it; ``ValueError`` (one line)
    for a store that would live inside each pod — a SQLite or file store, a path, a localhost URL — or for
    a URI carrying credentials (those come from a Secret: MLFLOW_TRACKING_USERNAME / _PASSWORD)."""
    uri = uri.strip()
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if has_url_credentials(uri):
        raise ValueError("holds credentials: give them through a Secret (MLFLOW_TRACKING_USERNAME/_PASSWORD)")
    if scheme in ("", "file", "sqlite") or scheme.startswith("sqlite+") or len(scheme) == 1:  # C:\ paths too
        raise ValueError(
            f"{uri!r} is pod-local: each task would write its own store, which vanishes with its pod; "
            "give the MLflow server's URL (e.g. http://kubedistill-mlflow.kubedistill.svc.cluster.local:5000)"
        )
    host = (parts.hostname or "").lower()
    if host in _POD_LOCAL_HOSTS or host.startswith("127."):
        raise ValueError(f"{uri!r} points at the pod itself: give an address every pod can reach (a Service)")
    if scheme in ("http", "https") and not host:
        raise ValueError(f"{uri!r} has no host")
    return uri


class TrackingServerConfig(StrictModel):
    """The MLflow tracking server every task logs to (MLFLOW_TRACKING_URI in every pod)."""

    uri: str = Field(description="e.g. http://kubedistill-mlflow.kubedistill.svc.cluster.local:5000")

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        return check_tracking_uri(v)


class ObjectStoreConfig(StrictModel):
    """The S3-compatible store MLflow's artifacts (registered students) go to, read by the tasks and by
    KServe's storage initializer. Not KFP's own artifact store (SeaweedFS, 20 GiB upstream) unless you
    sized it for model weights."""

    endpoint: str = Field(description="http(s)://host[:port] of the S3 API (omit for AWS S3 itself)")
    bucket: str = Field(default="mlflow", description="the bucket of MLflow's artifact root (s3://<bucket>/)")
    secret: str = Field(
        default="kubedistill-s3", description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, in every pod"
    )
    region: str | None = Field(default=None, description="AWS_DEFAULT_REGION")
    ignore_tls: bool = Field(default=False, description="MLFLOW_S3_IGNORE_TLS: skip certificate checks")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http(s):// endpoint")
        if has_url_credentials(v):
            raise ValueError("holds credentials: they come from the Secret named in object_store.secret")
        if (parts.hostname or "").lower() in _POD_LOCAL_HOSTS:
            raise ValueError(f"{v!r} points at the pod itself")
        return v.strip().rstrip("/")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", v):
            raise ValueError(f"{v!r} is not an S3 bucket name")
        return v

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        if not _DNS1123.match(v) or len(v) > 253:
            raise ValueError(f"{v!r} is not a Kubernetes Secret name (lower-case DNS-1123)")
        return v

    def env(self) -> dict[str, str]:
        env = {"MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL_S3": self.endpoint}
        if self.region:
            env["AWS_DEFAULT_REGION"] = self.region
        if self.ignore_tls:
            env["MLFLOW_S3_IGNORE_TLS"] = "true"
        return env

    def secret_env(self) -> SecretEnvConfig:
        return SecretEnvConfig(
            name=self.secret,
            keys={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
        )


class ClusterConfig(StrictModel):
    """Everything about the pods of a compiled pipeline; see examples/cluster.yaml."""

    kfp_version: KfpVersion = Field(
        default=DEFAULT_KFP_VERSION,
        description="the oldest KFP server the pipelines must run on: 2.14, 2.15, 2.16 or 2.17 (docs/cluster.md)",
    )
    tracking: TrackingServerConfig = Field(description="the MLflow tracking server (required on a cluster)")
    object_store: ObjectStoreConfig | None = Field(default=None, description="S3 for MLflow's artifacts")
    roles: RolesConfig = Field(default_factory=RolesConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    secrets: list[SecretEnvConfig] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="plain environment variables for every task")
    caching: bool = Field(
        default=True,
        description="false: caching off for every task; true: each task keeps the pipeline's own choice",
    )
    image_pull_secrets: list[str] = Field(default_factory=list)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    security_context: SecurityContextConfig | None = Field(default_factory=SecurityContextConfig)
    pod_labels: dict[str, str] = Field(default_factory=dict, description="labels on every pod")
    pod_annotations: dict[str, str] = Field(default_factory=dict, description="annotations on every pod")
    component_roles: dict[str, Role] = Field(
        default_factory=dict, description="component name -> role, beside DEFAULT_ROLES (for apply_all)"
    )

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_plain_env(v)

    @model_validator(mode="after")
    def _no_env_clash(self) -> ClusterConfig:
        secret_envs: dict[str, str] = {}
        for s in self.all_secrets():
            for env in s.keys.values():
                if env in secret_envs and secret_envs[env] != s.name:
                    raise ValueError(f"secrets: {env} comes from both {secret_envs[env]} and {s.name}")
                secret_envs[env] = s.name
        plain = set(self.env) | {k for r in ROLES for k in self.role(r).env} | set(self.managed_env())
        clash = sorted(plain & set(secret_envs))
        if clash:
            raise ValueError(f"{', '.join(clash)} set both as a plain variable and from a secret")
        return self

    @model_validator(mode="after")
    def _nodes_for_training(self) -> ClusterConfig:
        for r in ROLES:
            if r != "train" and self.role(r).nodes > 1:
                raise ValueError(f"roles.{r}.nodes: only train stages run on several nodes (as TrainJobs)")
        if self.roles.train.nodes > 1 and not self.roles.train.gpus:
            raise ValueError("roles.train.nodes: a TrainJob of several nodes needs roles.train.gpus (per node)")
        return self

    @model_validator(mode="after")
    def _readable_by_the_server(self) -> ClusterConfig:
        since = SINCE["secretAsEnv.optional"]
        optional = [s.name for s in self.secrets if s.optional]
        if optional and not at_least(self.kfp_version, since):
            raise ValueError(
                f"secrets {', '.join(optional)}: `optional` needs KFP >= {since} (kfp_version {self.kfp_version}); "
                "create the Secret (it may hold empty values) and drop `optional`, or raise kfp_version"
            )
        return self

    def role(self, role: str) -> RoleConfig:
        if role not in ROLES:
            raise ClusterConfigError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        return getattr(self.roles, role)

    def managed_env(self) -> dict[str, str]:
        """The variables every task gets from ``tracking``, ``object_store`` and ``storage``."""
        env = {"MLFLOW_TRACKING_URI": self.tracking.uri, "KUBEDISTILL_ON_CLUSTER": "1"}
        if self.object_store is not None:
            env.update(self.object_store.env())
        env.update(self.storage.env())
        return env

    def env_for(self, role: str) -> dict[str, str]:
        """The plain environment variables a task of ``role`` gets (tracking, object store, storage paths,
        global, role)."""
        env = self.managed_env()
        env.update(self.env)
        env.update(self.role(role).env)
        r = self.role(role)
        if r.nodes > 1:  # this pod launches a TrainJob: the GPUs are the job's nodes'
            env["KUBEDISTILL_TRAINJOB"] = self.trainjob(role).model_dump_json(exclude_none=True)
        elif r.gpus:
            env["KUBEDISTILL_GPUS"] = str(r.gpus)
        return env

    def trainjob(self, role: str = "train") -> Any:
        """The TrainJob a train stage of ``role`` runs as (:class:`kubedistill.launch.TrainJobConfig`): ``nodes``
        x ``gpus`` on the train image, the storage PVC mounted where the tasks mount it."""
        from kubedistill.launch import TrainJobConfig
        from kubedistill_kfp.components.images import image_for

        r = self.role(role)
        return TrainJobConfig(
            num_nodes=r.nodes,
            gpus_per_node=r.gpus,
            image=image_for(role),
            runtime=r.trainjob_runtime,
            storage_claim=self.storage.pvc,
            storage_mount=self.storage.mount_path,
            cpu=r.cpu_request,
            memory=r.memory_request,
            env={k: v for k, v in {**self.managed_env(), **self.env, **r.env}.items() if k != "KUBEDISTILL_ON_CLUSTER"}
            | {"KUBEDISTILL_ON_CLUSTER": "1"},
            node_selector=dict(r.node_selector),
            tolerations=[t.model_dump(exclude_none=True) for t in r.tolerations],
            secret_env=[
                {"name": env, "secret": sec.name, "key": key, "optional": sec.optional}
                for sec in self.all_secrets()
                if role in sec.roles
                for key, env in sec.keys.items()
            ],
        )

    def all_secrets(self) -> list[SecretEnvConfig]:
        """``secrets`` plus the object store's Secret (when it is not listed already)."""
        found = list(self.secrets)
        if self.object_store is not None and self.object_store.secret not in {s.name for s in found}:
            found.append(self.object_store.secret_env())
        return found

    def secret_names(self) -> list[str]:
        return [s.name for s in self.all_secrets()]


def load_cluster_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> ClusterConfig:
    """Load and validate a cluster config YAML (unknown keys and bad values are one-line errors)."""
    try:
        return load_config(path, ClusterConfig, overrides)
    except ClusterConfigError:
        raise
    except ConfigError as e:
        raise ClusterConfigError(str(e)) from None


# ------------------------------------------------------------------------------ the current config

_CURRENT: contextvars.ContextVar[ClusterConfig | None] = contextvars.ContextVar("kubedistill_cluster", default=None)
# True while build_pipeline() builds for the cluster: then apply() applies even in a process where
# kfp.local was initialised earlier (kfp.local's config is a process-wide singleton that is never reset).
_FOR_CLUSTER: contextvars.ContextVar[bool] = contextvars.ContextVar("kubedistill_for_cluster", default=False)


def current() -> ClusterConfig | None:
    """The config :func:`apply` uses when none is passed (set by :func:`use_cluster_config`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use_cluster_config(cfg: ClusterConfig | None) -> Iterator[ClusterConfig | None]:
    """Make ``cfg`` current for :func:`apply` while pipelines are built (None: no cluster settings)."""
    token = _CURRENT.set(cfg)
    try:
        yield cfg
    finally:
        _CURRENT.reset(token)


def _kfp_local_active() -> bool:
    try:
        from kfp.local import config as local_config
    except ImportError:  # pragma: no cover - kfp is a dependency
        return False
    return getattr(local_config.LocalExecutionConfig, "instance", None) is not None


def build_pipeline(pipeline: Any, cfg: ClusterConfig | None) -> Any:
    """Rebuild a ``@dsl.pipeline`` with the settings of ``cfg``.

    ``@dsl.pipeline`` runs the pipeline function when the module is imported, before any config is
    current; this runs it again inside :func:`use_cluster_config`, then applies every task that did not
    get settings from an explicit :func:`apply` call by its component's role (:func:`apply_all`). So a
    pipeline needs no cluster code at all unless a task deviates from its component's role. Returns a
    new pipeline object with the same name, description and signature, ready for
    ``kfp.compiler.Compiler().compile``. Nested pipelines keep what they were built with on import."""
    import functools

    from kfp.dsl import component_factory

    func = getattr(pipeline, "pipeline_func", None)
    if func is None:
        raise TypeError(f"{pipeline!r} is not a @dsl.pipeline")
    spec = pipeline.component_spec
    info = spec.implementation.graph.pipeline_info

    @functools.wraps(func)
    def with_settings(*args: Any, **kwargs: Any) -> Any:
        outputs = func(*args, **kwargs)
        apply_all(cfg=cfg)
        return outputs

    token = _FOR_CLUSTER.set(True)
    try:
        with use_cluster_config(cfg):
            return component_factory.create_graph_component_from_func(
                with_settings,
                name=spec.name,
                description=spec.description,
                display_name=info.display_name or None,
                pipeline_config=getattr(pipeline, "pipeline_config", None),
            )
    finally:
        _FOR_CLUSTER.reset(token)


# ------------------------------------------------------------------------------------------ apply


def apply(task: Any, role: Role | str, cfg: ClusterConfig | None = None) -> Any:
    """Give one pipeline task the settings of ``role`` (from ``cfg`` or the current config).

    A no-op without a config. In a process running ``kfp.local`` it warns and leaves the task as it is
    (except inside :func:`build_pipeline`, which builds for the cluster). Returns the task, so it
    chains: ``apply(sft_op(...), "train")``."""
    if role not in ROLES:
        raise ClusterConfigError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    cfg = cfg if cfg is not None else current()
    if cfg is None:
        return task
    s = cfg.role(role)
    if getattr(task, "_kubedistill_role", None) is not None:
        raise ClusterConfigError(f"task {task.name!r} already has cluster settings (role {task._kubedistill_role})")
    if _kfp_local_active() and not _FOR_CLUSTER.get():
        warnings.warn(
            f"task {task.name!r}: cluster settings (role {role}) are ignored under kfp.local",
            ClusterSettingsIgnored,
            stacklevel=2,
        )
        return task
    from kfp import kubernetes as k8s

    if s.cpu_request:
        task.set_cpu_request(s.cpu_request)
    if s.cpu_limit:
        task.set_cpu_limit(s.cpu_limit)
    if s.memory_request:
        task.set_memory_request(s.memory_request)
    if s.memory_limit:
        task.set_memory_limit(s.memory_limit)
    if s.gpus and s.nodes == 1:  # with nodes > 1 the GPUs are the TrainJob's, not this launcher pod's
        task.set_accelerator_type(s.accelerator)
        task.set_accelerator_limit(s.gpus)
    for key, value in s.node_selector.items():
        k8s.add_node_selector(task, label_key=key, label_value=value)
    for t in s.tolerations:
        k8s.add_toleration(
            task,
            key=t.key,
            operator=t.operator,
            value=t.value,
            effect=t.effect,
            toleration_seconds=t.toleration_seconds,
        )
    k8s.mount_pvc(task, pvc_name=cfg.storage.pvc, mount_path=cfg.storage.mount_path)
    if s.shm_size:
        k8s.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=s.shm_size)
    for secret in cfg.all_secrets():
        if role in secret.roles:
            k8s.use_secret_as_env(
                task, secret_name=secret.name, secret_key_to_env=dict(secret.keys), optional=secret.optional
            )
    if not at_least(cfg.kfp_version, SINCE["secretAsEnv.optional"]):
        # kfp-kubernetes writes `optional: false` too; a 2.14 server refuses the field (true is refused earlier)
        for item in task.platform_config.get("kubernetes", {}).get("secretAsEnv", []):
            item.pop("optional", None)
    for name, value in cfg.env_for(role).items():
        task.set_env_variable(name, value)
    # The run's id from the pod's label, not a task input: a task's inputs hold no per-run value, so KFP's
    # cache can answer the same task in the next run (the run report tags its MLflow run with it).
    k8s.use_field_path_as_env(task, env_name="KFP_RUN_ID", field_path="metadata.labels['pipeline/runid']")
    if not cfg.caching or s.caching is False:
        task.set_caching_options(False)
    if s.timeout_s:
        k8s.set_timeout(task, s.timeout_s)
    for key, value in {**cfg.pod_labels, **s.labels, "kubedistill.io/role": role.replace("_", "-")}.items():
        k8s.add_pod_label(task, key, value)
    for key, value in {**cfg.pod_annotations, **s.annotations}.items():
        k8s.add_pod_annotation(task, key, value)
    if cfg.image_pull_secrets:
        k8s.set_image_pull_secrets(task, list(cfg.image_pull_secrets))
    if cfg.image_pull_policy:
        k8s.set_image_pull_policy(task, cfg.image_pull_policy)
    sc = cfg.security_context
    if sc is not None and (sc.run_as_user is not None or sc.run_as_group is not None or sc.run_as_non_root):
        if at_least(cfg.kfp_version, SINCE["securityContext"]):
            k8s.set_security_context(
                task, run_as_user=sc.run_as_user, run_as_group=sc.run_as_group, run_as_non_root=sc.run_as_non_root
            )
        else:  # KFP <= 2.15 refuses the field; the kubedistill images run as uid 1000 by themselves
            warnings.warn(
                f"security_context left out: KFP {cfg.kfp_version} cannot read it (needs "
                f"{SINCE['securityContext']}); the pods run as the images' user (uid 1000)",
                DroppedForServer,
                stacklevel=2,
            )
    task._kubedistill_role = role
    return task


def role_of(component_name: str, cfg: ClusterConfig | None = None, roles: Mapping[str, str] | None = None) -> str:
    """The role of a component (``collect-op`` or ``collect_op``): ``roles``, then the config's
    ``component_roles``, then :data:`DEFAULT_ROLES`."""
    mapping: dict[str, str] = dict(DEFAULT_ROLES)
    if cfg is not None:
        mapping.update({k.replace("_", "-"): v for k, v in cfg.component_roles.items()})
    mapping.update({k.replace("_", "-"): v for k, v in (roles or {}).items()})
    name = component_name.replace("_", "-")
    if name not in mapping:
        raise ClusterConfigError(
            f"component {component_name!r} has no role: add it to DEFAULT_ROLES or to the config's component_roles"
        )
    return mapping[name]


def apply_all(roles: Mapping[str, str] | None = None, cfg: ClusterConfig | None = None) -> None:
    """Apply every task of the pipeline being built that has no settings yet, each by its component's
    role (:func:`role_of`). Call it as the last line of a ``@dsl.pipeline`` function. A no-op without
    a config; a component with no known role is an error (no task silently misses its settings)."""
    cfg = cfg if cfg is not None else current()
    if cfg is None:
        return
    from kfp.dsl import pipeline_context

    pipeline = pipeline_context.Pipeline.get_default_pipeline()
    if pipeline is None:
        raise RuntimeError("apply_all() must be called inside a @dsl.pipeline function")
    for task in list(pipeline.tasks.values()):
        if getattr(task, "_kubedistill_role", None) is not None:
            continue
        spec = task.component_spec
        if spec.implementation.graph is not None:  # a nested pipeline: its tasks were built on import
            continue
        apply(task, role_of(spec.name, cfg, roles), cfg)


# --------------------------------------------------------------------------- compiled-output checks


def check_no_secret_values(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None, extra: Sequence[str] = ()
) -> None:
    """Raise if a compiled pipeline file holds the value of any credential-like environment variable (or
    any of ``extra``). Secret *names* and *keys* are fine; their values never belong in a compiled YAML."""
    text = Path(path).read_text(encoding="utf-8")
    leaked = [v for v in (secret_values(environ) | {e for e in extra if e}) if v in text]
    if leaked:
        raise ClusterConfigError(f"{path}: holds the value of {len(leaked)} secret(s); pass secrets by name only")


def pvc_manifest(cfg: ClusterConfig, namespace: str | None = None) -> dict[str, Any]:
    """The PersistentVolumeClaim of ``cfg.storage`` (its storage class, size and access modes), for
    ``kubectl apply -f -``. With no storage_class the cluster's default class is used."""
    st = cfg.storage
    meta: dict[str, Any] = {"name": st.pvc, "labels": {"app.kubernetes.io/part-of": "kubedistill"}}
    if namespace:
        meta["namespace"] = namespace
    spec: dict[str, Any] = {"accessModes": list(st.access_modes), "resources": {"requests": {"storage": st.size}}}
    if st.storage_class is not None:
        spec["storageClassName"] = st.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def storage_init_job(cfg: ClusterConfig, namespace: str | None = None) -> dict[str, Any]:
    """A Job that makes the storage PVC writable for the pods' user: it creates the folders the tasks use
    and hands them to ``security_context``'s uid and gid (kfp-kubernetes has no ``fsGroup``, and many RWX
    volumes — NFS — ignore it anyway). It runs as root, once; the tasks never do. The same Job ships in
    manifests/pipeline-namespace/storage-init-job.yaml (a test keeps the two equal)."""
    st = cfg.storage
    sc = cfg.security_context or SecurityContextConfig()
    uid, gid = sc.run_as_user or 1000, sc.run_as_group or 1000
    folders = " ".join(f"/data/{d}" for d in (st.artifacts_dir, st.hf_home, st.cache_dir, st.request_cache_dir))
    meta: dict[str, Any] = {
        "name": f"{st.pvc}-init",
        "labels": {"app.kubernetes.io/part-of": "kubedistill"},
        "annotations": {
            "checkov.io/skip1": "CKV_K8S_40=chown of the volume needs root: this Job runs once, before any task",
            "checkov.io/skip2": "CKV_K8S_23=chown of the volume needs root: this Job runs once, before any task",
            "checkov.io/skip3": "CKV_K8S_43=a pinned busybox tag; pin a digest in your overlay (images/digest)",
            "checkov.io/skip4": "CKV_K8S_25=chown needs CAP_CHOWN and CAP_FOWNER, the only capabilities it keeps",
        },
    }
    if namespace:
        meta["namespace"] = namespace
    script = f"mkdir -p {folders} && chown {uid}:{gid} /data {folders} && chmod 2775 /data {folders}"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsUser": 0, "runAsGroup": 0, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "init",
                            "image": "busybox:1.37.0",
                            "imagePullPolicy": "Always",
                            "command": ["sh", "-c", script],
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "16Mi"},
                                "limits": {"cpu": "100m", "memory": "64Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]},
                            },
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": st.pvc}}],
                }
            },
        },
    }
