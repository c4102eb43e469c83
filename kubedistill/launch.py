"""Launching training on several processes: torchrun / accelerate command lines, and the relaunch of a
training stage on every GPU of its pod.

:func:`kubedistill.runner.run_stage` calls :func:`relaunch` for every ``train`` stage: on one GPU (or none,
or already inside a launch) it returns None and the stage trains in-process. Otherwise it writes the
stage's arguments to a JSON file and runs
``python -m torch.distributed.run --standalone --nproc-per-node=N -m kubedistill.runner STAGE ARGS METRICS``;
every rank runs the same stage (the HF Trainer reads RANK / WORLD_SIZE / LOCAL_RANK, DeepSpeed comes from
the trainer's own ``deepspeed`` setting), only rank 0 logs to MLflow and writes the model directory and
the metrics. The GPU count comes from ``$KUBEDISTILL_GPUS`` (set at compile time for GPU roles, see
kubedistill_kfp/cluster.py) or CUDA. :func:`launch_command` also builds the multi-node command lines
(one pod per node, e.g. a Kubeflow Trainer job).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from kubedistill.core.config import StrictModel
from kubedistill.core.errors import PartialFailure

log = logging.getLogger(__name__)

Launcher = Literal["accelerate", "torchrun"]


def launch_command(
    n_gpus: int,
    deepspeed_config: str | None,
    module_args: Sequence[str],
    *,
    launcher: Launcher = "accelerate",
    n_nodes: int = 1,
    node_rank: int = 0,
    main_address: str | None = None,
    main_port: int = 29500,
    mixed_precision: Literal["no", "fp16", "bf16"] = "bf16",
    python: str | None = None,
) -> list[str]:
    """The command line that runs ``python -m <module_args>`` on ``n_gpus`` GPUs per node.

    ``module_args`` starts with the module: ``["kubedistill.cli", "sft", "--input", ...]``.
    ``deepspeed_config`` is a shipped ZeRO config name (``zero2``, ``zero3``, ``zero3_offload``) or a JSON
    path; with ``accelerate`` it is passed to the launcher (the Hugging Face Trainer fills its ``auto``
    values), with ``torchrun`` give it to the trainer's own ``deepspeed`` setting instead. The launcher
    runs as ``python -m`` of the same interpreter, so no PATH lookup is involved. Multi-node (one pod per
    node, e.g. a Kubeflow Trainer job): ``n_nodes``, ``node_rank`` and ``main_address`` of rank 0."""
    if n_gpus < 1:
        raise ValueError("n_gpus must be at least 1")
    if n_nodes < 1 or not 0 <= node_rank < n_nodes:
        raise ValueError("need n_nodes >= 1 and 0 <= node_rank < n_nodes")
    if n_nodes > 1 and not main_address:
        raise ValueError("a multi-node launch needs main_address (the rank-0 node's address)")
    if not module_args:
        raise ValueError("module_args must start with the module to run, e.g. kubedistill.cli")
    python = python or sys.executable
    module, *args = [str(a) for a in module_args]
    if launcher == "accelerate":
        cmd = [
            python,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            str(n_gpus * n_nodes),
            "--num_machines",
            str(n_nodes),
            "--machine_rank",
            str(node_rank),
            "--mixed_precision",
            mixed_precision,
            "--dynamo_backend",
            "no",
        ]
        if n_nodes > 1:
            cmd += ["--main_process_ip", str(main_address), "--main_process_port", str(main_port), "--same_network"]
        if deepspeed_config:
            from kubedistill.train.deepspeed import config_path

            cmd += ["--use_deepspeed", "--deepspeed_config_file", config_path(deepspeed_config)]
        elif n_gpus * n_nodes > 1:
            cmd += ["--multi_gpu"]
        return [*cmd, "-m", module, *args]
    if launcher == "torchrun":
        if deepspeed_config:
            raise ValueError("with torchrun, give the DeepSpeed config to the trainer's `deepspeed` setting")
        cmd = [python, "-m", "torch.distributed.run", f"--nproc-per-node={n_gpus}", f"--nnodes={n_nodes}"]
        if n_nodes == 1:
            cmd.append("--standalone")
        else:
            cmd += [f"--node-rank={node_rank}", "--rdzv-backend=c10d", f"--rdzv-endpoint={main_address}:{main_port}"]
        return [*cmd, "-m", module, *args]
    raise ValueError(f"unknown launcher {launcher!r} (accelerate or torchrun)")


def local_gpu_count() -> int:
    """GPUs this pod has: ``$KUBEDISTILL_GPUS`` (set by :func:`apply` for GPU roles), else CUDA's count."""
    env = os.environ.get("KUBEDISTILL_GPUS")
    if env:
        return int(env)
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def in_distributed_launch() -> bool:
    """True inside a process started by accelerate / torchrun (so it must not launch again)."""
    return "LOCAL_RANK" in os.environ or "ACCELERATE_PROCESS_ID" in os.environ


