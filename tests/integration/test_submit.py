"""`kubedistill submit` against a local stub of the KFP API (a real HTTP server on 127.0.0.1, driven by
the real kfp.Client): upload, new versions, experiments, runs; --dry-run contacts nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubedistill.core.errors import RunFailed, UserError
from kubedistill.core.secrets import mask
from kubedistill_kfp.submit import SubmitPlan, SubmitResult, submit
from kubedistill_kfp.testing.kfp_api_stub import running_kfp_api_stub

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEACHER = {
    "teacher_url": "http://qwq-32b-teacher.kubedistill.svc.cluster.local/openai/v1",
    "teacher_model": "qwq-32b",
    "teacher_api_key_env": "TEACHER_API_KEY",
}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kubedistill_kfp.compile import compile_all

    out = tmp_path_factory.mktemp("dist")
    compile_all(out)
    return out


def test_submit_against_local_kfp_api_stub_uploads_then_versions_and_runs(
    packages: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEACHER_API_KEY", "sk-never-sent-7f3a")
    package = packages / "slow_thinking.yaml"
    with running_kfp_api_stub(token="kfp-token-123") as stub:
        first = submit(
            ROOT / "examples/quickstart.yaml",
            package,
            host=stub.url,
            namespace="team-ml",
            experiment="distill",
            run_name="first",
            token="kfp-token-123",
            wait=True,
            **TEACHER,
        )
        assert isinstance(first, SubmitResult) and first.state == "SUCCEEDED"
        state = stub.state
        assert [p["display_name"] for p in state.pipelines.values()] == ["slow-thinking"]
        assert first.version_name.startswith("slow-thinking-") and len(first.version_name) == len("slow-thinking-") + 12
        [exp] = state.experiments.values()
        assert exp["display_name"] == "distill" and exp["namespace"] == "team-ml"
        run = state.runs[first.run_id]
        assert run["display_name"] == "first"
        assert run["pipeline_version_reference"] == {
            "pipeline_id": first.pipeline_id,
            "pipeline_version_id": first.version_id,
        }
        params = run["runtime_config"]["parameters"]
        declared = yaml.safe_load(package.read_text())["root"]["inputDefinitions"]["parameters"]
        assert set(params) <= set(declared) and "generate_config" in params
        assert params["generate_config"]["teachers"][0]["model"] == "qwq-32b"
        assert params["generate_config"]["teachers"][0]["api_key_env"] == "TEACHER_API_KEY"
        assert "sk-never-sent-7f3a" not in json.dumps(params)
        assert all(r["auth"] for r in state.requests)  # the bearer token went with every call

        # the same package again: the same content-named version is reused, one more run
        again = submit(
            ROOT / "examples/quickstart.yaml",
            package,
            host=stub.url,
            namespace="team-ml",
            experiment="distill",
            token="kfp-token-123",
            **TEACHER,
        )
        assert isinstance(again, SubmitResult)
        assert again.version_id == first.version_id and again.experiment_id == first.experiment_id
        assert any(a.startswith("reused version") for a in again.actions)
        assert len(state.runs) == 2 and len(state.experiments) == 1

        # a changed package: a new version of the same pipeline
        changed = packages / "slow_thinking_v2.yaml"
        changed.write_text(package.read_text().replace("DistilQwen2.5-R1", "DistilQwen2.5-R1 (v2)"))
        third = submit(
            ROOT / "examples/quickstart.yaml",
            changed,
            host=stub.url,
            namespace="team-ml",
            token="kfp-token-123",
            **TEACHER,
        )
        assert isinstance(third, SubmitResult)
        assert third.pipeline_id == first.pipeline_id and third.version_id != first.version_id
        assert any(a.startswith("uploaded version") for a in third.actions)


def test_submit_dry_run_prints_the_plan_with_secrets_masked_and_contacts_nothing(
    packages: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "kfp-secret-token-abc")
    recipe = yaml.safe_load((ROOT / "examples/quickstart.yaml").read_text())
    recipe["generate"]["teachers"] = [
        {"url": "https://alice:pa55word@api.example.com/v1", "model": "m", "extra_body": {"api_key": "sk-inline-1"}}
    ]
    with running_kfp_api_stub() as stub:
        with pytest.raises(UserError, match="hold a secret value"):  # a real submission refuses it
            submit(_recipe_file(packages, recipe), packages / "slow_thinking.yaml", host=stub.url, **TEACHER)
        assert stub.requests == []
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "kubedistill.cli",
                "submit",
                "--recipe",
                str(ROOT / "examples/quickstart.yaml"),
                "--package",
                str(packages / "slow_thinking.yaml"),
                "--host",
                f"https://bob:hunter22@{stub.url.removeprefix('http://')}",
                "--teacher-url",
                TEACHER["teacher_url"],
                "--teacher-model",
                "qwq-32b",
                "--dry-run",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert stub.requests == []  # the dry run touched nothing
    plan = json.loads(proc.stdout)
    assert plan["pipeline_name"] == "slow-thinking" and plan["version_name"].startswith("slow-thinking-")
    assert plan["host"].startswith("https://***@") and "hunter22" not in proc.stdout + proc.stderr
    assert "kfp-secret-token-abc" not in proc.stdout + proc.stderr
    assert "host:" in proc.stderr and "parameters:" in proc.stderr and "generate_config" in proc.stderr
    # masking for the printed plan
    masked = mask({"a": {"api_key": "sk-1", "api_key_env": "K", "url": "https://u:p@h/v1", "max_tokens": 8}})
    assert masked == {"a": {"api_key": "***", "api_key_env": "K", "url": "https://***@h/v1", "max_tokens": 8}}


def _recipe_file(tmp: Path, data: dict) -> Path:
    p = tmp / "recipe.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_submit_checks_package_and_parameters_before_sending_anything(packages: Path) -> None:
    with running_kfp_api_stub() as stub:
        with pytest.raises(UserError, match="is the pipeline 'adaptive-thinking', but the recipe runs slow-thinking"):
            submit(ROOT / "examples/quickstart.yaml", packages / "adaptive_thinking.yaml", host=stub.url, **TEACHER)
        stale = yaml.safe_load((packages / "slow_thinking.yaml").read_text())
        del stale["root"]["inputDefinitions"]["parameters"]["pairs_config"]
        (packages / "stale.yaml").write_text(yaml.safe_dump(stale))
        with pytest.raises(UserError, match="does not declare the parameter\\(s\\) pairs_config: recompile"):
            submit(ROOT / "examples/quickstart.yaml", packages / "stale.yaml", host=stub.url, **TEACHER)
        with pytest.raises(UserError, match="no such pipeline package"):
            submit(ROOT / "examples/quickstart.yaml", packages / "missing.yaml", host=stub.url, **TEACHER)
        from kubedistill.core.config import ConfigError

        with pytest.raises(ConfigError, match="no teacher endpoint"):  # a local-only recipe needs --teacher-url
            submit(ROOT / "examples/quickstart.yaml", packages / "slow_thinking.yaml", host=stub.url)
        assert stub.requests == []


def test_submit_reports_api_errors_and_failed_runs_in_one_line(packages: Path) -> None:
    recipe, package = ROOT / "examples/quickstart.yaml", packages / "slow_thinking.yaml"
    with running_kfp_api_stub(token="right") as stub, pytest.raises(UserError, match="HTTP 401: missing or bad"):
        submit(recipe, package, host=stub.url, token="wrong", **TEACHER)  # fails in one request, not 25 s
    with pytest.raises(UserError, match="is not reachable"):
        submit(recipe, package, host="http://127.0.0.1:9", **TEACHER)
    with running_kfp_api_stub(final_state="FAILED") as stub, pytest.raises(RunFailed, match="ended FAILED"):
        submit(recipe, package, host=stub.url, namespace="team-ml", wait=True, **TEACHER)


def test_submit_plan_is_returned_by_a_dry_run(packages: Path) -> None:
    plan = submit(
        ROOT / "examples/adaptive_thinking.yaml",
        packages / "adaptive_thinking.yaml",
        host="http://127.0.0.1:9",  # nothing listens there: a dry run never connects
        dry_run=True,
        run_name="r1",
        out=lambda line: None,
        **TEACHER,
    )
    assert isinstance(plan, SubmitPlan) and plan.run_name == "r1" and plan.pipeline_name == "adaptive-thinking"
    assert "score_config" in plan.arguments


def test_the_ci_example_calls_submit_with_flags_it_accepts() -> None:
    import shlex

    from kubedistill.cli import build_parser

    workflow = yaml.safe_load((ROOT / "examples/ci/github-actions.yaml").read_text())
    steps = workflow["jobs"]["submit"]["steps"]
    commands = [
        line
        for step in steps
        for line in step.get("run", "").replace("\\\n", " ").splitlines()
        if line.strip().startswith("kubedistill submit")
    ]
    assert len(commands) == 2
    parser = build_parser()
    for cmd in commands:
        argv = shlex.split(cmd.split("|")[0].replace("$WAIT", "--wait"))[1:]
        ns = parser.parse_args(argv)
        assert ns.recipe and ns.teacher_url and ns.teacher_model
