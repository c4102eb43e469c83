"""A local stub of the Kubeflow Pipelines v2beta1 REST API, for tests and CI dry runs.

A real HTTP server on 127.0.0.1 (standard library, one thread per request) implementing just what
``kfp.Client`` uses to upload a pipeline or a new version of it, find or create an experiment and
start a run::

    GET  /apis/v2beta1/healthz
    GET  /apis/v2beta1/pipelines                      (filter on display_name)
    POST /apis/v2beta1/pipelines/upload               (multipart ``uploadfile``; also creates version 1)
    POST /apis/v2beta1/pipelines/upload_version       (``name``, ``pipelineid``; 409 on a duplicate name)
    GET  /apis/v2beta1/pipelines/{id}/versions        (filter on display_name)
    GET  /apis/v2beta1/experiments                    (filter on display_name, namespace)
    POST /apis/v2beta1/experiments
    GET  /apis/v2beta1/experiments/{id}
    POST /apis/v2beta1/runs                           (checks the version exists and the parameters)
    GET  /apis/v2beta1/runs/{id}

Like the real server it rejects a run whose parameters the pipeline version does not declare, and an
upload that is not a pipeline spec. With ``token`` set, requests without ``Authorization: Bearer
<token>`` get 401. Every request is recorded (``stub.requests``) so tests can prove what was sent.

    with running_kfp_api_stub() as stub:
        client = kfp.Client(host=stub.url, namespace="team-ml")
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class StubState:
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # version id -> pipeline spec
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)


class KfpApiStub:
    """The stub's state and HTTP server. ``final_state``: the state runs report when read back."""

    def __init__(self, *, token: str | None = None, multi_user: bool = False, final_state: str = "SUCCEEDED") -> None:
        self.token = token
        self.multi_user = multi_user
        self.final_state = final_state
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
    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}-{uuid.uuid4().hex[:8]}"

    def add_pipeline(self, name: str, spec: dict[str, Any], namespace: str = "", description: str = "") -> str:
        with self.lock:
            pid = self.new_id("pipeline")
            self.state.pipelines[pid] = {
                "pipeline_id": pid,
                "display_name": name,
                "name": name,
                "description": description,
                "namespace": namespace,
                "created_at": _now(),
            }
            self._add_version(pid, name, spec)
            return pid

    def _add_version(self, pid: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        vid = self.new_id("version")
        v = {
            "pipeline_id": pid,
            "pipeline_version_id": vid,
            "display_name": name,
            "name": name,
            "created_at": _now(),
            "pipeline_spec": spec,
        }
        self.state.versions[vid] = v
        self.state.specs[vid] = spec
        return v


def _matches(item: dict[str, Any], filter_json: str | None) -> bool:
    if not filter_json:
        return True
    flt = json.loads(filter_json)
    for pred in flt.get("predicates", []):
        op = pred.get("operation")
        key = pred.get("key")
        want = pred.get("stringValue", pred.get("string_value"))
        if op not in ("EQUALS", 1) or item.get(key) != want:
            return False
    return True


def _declared_parameters(spec: dict[str, Any]) -> set[str]:
    return set(((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {})


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

    def _list_pipelines(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        with self.owner.lock:
            items = [p for p in self.owner.state.pipelines.values() if _matches(p, q.get("filter"))]
        return 200, ({"pipelines": items, "total_size": len(items)} if items else {})

    def _uploaded_spec(self, body: bytes) -> dict[str, Any]:
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise _Fail(400, "expected a multipart upload")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + body
        )
        for part in msg.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                raw = part.get_payload(decode=True) or b""
                try:
                    spec = yaml.safe_load(raw)
                except yaml.YAMLError as e:
                    raise _Fail(400, f"invalid pipeline spec: {e}") from None
                if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
                    raise _Fail(400, "invalid pipeline spec: no pipelineInfo/root")
                return spec
        raise _Fail(400, "no uploadfile in the upload")

    def _upload(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        spec = self._uploaded_spec(body)
        name = q.get("name") or q.get("display_name") or spec["pipelineInfo"]["name"]
        with self.owner.lock:
            if any(p["display_name"] == name for p in self.owner.state.pipelines.values()):
                raise _Fail(409, f"pipeline {name} already exists")
        pid = self.owner.add_pipeline(name, spec, q.get("namespace", ""), q.get("description", ""))
        return 200, self.owner.state.pipelines[pid]

    def _upload_version(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        spec = self._uploaded_spec(body)
        pid = q.get("pipelineid") or ""
        name = q.get("name") or ""
        with self.owner.lock:
            self._get(self.owner.state.pipelines, pid, "pipeline")
            if any(v["pipeline_id"] == pid and v["display_name"] == name for v in self.owner.state.versions.values()):
                raise _Fail(409, f"version {name} of pipeline {pid} already exists")
            v = self.owner._add_version(pid, name, spec)
        return 200, v

    def _list_versions(self, pid: str, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.owner.lock:
            self._get(self.owner.state.pipelines, pid, "pipeline")
            items = [
                v
                for v in self.owner.state.versions.values()
                if v["pipeline_id"] == pid and _matches(v, q.get("filter"))
            ]
        items.sort(key=lambda v: v["pipeline_version_id"], reverse=True)
        return 200, ({"pipeline_versions": items, "total_size": len(items)} if items else {})

    def _list_experiments(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        ns = q.get("namespace")
        with self.owner.lock:
            items = [
                e
                for e in self.owner.state.experiments.values()
                if _matches(e, q.get("filter")) and (not ns or e.get("namespace") == ns)
            ]
        return 200, ({"experiments": items, "total_size": len(items)} if items else {})

    def _create_experiment(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        data = json.loads(body or b"{}")
        if not data.get("display_name"):
            raise _Fail(400, "an experiment needs a display_name")
        with self.owner.lock:
            eid = self.owner.new_id("experiment")
            exp = {
                "experiment_id": eid,
                "display_name": data["display_name"],
                "description": data.get("description") or "",
                "namespace": data.get("namespace") or "",
                "created_at": _now(),
                "storage_state": "AVAILABLE",
            }
            self.owner.state.experiments[eid] = exp
        return 200, exp

    def _create_run(self, q: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        data = json.loads(body or b"{}")
        st = self.owner.state
        with self.owner.lock:
            self._get(st.experiments, data.get("experiment_id") or "", "experiment")
            ref = data.get("pipeline_version_reference") or {}
            if ref:
                version = self._get(st.versions, ref.get("pipeline_version_id") or "", "pipeline version")
                if version["pipeline_id"] != ref.get("pipeline_id"):
                    raise _Fail(400, "the version does not belong to that pipeline")
                spec = st.specs[version["pipeline_version_id"]]
            elif data.get("pipeline_spec"):
                spec = data["pipeline_spec"].get("pipeline_spec", data["pipeline_spec"])
            else:
                raise _Fail(400, "a run needs a pipeline_version_reference or a pipeline_spec")
            params = (data.get("runtime_config") or {}).get("parameters") or {}
            unknown = sorted(set(params) - _declared_parameters(spec))
            if unknown:
                raise _Fail(400, f"unknown parameter(s) {', '.join(unknown)}")
            rid = self.owner.new_id("run")
            run = {
                "run_id": rid,
                "experiment_id": data["experiment_id"],
                "display_name": data.get("display_name") or rid,
                "pipeline_version_reference": ref or None,
                "runtime_config": data.get("runtime_config") or {},
                "service_account": data.get("service_account") or "",
                "created_at": _now(),
                "state": "PENDING",
            }
            st.runs[rid] = run
        return 200, run

    def _read_run(self, rid: str) -> dict[str, Any]:
        with self.owner.lock:
            run = self._get(self.owner.state.runs, rid, "run")
            run["state"] = self.owner.final_state
            run.setdefault("finished_at", _now())
            return run


class _Fail(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@contextmanager
def running_kfp_api_stub(
    *, token: str | None = None, multi_user: bool = False, final_state: str = "SUCCEEDED"
) -> Iterator[KfpApiStub]:
    """Start the stub on a free port of 127.0.0.1; yields it (``stub.url`` is the ``host`` for kfp.Client)."""
    stub = KfpApiStub(token=token, multi_user=multi_user, final_state=final_state)
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()
