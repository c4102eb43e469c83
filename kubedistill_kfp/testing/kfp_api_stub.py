"""A local stub of the Kubeflow Pipelines v2beta1 REST API that behaves as the real server does, for tests
and CI dry runs (a real HTTP server on 127.0.0.1; the real ``kfp.Client`` talks to it).

It implements what ``kfp.Client`` uses to upload a pipeline or a new version of it, find or create an
experiment and start and read a run::

    GET  /apis/v2beta1/healthz
    GET  /apis/v2beta1/pipelines                      (namespace, filter on display_name)
    POST /apis/v2beta1/pipelines/upload               (multipart ``uploadfile``; name, namespace; also version 1)
    POST /apis/v2beta1/pipelines/upload_version       (``pipelineid``; name)

(A name not given as ``name`` or ``display_name`` is the uploaded file's name, as ``buildPipelineName`` has it.)
    GET  /apis/v2beta1/pipelines/{id}/versions        (filter on display_name)
    GET  /apis/v2beta1/experiments                    (namespace, filter on display_name)
    POST /apis/v2beta1/experiments
    GET  /apis/v2beta1/experiments/{id}
    POST /apis/v2beta1/runs
    GET  /apis/v2beta1/runs/{id}

What it takes from the real server (kubeflow/pipelines ``backend/src/apiserver``, release 2.17):

* **Namespaces** (``ReplaceNamespace``): in multi-user mode a pipeline belongs to the namespace it was
  uploaded to ("" = shared); listing returns exactly the pipelines of the namespace asked for, so a
  lookup without the namespace does not see a namespaced pipeline. A pipeline name is unique per
  namespace and a version name per pipeline: a duplicate is HTTP 409. Experiments and runs need a
  namespace in multi-user mode (HTTP 400). In single-user mode every namespace is "".
* **Uploads** (``template.NewV2SpecTemplate``): the file may hold several YAML documents; the one with
  ``pipelineInfo`` is parsed strictly as a ``PipelineSpec`` and one with ``platforms.kubernetes`` as a
  ``PlatformSpec``, with kfp's own protobuf classes (an unknown field is HTTP 400). Schema version 2.1.0;
  the spec's name must match ``^[a-z0-9][a-z0-9-]{0,127}$`` (``common.ValidatePipelineName``); names are
  capped at 128 characters (a version's at 127).
* **Runs**: parameters must be declared by the pipeline, a required one must be given, and each value must
  have the JSON kind of its declared type (a STRUCT parameter takes an object, not a JSON string; HTTP 400).
  Like the server's driver when a task starts, each task's Kubernetes settings are parsed as a
  ``KubernetesExecutorConfig``: a field the emulated ``server_version`` does not know (``securityContext``
  before 2.16) makes the run FAILED with the driver's error. Without an error a run reads back as
  ``final_state``.

With ``token`` set, requests without ``Authorization: Bearer <token>`` get 401. Every request is recorded
(``stub.requests``: method, path, query, whether it carried auth) so tests can prove what was sent.

    with running_kfp_api_stub(multi_user=True) as stub:
        client = kfp.Client(host=stub.url, namespace="team-ml")
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

PREFIX = "/apis/v2beta1"
PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")  # backend/src/apiserver/common/utils.go
MAX_PIPELINE_NAME, MAX_VERSION_NAME, MAX_NAMESPACE, MAX_EXPERIMENT_NAME = 128, 127, 63, 128  # validation/length.go


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class StubState:
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    specs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # version id -> [spec, platform spec?]
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)


class KfpApiStub:
    """The stub's state and HTTP server. ``multi_user``: namespaces as in multi-user KFP; ``server_version``:
    the KFP release whose parsing is emulated (2.14 ... 2.17); ``final_state``: what runs read back as."""

    def __init__(
        self,
        *,
        token: str | None = None,
        multi_user: bool = False,
        final_state: str = "SUCCEEDED",
        server_version: str = "2.17",
    ) -> None:
        from kubedistill_kfp.versions import known_fields

        known_fields(server_version)  # an unknown version is an error now, not at the first upload
        self.token = token
        self.multi_user = multi_user
        self.final_state = final_state
        self.server_version = server_version
        self.state = StubState()
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self.server is not None, "not started"
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.state.requests

    def start(self, port: int = 0) -> str:
        stub = self

        class Handler(_Handler):
            owner = stub

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="kfp-api-stub", daemon=True)
        self.thread.start()
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # ------------------------------------------------------------------ helpers
    def new_id(self) -> str:
        next(self._ids)
        return str(uuid.uuid4())

    def namespace(self, ns: str | None) -> str:
        """``ReplaceNamespace``: the namespace as given in multi-user mode, "" in single-user mode."""
        return (ns or "") if self.multi_user else ""

    def parse_package(self, raw: bytes) -> list[dict[str, Any]]:
        """The uploaded file as the server reads it: ``[pipeline spec, platform spec?]``, both checked."""
        from google.protobuf import json_format
        from kfp.pipeline_spec import pipeline_spec_pb2

        from kubedistill_kfp.versions import unknown_fields

        try:
            docs = [d for d in yaml.safe_load_all(raw) if d is not None]
        except yaml.YAMLError as e:
            raise _Fail(400, f"unable to decode yaml document: {str(e).splitlines()[0]}") from None
        spec: dict[str, Any] | None = None
        platform: dict[str, Any] | None = None
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            if "pipelineInfo" in doc or "root" in doc:
                if spec is not None:
                    raise _Fail(400, "Invalid input error: multiple pipeline specs provided")
                try:
                    json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
                except json_format.ParseError as e:
                    raise _Fail(400, f"Invalid input error: invalid v2 pipeline spec: {e}") from None
                unknown = unknown_fields([doc], self.server_version)
                if unknown:
                    raise _Fail(400, f"Invalid input error: invalid v2 pipeline spec: unknown field {unknown[0]}")
                if doc.get("schemaVersion") != "2.1.0":
                    raise _Fail(400, f"KFP only supports schema version 2.1.0, not {doc.get('schemaVersion')}")
                name = (doc.get("pipelineInfo") or {}).get("name") or ""
                if not name:
                    raise _Fail(400, "Invalid input error: invalid v2 pipeline spec: name is empty")
                if len(name) > MAX_PIPELINE_NAME:
                    raise _Fail(400, "pipeline's name must contain no more than 128 characters")
                if not PIPELINE_NAME.match(name):
                    raise _Fail(
                        400,
                        "pipeline's name must contain only lowercase alphanumeric characters or '-' and must "
                        "start with alphanumeric characters",
                    )
                if not doc.get("root"):
                    raise _Fail(400, "Invalid input error: invalid v2 pipeline spec: root component is empty")
                spec = doc
            elif "kubernetes" in (doc.get("platforms") or {}):
                if platform is not None:
                    raise _Fail(400, "Invalid input error: multiple platform specs provided")
                try:
                    json_format.ParseDict(doc, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
                except json_format.ParseError as e:
                    raise _Fail(400, f"cannot unmarshal platform specific configs: {e}") from None
                platform = doc
        if spec is None:
            raise _Fail(400, "Invalid input error: no pipeline spec is provided")
        return [spec] + ([platform] if platform is not None else [])

    def driver_error(self, docs: list[dict[str, Any]]) -> str | None:
        """What the server's driver says when a task's Kubernetes settings do not parse, else None."""
        from google.protobuf import json_format
        from kfp.kubernetes import kubernetes_executor_config_pb2

        from kubedistill_kfp.versions import unknown_fields

        if len(docs) < 2:
            return None
        executors = docs[1]["platforms"]["kubernetes"].get("deploymentSpec", {}).get("executors", {})
        for name, cfg in executors.items():
            try:
                json_format.ParseDict(
                    cfg, kubernetes_executor_config_pb2.KubernetesExecutorConfig(), ignore_unknown_fields=False
                )
            except json_format.ParseError as e:
                return f"{name}: failed to unmarshal kubernetes config: {e}"
        unknown = unknown_fields(docs[1:], self.server_version)
        if unknown:
            return f"failed to unmarshal kubernetes config: unknown field {unknown[0]} (KFP {self.server_version})"
        return None

    def add_pipeline(self, name: str, docs: list[dict[str, Any]], namespace: str = "", description: str = "") -> str:
        with self.lock:
            if any(p["name"] == name and p["namespace"] == namespace for p in self.state.pipelines.values()):
                raise _Fail(409, "Failed to create a pipeline and a pipeline version")
            pid = self.new_id()
            self.state.pipelines[pid] = {
                "pipeline_id": pid,
                "name": name,
                "display_name": name,
                "description": description,
                "namespace": namespace,
                "created_at": _now(),
            }
            self._add_version(pid, name, docs)
            return pid

    def _add_version(self, pid: str, name: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
        if any(v["pipeline_id"] == pid and v["name"] == name for v in self.state.versions.values()):
            raise _Fail(409, "Failed to create a pipeline version")
        vid = self.new_id()
        v = {
            "pipeline_id": pid,
            "pipeline_version_id": vid,
            "name": name,
            "display_name": name,
            "created_at": _now(),
            "pipeline_spec": docs[0],
        }
        self.state.versions[vid] = v
        self.state.specs[vid] = docs
        return v


def _matches(item: dict[str, Any], filter_json: str | None) -> bool:
    if not filter_json:
        return True
    flt = json.loads(filter_json)
    for pred in flt.get("predicates", []):
        op = pred.get("operation")
        key = pred.get("key")
        want = pred.get("stringValue", pred.get("string_value"))
        if key not in ("display_name", "name", "namespace", "pipeline_id"):
            raise _Fail(400, f"Invalid input error: unknown filter key {key}")
        if op not in ("EQUALS", 1) or item.get(key) != want:
            return False
    return True


def _build_name(q: dict[str, str], filename: str) -> str:
    """``buildPipelineName``: the ``name`` query parameter, else ``display_name``, else the uploaded file's name."""
    name = q.get("name") or q.get("display_name") or filename
    if not name:
        raise _Fail(400, "Invalid input error: pipeline's name cannot be empty")
    return name


