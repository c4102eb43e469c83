"""The run's preflight (issue 15), the first task of every pipeline: against real local servers — the
scripted OpenAI server as teacher and judge (with an API key), a real MLflow store (SQLite), a Kubernetes API
stub for the CRD checks (a local HTTP server answering the list routes the kubernetes client calls, as the API
server does: 200 / 404 for a CRD not installed / 403 for RBAC) — every failure named in one line, in seconds;
and under kfp.local, a run whose teacher does not answer stops at its first task, before collect."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from kubedistill.chat.config import EndpointConfig
from kubedistill.cot.generate import GenerateConfig
from kubedistill.cot.judge import JudgeConfig
from kubedistill.preflight import Crd, PreflightFailed, run_preflight
from kubedistill.testing.openai_server import ServerScript, free_port, running_server
from kubedistill.tracking import TrackingConfig
from kubedistill.train.sft import SFTConfig

pytestmark = pytest.mark.integration

ISVC = Crd("serving.kserve.io", "v1beta1", "inferenceservices", "the deploy step")
TRAINJOB = Crd("trainer.kubeflow.org", "v1alpha1", "trainjobs", "multi-node training")
RUNTIMES = Crd("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes", "multi-node training")


class _KubeStub(BaseHTTPRequestHandler):
    """``GET /apis/{group}/{version}/namespaces/{ns}/{plural}``: 200 with an empty list for an installed
    resource, 404 (a Status, as the API server answers for a route no CRD serves), 403 where RBAC says no."""

    installed: ClassVar[set[str]] = set()
    forbidden: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        plural = parts[5] if len(parts) >= 6 and parts[0] == "apis" and parts[3] == "namespaces" else ""
        key = f"{parts[1]}/{plural}" if plural else ""
        if key in self.forbidden:
            code, body = 403, {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403}
        elif key in self.installed:
            code, body = 200, {"apiVersion": f"{parts[1]}/{parts[2]}", "kind": "List", "items": []}
        else:
            code, body = 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def kube_api(installed: set[str], forbidden: set[str] = frozenset()) -> Iterator[object]:
    from kubernetes import client

    handler = type("Stub", (_KubeStub,), {"installed": set(installed), "forbidden": set(forbidden)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield client.ApiClient(cfg)
    finally:
        server.shutdown()


def _sections(url: str, *, key_env: str | None = "TEACHER_KEY", model: str = "teacher") -> dict:
    teacher = EndpointConfig(url=url, model=model, api_key_env=key_env)
    judge = EndpointConfig(url=url, model="judge", api_key_env=key_env)
    return {
        "generate_config": GenerateConfig(teachers=[teacher]),
        "judge_config": JudgeConfig(judge=judge),
        "sft_config": SFTConfig(base_model="tiny-qwen3"),
        "tracking": TrackingConfig(),
    }


def test_a_good_run_passes_every_check(tracking_uri: str) -> None:
    script = ServerScript(models=["teacher", "judge"], api_key="s3cret")
    with running_server(script) as url, kube_api({"serving.kserve.io/inferenceservices"}) as api:
        lines = run_preflight(
            _sections(url),
            tracking_uri=tracking_uri,
            environ={"TEACHER_KEY": "s3cret"},
            crds=[ISVC],
            namespace="team-ml",
            api_client=api,
        )
    assert f"generate_config.teachers.0: {url} serves teacher" in lines
    assert f"judge_config.judge: {url} serves judge" in lines
    assert any(line.startswith("tracking: sqlite:") for line in lines)
    assert "inferenceservices.serving.kserve.io installed" in lines


def test_every_problem_is_named_at_once_in_seconds(tmp_path: Path) -> None:
    dead = free_port()
    script = ServerScript(models=["teacher"], api_key="s3cret")
    env = {
        "TEACHER_KEY": "wrong",
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nobody listens; no S3 credentials
    }
    installed = {"trainer.kubeflow.org/trainjobs"}
    forbidden = {"trainer.kubeflow.org/clustertrainingruntimes"}
    with running_server(script) as url, kube_api(installed, forbidden) as api:
        sections = _sections(url)
        sections["judge_config"] = JudgeConfig(judge=EndpointConfig(url=url, model="judge", api_key_env="JUDGE_KEY"))
        sections["score_config"] = JudgeConfig(judge=EndpointConfig(url=f"http://127.0.0.1:{dead}/v1", model="x"))
        sections["sft_config"] = SFTConfig(base_model="tiny-qwen")  # a typo of the alias
        start = time.monotonic()
        with pytest.raises(PreflightFailed) as e:
            run_preflight(
                sections,
                tracking_uri=f"http://127.0.0.1:{dead}",
                environ=env,
                crds=[ISVC, TRAINJOB, RUNTIMES],
                namespace="team-ml",
                api_client=api,
                timeout_s=3,
            )
        elapsed = time.monotonic() - start
    msg = str(e.value)
    assert "\n" not in msg
    assert f"generate_config.teachers.0: {url} refused the key (HTTP 401): check $TEACHER_KEY" in msg
    assert "judge_config.judge: $JUDGE_KEY (its API key) is not set in the pod" in msg
    assert f"score_config.judge: http://127.0.0.1:{dead}/v1 does not answer (" in msg
    assert "sft_config: base_model: 'tiny-qwen'" in msg and "did you mean 'tiny-qwen3'" in msg
    assert f"tracking: the MLflow store http://127.0.0.1:{dead} cannot be used" in msg
    assert "object store: $AWS_ACCESS_KEY_ID is not set" in msg and "$AWS_SECRET_ACCESS_KEY" in msg
    assert "object store: http://127.0.0.1:" in msg and "does not answer" in msg
    assert "inferenceservices.serving.kserve.io/v1beta1 is not installed (the deploy step)" in msg
    assert "may not use clustertrainingruntimes.trainer.kubeflow.org in team-ml" in msg
    assert "trainjobs" not in msg  # installed and allowed
    assert "s3cret" not in msg and "wrong" not in msg  # no key in the message
    assert elapsed < 20, elapsed


def test_a_teacher_that_serves_another_model_is_named(tracking_uri: str) -> None:
    with (
        running_server(ServerScript(models=["qwq-32b"])) as url,
        pytest.raises(PreflightFailed, match=r"serves \['qwq-32b'\], not model 'teacher'"),
    ):
        run_preflight(_sections(url, key_env=None), tracking_uri=tracking_uri, environ={})


def test_outside_a_cluster_crds_are_not_asked_for(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with running_server(ServerScript(models=["teacher", "judge"])) as url:
        lines = run_preflight(_sections(url, key_env=None), tracking_uri=tracking_uri, environ={}, crds=[ISVC])
    assert "inferenceservices.serving.kserve.io: not checked (no Kubernetes API here)" in lines


def test_under_kfp_local_an_unreachable_object_store_stops_the_run_at_its_first_task(
    tmp_path: Path, tracking_uri: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `run --local` checks before kfp.local starts (the recipe, the teachers) passes; the object store
    the pods would write to does not answer: the preflight task fails, and no stage ran."""
    from kubedistill.core.errors import RunFailed
    from kubedistill_kfp.local import run_local

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    store = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", store)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    recipe = yaml.safe_load(Path("examples/adaptive_thinking.yaml").read_text())
    with running_server(ServerScript(models=["scripted"])) as url:
        recipe["teacher"] = {"endpoints": [{"url": url, "model": "scripted"}]}
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        start = time.monotonic()
        with pytest.raises(RunFailed) as e:
            run_local(path, workdir=tmp_path / "out")
        elapsed = time.monotonic() - start
    msg = str(e.value)
    assert "failed at task preflight-op: PreflightFailed" in msg, msg
    assert f"object store: {store} does not answer" in msg and "$AWS_ACCESS_KEY_ID is not set" in msg
    assert not list((tmp_path / "out").rglob("problems*"))  # collect never ran
    assert elapsed < 120, elapsed
