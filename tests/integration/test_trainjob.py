"""Scale-out training (issue 15): a train stage as a multi-node Kubeflow Trainer TrainJob, created and awaited
with the Kubeflow SDK (``kubeflow.trainer.TrainerClient``, the real client) against a Kubernetes API stub that
refuses what the API server and the Trainer's webhook refuse (kubedistill_kfp/testing/trainer_api_stub.py).
Every TrainJob the SDK sends is validated against the vendored Trainer 2.3 CRD schema, strictly; its node-0
log comes back to the task's log and the metrics rank 0 wrote to the shared folder come back as the stage's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubedistill.launch import LaunchFailed, TrainJobConfig, launch_trainjob, trainjob_config, trainjob_name
from kubedistill_kfp.testing.schemas import crd_errors, load_crd_schema
from kubedistill_kfp.testing.trainer_api_stub import TRAINJOB_CRD, TrainerApiStub, running_trainer_api_stub

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/ml/kubedistill-train@sha256:" + "0" * 64
ARGS = {"config": {"base_model": "Qwen/Qwen2.5-32B-Instruct", "deepspeed": "zero3"}, "paths": {"samples": "/mnt/x"}}


def _client(conf: Any) -> Any:
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.trainer import TrainerClient

    return TrainerClient(KubernetesBackendConfig(namespace="team-ml", client_configuration=conf))


def _rank0_writes_metrics(job: dict[str, Any]) -> None:
    """FAKE: what rank 0 of the job does at its end — the metrics file named by the job's command."""
    metrics = job["spec"]["trainer"]["command"][-1]
    Path(metrics).write_text(json.dumps({"train_loss": 0.42, "train_runtime": 3600}))


def _config(**kw: Any) -> TrainJobConfig:
    return TrainJobConfig(
        num_nodes=4, gpus_per_node=8, image=IMAGE, storage_claim="kubedistill-data", poll_s=1, timeout_s=30, **kw
    )