def _declared_parameters(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {})


# ``validatePipelineJobInputs``: the JSON kind a run's value must have for each declared parameter type.
_PARAMETER_KINDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "NUMBER_DOUBLE": ("double or integer", (int, float)),
    "NUMBER_INTEGER": ("double or integer", (int, float)),
    "STRING": ("string", (str,)),
    "BOOLEAN": ("bool", (bool,)),
    "LIST": ("list", (list,)),
    "STRUCT": ("struct", (dict,)),
}


def _check_parameter_type(name: str, declared: str | None, value: Any) -> None:
    """HTTP 400 unless ``value`` (a run's runtime parameter, as JSON) has the kind its declared type needs, as
    the server's ``validatePipelineJobInputs`` checks before it compiles the run (a JSON ``true`` is no number)."""
    if not declared or declared == "PARAMETER_TYPE_ENUM_UNSPECIFIED":
        raise _Fail(400, f"invalid pipeline job inputs: input parameter {name} has unspecified type")
    if declared == "TASK_FINAL_STATUS":
        raise _Fail(400, f"invalid pipeline job inputs: input parameter {name} requires type TASK_FINAL_STATUS")
    if declared not in _PARAMETER_KINDS:
        raise _Fail(400, f"invalid pipeline job inputs: input parameter {name} requires type unknown")
    kind, types = _PARAMETER_KINDS[declared]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise _Fail(
            400,
            f"invalid pipeline job inputs: input parameter {name} requires type {kind}, but the parameter value "
            f"is not of {kind} value type",
        )


