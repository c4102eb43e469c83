"""Re-runs redo only what changed (issue 18), through kfp.local on a tiny slow-thinking recipe:

* an unchanged re-run reuses every task, starts no teacher and reports the model it registered;
* ``sft.learning_rate`` changed: SFT and what follows run again, with no teacher started;
* ``judge.max_tokens`` changed: the judge and what follows run again, every answer still from the
  request cache (they all ended within both limits);

and, against a real HTTP teacher, the request cache's rule for token limits, and the local teacher's
broker, which starts a teacher only for a request no cache answers.

The recipe's local teacher (``teacher.local``) is a vLLM server in `make run`; here the scripted
OpenAI-compatible server (kubedistill/testing/openai_server.py, a real HTTP server in its own process)
stands in for it, started through the same broker when a task first needs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from kubedistill.chat import ChatClient, ChatRequest, ClientConfig, EndpointConfig
from kubedistill.testing.openai_server import ServerScript, read_log, running_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JUDGE = [(r"Classify the chain of thought", "Balanced.\n<difficulty>medium</difficulty>")]


# ----------------------------------------------------------------------------- the request cache


def test_an_answer_serves_every_token_limit_it_fits_and_a_cut_answer_only_its_own(tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    five_words = [(r"count", "one two three four five")]
    with running_server(ServerScript(answers=five_words, log_path=str(log))) as url:
        cfg = ClientConfig(cache_dir=tmp_path / "cache", progress=False)

        def ask(limit: int | None) -> Any:
            params = {"temperature": 0.0} | ({"max_tokens": limit} if limit is not None else {})
            client = ChatClient([EndpointConfig(url=url, model="scripted")], cfg)
            try:
                (res,) = client.run([ChatRequest("scripted", [{"role": "user", "content": "count"}], params)])
            finally:
                client.close()
            return res

        def asked() -> int:
            return len([r for r in read_log(log) if r["outcome"] == "ok"])

        cut = ask(3)
        assert (cut.content, cut.finish_reason, cut.cached, asked()) == ("one two three", "length", False, 1)
        assert ask(3).cached and asked() == 1  # the same limit: the same cut answer
        whole = ask(10)  # a cut answer does not serve another limit
        assert (whole.content, whole.finish_reason, whole.cached, asked()) == (
            "one two three four five",
            "stop",
            False,
            2,
        )
        for limit in (8, 5, None):  # an answer that ended by itself serves every limit it fits
            again = ask(limit)
            assert again.cached and again.content == whole.content and asked() == 2
        four = ask(4)  # 5 tokens do not fit in 4: asked again (and cut)
        assert (four.content, four.finish_reason, four.cached, asked()) == ("one two three four", "length", False, 3)


# ----------------------------------------------------------------------------- the local teacher


def test_a_local_teacher_starts_only_for_a_request_no_cache_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubedistill.chat import local as chat_local
    from kubedistill.serve.lazy import BROKER_ENV, LazyTeacher

    log = tmp_path / "server.jsonl"
    servers: list[Any] = []

    def start() -> str:
        cm = running_server(ServerScript(models=["teacher"], log_path=str(log)))
        servers.append(cm)
        return cm.__enter__()

    def stop() -> None:
        for cm in servers:
            cm.__exit__(None, None, None)

    endpoint = EndpointConfig(url="local://teacher", model="teacher", name="tiny-teacher")
    request = ChatRequest("tiny-teacher", [{"role": "user", "content": "What is 2 + 3?"}], {"temperature": 0.0})
    code = (
        "import sys; from kubedistill.chat import *; "
        "c = ChatClient([EndpointConfig(url='local://teacher', model='teacher', name='tiny-teacher')], "
        f"ClientConfig(cache_dir={str(tmp_path / 'cache')!r}, progress=False)); "
        "q = [{'role': 'user', 'content': 'What is 2 + 3?'}]; "
        "r = c.run([ChatRequest('tiny-teacher', q, {'temperature': 0.0})]); "
        "print(r[0].cached, r[0].ok)"
    )
    with LazyTeacher({"teacher": start}, {"teacher": stop}) as broker:
        monkeypatch.setenv(BROKER_ENV, broker)
        monkeypatch.setattr(chat_local, "_resolved", {})
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # a task (a child process, as under kfp.local) with a request no cache answers starts the teacher
        first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert first.stdout.split() == ["False", "True"], first.stderr[-2000:]
        # the next task with only cached requests does not even ask the broker: nothing starts
        second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert second.stdout.split() == ["True", "True"], second.stderr[-2000:]
        assert len(servers) == 1 and len(read_log(log)) == 1
        # and a client in this process finds the teacher the broker already started
        client = ChatClient([endpoint], ClientConfig(progress=False))
        assert client.run([request])[0].ok and len(servers) == 1
        client.close()
    # outside a local run a local:// teacher is one clear line
    monkeypatch.delenv(BROKER_ENV)
    monkeypatch.setattr(chat_local, "_resolved", {})
    from kubedistill.core.errors import UserError

    with pytest.raises(UserError, match="kubedistill run --local"):
        _ = endpoint.request_url


def test_a_released_teacher_starts_again_for_the_next_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before a training or evaluation task a local run releases its teacher (an idle vLLM CPU worker
    keeps a core busy); a later teacher-bound task starts it again."""
    from kubedistill.serve.lazy import LazyTeacher
    from kubedistill_kfp.local import _release_for

    events: list[str] = []

    def start() -> str:
        events.append("start")
        return f"http://127.0.0.1:{8000 + len(events)}/v1"

    broker = LazyTeacher({"teacher": start}, {"teacher": lambda: events.append("stop")})
    _release_for(broker, "sft-op")  # nothing running: nothing to stop
    assert broker.ensure("teacher") == "http://127.0.0.1:8001/v1"
    _release_for(broker, "judge-op")  # teacher-bound: keeps it
    _release_for(broker, "merge-shards-op-2")
    assert events == ["start"]
    _release_for(broker, "evaluate-op")  # a task that wants the cores
    assert events == ["start", "stop"]
    assert broker.ensure("teacher") == "http://127.0.0.1:8003/v1" and events == ["start", "stop", "start"]
    _release_for(broker, "dpo-op-2")
    broker.stop()  # the run's end stops nothing twice
    assert events == ["start", "stop", "start", "stop"] and broker.started == ["teacher", "teacher"]


