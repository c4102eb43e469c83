"""Model resolution, the tiny student, the transformers-backed server, the MLflow registry round trip."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kubedistill.chat import ChatClient, ChatRequest
from kubedistill.chat.config import ClientConfig, EndpointConfig
from kubedistill.core.errors import UserError
from kubedistill.models import resolve_model
from kubedistill.serve.local import LocalServer

pytestmark = pytest.mark.integration


def test_tiny_student_is_built_once_and_loads(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    again = resolve_model("tiny-qwen3")
    assert again == tiny_model and time.perf_counter() - t0 < 1.0  # cached, not rebuilt
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.model_type == "qwen3" and model.config.head_dim == 32
    text = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.decode(tok("<think>\n4\n</think> ünïcode ✓")["input_ids"]) == "<think>\n4\n</think> ünïcode ✓"


def test_model_references_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="does not exist"):
        resolve_model(str(tmp_path / "nope.dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no config\.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="Hugging Face hub"):
        resolve_model("some-org/some-model")


def test_transformers_server_answers_chat_completions(tiny_model: Path, tmp_path: Path) -> None:
    with LocalServer(tiny_model, served_name="student", backend="transformers", log_path=tmp_path / "s.log") as url:
        client = ChatClient([EndpointConfig(url=url, model="student")], ClientConfig(progress=False))
        client.check()
        reqs = [
            ChatRequest(
                endpoint="student",
                messages=[{"role": "user", "content": f"What is {i} + 1?"}],
                params={"max_tokens": 8, "temperature": 0.0},
            )
            for i in range(3)
        ]
        results = client.run(reqs)
    assert all(r.ok for r in results)
    # an untrained model rambles: it hits max_tokens, and says so
    assert {r.finish_reason for r in results} == {"length"} and all(r.completion_tokens == 8 for r in results)


def test_register_then_resolve_from_the_registry(tiny_model: Path, tracking_uri: str) -> None:
    from kubedistill.registry import register_student

    version, uri = register_student(
        tiny_model, "kd-test-student", aliases=["candidate"], experiment="t", metrics={"student.heldout.accuracy": 0.5}
    )
    assert uri == f"models:/kd-test-student/{version}"
    local = resolve_model("models:/kd-test-student@candidate")
    assert (local / "config.json").exists() and (local / "model.safetensors").exists()
    assert resolve_model(uri) == local  # same version, same cached download
    import mlflow

    mv = mlflow.MlflowClient().get_model_version_by_alias("kd-test-student", "candidate")
    run = mlflow.get_run(mv.run_id)
    assert run.data.metrics["student.heldout.accuracy"] == 0.5