def test_a_train_stage_runs_as_a_trainjob_and_its_metrics_and_log_come_back(tmp_path: Path) -> None:
    stub = TrainerApiStub(on_complete=_rank0_writes_metrics, log_lines=["{'loss': 0.5}", "{'loss': 0.42}"])
    lines: list[str] = []
    with running_trainer_api_stub(stub) as (api, conf):
        metrics = launch_trainjob("sft", ARGS, _config(), workdir=tmp_path, client=_client(conf), log=lines.append)
    assert metrics == {"train_loss": 0.42, "train_runtime": 3600.0}
    assert api.refused == []
    ((ns, name), job) = next(iter(api.jobs.items()))
    assert ns == "team-ml" and name == trainjob_name("sft", ARGS)
    (sent,) = api.created  # what the SDK sent, as the API server read it
    assert crd_errors(sent, load_crd_schema(TRAINJOB_CRD)) == []
    spec = job["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime"} or spec[
        "runtimeRef"
    ] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime", "apiGroup": "trainer.kubeflow.org"}
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 4 and trainer["image"] == IMAGE
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 8
    assert trainer["command"][:5] == ["python", "-m", "torch.distributed.run", "-m", "kubedistill.runner"]
    assert trainer["command"][5] == "sft"
    assert json.loads(Path(trainer["command"][6]).read_text()) == ARGS  # the arguments, on the shared folder
    (patch,) = spec["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = rjob["template"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "kubedistill-data", "persistentVolumeClaim": {"claimName": "kubedistill-data"}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "kubedistill-data", "mountPath": "/mnt/kubedistill"}]
    assert job["metadata"]["labels"]["kubedistill.io/stage"] == "sft"
    # the job's progress and its node-0 log are in the task's log
    assert any("4 nodes x 8 GPUs on torch-distributed" in line for line in lines)
    assert any(line.endswith(": Complete") for line in lines)
    assert "{'loss': 0.42}" in lines


def test_a_retried_task_awaits_its_job_instead_of_creating_another(tmp_path: Path) -> None:
    stub = TrainerApiStub(on_complete=_rank0_writes_metrics)
    with running_trainer_api_stub(stub) as (api, conf):
        launch_trainjob("dpo", ARGS, _config(), workdir=tmp_path, client=_client(conf), log=lambda _: None)
        lines: list[str] = []
        again = launch_trainjob("dpo", ARGS, _config(), workdir=tmp_path, client=_client(conf), log=lines.append)
    assert len(api.jobs) == 1 and again["train_loss"] == 0.42
    assert api.refused[0]["reason"] == "AlreadyExists"
    assert any("exists (a retried task): waiting for it" in line for line in lines)


def test_a_failed_job_fails_the_task_with_the_end_of_its_log(tmp_path: Path) -> None:
    stub = TrainerApiStub(fail=True, log_lines=["loading", "CUDA out of memory. Tried to allocate 20.00 GiB"])
    with running_trainer_api_stub(stub) as (_, conf), pytest.raises(LaunchFailed) as e:
        launch_trainjob("sft", ARGS, _config(), workdir=tmp_path, client=_client(conf), log=lambda _: None)
    assert "is Failed" in str(e.value) and "CUDA out of memory" in str(e.value)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"runtime": "torch-distributed-kd"}, "not created"),  # a runtime the cluster does not have
        ({"image": "x", "env": {"NCCL_DEBUG": "INFO"}}, None),  # accepted: any image, extra env
    ],
)
def test_what_the_api_refuses_is_named(tmp_path: Path, change: dict[str, Any], refusal: str | None) -> None:
    stub = TrainerApiStub(on_complete=_rank0_writes_metrics)
    cfg = _config().model_copy(update=change)
    with running_trainer_api_stub(stub) as (api, conf):
        if refusal is None:
            launch_trainjob("sft", ARGS, cfg, workdir=tmp_path, client=_client(conf), log=lambda _: None)
            assert api.refused == []
        else:
            with pytest.raises(LaunchFailed, match=refusal):
                launch_trainjob("sft", ARGS, cfg, workdir=tmp_path, client=_client(conf), log=lambda _: None)
            assert api.jobs == {}


def test_the_stub_refuses_what_the_server_and_the_webhook_refuse() -> None:
    """The stub's own rules, on hand-made objects: unknown fields (strict CRD schema), a bad name, the torch
    runtime's reserved environment, a runtime patch of a container the runtime lacks."""
    stub = TrainerApiStub()
    good = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "kd-sft-0123456789"},
        "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": {"numNodes": 2, "image": IMAGE}},
    }
    assert stub.admit("team-ml", good) is None

    def refused(obj: dict[str, Any]) -> str:
        result = stub.admit("team-ml", obj)
        assert result is not None
        return json.dumps(result[1])

    bogus = json.loads(json.dumps(good))
    bogus["spec"]["trainer"]["numNode"] = 2
    assert "numNode" in refused(bogus)
    assert "RFC 1035" in refused({**good, "metadata": {"name": "1-sft"}})
    env = json.loads(json.dumps(good))
    env["spec"]["trainer"]["env"] = [{"name": "PET_NNODES", "value": "8"}]
    assert "PET_NNODES is reserved" in refused(env)
    patch = json.loads(json.dumps(good))
    patch["spec"]["runtimePatches"] = [
        {
            "manager": "trainer.kubeflow.org/kubeflow-sdk",
            "trainingRuntimeSpec": {
                "template": {
                    "spec": {
                        "replicatedJobs": [
                            {
                                "name": "node",
                                "template": {"spec": {"template": {"spec": {"containers": [{"name": "trainer"}]}}}},
                            }
                        ]
                    }
                }
            },
        }
    ]
    assert "no container 'trainer'" in refused(patch)
    assert "not found" in refused({**good, "spec": {"runtimeRef": {"name": "torch-distributed-kd"}}})