def test_a_teacher_that_cannot_start_fails_every_task_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubedistill.chat import local as chat_local
    from kubedistill.core.errors import BadInputError
    from kubedistill.serve.lazy import BROKER_ENV, LazyTeacher

    calls = []

    def start() -> str:
        calls.append(1)
        raise RuntimeError("vLLM exited: out of memory (log: teacher-server.log)")

    with LazyTeacher({"teacher": start}) as broker:
        monkeypatch.setenv(BROKER_ENV, broker)
        for _ in range(2):
            monkeypatch.setattr(chat_local, "_resolved", {})
            with pytest.raises(BadInputError, match="could not be started: RuntimeError: vLLM exited: out of memory"):
                chat_local.local_teacher_url("local://teacher")
        monkeypatch.setattr(chat_local, "_resolved", {})
        with pytest.raises(BadInputError, match="no local teacher 'other'"):
            chat_local.local_teacher_url("local://other")
    assert calls == [1]  # a failed start is not retried by every task


# ----------------------------------------------------------------------------- kfp.local re-runs


class ScriptedTeacherServer:
    """Stands in for kubedistill.serve.local.LocalServer (vLLM): the scripted server, a real HTTP
    server in its own process, serving the recipe's ``served_name``."""

    starts: ClassVar[list[str]] = []
    log_path: ClassVar[str] = ""

    def __init__(self, model_dir: Any, *, served_name: str, **_: Any) -> None:
        self.script = ServerScript(models=[served_name], answers=JUDGE, log_path=self.log_path)
        self._cm: Any = None

    def start(self) -> str:
        ScriptedTeacherServer.starts.append(self.script.models[0])
        self._cm = running_server(self.script)
        return self._cm.__enter__()

    def stop(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None


def _recipe(tmp_path: Path) -> Path:
    recipe = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    recipe["name"] = "rerun-test"
    recipe["teacher"] = {"local": {"model": "tiny-qwen3", "backend": "transformers", "served_name": "teacher"}}
    recipe["collect"]["sources"][0]["tasks"] = {"chain_sum": 16}
    recipe["collect"]["holdout"] = {"fraction": 0.25, "max_items": 3}
    recipe["generate"]["num_generations"] = 1
    recipe["generate"]["temperatures"] = [0.6]
    recipe["sft"]["curriculum"] = [{"name": "medium", "difficulties": ["medium"], "epochs": 1}]
    recipe["dpo"]["epochs"] = 1
    recipe["evaluate"]["max_tokens"] = 8
    recipe["registry"]["name"] = "kd-rerun-test"
    recipe["registry"]["gate"] = {"metric": "student.heldout.n_problems", "min": 1}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_reruns_reuse_every_task_and_redo_only_what_a_changed_knob_touches(
    tmp_path: Path, tracking_uri: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubedistill.serve import local as serve_local
    from kubedistill_kfp.local import run_local

    monkeypatch.chdir(ROOT)
    log = tmp_path / "teacher.jsonl"
    monkeypatch.setattr(ScriptedTeacherServer, "starts", [])
    monkeypatch.setattr(ScriptedTeacherServer, "log_path", str(log))
    monkeypatch.setattr(serve_local, "LocalServer", ScriptedTeacherServer)
    recipe, out = _recipe(tmp_path), tmp_path / "out"

    def asked() -> int:
        return len([r for r in read_log(log) if r["outcome"] == "ok"])

    first = run_local(recipe, workdir=out)
    assert first.teacher_started and ScriptedTeacherServer.starts == ["teacher"]
    assert first.model_uri == "models:/kd-rerun-test/1" and not first.reused
    everything = set(first.executed)
    assert {"collect-shard-op", "collect-merge-op", "generate-op", "judge-op", "rewrite-op", "verify-op"} <= everything
    assert {"pairs-op", "sft-op", "dpo-op"} <= everything
    assert {"evaluate-op", "register-op", "promote-op", "report-op"} <= everything
    n_asked = asked()
    assert n_asked > 0 and (out / "rerun-test" / "request-cache" / "judge").is_dir()

    # nothing changed: every task from kfp.local's cache but the preflight (it checks the run as it is now;
    # its outputs are the same values, so every task after it is answered by the cache), no teacher, the same
    # registered model
    again = run_local(recipe, workdir=out)
    assert again.executed == ["preflight-op"] and set(again.reused) == everything - {"preflight-op"}
    assert again.teacher_started is False and ScriptedTeacherServer.starts == ["teacher"]
    assert again.model_uri == first.model_uri and asked() == n_asked

    # a training knob: SFT and what follows, no teacher
    lr = run_local(recipe, workdir=out, overrides={"sft.learning_rate": 0.001})
    assert set(lr.executed) == {
        *("preflight-op", "sft-op", "dpo-op", "evaluate-op", "register-op", "promote-op", "report-op")
    }
    assert lr.teacher_started is False and asked() == n_asked
    assert lr.model_uri == "models:/kd-rerun-test/2"

    # the judge's token limit: the judge and what follows; its answers all ended within both limits, so
    # every one comes from the request cache and the teacher is not started
    judged = run_local(recipe, workdir=out, overrides={"judge.max_tokens": 120})
    assert {"judge-op", "rewrite-op", "verify-op", "sft-op", "register-op"} <= set(judged.executed)
    assert not {"collect-shard-op", "collect-merge-op", "generate-op"} & set(judged.executed)
    assert judged.teacher_started is False and asked() == n_asked
