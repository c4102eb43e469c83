"""`kubedistill submit` against a local stub of the KFP API (a real HTTP server on 127.0.0.1, driven by
the real kfp.Client; a stand-in for a cluster's KFP server, which cannot run here): upload, new versions,
experiments, runs; namespaces as multi-user KFP has them; --dry-run contacts nothing."""

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
    compile_all(out, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def cluster_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipelines compiled with examples/cluster.yaml: two YAML documents (pipeline and platform spec)."""
    from kubedistill_kfp.compile import compile_all

    out = tmp_path_factory.mktemp("dist-cluster")
    compile_all(out, names=["slow_thinking"], cluster_config=ROOT / "examples/cluster.yaml")
    return out


def test_two_submits_in_a_row_succeed_on_multi_user_kfp_stub(cluster_packages: Path) -> None:
    import kfp

    package = cluster_packages / "slow_thinking.yaml"
    assert len(list(yaml.safe_load_all(package.read_text()))) == 2  # pipeline spec + platform spec
    kwargs = {"host": None, "namespace": "team-ml", "experiment": "distill", "token": "t", **TEACHER}
    with running_kfp_api_stub(token="t", multi_user=True) as stub:
        kwargs["host"] = stub.url
        first = submit(ROOT / "examples/quickstart.yaml", package, run_name="first", wait=True, **kwargs)
        second = submit(ROOT / "examples/quickstart.yaml", package, run_name="second", wait=True, **kwargs)
        assert isinstance(first, SubmitResult) and isinstance(second, SubmitResult)
        assert first.state == second.state == "SUCCEEDED"
        assert second.pipeline_id == first.pipeline_id and second.version_id == first.version_id
        assert any(a.startswith("reused version") for a in second.actions)
        [pipeline] = stub.state.pipelines.values()
        assert pipeline["namespace"] == "team-ml" and len(stub.state.runs) == 2
        assert {r["namespace"] for r in stub.state.runs.values()} == {"team-ml"}
        uploads = [r for r in stub.requests if r["path"].endswith("/pipelines/upload")]
        assert len(uploads) == 1 and uploads[0]["query"]["namespace"] == "team-ml"
        # what the earlier submit did, and why it failed every second time: kfp.Client's own lookup lists
        # without a namespace, does not see the namespaced pipeline, and the re-upload is refused (409)
        client = kfp.Client(host=stub.url, namespace="team-ml", existing_token="t")
        assert client.get_pipeline_id("slow-thinking") is None
        with pytest.raises(Exception) as e:
            client.upload_pipeline(str(package), pipeline_name="slow-thinking", namespace="team-ml")
        assert getattr(e.value, "status", None) == 409


def test_the_stub_refuses_what_a_kfp_server_refuses(cluster_packages: Path, tmp_path: Path) -> None:
    import kfp

    package = cluster_packages / "slow_thinking.yaml"
    spec, platform = yaml.safe_load_all(package.read_text())

    def variant(name: str, spec_doc: dict, platform_doc: dict | None = platform) -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump_all([spec_doc] + ([platform_doc] if platform_doc else [])))
        return str(path)

    with running_kfp_api_stub(multi_user=True) as stub:
        client = kfp.Client(host=stub.url, namespace="team-ml")

        def refused(path: str, status: int, message: str) -> None:
            with pytest.raises(Exception) as e:
                client.upload_pipeline(path, pipeline_name=f"p-{len(stub.requests)}", namespace="team-ml")
            assert getattr(e.value, "status", None) == status and message in str(getattr(e.value, "body", ""))

        refused(variant("bad-name.yaml", {**spec, "pipelineInfo": {"name": "My_Pipeline"}}), 400, "lowercase")
        refused(variant("unknown.yaml", {**spec, "surprise": 1}), 400, "invalid v2 pipeline spec")
        executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        typo = {
            "platforms": {
                "kubernetes": {"deploymentSpec": {"executors": {**executors, "x": {"pvcMount": [{"bad": 1}]}}}}
            }
        }
        ok = client.upload_pipeline(variant("typo.yaml", spec, typo), pipeline_name="typo", namespace="team-ml")
        [version] = client.list_pipeline_versions(ok.pipeline_id).pipeline_versions
        exp = client.create_experiment("e", namespace="team-ml")
        run = client.run_pipeline(
            exp.experiment_id, "r", pipeline_id=ok.pipeline_id, version_id=version.pipeline_version_id
        )
        assert client.get_run(run.run_id).state == "FAILED"  # the driver refuses the task's settings
        # a run's values must have the JSON kind of their declared types (validatePipelineJobInputs)
        good = client.upload_pipeline(variant("good.yaml", spec), pipeline_name="good", namespace="team-ml")
        [good_version] = client.list_pipeline_versions(good.pipeline_id).pipeline_versions
        declared = spec["root"]["inputDefinitions"]["parameters"]

        def of_type(kind: str) -> str:
            return next(n for n, d in declared.items() if d["parameterType"] == kind)

        ids = {"pipeline_id": good.pipeline_id, "version_id": good_version.pipeline_version_id}
        for name, value, kind in (
            (of_type("STRUCT"), json.dumps({"max_problems": 8}), "struct"),  # a JSON string is not an object
            (of_type("STRUCT"), [], "struct"),
            (of_type("BOOLEAN"), "true", "bool"),
            (of_type("NUMBER_INTEGER"), True, "double or integer"),  # a JSON true is no number
            (of_type("NUMBER_INTEGER"), "4", "double or integer"),
            (of_type("STRING"), 7, "string"),
        ):
            with pytest.raises(Exception) as e:
                client.run_pipeline(exp.experiment_id, f"typed-{name}", params={name: value}, **ids)
            assert getattr(e.value, "status", None) == 400, (name, value)
            assert f"input parameter {name} requires type {kind}" in str(getattr(e.value, "body", ""))
        typed = {of_type("STRUCT"): {"max_problems": 8}, of_type("BOOLEAN"): False, of_type("NUMBER_INTEGER"): 4}
        run = client.run_pipeline(exp.experiment_id, "typed", params={**typed, of_type("STRING"): "x"}, **ids)
        assert client.get_run(run.run_id).state == "SUCCEEDED"
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"{stub.url}/apis/v2beta1/experiments", data=b'{"display_name": "x"}')
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)  # multi-user KFP: an experiment needs a namespace
        assert e.value.code == 400


@pytest.mark.parametrize("version", ["2.15", "2.16"])
def test_a_pipeline_compiled_for_the_server_runs_there_and_one_compiled_for_a_newer_one_fails(
    tmp_path: Path, cluster_packages: Path, version: str
) -> None:
    from kubedistill_kfp.compile import compile_all

    data = yaml.safe_load((ROOT / "examples/cluster.yaml").read_text())
    data["kfp_version"] = version
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data))
    [package] = compile_all(tmp_path / "dist", names=["slow_thinking"], cluster_config=tmp_path / "cluster.yaml")
    kwargs = {"namespace": "team-ml", "experiment": "distill", "wait": True, **TEACHER}
    with running_kfp_api_stub(multi_user=True, server_version=version) as stub:
        ok = submit(ROOT / "examples/quickstart.yaml", package, host=stub.url, **kwargs)
        assert isinstance(ok, SubmitResult) and ok.state == "SUCCEEDED"
        newer = cluster_packages / "slow_thinking.yaml"  # compiled for kfp_version 2.16 (securityContext)
        if version == "2.15":
            with pytest.raises(RunFailed, match="ended FAILED"):
                submit(ROOT / "examples/quickstart.yaml", newer, host=stub.url, **kwargs)
        [failed] = [r for r in stub.state.runs.values() if r.get("error")] or [None]
        assert (failed is not None) == (version == "2.15")
        if failed is not None:
            assert "securityContext" in failed["error"]["message"]


def test_names_kfp_refuses_are_refused_before_anything_is_sent(packages: Path) -> None:
    with running_kfp_api_stub() as stub:
        for flags, message in (
            ({"pipeline_name": "My_Pipeline"}, "pipeline name 'My_Pipeline' is not one KFP accepts"),
            ({"version": "V1"}, "version name 'V1' is not one KFP accepts"),
            ({"namespace": "Team_ML"}, "namespace 'Team_ML'"),
            ({"experiment": "x" * 129}, "experiment name"),
        ):
            for dry_run in (True, False):
                with pytest.raises(UserError, match=message):
                    submit(
                        ROOT / "examples/quickstart.yaml",
                        packages / "slow_thinking.yaml",
                        host=stub.url,
                        dry_run=dry_run,
                        out=lambda _: None,
                        **flags,
                        **TEACHER,
                    )
        renamed = yaml.safe_load((packages / "slow_thinking.yaml").read_text())
        renamed["pipelineInfo"]["name"] = "My_Pipeline"
        from kubedistill_kfp.submit import check_names

        with pytest.raises(UserError, match="compiled pipeline is named 'My_Pipeline'"):
            check_names(
                spec_name="My_Pipeline",
                pipeline_name="p",
                version_name="v",
                experiment="e",
                run_name="r",
                namespace=None,
            )
        assert stub.requests == []


def test_submit_against_local_kfp_api_stub_uploads_then_versions_and_runs(
    packages: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEACHER_API_KEY", "sk-never-sent-7f3a")
    package = packages / "slow_thinking.yaml"
    with running_kfp_api_stub(token="kfp-token-123", multi_user=True) as stub:
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
    # compiled without --cluster-config: said before anything is sent (no PVC, no GPUs, no secrets)
    (note,) = plan.notes
    assert "compiled without cluster settings" in note and "no GPU" in note and f"note: {note}" in plan.describe()


def test_a_package_compiled_with_cluster_settings_has_no_note(cluster_packages: Path) -> None:
    plan = submit(
        ROOT / "examples/cluster_slow_thinking.yaml",
        cluster_packages / "slow_thinking.yaml",
        host="http://127.0.0.1:9",
        dry_run=True,
        out=lambda line: None,
        **TEACHER,
    )
    assert plan.notes == [] and "note:" not in plan.describe()


def _run_lines(step: dict) -> list[str]:
    return [line.strip() for line in step.get("run", "").replace("\\\n", " ").splitlines() if line.strip()]


def test_the_ci_example_builds_every_image_by_digest_and_compiles_and_submits_with_flags_that_exist() -> None:
    import shlex

    from kubedistill.cli import build_parser
    from kubedistill.recipes import load_recipe

    workflow = yaml.safe_load((ROOT / "examples/ci/github-actions.yaml").read_text())
    images = sorted(p.parent.name for p in (ROOT / "images").glob("*/Dockerfile"))
    # every image the repository has is built and pushed, and its digest is an output of the job
    builds = {
        s["id"]: s["with"] for s in workflow["jobs"]["images"]["steps"] if "build-push-action" in s.get("uses", "")
    }
    assert sorted(builds) == images
    for name, build in builds.items():
        assert build["file"] == f"images/{name}/Dockerfile" and build["push"] is True
        assert workflow["jobs"]["images"]["outputs"][name] == f"${{{{ steps.{name}.outputs.digest }}}}"
    submit_job = workflow["jobs"]["submit"]
    parser = build_parser()
    lines = [line for step in submit_job["steps"] for line in _run_lines(step)]
    compiles = [shlex.split(line) for line in lines if line.startswith("kubedistill compile")]
    assert len(compiles) == 2
    pinned = parser.parse_args(compiles[0][1:])  # the pipelines run on exactly the digests just pushed
    assert sorted(ref.split("=")[0] for ref in pinned.image) == images
    for ref in pinned.image:
        name = ref.split("=")[0]
        assert ref.endswith(f"kubedistill-{name}@${name.upper()}_DIGEST")
        assert submit_job["env"][f"{name.upper()}_DIGEST"] == f"${{{{ needs.images.outputs.{name} }}}}"
    assert all(str(parser.parse_args(c[1:]).cluster_config) == "examples/cluster.yaml" for c in compiles)
    # the manifests are pinned to the same base image, in their one setting
    edits = [shlex.split(line) for line in lines if line.startswith("kustomize edit set image")]
    assert [e[4] for e in edits] == ["kubedistill-base=$REGISTRY/kubedistill-base@$BASE_DIGEST"]
    assert any("cd manifests/images" in line for line in lines)
    # submit: flags it accepts, and a recipe that exists and names cluster teachers
    commands = [line for line in lines if line.startswith("kubedistill submit")]
    assert len(commands) == 2
    for cmd in commands:
        ns = parser.parse_args(shlex.split(cmd.split("|")[0].replace("$WAIT", "--wait"))[1:])
        assert ns.recipe and ns.namespace
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on` as true
    recipe = triggers["workflow_dispatch"]["inputs"]["recipe"]["default"]
    assert recipe in workflow["env"]["RECIPE"]
    assert load_recipe(ROOT / recipe, here=False).teacher.endpoints  # a cluster recipe, not the 2-core quickstart


def test_the_stub_names_an_unnamed_upload_after_its_file_as_the_server_does(cluster_packages: Path) -> None:
    import urllib.error
    import urllib.request

    raw = (cluster_packages / "slow_thinking.yaml").read_bytes()

    def upload(path: str, filename: str) -> dict:
        boundary = "kubedistill-test-boundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="uploadfile"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + raw
            + f"\r\n--{boundary}--\r\n".encode()
        )
        req = urllib.request.Request(
            f"{stub.url}/apis/v2beta1/pipelines/{path}",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    with running_kfp_api_stub(multi_user=True) as stub:
        pipeline = upload("upload?namespace=team-ml", "my-package.yaml")
        assert pipeline["display_name"] == "my-package.yaml" and pipeline["namespace"] == "team-ml"
        version = upload(f"upload_version?pipelineid={pipeline['pipeline_id']}", "second.yaml")
        assert version["display_name"] == "second.yaml"
        with pytest.raises(urllib.error.HTTPError) as e:  # the same file name again: the same version name
            upload(f"upload_version?pipelineid={pipeline['pipeline_id']}", "second.yaml")
        assert e.value.code == 409
        with pytest.raises(urllib.error.HTTPError) as e:
            upload("upload?namespace=team-ml", "")
        assert e.value.code == 400 and b"name cannot be empty" in e.value.read()
