"""Compiling with a ClusterConfig: GPUs exactly where the roles ask for them, the PVC, node selectors,
tolerations, shared memory and secrets by name — and no secret value anywhere in the compiled YAML.
kfp.local still runs a pipeline whose tasks carry these settings (it warns and ignores them)."""

# No `from __future__ import annotations` here: KFP reads the components' annotations as types.
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler, dsl

from kubedistill_kfp import cluster, versions
from kubedistill_kfp.cluster import ClusterConfig, ClusterConfigError, ClusterSettingsIgnored, DroppedForServer

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster.yaml"
TRACKING = {"uri": "http://kubedistill-mlflow.kubedistill.svc.cluster.local:5000"}
SECRET_VALUES = {
    "AWS_SECRET_ACCESS_KEY": "s3-secret-value-4f8a9c",
    "AWS_ACCESS_KEY_ID": "s3-access-id-77b1e0",
    "TEACHER_API_KEY": "sk-teacher-secret-0d2e1f",
    "HF_TOKEN": "hf_secret_token_9a8b7c",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password-31c5d2",
}


# ------------------------------------------------------------------ a small pipeline of every role


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def prep_op(x: str) -> str:
    return x + "-prep"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def ask_op(x: str) -> str:
    return x + "-ask"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def train_op(x: str) -> str:
    return x + "-train"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def judge_model_op(x: str) -> str:
    return x + "-eval"


@dsl.pipeline(name="cluster-check")
def every_role(x: str = "a") -> str:
    prep = cluster.apply(prep_op(x=x), "cpu")
    ask = cluster.apply(ask_op(x=prep.output), "teacher_bound")
    train = cluster.apply(train_op(x=ask.output), "train")
    evaluate = cluster.apply(judge_model_op(x=train.output), "serve")
    return evaluate.output


def _compile(pipeline: Any, cfg: "ClusterConfig | None", path: Path) -> tuple[dict[str, Any], str]:
    compiler.Compiler().compile(cluster.build_pipeline(pipeline, cfg), package_path=str(path))
    text = path.read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    spec = docs[0]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return {"spec": spec, "platform": platform}, text


def _resources(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: e["container"].get("resources", {}) for name, e in spec["deploymentSpec"]["executors"].items()}


