"""Regenerate kubedistill_kfp/data/kfp_proto_fields.json: the fields each Kubeflow Pipelines server version
knows, per protobuf message, read from the kubeflow/pipelines protos at that release's tag.

    python tools/kfp_proto_fields.py /path/to/kubeflow/pipelines 2.14.0 2.15.0 2.16.0 2.17.0

The server parses the pipeline spec (api/v2alpha1/pipeline_spec.proto) and, in its driver, each task's
Kubernetes settings (kubernetes_platform/proto/kubernetes_executor_config.proto) with protojson, which
refuses a field it does not know: a pipeline compiled by a newer SDK fails on an older server. The JSON
lists field names (proto names) only; kubedistill_kfp/versions.py checks a compiled pipeline against it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

PROTOS = {
    "kubernetes_platform/proto/kubernetes_executor_config.proto": "kfp_kubernetes",
    "api/v2alpha1/pipeline_spec.proto": "ml_pipelines",
}


def message_fields(text: str, package: str) -> dict[str, list[str]]:
    """``{full message name: [field names]}`` of one .proto file (nested messages and oneofs included)."""
    text = re.sub(r"/\*.*?\*/", "", re.sub(r"//[^\n]*", "", text), flags=re.S)
    out: dict[str, list[str]] = {}
    stack: list[tuple[str, str]] = []
    pending: tuple[str, str] | None = None
    for token in re.findall(r"\{|\}|;|[^{};]+", text):
        s = token.strip()
        if s == "{":
            stack.append(pending or ("block", ""))
            pending = None
        elif s == "}":
            stack.pop()
        elif s and s != ";":
            m = re.match(r"^(message|enum|oneof|service|extend)\s+(\w+)", s)
            if m:
                pending = (m.group(1), m.group(2))
                continue
            if stack and stack[-1][0] in ("message", "oneof"):
                m = re.match(r"^(?:repeated\s+|optional\s+)?(map\s*<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*\d+", s)
                if m:
                    name = ".".join([package, *(n for k, n in stack if k == "message")])
                    out.setdefault(name, []).append(m.group(2))
            pending = None
    return out


def main(repo: str, tags: list[str]) -> None:
    data: dict[str, dict[str, list[str]]] = {}
    for tag in tags:
        version = ".".join(tag.split(".")[:2])
        fields: dict[str, list[str]] = {}
        for path, package in PROTOS.items():
            text = subprocess.run(
                ["git", "-C", repo, "show", f"{tag}:{path}"], capture_output=True, text=True, check=True
            ).stdout
            fields.update(message_fields(text, package))
        data[version] = {k: sorted(v) for k, v in sorted(fields.items())}
    out = Path(__file__).resolve().parents[1] / "kubedistill_kfp" / "data" / "kfp_proto_fields.json"
    out.write_text(json.dumps({"source": "kubeflow/pipelines tags " + ", ".join(tags), "versions": data}, indent=1))
    print(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