def test_the_trainjob_settings_come_from_the_environment_and_refuse_the_runtimes_variables() -> None:
    cfg = _config()
    assert trainjob_config({"KUBEDISTILL_TRAINJOB": cfg.model_dump_json()}) == cfg
    assert trainjob_config({}) is None
    with pytest.raises(ValueError, match="PET_NNODES are set by the torch runtime"):
        TrainJobConfig(num_nodes=2, gpus_per_node=8, image=IMAGE, env={"PET_NNODES": "2"})
    assert trainjob_name("reward_models", ARGS).startswith("kd-reward-models-")


def _multi_node_cluster(tmp_path: Path) -> Path:
    import yaml

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "cluster.yaml").read_text())
    data["roles"]["train"]["nodes"] = 4  # 4 nodes x 8 GPUs: a 32B student
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_cluster_config_of_several_train_nodes_makes_train_tasks_launch_trainjobs(tmp_path: Path) -> None:
    """roles.train.nodes: 4 — each train task is a small pod (no GPU) holding the TrainJob's settings; the
    job the SDK renders from them (the train image, 4 x 8 GPUs, the PVC, the GPU nodes' selector and
    toleration, the Secrets by name) is valid for the Trainer 2.3 CRD and admitted by the stub."""
    import yaml

    from kubedistill_kfp.cluster import load_cluster_config
    from kubedistill_kfp.compile import compile_all

    cfg_path = _multi_node_cluster(tmp_path)
    (path,) = compile_all(tmp_path / "dist", names=["slow_thinking"], cluster_config=cfg_path, log=lambda _: None)
    spec = next(yaml.safe_load_all(path.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    sft = next(e for n, e in executors.items() if n.startswith("exec-sft-op"))["container"]
    env = {e["name"]: e["value"] for e in sft.get("env", []) if "value" in e}
    assert "KUBEDISTILL_GPUS" not in env and "accelerator" not in sft.get("resources", {})
    job_cfg = TrainJobConfig.model_validate_json(env["KUBEDISTILL_TRAINJOB"])
    assert (job_cfg.num_nodes, job_cfg.gpus_per_node) == (4, 8) and job_cfg.storage_claim == "kubedistill-data"
    assert "kubedistill-train" in job_cfg.image and sft["image"] == job_cfg.image  # the task runs on it too
    assert {"name": "HF_TOKEN", "secret": "kubedistill-hf", "key": "HF_TOKEN", "optional": True} in job_cfg.secret_env
    assert job_cfg.env["MLFLOW_TRACKING_URI"] and job_cfg.env["NCCL_DEBUG"] == "WARN"
    assert load_cluster_config(cfg_path).trainjob() == job_cfg

    stub = TrainerApiStub(on_complete=_rank0_writes_metrics)
    with running_trainer_api_stub(stub) as (api, conf):
        launch_trainjob("sft", ARGS, job_cfg, workdir=tmp_path, client=_client(conf), log=lambda _: None)
    (sent,) = api.created
    assert crd_errors(sent, load_crd_schema(TRAINJOB_CRD)) == []
    pod = sent["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = pod["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    hf = next(e for e in pod["containers"][0]["env"] if e["name"] == "HF_TOKEN")
    assert hf["valueFrom"]["secretKeyRef"] == {"name": "kubedistill-hf", "key": "HF_TOKEN", "optional": True}


def test_only_the_train_role_runs_on_several_nodes_and_it_needs_gpus(tmp_path: Path) -> None:
    from kubedistill.core.config import ConfigError
    from kubedistill_kfp.cluster import load_cluster_config

    path = _multi_node_cluster(tmp_path)
    with pytest.raises(ConfigError, match="only train stages run on several nodes"):
        load_cluster_config(path, {"roles.serve.nodes": 2})
    with pytest.raises(ConfigError, match=r"needs roles\.train\.gpus"):
        load_cluster_config(path, {"roles.train.gpus": 0})
