"""Training on every GPU of a pod: a training step started on a pod with several GPUs runs itself again
under ``torchrun`` (one process per GPU) and returns the metrics rank 0 wrote.

``steps.sft`` / ``steps.dpo`` / ``steps.reward_models`` / ``steps.grpo`` call :func:`relaunch` first: on
one GPU (or none, or already inside a launch) it returns None and the step trains in-process. Otherwise
it writes the step's keyword arguments to a JSON file and runs
``python -m torch.distributed.run --standalone --nproc-per-node=N -m kubedistill.launch STEP ARGS METRICS``;
every rank calls the same step function (the HF Trainer reads RANK / WORLD_SIZE / LOCAL_RANK, DeepSpeed
comes from the trainer's own ``deepspeed`` setting), only rank 0 logs to MLflow and writes the model
directory and the metrics. The GPU count comes from ``$KUBEDISTILL_GPUS`` (set at compile time for GPU
roles, see kubedistill/cluster.py) or CUDA.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STEPS = ("sft", "dpo", "reward_models", "grpo")


class LaunchFailed(RuntimeError):
    """A multi-process training run exited non-zero."""


def relaunch(step: str, kwargs: dict[str, Any]) -> dict[str, float] | None:
    """Run ``steps.<step>(**kwargs)`` on all of this pod's GPUs; None when the caller should train in-process."""
    from kubedistill.cluster import distributed_command, format_command, local_gpu_count

    if step not in STEPS:
        raise ValueError(f"unknown training step {step!r} (one of {', '.join(STEPS)})")
    with tempfile.TemporaryDirectory(prefix=f"kubedistill-{step}-") as tmp:
        args_file, metrics_file = Path(tmp) / "args.json", Path(tmp) / "metrics.json"
        cmd = distributed_command(["kubedistill.launch", step, str(args_file), str(metrics_file)], launcher="torchrun")
        if cmd is None:
            return None
        args_file.write_text(json.dumps(kwargs))
        log.warning("%s: %d processes: %s", step, local_gpu_count(), format_command(cmd))
        rc = subprocess.run(cmd, check=False).returncode
        if rc != 0:
            raise LaunchFailed(f"{step}: the {local_gpu_count()}-process run exited {rc} (its output is above)")
        if not metrics_file.exists():
            raise LaunchFailed(f"{step}: rank 0 wrote no metrics")
        return {k: float(v) for k, v in json.loads(metrics_file.read_text()).items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of each launched process: ``python -m kubedistill.launch STEP ARGS.json METRICS.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] not in STEPS:
        print(f"usage: python -m kubedistill.launch {{{','.join(STEPS)}}} ARGS.json METRICS.json", file=sys.stderr)
        return 2
    step, args_file, metrics_file = args
    from kubedistill import steps

    metrics = getattr(steps, step)(**json.loads(Path(args_file).read_text()))
    if int(os.environ.get("RANK", "0")) == 0:
        Path(metrics_file).write_text(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