class _Handler(BaseHTTPRequestHandler):
    owner: KfpApiStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # ------------------------------------------------------------------ plumbing
    def _reply(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: int, message: str) -> None:
        self._reply(status, {"error_message": message, "code": status, "message": message})

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        body = self._body()
        st = self.owner.state
        with self.owner.lock:
            st.requests.append(
                {"method": method, "path": parts.path, "query": query, "auth": bool(self.headers.get("Authorization"))}
            )
        if self.owner.token and self.headers.get("Authorization") != f"Bearer {self.owner.token}":
            return self._error(401, "missing or bad bearer token")
        path = parts.path
        if not path.startswith(PREFIX):
            return self._error(404, f"no route {path}")
        path = path[len(PREFIX) :]
        try:
            handler = self._dispatch(method, path)
            if handler is None:
                return self._error(404, f"no route {method} {PREFIX}{path}")
            status, payload = handler(query, body)
        except _Fail as f:
            return self._error(f.status, f.message)
        self._reply(status, payload)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _dispatch(self, method: str, path: str) -> Any:
        segs = [s for s in path.split("/") if s]
        if method == "GET" and segs == ["healthz"]:
            return lambda q, b: (200, {"multi_user": self.owner.multi_user})
        if segs[:1] == ["pipelines"]:
            if method == "GET" and len(segs) == 1:
                return self._list_pipelines
            if method == "POST" and segs == ["pipelines", "upload"]:
                return self._upload
            if method == "POST" and segs == ["pipelines", "upload_version"]:
                return self._upload_version
            if method == "GET" and len(segs) == 3 and segs[2] == "versions":
                return lambda q, b: self._list_versions(segs[1], q)
        if segs[:1] == ["experiments"]:
            if method == "GET" and len(segs) == 1:
                return self._list_experiments
            if method == "POST" and len(segs) == 1:
                return self._create_experiment
            if method == "GET" and len(segs) == 2:
                return lambda q, b: (200, self._get(self.owner.state.experiments, segs[1], "experiment"))
        if segs[:1] == ["runs"]:
            if method == "POST" and len(segs) == 1:
                return self._create_run
            if method == "GET" and len(segs) == 2:
                return lambda q, b: (200, self._read_run(segs[1]))
        return None

    # ------------------------------------------------------------------ endpoints
    @staticmethod
    def _get(table: dict[str, dict[str, Any]], key: str, what: str) -> dict[str, Any]:
        if key not in table:
            raise _Fail(404, f"{what} {key} not found")
        return table[key]

    @staticmethod
    def _page(items: list[dict[str, Any]], key: str) -> dict[str, Any]:
        return {key: items, "total_size": len(items)} if items else {}

    def _list_pipelines(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        ns = self.owner.namespace(q.get("namespace"))
        with self.owner.lock:
            items = [
                p for p in self.owner.state.pipelines.values() if p["namespace"] == ns and _matches(p, q.get("filter"))
            ]
        return 200, self._page(items, "pipelines")

    def _uploaded_file(self, body: bytes) -> tuple[bytes, str]:
        """The multipart ``uploadfile`` part: its bytes and its file name."""
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise _Fail(400, "Failed to read pipeline from file")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + body
        )
        for part in msg.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                return part.get_payload(decode=True) or b"", part.get_filename() or ""
        raise _Fail(400, "Failed to read pipeline from file")

    def _upload(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        raw, filename = self._uploaded_file(body)
        ns = q.get("namespace") or ""
        if len(ns) > MAX_NAMESPACE:
            raise _Fail(400, "Pipeline.Namespace is too long")
        ns = self.owner.namespace(ns)
        docs = self.owner.parse_package(raw)
        name = _build_name(q, filename)
        if len(name) > MAX_PIPELINE_NAME:
            raise _Fail(400, f"Pipeline.Name is longer than {MAX_PIPELINE_NAME} characters")
        pid = self.owner.add_pipeline(name, docs, ns, q.get("description", ""))
        return 200, self.owner.state.pipelines[pid]

    def _upload_version(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        raw, filename = self._uploaded_file(body)
        docs = self.owner.parse_package(raw)
        pid = q.get("pipelineid") or ""
        name = _build_name(q, filename)
        if len(name) > MAX_VERSION_NAME:
            raise _Fail(400, f"PipelineVersion.Name is longer than {MAX_VERSION_NAME} characters")
        with self.owner.lock:
            self._get(self.owner.state.pipelines, pid, "pipeline")
            v = self.owner._add_version(pid, name, docs)
        return 200, v

    def _list_versions(self, pid: str, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.owner.lock:
            self._get(self.owner.state.pipelines, pid, "pipeline")
            items = [
                v
                for v in self.owner.state.versions.values()
                if v["pipeline_id"] == pid and _matches(v, q.get("filter"))
            ]
        items.sort(key=lambda v: v["created_at"], reverse=True)
        return 200, self._page(items, "pipeline_versions")

    def _list_experiments(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        ns = self.owner.namespace(q.get("namespace"))
        if self.owner.multi_user and not ns:
            raise _Fail(400, "An experiment cannot have an empty namespace in multi-user mode")
        with self.owner.lock:
            items = [
                e
                for e in self.owner.state.experiments.values()
                if e["namespace"] == ns and _matches(e, q.get("filter"))
            ]
        return 200, self._page(items, "experiments")

    def _create_experiment(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        data = json.loads(body or b"{}")
        name = data.get("display_name") or ""
        if not name:
            raise _Fail(400, "Experiment name cannot be empty")
        if len(name) > MAX_EXPERIMENT_NAME:
            raise _Fail(400, f"Experiment.Name is longer than {MAX_EXPERIMENT_NAME} characters")
        ns = self.owner.namespace(data.get("namespace"))
        if self.owner.multi_user and not ns:
            raise _Fail(400, "An experiment cannot have an empty namespace in multi-user mode")
        with self.owner.lock:
            if any(e["display_name"] == name and e["namespace"] == ns for e in self.owner.state.experiments.values()):
                raise _Fail(409, f"Failed to create a new experiment: {name} already exists")
            eid = self.owner.new_id()
            exp = {
                "experiment_id": eid,
                "display_name": name,
                "description": data.get("description") or "",
                "namespace": ns,
                "created_at": _now(),
                "storage_state": "AVAILABLE",
            }
            self.owner.state.experiments[eid] = exp
        return 200, exp

    def _create_run(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        data = json.loads(body or b"{}")
        st = self.owner.state
        if not data.get("display_name"):
            raise _Fail(400, "The run name is empty. Please specify a valid name")
        with self.owner.lock:
            exp = self._get(st.experiments, data.get("experiment_id") or "", "experiment")
            if self.owner.multi_user and not exp["namespace"]:
                raise _Fail(400, "A run cannot have an empty namespace in multi-user mode")
            ref = data.get("pipeline_version_reference") or {}
            if ref:
                version = self._get(st.versions, ref.get("pipeline_version_id") or "", "pipeline version")
                if ref.get("pipeline_id") and version["pipeline_id"] != ref.get("pipeline_id"):
                    raise _Fail(400, "the version does not belong to that pipeline")
                pipeline = st.pipelines[version["pipeline_id"]]
                if pipeline["namespace"] not in ("", exp["namespace"]):
                    raise _Fail(403, f"pipeline {pipeline['name']} is not visible in namespace {exp['namespace']}")
                docs = st.specs[version["pipeline_version_id"]]
            elif data.get("pipeline_spec"):
                docs = [data["pipeline_spec"].get("pipeline_spec", data["pipeline_spec"])]
            else:
                raise _Fail(400, "a run needs a pipeline_version_reference or a pipeline_spec")
            declared = _declared_parameters(docs[0])
            params = (data.get("runtime_config") or {}).get("parameters") or {}
            unknown = sorted(set(params) - set(declared))
            if unknown:
                raise _Fail(400, f"invalid pipeline job inputs: unknown parameter(s) {', '.join(unknown)}")
            for name, spec in declared.items():
                if name not in params and not spec.get("isOptional") and "defaultValue" not in spec:
                    raise _Fail(400, f"parameter {name} is not optional, yet has neither default value nor user value")
                if name in params:
                    _check_parameter_type(name, spec.get("parameterType"), params[name])
            error = self.owner.driver_error(docs)
            rid = self.owner.new_id()
            run = {
                "run_id": rid,
                "experiment_id": data["experiment_id"],
                "namespace": exp["namespace"],
                "display_name": data["display_name"],
                "pipeline_version_reference": ref or None,
                "runtime_config": data.get("runtime_config") or {},
                "service_account": data.get("service_account") or "",
                "created_at": _now(),
                "state": "PENDING",
            }
            if error:
                run["error"] = {"code": 3, "message": error}
            st.runs[rid] = run
        return 200, run

    def _read_run(self, rid: str) -> dict[str, Any]:
        with self.owner.lock:
            run = self._get(self.owner.state.runs, rid, "run")
            run["state"] = "FAILED" if run.get("error") else self.owner.final_state
            run.setdefault("finished_at", _now())
            return run


class _Fail(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@contextmanager
def running_kfp_api_stub(
    *,
    token: str | None = None,
    multi_user: bool = False,
    final_state: str = "SUCCEEDED",
    server_version: str = "2.17",
) -> Iterator[KfpApiStub]:
    """Start the stub on a free port of 127.0.0.1; yields it (``stub.url`` is the ``host`` for kfp.Client)."""
    stub = KfpApiStub(token=token, multi_user=multi_user, final_state=final_state, server_version=server_version)
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()
