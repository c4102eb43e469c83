"""Secrets never reach a file or MLflow: canaries planted in every channel a secret can come in by, a run of
the stages through the command line with a real SQLite MLflow store and its artifacts directory, then
every byte the run wrote (outputs, rejects, stats, request caches, reports, the MLflow database and
artifacts) and everything it printed is searched for them.

Channels:

* an API key read through ``api_key_env`` from a variable whose name does not look like a secret, which
  the teacher echoes inside its answers (``Authorization: Bearer ...``) and, in a 400, in its error body;
* a wrong API key (another teacher) that the teacher's 401 quotes (``Incorrect API key provided: ...``);
* a password inside the teacher's URL (``http://user:PASSWORD@host/v1``), which would become an MLflow param;
* an environment variable named like a credential (``HF_TOKEN``) whose value a dataset row carries in an
  extra column; a URL with a password in an unrelated variable (``DATABASE_URL``);
* a credential key in the stage config (``extra_body: {api_key: ...}``).

A control value that is not a secret must come through untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubedistill.cli import main
from kubedistill.core.records import Problem, write_records
from kubedistill.core.secrets import forget_all
from kubedistill.testing.openai_server import ServerScript, running_server

pytestmark = pytest.mark.integration

KEY = "kd-canary-apikey-1f2e3d"  # the good teacher's key, in a plainly named variable
WRONG_KEY = "kd-canary-wrongkey-4a5b6c"  # another teacher's (wrong) key, quoted back by a 401
URL_PASSWORD = "kd-canary-urlpass-7d8e9f"
HF_TOKEN = "kd-canary-hftoken-0a1b2c"
DB_PASSWORD = "kd-canary-dbpass-3c4d5e"
EXTRA_KEY = "kd-canary-extra-6f7a8b"
CANARIES = (KEY, WRONG_KEY, URL_PASSWORD, HF_TOKEN, DB_PASSWORD, EXTRA_KEY)
CONTROL = "kd-plain-words-not-a-secret"

ANSWERS = [
    (r"Classify", "Too terse.\n<difficulty>easy</difficulty>"),
    (r"REASONING VERBOSITY", "<score>3</score>"),
    (r"COGNITIVE DIFFICULTY", "<score>2</score>"),
]


@pytest.fixture
def clean_memory():  # type: ignore[no-untyped-def]
    forget_all()
    yield
    forget_all()


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_no_canary_reaches_a_file_mlflow_or_the_terminal(
    tmp_path: Path,
    tracking_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    clean_memory: None,
) -> None:
    monkeypatch.setenv("KD_TEACHER_CRED", KEY)  # the name says nothing: only api_key_env tells it is a key
    monkeypatch.setenv("KD_OTHER_CRED", WRONG_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@db.internal/app")
    inputs, run = tmp_path / "inputs", tmp_path / "run"  # what the test wrote / what the run wrote
    inputs.mkdir()
    run.mkdir()
    problems = [
        Problem(id=f"p{i}", problem=f"What is {i} + 1? ({CONTROL})", answer=str(i + 1), source="t") for i in range(5)
    ]
    problems[1].metadata["hf_token"] = HF_TOKEN  # a dataset that carries a token in an extra column
    write_records(inputs / "problems.jsonl", problems)
    # a rejected row carrying the token too (so it lands in a rejects file as it was)
    with open(inputs / "problems.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "bad", "problem": "", "source": "t", "note": f"Bearer {HF_TOKEN}"}) + "\n")
    collect_cfg = inputs / "collect.yaml"
    collect_cfg.write_text(yaml.safe_dump({"sources": [{"kind": "file", "path": str(inputs / "problems.jsonl")}]}))

    script = ServerScript(
        answers=ANSWERS,
        api_key=KEY,
        echo_key_in_errors=True,
        echo_auth_in_content=[r"What is 3 \+"],  # this CoT quotes the Authorization header
        bad_request=[r"follow every step"],  # the rewriter's requests: a 400 that quotes the header
    )
    codes: dict[str, int] = {}
    with running_server(script) as url:
        teacher_url = url.replace("http://", f"http://kdbot:{URL_PASSWORD}@")
        generate_cfg = inputs / "generate.yaml"
        generate_cfg.write_text(
            yaml.safe_dump(
                {
                    "teachers": [
                        {
                            "url": teacher_url,
                            "model": "scripted",
                            "name": "teacher",
                            "api_key_env": "KD_TEACHER_CRED",
                            "extra_body": {"api_key": EXTRA_KEY},
                        }
                    ],
                    "client": {"cache_dir": str(run / "cache"), "progress": False},
                }
            )
        )
        common = ["--tracking-uri", tracking_uri]
        judge = ["--judge-url", teacher_url, "--judge-model", "scripted", "--judge-api-key-env", "KD_TEACHER_CRED"]

        def cli(name: str, *args: str) -> None:
            codes[name] = main([*args, *common])

        cli("collect", "collect", "--config", str(collect_cfg), "--output", str(run / "problems.jsonl"))
        # a teacher with a wrong key: every request refused with a 401 that quotes the key (exit 3)
        cli(
            "generate-wrong-key",
            "generate", "--input", str(run / "problems.jsonl"), "--output", str(run / "wrong" / "samples.jsonl"),
            "--teacher-url", url, "--teacher-model", "scripted", "--teacher-api-key-env", "KD_OTHER_CRED",
            "--max-retries", "0", "--no-progress",
        )  # fmt: skip
        # a teacher that refuses every request with a 400 quoting the (right) key it was sent (exit 3)
        with running_server(ServerScript(api_key=KEY, echo_key_in_errors=True, bad_request=["."])) as url400:
            cli(
                "generate-400",
                "generate", "--input", str(run / "problems.jsonl"), "--output", str(run / "refused" / "samples.jsonl"),
                "--teacher-url", url400, "--teacher-model", "scripted", "--teacher-api-key-env", "KD_TEACHER_CRED",
                "--max-retries", "0", "--no-progress",
            )  # fmt: skip
        cli("generate", "generate", "--input", str(run / "problems.jsonl"), "--output", str(run / "samples.jsonl"),
            "--config", str(generate_cfg))  # fmt: skip
        cli("judge", "judge", "--input", str(run / "samples.jsonl"), "--problems", str(run / "problems.jsonl"),
            "--output", str(run / "judged.jsonl"), *judge, "--cache-dir", str(run / "judge-cache"))  # fmt: skip
        cli("rewrite", "rewrite", "--input", str(run / "judged.jsonl"), "--problems", str(run / "problems.jsonl"),
            "--output", str(run / "rewritten.jsonl"), *judge)  # fmt: skip
        cli("verify", "verify", "--input", str(run / "rewritten.jsonl"), "--problems", str(run / "problems.jsonl"),
            "--output", str(run / "verified.jsonl"), "--keep-all")  # fmt: skip
        cli("score", "score", "--input", str(run / "verified.jsonl"), "--problems", str(run / "problems.jsonl"),
            "--output", str(run / "scored.jsonl"), *judge)  # fmt: skip
        cli("select", "select", "--input", str(run / "scored.jsonl"), "--output", str(run / "selected.jsonl"))
        # an error line that quotes a URL with its password
        cli("bad-url", "verify", "--input", teacher_url, "--problems", str(run / "problems.jsonl"),
            "--output", str(run / "x.jsonl"))  # fmt: skip

    from kubedistill.report import write_report
    from kubedistill.tracking import TrackingConfig

    verify_stats = json.loads((run / "verified.stats.json").read_text())
    verify_metrics = {k: float(v) for k, v in verify_stats.items() if isinstance(v, int | float)}
    write_report(
        pipeline="canary",
        run_name="canary-run",
        report=str(run / "report.md"),
        report_html=str(run / "report.html"),
        summary=str(run / "summary.json"),
        tracking=TrackingConfig(tracking_uri=tracking_uri),
        verify_metrics=verify_metrics,
    )
    printed = capsys.readouterr()

    assert codes == {
        "collect": 0,
        "generate-wrong-key": 3,
        "generate-400": 3,
        "generate": 0,
        "judge": 0,
        "rewrite": 0,
        "verify": 0,
        "score": 0,
        "select": 0,
        "bad-url": 2,
    }, printed.err
    # the channels were live: the refusals and echoes happened, and were written down (masked)
    wrong = (run / "wrong" / "samples.rejects.jsonl").read_text()
    assert "request_failed" in wrong and "Incorrect API key provided: ***" in wrong
    assert "Authorization: Bearer ***" in (run / "samples.jsonl").read_text()
    refused = (run / "refused" / "samples.rejects.jsonl").read_text()
    assert "request_failed" in refused and "Authorization: Bearer ***)" in refused  # the 400 quoted the right key
    assert "Authorization: Bearer ***" in (run / "rewritten.stats.json").read_text()
    assert '"hf_token":"***"' in (run / "problems.jsonl").read_text()  # the collected row, token masked
    assert "Bearer ***" in (run / "problems.rejects.jsonl").read_text()  # the refused row, as it was but masked

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    artifacts = db.parent / "mlartifacts"
    written = [p for p in _files(tmp_path) if not p.is_relative_to(inputs)]
    assert db in written and any(p.is_relative_to(artifacts) for p in written)  # the MLflow store is searched
    assert any(p.name == "requests.sqlite" for p in written)  # and the request caches
    uploaded = [p.read_text() for p in written if p.is_relative_to(artifacts) and p.parent.name == "rejects"]
    # the 401 and the 400 that quoted a key went to MLflow as `rejects` artifacts, masked
    assert any("Incorrect API key provided: ***" in t for t in uploaded), uploaded
    assert any("request_failed" in t and "Authorization: Bearer ***" in t for t in uploaded), uploaded
    leaks = [(str(p.relative_to(tmp_path)), c) for p in written for c in CANARIES if c.encode() in p.read_bytes()]
    leaks += [("stderr", c) for c in CANARIES if c in printed.err] + [
        ("stdout", c) for c in CANARIES if c in printed.out
    ]
    assert leaks == []
    assert CONTROL in (run / "problems.jsonl").read_text()  # what is no secret comes through as it was

    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["kubedistill"], output_format="list")
    params = next(r.data.params for r in runs if r.data.params.get("teachers.0.name") == "teacher")
    assert params["teachers.0.url"].startswith("http://***@127.0.0.1:")  # logged, with the password masked
    assert params["teachers.0.api_key_env"] == "KD_TEACHER_CRED"  # the variable's name is no secret
    assert "teachers.0.extra_body.api_key" not in params  # a credential key is not logged at all