def distributed_command(
    module_args: Sequence[str], *, deepspeed_config: str | None = None, launcher: Launcher = "accelerate"
) -> list[str] | None:
    """The launch command when this pod has more than one GPU and is not already a launched process;
    None when the caller should simply train in-process."""
    n = local_gpu_count()
    if n <= 1 or in_distributed_launch():
        return None
    return launch_command(n, deepspeed_config, module_args, launcher=launcher)


def format_command(cmd: Sequence[str]) -> str:
    return shlex.join(cmd)


class LaunchFailed(PartialFailure, RuntimeError):
    """A multi-process training run exited non-zero."""


def relaunch(name: str, kwargs: dict[str, Any], *, entry: str = "kubedistill.runner") -> dict[str, float] | None:
    """Run ``python -m <entry> NAME ARGS.json METRICS.json`` once per GPU of this pod (torchrun) and return
    the metrics rank 0 wrote; None when this pod has one GPU or none, or this process is already one of a
    launch — then the caller trains in-process. ``kwargs`` must be JSON-able. With ``$KUBEDISTILL_TRAINJOB``
    set (a train role of several nodes, kubedistill_kfp/cluster.py) the stage runs as a Kubeflow Trainer
    TrainJob instead (:func:`launch_trainjob`), its files under ``$KUBEDISTILL_STORAGE/trainjobs``."""
    cfg = trainjob_config()
    if cfg is not None and not in_distributed_launch():
        storage = os.environ.get("KUBEDISTILL_STORAGE")
        if not storage:
            raise LaunchFailed(f"{name}: a TrainJob needs the storage PVC ($KUBEDISTILL_STORAGE) its nodes share")
        return launch_trainjob(name, kwargs, cfg, workdir=Path(storage) / "trainjobs")
    with tempfile.TemporaryDirectory(prefix=f"kubedistill-{name}-") as tmp:
        args_file, metrics_file = Path(tmp) / "args.json", Path(tmp) / "metrics.json"
        cmd = distributed_command([entry, name, str(args_file), str(metrics_file)], launcher="torchrun")
        if cmd is None:
            return None
        args_file.write_text(json.dumps(kwargs))
        log.warning("%s: %d processes: %s", name, local_gpu_count(), format_command(cmd))
        rc = subprocess.run(cmd, check=False).returncode
        if rc != 0:
            raise LaunchFailed(f"{name}: the {local_gpu_count()}-process run exited {rc} (its output is above)")
        if not metrics_file.exists():
            raise LaunchFailed(f"{name}: rank 0 wrote no metrics")
        return {k: float(v) for k, v in json.loads(metrics_file.read_text()).items()}


# ------------------------------------------------------------------------------- many nodes: TrainJob
#
# One KFP task gets one pod, so one node. A train stage whose cluster role asks for more nodes runs as a
# Kubeflow Trainer TrainJob instead, created and awaited through the Kubeflow SDK (`kubeflow` on PyPI, the
# Trainer's own client): the KFP task (a small CPU pod) writes the stage's arguments to the shared storage
# PVC, submits a TrainJob of N nodes x G GPUs on the train image with the torch runtime (which starts
# `torchrun` on every node with PET_NNODES / PET_NPROC_PER_NODE / PET_NODE_RANK / PET_MASTER_ADDR set),
# whose command is `python -m torch.distributed.run -m kubedistill.runner STAGE ARGS.json METRICS.json`, the
# same entry as a one-pod launch; DeepSpeed comes from the trainer's own `deepspeed` setting. The task waits
# for the job, prints the node-0 log, and returns the metrics rank 0 wrote to the PVC.

TRAINJOB_ENV = "KUBEDISTILL_TRAINJOB"  # the TrainJobConfig as JSON (set by the cluster config's train role)
RESERVED_TORCH_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")


