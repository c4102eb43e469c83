"""Rendering a student's InferenceService (Hugging Face runtime, vLLM backend, OpenAI routes) and its Istio
policies; every rendered InferenceService is checked field by field against the kserve SDK's models."""

from __future__ import annotations

import copy

import pytest
import yaml

from kubedistill.core.config import ConfigError
from kubedistill.serve.kserve import openai_base_url, render, to_yaml, validate_inference_service

S3 = "s3://mlflow/1/models/m-0123/artifacts/artifacts/model"


def test_render_student_on_the_hugging_face_runtime_with_vllm_and_openai_routes() -> None:
    [isvc] = render(S3, name="student", namespace="ml", max_model_len=4096)
    typed = validate_inference_service(isvc)
    assert type(typed).__name__ == "V1beta1InferenceService"
    pred = isvc["spec"]["predictor"]
    model = pred["model"]
    assert model["modelFormat"] == {"name": "huggingface"} and model["storageUri"] == S3
    assert model["args"][:3] == ["--model_name=student", "--backend=vllm", "--max_model_len=4096"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # the storage initializer copies the weights into the pod: the copy's disk is requested
    assert model["resources"]["requests"]["ephemeral-storage"] == "64Gi"
    assert (pred["minReplicas"], pred["maxReplicas"], pred["scaleMetric"]) == (1, 2, "concurrency")
    assert pred["serviceAccountName"] == "kubedistill-student"
    assert pred["volumes"][0]["emptyDir"]["medium"] == "Memory"
    assert model["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert "KSERVE_OPENAI_ROUTE_PREFIX" not in {e["name"] for e in model["env"]}
    assert openai_base_url("http://student.ml.example.com") == "http://student.ml.example.com/openai/v1"
    assert openai_base_url("http://h/", "") == "http://h/v1"
    assert yaml.safe_load(to_yaml([isvc])) == isvc


def test_render_multi_gpu_student_uses_tensor_parallelism_and_placement() -> None:
    [isvc] = render(
        S3,
        name="big",
        gpus=4,
        served_name="distilqwen-7b",
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        vllm_args=["--enable-prefix-caching"],
        openai_prefix="",
        deployment_mode="RawDeployment",
    )
    validate_inference_service(isvc)
    model = isvc["spec"]["predictor"]["model"]
    assert "--tensor-parallel-size=4" in model["args"] and model["args"][-1] == "--enable-prefix-caching"
    assert model["args"][0] == "--model_name=distilqwen-7b"
    assert {"name": "KSERVE_OPENAI_ROUTE_PREFIX", "value": ""} in model["env"]
    assert isvc["spec"]["predictor"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_render_jwt_auth_adds_request_authentication_and_an_allow_policy() -> None:
    docs = render(
        S3,
        name="student",
        namespace="ml",
        auth={"mode": "jwt", "issuer": "https://id.example.com", "jwks_uri": "https://id.example.com/jwks"},
    )
    kinds = [d["kind"] for d in docs]
    assert kinds == ["InferenceService", "RequestAuthentication", "AuthorizationPolicy"]
    isvc, ra, ap = docs
    assert isvc["spec"]["predictor"]["annotations"] == {"sidecar.istio.io/inject": "true"}
    selector = {"matchLabels": {"serving.kserve.io/inferenceservice": "student"}}
    assert ra["spec"]["selector"] == selector and ap["spec"]["selector"] == selector
    assert ra["spec"]["jwtRules"][0]["issuer"] == "https://id.example.com"
    assert ap["spec"]["action"] == "ALLOW"
    assert ap["spec"]["rules"][0] == {"from": [{"source": {"requestPrincipals": ["https://id.example.com/*"]}}]}
    assert ap["spec"]["rules"][1]["from"] == [{"source": {"namespaces": ["knative-serving"]}}]
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)

    principals = render(
        S3, auth={"mode": "principals", "principals": ["cluster.local/ns/apps/sa/chat"], "allow_knative_probes": False}
    )
    assert [d["kind"] for d in principals] == ["InferenceService", "AuthorizationPolicy"]
    assert principals[1]["spec"]["rules"] == [{"from": [{"source": {"principals": ["cluster.local/ns/apps/sa/chat"]}}]}]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "Student_1"}, "DNS label"),
        ({"gpus": 3}, "gpus must be 0, 1, 2, 4, 8 or 16"),
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas must be >= min_replicas"),
        ({"min_replicas": 0, "deployment_mode": "RawDeployment"}, "scale to zero"),
        ({"auth": {"mode": "jwt"}}, "needs auth.issuer"),
        ({"replicas": 2}, "replicas: unknown key"),
    ],
)
def test_bad_serve_settings_are_config_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render(S3, **overrides)


def test_typed_validation_names_the_offending_field() -> None:
    [isvc] = render(S3)
    cases = [
        (("spec", "predictor", "model", "storageURI"), "x", "storageURI: unknown field of V1beta1ModelSpec"),
        (("spec", "predictor", "minReplicas"), "1", "minReplicas: expected int"),
        (("spec", "predictor", "tolerations"), [{"keyy": "a"}], "tolerations[0].keyy: unknown field of V1Toleration"),
        (("spec", "predictor", "volumes"), [{"emptyDir": {}}], "volumes[0]: V1Volume: Invalid value for `name`"),
    ]
    for path, value, message in cases:
        bad = copy.deepcopy(isvc)
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(ValueError) as e:
            validate_inference_service(bad)
        assert message in str(e.value)
    with pytest.raises(ValueError, match=r"not a serving\.kserve\.io/v1beta1 InferenceService"):
        validate_inference_service({"apiVersion": "v1", "kind": "Pod"})


def test_render_of_a_path_on_this_machine_notes_that_the_pod_cannot_fetch_it(tmp_path, capsys) -> None:
    from kubedistill.cli import main

    assert main(["serve", "--model", str(tmp_path), "--render"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load_all(out) and f"storageUri {str(tmp_path)!r} is not fetched from anywhere" in err
    assert "models:/NAME/VERSION" in err
    for uri in ("s3://bucket/student", "pvc://models/student", "hf://Qwen/Qwen2.5-7B-Instruct"):
        assert main(["serve", "--model", uri, "--render"]) == 0
        assert "note" not in capsys.readouterr().err
    assert main(["serve", "--model", "file:///models/student", "--render"]) == 0
    assert "is not fetched from anywhere" in capsys.readouterr().err
