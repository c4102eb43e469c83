"""The version contract: which Kubeflow Pipelines servers, KServe and Kubeflow Trainer releases the compiled
pipelines and rendered manifests are for, and the check that a compiled pipeline holds nothing the target
KFP server cannot read.

A KFP server parses an uploaded pipeline spec, and (in its driver, when a task starts) each task's
Kubernetes settings, with protojson, which refuses any field it does not know. kfp / kfp-kubernetes 2.17
write fields that older servers lack — ``securityContext`` (KFP >= 2.16), ``optional`` on a secret's
environment variables (KFP >= 2.15), ``subPath`` on a PVC mount (KFP >= 2.16) — so a pipeline compiled for
a newer server fails on an older one, at upload or at its first task. :func:`check_compiled` walks a
compiled pipeline with kfp's own protobuf descriptors and compares every field with the fields the target
server version knows (``data/kfp_proto_fields.json``, read from the kubeflow/pipelines protos of each
release by ``tools/kfp_proto_fields.py``).

    problems = check_compiled("dist/slow_thinking.yaml", "2.15")   # [] when the server can read it all
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

# The KFP server releases a pipeline can be compiled for (ClusterConfig.kfp_version), oldest first.
KfpVersion = Literal["2.14", "2.15", "2.16", "2.17"]
KFP_VERSIONS: tuple[KfpVersion, ...] = ("2.14", "2.15", "2.16", "2.17")
DEFAULT_KFP_VERSION: KfpVersion = "2.16"

# The oldest releases the cluster path is built and tested for (docs/cluster.md, "Versions").
MIN_VERSIONS: dict[str, str] = {
    "Kubeflow Pipelines": "2.14",
    "KServe": "0.15",
    "Kubeflow Trainer": "2.0",
    "Istio": "1.22",
    "Kubernetes": "1.29",
    "NVIDIA driver": "580",
}

# Platform-spec settings an older server cannot read, and the first KFP release that reads them.
SINCE: dict[str, KfpVersion] = {"securityContext": "2.16", "secretAsEnv.optional": "2.15", "pvcMount.subPath": "2.16"}


def at_least(version: str, minimum: str) -> bool:
    """``version >= minimum`` for ``MAJOR.MINOR`` strings."""
    return tuple(int(x) for x in version.split(".")[:2]) >= tuple(int(x) for x in minimum.split(".")[:2])


@cache
def known_fields(version: str) -> dict[str, frozenset[str]]:
    """``{proto message full name: field names}`` the KFP server ``version`` parses (see the module doc)."""
    data = json.loads((Path(__file__).parent / "data" / "kfp_proto_fields.json").read_text())
    if version not in data["versions"]:
        raise ValueError(f"unknown KFP version {version!r} (known: {', '.join(data['versions'])})")
    return {k: frozenset(v) for k, v in data["versions"][version].items()}


@dataclass(frozen=True)
class UnknownField:
    """A field of a compiled pipeline that the target server does not know: ``where`` is its path in the
    YAML (``platforms.kubernetes.deploymentSpec.executors.exec-sft-op.securityContext``)."""

    where: str
    message: str
    field: str

    def __str__(self) -> str:
        return f"{self.where} ({self.message}.{self.field})"


def _walk(data: Any, descriptor: Any, where: str, fields: Mapping[str, frozenset[str]]) -> Iterator[UnknownField]:
    from google.protobuf.descriptor import FieldDescriptor

    if not isinstance(data, Mapping):
        return
    name = descriptor.full_name
    if name.startswith("google.protobuf."):  # Struct, Value, ...: free-form
        return
    known = fields.get(name)
    for key, value in data.items():
        fd = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        path = f"{where}.{key}" if where else key
        if fd is None:
            yield UnknownField(path, name, key)  # unknown even to the kfp installed here
            continue
        if known is None or fd.name not in known:
            yield UnknownField(path, name, fd.name)
            continue
        if fd.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        sub = fd.message_type
        if sub.GetOptions().map_entry:
            value_fd = sub.fields_by_name["value"]
            if value_fd.type == FieldDescriptor.TYPE_MESSAGE and isinstance(value, Mapping):
                for k, v in value.items():
                    yield from _walk(v, value_fd.message_type, f"{path}.{k}", fields)
        elif fd.label == FieldDescriptor.LABEL_REPEATED and isinstance(value, list):
            for i, item in enumerate(value):
                yield from _walk(item, sub, f"{path}[{i}]", fields)
        else:
            yield from _walk(value, sub, path, fields)


def unknown_fields(docs: list[dict[str, Any]], version: str) -> list[UnknownField]:
    """Every field of a compiled pipeline (its YAML documents: the pipeline spec, then the platform spec)
    that the KFP server ``version`` cannot read. The pipeline spec's ``deploymentSpec`` and each task's
    Kubernetes settings are free-form in their parent messages, so they are read as the messages the
    server parses them into (``PipelineDeploymentConfig``, ``KubernetesExecutorConfig``)."""
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2 as spec_pb2

    fields = known_fields(version)
    found: list[UnknownField] = []
    for doc in docs:
        if "pipelineInfo" in doc:
            spec = {k: v for k, v in doc.items() if k != "deploymentSpec"}
            found += _walk(spec, spec_pb2.PipelineSpec.DESCRIPTOR, "", fields)
            found += _walk(
                doc.get("deploymentSpec") or {}, spec_pb2.PipelineDeploymentConfig.DESCRIPTOR, "deploymentSpec", fields
            )
        elif "platforms" in doc:
            for platform, single in (doc.get("platforms") or {}).items():
                where = f"platforms.{platform}"
                rest = {k: v for k, v in single.items() if k != "deploymentSpec"}
                found += _walk(rest, spec_pb2.SinglePlatformSpec.DESCRIPTOR, where, fields)
                executors = ((single.get("deploymentSpec") or {}).get("executors")) or {}
                for name, cfg in executors.items():
                    found += _walk(
                        cfg,
                        k8s_pb2.KubernetesExecutorConfig.DESCRIPTOR,
                        f"{where}.deploymentSpec.executors.{name}",
                        fields,
                    )
    return found


def read_compiled(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The YAML documents of a compiled pipeline (the pipeline spec, then the platform spec if any)."""
    import yaml

    return [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]


def check_compiled(path: str | os.PathLike[str], version: str) -> list[UnknownField]:
    """The fields of the compiled pipeline at ``path`` that the KFP server ``version`` cannot read."""
    return unknown_fields(read_compiled(path), version)
