"""Validate a rendered custom resource (InferenceService, TrainJob, Istio policy) against the real CRD's
``openAPIV3Schema``, strictly: a field the CRD does not declare is an error, as ``kubectl apply
--validate=strict`` (server-side field validation) makes it, where the API server would otherwise prune it
silently.

The schemas are the CRDs of the projects' releases, kept as data: ``{"group", "version", "kind", "source",
"schema"}`` in a gzipped JSON file per kind and release (tests/data/crds, extracted from kserve/kserve,
kubeflow/trainer and istio/istio at the oldest supported and the latest release; see its README).

    schema = load_crd_schema("tests/data/crds/kserve-0.15-InferenceService.json.gz")
    errors = crd_errors(isvc, schema)      # ["spec.predictor.model.bogus: unknown field", ...]

OpenAPI's ``nullable``, ``x-kubernetes-int-or-string`` and ``x-kubernetes-preserve-unknown-fields`` are
honoured; CEL rules (``x-kubernetes-validations``) are not evaluated. ``metadata`` is checked as an
ObjectMeta a manifest may carry (name, namespace, labels, annotations).
"""

from __future__ import annotations

import copy
import gzip
import json
import os
from pathlib import Path
from typing import Any

_METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def load_crd_schema(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A kept CRD schema file (see the module docstring)."""
    raw = Path(path).read_bytes()
    return json.loads(gzip.decompress(raw) if str(path).endswith(".gz") else raw)


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of an ``openAPIV3Schema``: objects closed to undeclared fields (unless the CRD keeps
    unknown fields), int-or-string and nullable spelled out."""
    node = copy.deepcopy(schema)
    _close(node)
    return node


def _close(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _close(item)
        return
    if not isinstance(node, dict):
        return
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    node.pop("x-kubernetes-validations", None)
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    for value in node.values():
        _close(value)


def crd_errors(obj: dict[str, Any], crd: dict[str, Any]) -> list[str]:
    """Every way ``obj`` breaks the CRD (``crd``: a kept schema file's content): ``["path: message"]``."""
    import jsonschema

    errors = []
    want = f"{crd['group']}/{crd['version']}"
    if obj.get("apiVersion") != want or obj.get("kind") != crd["kind"]:
        errors.append(f"apiVersion/kind: {obj.get('apiVersion')}/{obj.get('kind')}, not {want}/{crd['kind']}")
    schema = strict(crd["schema"])
    props = schema.setdefault("properties", {})
    props["metadata"] = _METADATA
    props.setdefault("apiVersion", {"type": "string"})  # not every CRD (Istio's) declares these
    props.setdefault("kind", {"type": "string"})
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path) or "(top)"
        message = error.message
        if error.validator == "additionalProperties":
            message = f"unknown field(s): {message.split('(')[-1].rstrip(')')}"
        errors.append(f"{where}: {message}")
    return errors