class TrainJobConfig(StrictModel):
    """How a train stage runs on several nodes (Kubeflow Trainer >= 2.3: the job's PVC mount is a
    runtime patch, ``spec.runtimePatches``)."""

    num_nodes: int = Field(ge=1, le=512, description="nodes (pods) of the TrainJob")
    gpus_per_node: int = Field(ge=1, le=64, description="GPUs of each node; torchrun starts one process per GPU")
    image: str = Field(min_length=1, description="the train image (the same as the train role's)")
    runtime: str = Field(default="torch-distributed", description="the (Cluster)TrainingRuntime to run on")
    namespace: str | None = Field(default=None, description="default: this pod's namespace")
    storage_claim: str | None = Field(default=None, description="the storage PVC, mounted on every node")
    storage_mount: str = Field(
        default="/mnt/kubedistill", description="where the PVC is mounted (= $KUBEDISTILL_STORAGE)"
    )
    cpu: str | None = Field(default=None, description="CPU per node (default: the runtime's)")
    memory: str | None = Field(default=None, description="memory per node (default: the runtime's)")
    env: dict[str, str] = Field(default_factory=dict, description="more environment for every node")
    node_selector: dict[str, str] = Field(default_factory=dict, description="where the nodes' pods go")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="e.g. the GPU nodes' taint")
    secret_env: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Secret keys as environment variables of every node: {name, secret, key, optional} (by name)",
    )
    timeout_s: int = Field(default=7 * 24 * 3600, ge=10, description="how long to wait for the job")
    poll_s: int = Field(default=15, ge=1, description="seconds between status polls")

    @field_validator("env")
    @classmethod
    def _no_torch_env(cls, v: dict[str, str]) -> dict[str, str]:
        taken = sorted(set(v) & set(RESERVED_TORCH_ENV))
        if taken:
            raise ValueError(f"env: {', '.join(taken)} are set by the torch runtime on every node")
        return v


def trainjob_config(environ: dict[str, str] | None = None) -> TrainJobConfig | None:
    """The TrainJob settings of this pod (``$KUBEDISTILL_TRAINJOB``), or None: train in this pod."""
    raw = (os.environ if environ is None else environ).get(TRAINJOB_ENV)
    return TrainJobConfig.model_validate_json(raw) if raw else None