def _env(spec: dict[str, Any], executor: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][executor]["container"].get("env", [])}


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The compiling process holds real-looking secret values: none may reach the YAML."""
    for k, v in SECRET_VALUES.items():
        monkeypatch.setenv(k, v)
    return SECRET_VALUES


def test_compiled_yaml_has_gpus_pvc_placement_and_secret_names_by_role(tmp_path: Path, secrets_in_env) -> None:
    cfg = cluster.load_cluster_config(EXAMPLE)
    out, text = _compile(every_role, cfg, tmp_path / "p.yaml")
    res = _resources(out["spec"])
    gpus = {name: r.get("accelerator", {}).get("resourceCount") for name, r in res.items()}
    assert gpus == {"exec-prep-op": None, "exec-ask-op": None, "exec-train-op": "8", "exec-judge-model-op": "1"}
    assert res["exec-train-op"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert res["exec-train-op"]["resourceMemoryLimit"] == "800Gi" and res["exec-prep-op"]["resourceCpuRequest"] == "2"

    plat = out["platform"]
    assert set(plat) == {"exec-prep-op", "exec-ask-op", "exec-train-op", "exec-judge-model-op"}
    for name, p in plat.items():
        assert p["pvcMount"] == [
            {
                "constant": "kubedistill-data",
                "mountPath": "/mnt/kubedistill",
                "pvcNameParameter": {"runtimeValue": {"constant": "kubedistill-data"}},
            }
        ], name
        assert p["securityContext"] == {"runAsUser": "1000", "runAsGroup": "1000", "runAsNonRoot": True}
        assert p["podMetadata"]["labels"]["app.kubernetes.io/part-of"] == "kubedistill"
    for gpu_task in ("exec-train-op", "exec-judge-model-op"):
        assert plat[gpu_task]["nodeSelector"] == {"labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
        assert plat[gpu_task]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        [shm] = plat[gpu_task]["emptyDirMounts"]
        assert shm["mountPath"] == "/dev/shm" and shm["medium"] == "Memory"
    for cpu_task in ("exec-prep-op", "exec-ask-op"):
        assert "nodeSelector" not in plat[cpu_task] and "tolerations" not in plat[cpu_task]
        assert "emptyDirMounts" not in plat[cpu_task]

    def secret_names(task: str) -> set[str]:
        return {s["secretName"] for s in plat[task].get("secretAsEnv", [])}

    assert "kubedistill-teacher-keys" in secret_names("exec-ask-op")
    assert "kubedistill-teacher-keys" not in secret_names("exec-train-op")
    assert "kubedistill-hf" in secret_names("exec-train-op") and "kubedistill-hf" not in secret_names("exec-prep-op")
    assert {"kubedistill-s3"} <= secret_names("exec-prep-op")
    keys = {k["secretKey"] for s in plat["exec-prep-op"]["secretAsEnv"] for k in s["keyToEnv"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= keys

    env = _env(out["spec"], "exec-train-op")
    assert env["HF_HOME"] == "/mnt/kubedistill/hf" and env["KUBEDISTILL_CACHE"] == "/mnt/kubedistill/cache"
    assert env["KUBEDISTILL_STORAGE"] == "/mnt/kubedistill/artifacts" and env["KUBEDISTILL_ON_CLUSTER"] == "1"
    assert env["MLFLOW_TRACKING_URI"] == cfg.tracking.uri and "minio" not in text
    assert env["KUBEDISTILL_GPUS"] == "8" and "KUBEDISTILL_GPUS" not in _env(out["spec"], "exec-prep-op")
    # names and keys only: no secret value, anywhere
    for value in secrets_in_env.values():
        assert value not in text
    cluster.check_no_secret_values(tmp_path / "p.yaml")


def test_a_secret_value_in_a_compiled_pipeline_is_caught(tmp_path: Path, secrets_in_env) -> None:
    @dsl.pipeline(name="leaky")
    def leaky(key: str = SECRET_VALUES["TEACHER_API_KEY"]) -> str:
        return prep_op(x=key).output

    cfg = ClusterConfig.model_validate({"tracking": TRACKING, "component_roles": {"prep_op": "cpu"}})
    _compile(leaky, cfg, tmp_path / "leaky.yaml")
    with pytest.raises(ClusterConfigError, match="holds the value of 1 secret"):
        cluster.check_no_secret_values(tmp_path / "leaky.yaml")


def test_without_a_config_apply_changes_nothing(tmp_path: Path) -> None:
    out, _ = _compile(every_role, None, tmp_path / "plain.yaml")
    assert all(not r for r in _resources(out["spec"]).values())
    assert out["platform"] == {}
    with pytest.raises(ClusterConfigError, match="unknown role"):
        cluster.apply(object(), "gpu")


def test_caching_policy_turns_caching_off(tmp_path: Path) -> None:
    cfg = ClusterConfig.model_validate({"tracking": TRACKING, "caching": False})
    out, _ = _compile(every_role, cfg, tmp_path / "nocache.yaml")
    tasks = out["spec"]["root"]["dag"]["tasks"]
    assert all(t["cachingOptions"] == {} for t in tasks.values())
    cfg = ClusterConfig.model_validate({"tracking": TRACKING, "roles": {"train": {"caching": False}}})
    tasks = _compile(every_role, cfg, tmp_path / "trainnocache.yaml")[0]["spec"]["root"]["dag"]["tasks"]
    assert tasks["train-op"]["cachingOptions"] == {} and tasks["prep-op"]["cachingOptions"] == {"enableCache": True}


TRAINERS = {
    "slow_thinking": ["sft", "dpo"],
    "adaptive_thinking": ["sft"],
    "grpo": ["reward-models", "grpo"],
    "reward_models": ["reward-models"],
}


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_real_pipelines_compile_with_cluster_settings_by_component_role(tmp_path: Path, secrets_in_env, name) -> None:
    from kubedistill_kfp.pipelines import pipeline_function

    cfg = cluster.load_cluster_config(EXAMPLE)
    out, text = _compile(pipeline_function(name), cfg, tmp_path / f"{name}.yaml")
    res = _resources(out["spec"])
    gpus = {e: r.get("accelerator", {}).get("resourceCount") for e, r in res.items()}
    for trainer in TRAINERS[name]:  # every trainer gets the train role's GPUs (and launches on all of them)
        assert gpus.pop(f"exec-{trainer}-op") == "8"
        assert _env(out["spec"], f"exec-{trainer}-op")["KUBEDISTILL_GPUS"] == "8"
    assert gpus.pop("exec-evaluate-op", "1") == "1"
    assert set(gpus.values()) == {None}, gpus  # every other task is a CPU task
    plat = out["platform"]
    assert set(plat) == set(res)  # every task got its role's settings
    assert all(p["pvcMount"][0]["constant"] == "kubedistill-data" for p in plat.values())
    assert plat["exec-generate-op"]["podMetadata"]["labels"]["kubedistill.io/role"] == "teacher-bound"
    assert all("nodeSelector" in plat[f"exec-{t}-op"] for t in TRAINERS[name])
    assert "nodeSelector" not in plat["exec-collect-shard-op"] and "nodeSelector" not in plat["exec-collect-merge-op"]
    # caching on: a re-run with the same inputs reports the version it registered (issue 18)
    tasks = out["spec"]["root"]["dag"]["tasks"]
    register = "register-op" if "register-op" in tasks else "register-reward-models-op"
    assert tasks[register]["cachingOptions"] == {"enableCache": True}
    run_id = {"fieldPath": "metadata.labels['pipeline/runid']", "name": "KFP_RUN_ID"}
    assert all(run_id in p["fieldPathAsEnv"] for p in plat.values())  # the run's id, not a task input
    for value in secrets_in_env.values():
        assert value not in text
    cluster.check_no_secret_values(tmp_path / f"{name}.yaml")


# --------------------------------------------------------------------------- the KFP server version


@pytest.mark.parametrize("version", versions.KFP_VERSIONS)
def test_compiled_for_each_supported_kfp_server_holds_only_fields_it_reads(tmp_path: Path, version: str) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["kfp_version"] = version
    if not versions.at_least(version, "2.15"):  # `optional` secrets are refused for 2.14: create them instead
        data["secrets"] = [{**s, "optional": False} for s in data["secrets"]]
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data))
    cfg = cluster.load_cluster_config(tmp_path / "cluster.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = _compile(every_role, cfg, tmp_path / "p.yaml")
    dropped = [w for w in caught if issubclass(w.category, DroppedForServer)]
    has_security_context = all("securityContext" in p for p in out["platform"].values())
    assert has_security_context == versions.at_least(version, "2.16")
    assert bool(dropped) == (not has_security_context)  # said so when left out
    assert versions.check_compiled(tmp_path / "p.yaml", version) == []
    if not versions.at_least(version, "2.16"):  # what 2.17 reads, 2.14/2.15 do not: the check catches it
        newest = cluster.load_cluster_config(EXAMPLE).model_copy(update={"kfp_version": "2.17"})
        _compile(every_role, newest, tmp_path / "new.yaml")
        assert versions.check_compiled(tmp_path / "new.yaml", version) != []


def test_optional_secrets_are_refused_for_a_kfp_server_that_cannot_read_them(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["kfp_version"] = "2.14"
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ClusterConfigError, match=r"`optional` needs KFP >= 2.15 \(kfp_version 2.14\)"):
        cluster.load_cluster_config(tmp_path / "cluster.yaml")


def test_compile_all_refuses_what_the_target_server_cannot_read(tmp_path: Path, monkeypatch) -> None:
    from kubedistill_kfp import compile as compile_mod

    # a field the 2.16 server cannot read, as a newer kfp-kubernetes might write it
    monkeypatch.setattr(versions, "check_compiled", lambda path, v: [versions.UnknownField("x.y", "m", "f")])
    with pytest.raises(ClusterConfigError, match=r"KFP 2\.16 cannot read x\.y"):
        compile_mod.compile_all(tmp_path, names=["evaluate"], cluster_config=EXAMPLE, log=lambda _: None)


# ---------------------------------------------------------------------------------------- kfp.local


@pytest.fixture
def kfp_local(tmp_path: Path):
    from kfp import local
    from kfp.local import config as local_config

    before = local_config.LocalExecutionConfig.instance
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    yield
    local_config.LocalExecutionConfig.instance = before


def test_kfp_local_runs_a_pipeline_compiled_with_cluster_settings_and_ignores_them(kfp_local) -> None:
    cfg = cluster.load_cluster_config(EXAMPLE)
    built = cluster.build_pipeline(every_role, cfg)  # built for the cluster: the tasks carry the settings
    assert built.platform_spec.platforms["kubernetes"].deployment_spec.executors
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = built(x="z")
    assert run.output == "z-prep-ask-train-eval"
    ignored = [str(w.message) for w in caught if "no effect in the current local runner" in str(w.message)]
    assert any("accelerator" in m for m in ignored)  # kfp.local says it ignores the GPU request


def test_apply_under_kfp_local_warns_and_leaves_the_task_alone(kfp_local) -> None:
    cfg = cluster.load_cluster_config(EXAMPLE)
    with cluster.use_cluster_config(cfg), pytest.warns(ClusterSettingsIgnored, match="ignored under kfp.local"):

        @dsl.pipeline(name="local-check")
        def local_check(x: str = "a") -> str:
            return cluster.apply(train_op(x=x), "train").output

    assert not local_check.platform_spec.platforms  # nothing was applied
    assert local_check(x="q").output == "q-train"
