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

import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

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
    launch — then the caller trains in-process. ``kwargs`` must be JSON-able."""
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
