"""ClusterConfig: validation of the cluster settings, secret-name detection, the PVC manifest, and the
multi-GPU launch command lines (checked by accelerate's and torchrun's own argument parsers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubedistill.core.secrets import is_secret_name
from kubedistill.launch import distributed_command, launch_command
from kubedistill_kfp.cluster import (
    DEFAULT_ROLES,
    ClusterConfig,
    ClusterConfigError,
    load_cluster_config,
    pvc_manifest,
    role_of,
    storage_init_job,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster.yaml"
TRACKING = {"uri": "http://kubedistill-mlflow.kubedistill.svc.cluster.local:5000"}


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text(yaml.safe_dump({"tracking": TRACKING, **data}))
    return p


def _cfg(**data: object) -> ClusterConfig:
    return ClusterConfig.model_validate({"tracking": TRACKING, **data})


def test_example_cluster_config_loads_with_gpus_only_on_train_and_serve() -> None:
    cfg = load_cluster_config(EXAMPLE)
    assert cfg.role("train").gpus == 8 and cfg.role("serve").gpus == 1
    assert cfg.role("cpu").gpus == 0 and cfg.role("teacher_bound").gpus == 0
    assert cfg.storage.pvc == "kubedistill-data"
    env = cfg.env_for("train")
    assert env["HF_HOME"] == "/mnt/kubedistill/hf" and env["KUBEDISTILL_CACHE"] == "/mnt/kubedistill/cache"
    assert env["KUBEDISTILL_STORAGE"] == "/mnt/kubedistill/artifacts"
    assert env["KUBEDISTILL_INLINE_LIMIT"] == str(256 * 1024 * 1024)
    assert env["KUBEDISTILL_GPUS"] == "8" and "KUBEDISTILL_GPUS" not in cfg.env_for("cpu")
    # tracking and the object store are settings, given to every task; no MinIO left anywhere
    assert all(cfg.env_for(r)["MLFLOW_TRACKING_URI"] == cfg.tracking.uri for r in DEFAULT_ROLES.values())
    assert cfg.object_store is not None and cfg.env_for("cpu")["MLFLOW_S3_ENDPOINT_URL"] == cfg.object_store.endpoint
    assert "kubedistill-s3" in cfg.secret_names() and "minio" not in EXAMPLE.read_text().lower()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rolez": {}}, "rolez: unknown key"),
        ({"roles": {"train": {"gpus": -1}}}, "roles.train.gpus"),
        ({"tracking": {"uri": "sqlite:///mlflow.db"}}, "tracking.uri: 'sqlite:///mlflow.db' is pod-local"),
        ({"tracking": {"uri": "/tmp/mlruns"}}, "is pod-local"),
        ({"tracking": {"uri": "file:///mnt/kubedistill/mlruns"}}, "is pod-local"),
        ({"tracking": {"uri": "http://localhost:5000"}}, "points at the pod itself"),
        ({"tracking": {"uri": "http://u:p@mlflow:5000"}}, "holds credentials"),
        ({"tracking": None}, "tracking"),
        ({"object_store": {"endpoint": "minio:9000"}}, "object_store.endpoint: 'minio:9000' is not an http(s)"),
        ({"object_store": {"endpoint": "http://s3:9000", "bucket": "Bad_Bucket"}}, "object_store.bucket"),
        ({"env": {"MLFLOW_S3_ENDPOINT_URL": "http://s3:9000"}}, "is set from object_store.endpoint"),
        ({"env": {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}}, "is set from tracking.uri"),
        ({"kfp_version": "2.13"}, "kfp_version"),
        (
            {"kfp_version": "2.14", "secrets": [{"name": "s", "keys": {"k": "K"}, "optional": True}]},
            "`optional` needs KFP >= 2.15",
        ),
        ({"roles": {"cpu": {"memory_request": "8 GB"}}}, "roles.cpu.memory_request"),
        ({"roles": {"cpu": {"cpu_limit": "two"}}}, "roles.cpu.cpu_limit"),
        ({"env": {"OPENAI_API_KEY": "sk-123"}}, "looks like a credential"),
        ({"env": {"SOME_URL": "http://user:pw@mlflow:5000"}}, "URL with credentials"),
        ({"roles": {"train": {"env": {"HF_TOKEN": "x"}}}}, "looks like a credential"),
        ({"secrets": [{"name": "Bad_Name", "keys": {"a": "A"}}]}, "not a Kubernetes Secret name"),
        ({"secrets": [{"name": "s", "keys": {}}]}, "at least one"),
        ({"secrets": [{"name": "s", "keys": {"k": "1BAD"}}]}, "not an environment variable name"),
        ({"roles": {"train": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}}}, "takes no value"),
        ({"storage": {"mount_path": "relative"}}, "absolute path"),
        (
            {"env": {"HF_HOME": "/x"}, "secrets": [{"name": "s", "keys": {"k": "HF_HOME"}}]},
            "set both as a plain variable and from a secret",
        ),
    ],
)
def test_bad_cluster_configs_are_one_line_errors_naming_the_key(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(ClusterConfigError) as e:
        load_cluster_config(_write(tmp_path, data))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_secret_names_are_told_from_lookalikes() -> None:
    for name in ("HF_TOKEN", "api_key", "apiKey", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "password", "token"):
        assert is_secret_name(name), name
    for name in ("max_tokens", "timeout_per_token_s", "api_key_env", "tokenizer", "MLFLOW_TRACKING_URI", "keys"):
        assert not is_secret_name(name), name


def test_pvc_manifest_uses_the_storage_class_setting_or_the_cluster_default() -> None:
    default = pvc_manifest(_cfg(), namespace="team")
    assert default["metadata"] == {
        "name": "kubedistill-data",
        "namespace": "team",
        "labels": {"app.kubernetes.io/part-of": "kubedistill"},
    }
    assert "storageClassName" not in default["spec"]  # never "standard" by accident (kubeflow/pipelines#11396)
    cfg = _cfg(storage={"storage_class": "nfs-client", "size": "100Gi"})
    spec = pvc_manifest(cfg)["spec"]
    assert spec == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "100Gi"}},
        "storageClassName": "nfs-client",
    }


def test_storage_init_job_hands_the_volume_to_the_pods_uid() -> None:
    job = storage_init_job(_cfg(security_context={"run_as_user": 1234, "run_as_group": 4321}), namespace="team")
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    script = container["command"][-1]
    assert "chown 1234:4321 /data /data/artifacts /data/hf /data/cache" in script
    assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "kubedistill-data"}}]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}


def test_roles_come_from_defaults_config_and_overrides() -> None:
    assert (
        role_of("sft_op") == "train" and role_of("evaluate-op") == "serve" and role_of("generate-op") == "teacher_bound"
    )
    assert set(DEFAULT_ROLES.values()) == {"cpu", "teacher_bound", "train", "serve"}
    cfg = _cfg(component_roles={"distill_op": "train"})
    assert role_of("distill-op", cfg) == "train"
    assert role_of("collect-op", cfg, {"collect_op": "teacher_bound"}) == "teacher_bound"
    with pytest.raises(ClusterConfigError, match="has no role"):
        role_of("mystery-op", cfg)


def test_accelerate_launch_command_parses_with_accelerates_own_parser() -> None:
    from accelerate.commands.launch import launch_command_parser

    cmd = launch_command(8, "zero3", ["kubedistill.cli", "sft", "--input", "s.jsonl"], python="python")
    assert cmd[:3] == ["python", "-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(cmd[3:])
    assert args.num_processes == 8 and args.num_machines == 1 and args.use_deepspeed
    assert args.deepspeed_config_file.endswith("zero3.json") and Path(args.deepspeed_config_file).is_file()
    assert args.module and args.training_script == "kubedistill.cli"
    assert args.training_script_args == ["sft", "--input", "s.jsonl"]

    multi = launch_command(
        4, None, ["kubedistill.cli", "sft"], n_nodes=2, node_rank=1, main_address="trainer-0", python="python"
    )
    args = launch_command_parser().parse_args(multi[3:])
    assert args.num_processes == 8 and args.num_machines == 2 and args.machine_rank == 1
    assert args.main_process_ip == "trainer-0" and args.multi_gpu and not args.use_deepspeed


def test_torchrun_command_parses_with_torchruns_own_parser() -> None:
    from torch.distributed.run import get_args_parser

    cmd = launch_command(2, None, ["kubedistill.cli", "sft"], launcher="torchrun", python="python")
    args = get_args_parser().parse_args(cmd[3:])
    assert args.nproc_per_node == "2" and args.standalone and args.module
    assert args.training_script == "kubedistill.cli" and args.training_script_args == ["sft"]
    multi = launch_command(
        8, None, ["m"], launcher="torchrun", n_nodes=4, node_rank=3, main_address="10.0.0.1", python="python"
    )
    args = get_args_parser().parse_args(multi[3:])
    assert args.nnodes == "4" and args.node_rank == 3 and args.rdzv_endpoint == "10.0.0.1:29500"
    with pytest.raises(ValueError, match="trainer's `deepspeed` setting"):
        launch_command(2, "zero2", ["m"], launcher="torchrun")
    with pytest.raises(ValueError, match="main_address"):
        launch_command(2, None, ["m"], n_nodes=2)


def test_distributed_command_only_with_several_gpus_and_not_inside_a_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("ACCELERATE_PROCESS_ID", raising=False)
    monkeypatch.setenv("KUBEDISTILL_GPUS", "1")
    assert distributed_command(["kubedistill.cli", "sft"]) is None
    monkeypatch.setenv("KUBEDISTILL_GPUS", "4")
    cmd = distributed_command(["kubedistill.cli", "sft"], deepspeed_config="zero2")
    assert cmd is not None and "--num_processes" in cmd and cmd[cmd.index("--num_processes") + 1] == "4"
    monkeypatch.setenv("LOCAL_RANK", "0")  # already a launched worker: train in-process
    assert distributed_command(["kubedistill.cli", "sft"]) is None