def trainjob_name(stage: str, kwargs: dict[str, Any]) -> str:
    """A DNS-1035 label from the stage and its arguments: the same task retried finds its own job."""
    digest = hashlib.sha256(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"kd-{stage.replace('_', '-')}-{digest}"


def trainjob_command(stage: str, args_file: str | Path, metrics_file: str | Path) -> list[str]:
    """What every node runs: torchrun (its settings from the runtime's PET_* variables) over the runner."""
    return [
        "python",
        "-m",
        "torch.distributed.run",
        "-m",
        "kubedistill.runner",
        stage,
        str(args_file),
        str(metrics_file),
    ]


def trainjob_options(cfg: TrainJobConfig, stage: str, command: list[str]) -> list[Any]:
    """The Kubeflow SDK options of the job: its command, labels, and the PVC on every node (a runtime patch
    of the runtime's ``node`` replicated job and container)."""
    from kubeflow.trainer.options.kubernetes import (
        ContainerPatch,
        JobSetSpecPatch,
        JobSetTemplatePatch,
        JobSpecPatch,
        JobTemplatePatch,
        Labels,
        PodSpecPatch,
        PodTemplatePatch,
        ReplicatedJobPatch,
        RuntimePatch,
        TrainerCommand,
        TrainingRuntimeSpecPatch,
    )

    options: list[Any] = [
        TrainerCommand(command=command),
        Labels(labels={"app.kubernetes.io/part-of": "kubedistill", "kubedistill.io/stage": stage.replace("_", "-")}),
    ]
    secrets = [
        {
            "name": s["name"],
            "valueFrom": {"secretKeyRef": {"name": s["secret"], "key": s["key"], "optional": bool(s.get("optional"))}},
        }
        for s in cfg.secret_env
    ]
    if cfg.storage_claim or secrets or cfg.node_selector or cfg.tolerations:
        mounts = [{"name": "kubedistill-data", "mountPath": cfg.storage_mount}] if cfg.storage_claim else None
        pod = PodSpecPatch(
            volumes=[{"name": "kubedistill-data", "persistentVolumeClaim": {"claimName": cfg.storage_claim}}]
            if cfg.storage_claim
            else None,
            containers=[ContainerPatch(name="node", env=secrets or None, volume_mounts=mounts)],
            node_selector=dict(cfg.node_selector) or None,
            tolerations=list(cfg.tolerations) or None,
        )
        job = ReplicatedJobPatch(
            name="node", template=JobTemplatePatch(spec=JobSpecPatch(template=PodTemplatePatch(spec=pod)))
        )
        options.append(
            RuntimePatch(
                training_runtime_spec=TrainingRuntimeSpecPatch(
                    template=JobSetTemplatePatch(spec=JobSetSpecPatch(replicated_jobs=[job]))
                )
            )
        )
    return options


def launch_trainjob(
    stage: str,
    kwargs: dict[str, Any],
    cfg: TrainJobConfig,
    *,
    workdir: str | Path,
    client: Any | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Run train stage ``stage`` with ``kwargs`` as a TrainJob of ``cfg.num_nodes`` x ``cfg.gpus_per_node``
    GPUs and return the metrics rank 0 wrote. ``workdir`` is a folder on the storage PVC (the nodes see it
    at the same path); ``client`` a ``kubeflow.trainer.TrainerClient`` (default: in-cluster credentials, this
    pod's namespace). A job of the same stage and arguments that exists already (a retried task) is awaited,
    not created again. Raises :class:`LaunchFailed` (exit 3) when the job fails, times out or writes no
    metrics, with the end of its node-0 log."""
    say = log or (lambda line: print(line, flush=True))
    if client is None:
        from kubeflow.common.types import KubernetesBackendConfig
        from kubeflow.trainer import TrainerClient

        client = TrainerClient(KubernetesBackendConfig(namespace=cfg.namespace))
    from kubeflow.trainer import CustomTrainerContainer

    name = trainjob_name(stage, kwargs)
    folder = Path(workdir) / name
    folder.mkdir(parents=True, exist_ok=True)
    args_file, metrics_file = folder / "args.json", folder / "metrics.json"
    args_file.write_text(json.dumps(kwargs))
    resources: dict[str, Any] = {"gpu": cfg.gpus_per_node}
    resources.update({k: v for k, v in (("cpu", cfg.cpu), ("memory", cfg.memory)) if v})
    trainer = CustomTrainerContainer(
        image=cfg.image,
        num_nodes=cfg.num_nodes,
        resources_per_node=resources,
        env={"KUBEDISTILL_GPUS": str(cfg.gpus_per_node), **cfg.env},
    )
    from kubeflow.trainer.options.common import Name

    options = [Name(name=name), *trainjob_options(cfg, stage, trainjob_command(stage, args_file, metrics_file))]
    try:
        client.train(runtime=cfg.runtime, trainer=trainer, options=options)
        say(f"{stage}: TrainJob {name}: {cfg.num_nodes} nodes x {cfg.gpus_per_node} GPUs on {cfg.runtime}")
    except RuntimeError as e:
        cause = getattr(e.__cause__, "status", None)
        if cause != 409:
            raise LaunchFailed(f"{stage}: TrainJob {name} was not created: {_api_reason(e)}") from None
        say(f"{stage}: TrainJob {name} exists (a retried task): waiting for it")
    seen: list[str] = []

    def progress(job: Any) -> None:
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
            say(f"{stage}: TrainJob {name}: {job.status}")

    failure = None
    try:
        client.wait_for_job_status(
            name, status={"Complete"}, timeout=cfg.timeout_s, polling_interval=cfg.poll_s, callbacks=[progress]
        )
    except (RuntimeError, TimeoutError) as e:
        failure = str(e)
    lines = list(client.get_job_logs(name, step="node-0") or [])
    for line in lines:
        say(line.rstrip("\n"))
    if failure is not None:
        tail = " | ".join(line.strip() for line in lines[-5:]) or "no log"
        raise LaunchFailed(f"{stage}: {failure} (node-0 log ends: {tail})")
    if not metrics_file.is_file():
        raise LaunchFailed(f"{stage}: TrainJob {name} completed but rank 0 wrote no metrics to {metrics_file}")
    return {k: float(v) for k, v in json.loads(metrics_file.read_text()).items()}


def _api_reason(e: BaseException) -> str:
    cause = e.__cause__
    body = getattr(cause, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)[:500]
        except (ValueError, AttributeError):
            return str(body)[:500]
    return str(cause or e)
