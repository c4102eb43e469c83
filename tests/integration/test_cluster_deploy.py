"""The deploy step against a FAKE Kubernetes API (a local HTTP server speaking the custom-objects routes the
kubernetes client uses) and the project's scripted OpenAI server behind a small "ingress" that serves
KServe's /openai/v1 prefix; plus rendering a registered student straight from a real MLflow registry."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubedistill.serve.kserve import DeployError, deploy, render, validate_inference_service
from kubedistill.testing.openai_server import ServerScript, running_server

pytestmark = pytest.mark.integration

S3 = "s3://mlflow/1/models/m-0123/artifacts/artifacts/model"


# --------------------------------------------------------------------------- the fake Kubernetes API


class FakeKubeApi:
    """Custom objects in memory. An InferenceService becomes Ready after ``ready_after`` reads of its
    current generation (its status.url pointing at ``url``), or reports ``failure`` instead."""

    def __init__(
        self, url: str, ready_after: int = 2, failure: dict[str, Any] | None = None, internal_url: str | None = None
    ) -> None:
        self.url = url
        self.internal_url = internal_url
        self.ready_after = ready_after
        self.failure = failure
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.reads: dict[tuple[str, str, str], int] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path))
        parts = path.strip("/").split("/")
        # /apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]
        if len(parts) < 6 or parts[0] != "apis" or parts[3] != "namespaces":
            return 404, {"kind": "Status", "message": f"no route {path}", "code": 404}
        ns, plural = parts[4], parts[5]
        name = parts[6] if len(parts) > 6 else None
        with self.lock:
            if method == "POST":
                obj = json.loads(body)
                key = (plural, ns, obj["metadata"]["name"])
                if key in self.objects:
                    return 409, {"kind": "Status", "message": "already exists", "code": 409}
                obj["metadata"].update({"generation": 1, "resourceVersion": "1", "uid": "u-1"})
                self.objects[key] = obj
                self.reads[key] = 0
                return 201, obj
            key = (plural, ns, name or "")
            if key not in self.objects:
                return 404, {"kind": "Status", "message": f'{plural} "{name}" not found', "code": 404}
            current = self.objects[key]
            if method == "PUT":
                obj = json.loads(body)
                if obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                    return 409, {"kind": "Status", "message": "conflict", "code": 409}
                gen = current["metadata"]["generation"] + 1
                obj["metadata"].update({"generation": gen, "resourceVersion": str(gen), "uid": "u-1"})
                obj["status"] = current.get("status", {})  # a spec change: status lags behind
                self.objects[key] = obj
                self.reads[key] = 0
                return 200, obj
            if method == "GET":
                if plural == "inferenceservices":
                    self._advance(key)
                return 200, self.objects[key]
        return 405, {"kind": "Status", "message": "method not allowed", "code": 405}

    def _advance(self, key: tuple[str, str, str]) -> None:
        obj = self.objects[key]
        self.reads[key] += 1
        gen = obj["metadata"]["generation"]
        if self.failure is not None:
            obj["status"] = {"observedGeneration": gen, **self.failure}
        elif self.reads[key] > self.ready_after:
            obj["status"] = {
                "observedGeneration": gen,
                "url": self.url,
                "address": {"url": self.internal_url or f"http://{key[2]}.{key[1]}.svc.cluster.local"},
                "conditions": [
                    {"type": "PredictorReady", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ],
            }
        else:
            obj["status"] = {
                **({"observedGeneration": gen - 1} if gen > 1 else {}),
                "conditions": [
                    {"type": "PredictorReady", "status": "False", "reason": "RevisionMissing", "message": "loading"},
                    {"type": "Ready", "status": "False", "reason": "RevisionMissing", "message": "loading"},
                ],
            }


def _serve(handler_fn: Any) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return

        def _do(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            status, payload, ctype = handler_fn(self.command, self.path, self.rfile.read(n) if n else b"", self.headers)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = _do

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@contextmanager
def fake_kube_api(**kwargs: Any) -> Iterator[tuple[FakeKubeApi, Any]]:
    """The fake API and a kubernetes ApiClient pointed at it."""
    from kubernetes import client

    api = FakeKubeApi(**kwargs)

    def handle(method: str, path: str, body: bytes, headers: Any) -> tuple[int, bytes, str]:
        status, payload = api.handle(method, path.split("?")[0], body)
        return status, json.dumps(payload).encode(), "application/json"

    server, url = _serve(handle)
    conf = client.Configuration()
    conf.host = url
    try:
        yield api, client.ApiClient(conf)
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def ingress(openai_base: str, token: str | None = None) -> Iterator[str]:
    """KServe's route: <url>/openai/v1/... -> the scripted server's /v1/...; with ``token``, a request without
    ``Authorization: Bearer <token>`` gets 401, as the student's Istio sidecar answers under auth.mode jwt."""
    upstream = openai_base.removesuffix("/v1")

    def handle(method: str, path: str, body: bytes, headers: Any) -> tuple[int, bytes, str]:
        if token is not None and headers.get("Authorization") != f"Bearer {token}":
            return 401, b"Jwt is missing", "text/plain"
        if not path.startswith("/openai/v1/"):
            return 404, b'{"error": "no route"}', "application/json"
        req = urllib.request.Request(
            upstream + path.removeprefix("/openai"),
            data=body or None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read(), "application/json"
        except urllib.error.HTTPError as e:
            return e.code, e.read(), "application/json"

    server, url = _serve(handle)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------- tests


def test_deploy_against_fake_kube_api_creates_waits_for_ready_and_smoke_tests_the_openai_route() -> None:
    with (
        running_server(ServerScript(models=["student"])) as openai_url,
        ingress(openai_url) as student_url,
        fake_kube_api(url=student_url, ready_after=2) as (api, client),
    ):
        logs: list[str] = []
        result = deploy(
            S3,
            settings={
                "name": "student",
                "namespace": "ml",
                "auth": {"mode": "jwt", "issuer": "https://id", "jwks_uri": "https://id/jwks"},
            },
            api_client=client,
            poll_s=0.05,
            timeout_s=10,
            log=logs.append,
            token="a-bearer-token",  # jwt: the smoke test carries one (tests/integration/test_deploy_step.py)
        )
        assert result.applied == [
            "created InferenceService/student",
            "created RequestAuthentication/student-jwt",
            "created AuthorizationPolicy/student-access",
        ]
        assert result.url == student_url and result.openai_base_url == f"{student_url}/openai/v1"
        assert result.answer and "5" in result.answer  # the scripted server adds the prompt's numbers
        assert any("waiting for InferenceService/student: PredictorReady=False (RevisionMissing" in m for m in logs)
        stored = api.objects[("inferenceservices", "ml", "student")]
        validate_inference_service({k: v for k, v in stored.items() if k != "status"} | {"metadata": {}})
        assert ("authorizationpolicies", "ml", "student-access") in api.objects

        # deploying again replaces the objects (a new generation) and waits for that generation
        again = deploy(
            S3, settings={"name": "student", "namespace": "ml"}, api_client=client, poll_s=0.05, timeout_s=10
        )
        assert again.applied == ["replaced InferenceService/student"]
        assert api.objects[("inferenceservices", "ml", "student")]["metadata"]["generation"] == 2
        assert ("PUT", "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/student") in api.requests


def test_deploy_against_fake_kube_api_times_out_with_the_reason() -> None:
    reason = r"not Ready after 0.3s: PredictorReady=False \(RevisionMissing: loading"
    with (
        fake_kube_api(url="http://unused", ready_after=10_000) as (_, client),
        pytest.raises(DeployError, match=reason),
    ):
        deploy(S3, name="slow", api_client=client, poll_s=0.05, timeout_s=0.3)


def test_deploy_against_fake_kube_api_fails_fast_when_the_model_cannot_load() -> None:
    failure = {
        "modelStatus": {
            "transitionStatus": "BlockedByFailedLoad",
            "states": {"targetModelState": "FailedToLoad"},
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no config.json in /mnt/models"},
        }
    }
    reason = r"failed to load \(ModelLoadFailed: no config\.json in /mnt/models\)"
    with fake_kube_api(url="http://unused", failure=failure) as (_, client), pytest.raises(DeployError, match=reason):
        deploy(S3, name="broken", api_client=client, poll_s=0.05, timeout_s=30)


def test_deploy_against_fake_kube_api_fails_clearly_when_the_smoke_test_fails() -> None:
    with (
        running_server(ServerScript(models=["other-model"])) as openai_url,
        ingress(openai_url) as student_url,
        fake_kube_api(url=student_url, ready_after=0) as (_, client),
    ):
        with pytest.raises(DeployError, match=r"smoke test: .*/openai/v1/chat/completions answered HTTP 404"):
            deploy(S3, name="student", api_client=client, poll_s=0.05, timeout_s=10)
        # the smoke test can be skipped, or pointed elsewhere (e.g. the in-cluster address)
        assert deploy(S3, name="student", api_client=client, poll_s=0.05, smoke=False).answer is None
    with (
        fake_kube_api(url="http://unused", ready_after=0) as (_, client),
        pytest.raises(DeployError, match="cannot read"),
    ):
        deploy("file:///tmp/m", name="student", api_client=client)


def test_render_a_registered_student_from_the_mlflow_registry(tracking_uri: str, tmp_path: Path) -> None:
    from kubedistill.registry import register_student

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    register_student(model_dir, "distilled", metrics={"student.heldout.accuracy": 0.5})
    version, _ = register_student(model_dir, "distilled", aliases=["candidate"])
    [isvc] = render("models:/distilled@candidate", name="student", namespace="ml")
    validate_inference_service(isvc)
    storage = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert storage.startswith("file://") and storage.endswith("/artifacts/artifacts/model")
    assert Path(storage.removeprefix("file://"), "config.json").is_file()  # the HF directory itself
    meta = isvc["metadata"]
    assert meta["annotations"]["kubedistill.io/model-uri"] == f"models:/distilled/{version}"  # the alias, pinned
    assert (
        meta["labels"]["kubedistill.io/model"] == "distilled" and meta["labels"]["kubedistill.io/model-version"] == "2"
    )
    from kubedistill.core.errors import UserError

    with pytest.raises(UserError, match="not found in the MLflow registry"):
        render("models:/distilled@champion")


def test_deploy_from_a_pod_uses_its_namespace_the_internal_url_and_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's deploy step: inside a cluster (KUBERNETES_SERVICE_HOST set) the student goes to the pod's
    namespace and the smoke test calls its cluster-internal URL with the bearer token of
    $KUBEDISTILL_STUDENT_TOKEN (auth.mode jwt: the sidecar refuses a request without it); the external URL,
    which a pod may not reach, is not called."""
    from kubedistill.serve.kserve import ServeConfig, deploy_uri

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBEDISTILL_NAMESPACE", "team-ml")  # the service account's namespace file, off a pod
    jwt = {"mode": "jwt", "issuer": "https://id", "jwks_uri": "https://id/jwks"}
    settings = ServeConfig.model_validate({"name": "student", "auth": jwt})
    external = "http://127.0.0.1:9"  # nothing listens: only the ingress (outside the cluster) would
    with (
        running_server(ServerScript(models=["student"])) as openai_url,
        ingress(openai_url, token="the-token") as internal,
        fake_kube_api(url=external, ready_after=1, internal_url=internal) as (api, client),
    ):
        # the in-cluster client (load_incluster_config), pointed at the fake API
        monkeypatch.setattr("kubedistill.serve.kserve._api_client", lambda api_client=None: api_client or client)

        monkeypatch.delenv("KUBEDISTILL_STUDENT_TOKEN", raising=False)
        with pytest.raises(DeployError, match=r"needs a bearer token \(set \$KUBEDISTILL_STUDENT_TOKEN"):
            deploy_uri(settings, model_uri=S3)
        assert api.objects == {}  # refused before anything was applied

        monkeypatch.setenv("KUBEDISTILL_STUDENT_TOKEN", "wrong")
        with pytest.raises(DeployError, match="refused the request"):
            deploy_uri(settings, model_uri=S3)

        monkeypatch.setenv("KUBEDISTILL_STUDENT_TOKEN", "the-token")
        base = deploy_uri(settings, model_uri=S3)
        assert base == f"{internal}/openai/v1"
        stored = api.objects[("inferenceservices", "team-ml", "student")]
        assert stored["spec"]["predictor"]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert ("requestauthentications", "team-ml", "student-jwt") in api.objects
