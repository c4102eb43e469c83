"""A Kubernetes API stub for Kubeflow Trainer v2.3 TrainJobs: a real HTTP server on 127.0.0.1 answering the
routes the Kubeflow SDK (``kubeflow.trainer.TrainerClient``) calls through the kubernetes client, and
refusing what the real API server and the Trainer's admission webhook refuse. A cluster cannot run here.

What it checks on ``POST .../trainjobs`` (read from kubeflow/trainer: pkg/webhooks/trainjob_webhook.go, the
torch and jobset plugins; and from the API server's own rules), each failure answered as the server answers
(a ``Status`` with code 422 ``Invalid``, 409 ``AlreadyExists``, 404 ``NotFound``):

* the object against the vendored TrainJob CRD schema of Trainer 2.3 (tests/data/crds), strictly: an unknown
  field is an error, as with ``kubectl apply --validate=strict``;
* ``metadata.name`` is a DNS-1035 label (the Trainer's JobSet needs one), its namespace the URL's;
* the runtime it names exists (webhook: ``unsupported runtime`` for another kind or group);
* ``spec.trainer.env`` sets none of the variables the torch runtime sets (``PET_NNODES``...);
* every runtime patch names a replicated job and containers the runtime has;
* a name that exists is 409.

What it emulates, and says so (the FAKE part): the controller. A created job is Running after
``running_after`` reads and Complete (or, with ``fail``, Failed) after ``complete_after``; its pods
(``<job>-node-0-<i>``, with JobSet's labels) appear when it runs; ``on_complete(job)`` stands in for the job's
own work (e.g. rank 0 writing its metrics to the shared folder); pod logs are ``log_lines``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from kubedistill_kfp.testing.schemas import crd_errors, load_crd_schema

GROUP, VERSION = "trainer.kubeflow.org", "v1alpha1"
ROOT = Path(__file__).resolve().parents[2]
TRAINJOB_CRD = ROOT / "tests" / "data" / "crds" / "trainer-2.3-TrainJob.json.gz"
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
TORCH_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")

# The torch-distributed ClusterTrainingRuntime as kubeflow/trainer ships it (manifests/base/runtimes), with
# the framework label its kustomization adds.
TORCH_DISTRIBUTED = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "ClusterTrainingRuntime",
    "metadata": {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}},
    "spec": {
        "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
        "template": {
            "spec": {
                "replicatedJobs": [
                    {
                        "name": "node",
                        "template": {
                            "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                            "spec": {
                                "template": {
                                    "spec": {
                                        "containers": [
                                            {"name": "node", "image": "pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime"}
                                        ]
                                    }
                                }
                            },
                        },
                    }
                ]
            }
        },
    },
}


def _status(code: int, reason: str, message: str, causes: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }
    if causes:
        body["details"] = {"causes": [{"message": c} for c in causes]}
    return body


@dataclass
class TrainerApiStub:
    """The API's state: runtimes, TrainJobs, the requests seen; the FAKE controller's settings."""

    running_after: int = 1
    complete_after: int = 2
    fail: bool = False
    log_lines: list[str] = field(default_factory=lambda: ["node-0: training", "node-0: done"])
    on_complete: Callable[[dict[str, Any]], None] | None = None
    runtimes: dict[str, dict[str, Any]] = field(default_factory=lambda: {"torch-distributed": TORCH_DISTRIBUTED})
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    reads: dict[tuple[str, str], int] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)  # every TrainJob admitted, as it was sent
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.crd = load_crd_schema(TRAINJOB_CRD)

    # ------------------------------------------------------------------ admission (server + webhook)

    def admit(self, ns: str, obj: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        meta = obj.get("metadata") or {}
        name = meta.get("name") or ""
        problems = crd_errors(obj, self.crd)
        if obj.get("apiVersion") != f"{GROUP}/{VERSION}" or obj.get("kind") != "TrainJob":
            problems.append(
                f"apiVersion/kind: {obj.get('apiVersion')}/{obj.get('kind')} is not {GROUP}/{VERSION} TrainJob"
            )
        if not DNS1035.match(name) or len(name) > 63:
            problems.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1035 label (at most 63)")
        if meta.get("namespace") not in (None, ns):
            problems.append(f"metadata.namespace: {meta.get('namespace')!r} does not match the request's {ns!r}")
        if problems:
            return 422, _status(422, "Invalid", f'TrainJob.{GROUP} "{name}" is invalid', problems)
        spec = obj["spec"]
        ref = spec["runtimeRef"]
        kind, group = ref.get("kind", "ClusterTrainingRuntime"), ref.get("apiGroup", GROUP)
        if kind not in ("ClusterTrainingRuntime", "TrainingRuntime") or group != GROUP:
            return 403, _status(
                403, "Forbidden", f"admission webhook denied the request: unsupported runtime: {kind}.{group}"
            )
        runtime = self.runtimes.get(ref["name"])
        if runtime is None or runtime["kind"] != kind:
            msg = f'admission webhook denied the request: {kind}.{GROUP} "{ref["name"]}" not found'
            return 403, _status(403, "Forbidden", msg)
        webhook = []
        for env in (spec.get("trainer") or {}).get("env") or []:
            if env.get("name") in TORCH_ENV:
                webhook.append(f"spec.trainer.env: {env['name']} is reserved for the torch runtime")
        jobs = {j["name"]: j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"]}
        for patch in spec.get("runtimePatches") or []:
            template = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}
            for rjob in template.get("replicatedJobs") or []:
                job = jobs.get(rjob.get("name"))
                if job is None:
                    webhook.append(f"runtimePatches: no replicated job {rjob.get('name')!r} in the runtime")
                    continue
                names = {c["name"] for c in job["template"]["spec"]["template"]["spec"]["containers"]}
                pod = ((((rjob.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec")) or {}
                for c in pod.get("containers") or []:
                    if c.get("name") not in names:
                        webhook.append(
                            f"runtimePatches: no container {c.get('name')!r} in replicated job {job['name']!r}"
                        )
        if webhook:
            return 403, _status(403, "Forbidden", "admission webhook denied the request: " + "; ".join(webhook))
        if (ns, name) in self.jobs:
            return 409, _status(409, "AlreadyExists", f'trainjobs.{GROUP} "{name}" already exists')
        return None

    # ------------------------------------------------------------------------- the FAKE controller

    def _advance(self, key: tuple[str, str]) -> None:
        job = self.jobs[key]
        self.reads[key] += 1
        n = self.reads[key]
        if n >= self.complete_after and not job["status"].get("conditions"):
            kind = "Failed" if self.fail else "Complete"
            job["status"]["conditions"] = [
                {
                    "type": kind,
                    "status": "True",
                    "reason": "JobSet" + kind,
                    "message": f"jobset {kind.lower()}",
                    "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            ]
            if not self.fail and self.on_complete is not None:
                self.on_complete(job)

    def pods(self, ns: str, name: str) -> list[dict[str, Any]]:
        job = self.jobs.get((ns, name))
        if job is None or self.reads[(ns, name)] < self.running_after:
            return []
        trainer = job["spec"].get("trainer") or {}
        done = bool(job["status"].get("conditions"))
        phase = ("Failed" if self.fail else "Succeeded") if done else "Running"
        return [
            {
                "metadata": {
                    "name": f"{name}-node-0-{i}",
                    "namespace": ns,
                    "creationTimestamp": job["metadata"]["creationTimestamp"],
                    "labels": {
                        "jobset.sigs.k8s.io/jobset-name": name,
                        "jobset.sigs.k8s.io/replicatedjob-name": "node",
                        "batch.kubernetes.io/job-completion-index": str(i),
                    },
                },
                "spec": {
                    "containers": [
                        {
                            "name": "node",
                            "image": trainer.get("image", "pytorch/pytorch"),
                            "resources": trainer.get("resourcesPerNode") or {},
                        }
                    ]
                },
                "status": {"phase": phase},
            }
            for i in range(int(trainer.get("numNodes") or 1))
        ]

    # -------------------------------------------------------------------------------------- routes

    def handle(self, method: str, url: str, body: bytes) -> tuple[int, Any, str]:
        parsed = urlparse(url)
        parts = parsed.path.strip("/").split("/")
        self.requests.append((method, parsed.path))
        with self.lock:
            if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[4] == "configmaps":
                return 200, {"kind": "ConfigMap", "data": {"kubeflow_trainer_version": "v2.3.0"}}, "json"
            if parts[:2] == ["api", "v1"] and len(parts) == 5 and parts[4] == "pods":
                selector = parse_qs(parsed.query).get("labelSelector", [""])[0]
                m = re.match(r"jobset\.sigs\.k8s\.io/jobset-name=([^,]+)", selector)
                items = self.pods(parts[3], m.group(1)) if m else []
                return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}, "json"
            if parts[:2] == ["api", "v1"] and len(parts) == 7 and parts[4] == "pods" and parts[6] == "log":
                return 200, "\n".join(self.log_lines) + "\n", "text"
            if parts[:3] == ["apis", GROUP, VERSION] and len(parts) == 5 and parts[3] == "clustertrainingruntimes":
                runtime = self.runtimes.get(parts[4])
                if runtime is None:
                    return (
                        404,
                        _status(404, "NotFound", f'clustertrainingruntimes.{GROUP} "{parts[4]}" not found'),
                        "json",
                    )
                return 200, runtime, "json"
            if parts[:3] == ["apis", GROUP, VERSION] and len(parts) >= 6 and parts[3] == "namespaces":
                ns, plural = parts[4], parts[5]
                name = parts[6] if len(parts) > 6 else None
                if plural == "trainingruntimes":
                    return 404, _status(404, "NotFound", f'trainingruntimes.{GROUP} "{name}" not found'), "json"
                if plural != "trainjobs":
                    return 404, _status(404, "NotFound", f"no route {parsed.path}"), "json"
                if method == "POST" and name is None:
                    obj = json.loads(body)
                    refused = self.admit(ns, obj)
                    if refused is not None:
                        self.refused.append(refused[1])
                        return refused[0], refused[1], "json"
                    self.created.append(json.loads(body))
                    obj["metadata"].update(
                        {
                            "namespace": ns,
                            "uid": f"uid-{len(self.jobs)}",
                            "generation": 1,
                            "resourceVersion": "1",
                            "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        }
                    )
                    obj["status"] = {}
                    self.jobs[(ns, obj["metadata"]["name"])] = obj
                    self.reads[(ns, obj["metadata"]["name"])] = 0
                    return 201, obj, "json"
                if method == "GET" and name is not None:
                    if (ns, name) not in self.jobs:
                        return 404, _status(404, "NotFound", f'trainjobs.{GROUP} "{name}" not found'), "json"
                    self._advance((ns, name))
                    return 200, self.jobs[(ns, name)], "json"
            return (
                404,
                _status(404, "NotFound", f"the server could not find the requested resource ({parsed.path})"),
                "json",
            )


@contextmanager
def running_trainer_api_stub(stub: TrainerApiStub | None = None) -> Iterator[tuple[TrainerApiStub, Any]]:
    """Serve ``stub`` on 127.0.0.1; yields it and a kubernetes ``Configuration`` pointed at it."""
    from kubernetes import client

    stub = stub or TrainerApiStub()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return

        def _do(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            status, payload, kind = stub.handle(self.command, self.path, self.rfile.read(n) if n else b"")
            raw = payload.encode() if kind == "text" else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if kind == "text" else "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _do

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conf = client.Configuration()
    conf.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield stub, conf
    finally:
        server.shutdown()
        server.server_close()
