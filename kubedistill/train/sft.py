"""Stage `sft`: supervised fine-tuning of the student on verified CoTs, with a curriculum.

DistilQwen2.5-R1 trains first on *medium* CoTs, then adds the *hard* ones. Each curriculum stage is a
TRL ``SFTTrainer`` run that continues from the previous stage's weights. The student learns the
completion only (prompt-completion rows; the prompt is masked out of the loss).

The output is a model directory (transformers + vLLM loadable; LoRA adapters are merged). Finished
curriculum stages and trainer checkpoints in ``work_dir`` (on the cluster: a PVC) make a killed run
resumable: run it again with the same ``work_dir``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from kubedistill.config import StrictModel
from kubedistill.records import Difficulty, Problem, Sample, StageStats

STAGE = "sft"


class CurriculumStage(StrictModel):
    name: str
    difficulties: list[Difficulty] = Field(min_length=1, description="which CoTs this stage trains on")
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs")


class LoraSettings(StrictModel):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class SFTSettings(StrictModel):
    """SFT hyper-parameters (defaults suit a GPU run; the CPU recipes override them)."""

    base_model: str = Field(default="tiny-qwen3", description="model reference (see kubedistill/models.py)")
    curriculum: list[CurriculumStage] = Field(
        default_factory=lambda: [
            CurriculumStage(name="medium", difficulties=["medium"]),
            CurriculumStage(name="hard", difficulties=["medium", "hard"]),
        ]
    )
    learning_rate: float = Field(default=1e-5, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    per_device_batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=4096, ge=16)
    packing: bool = Field(default=False, description="pack CoTs into full rows (see docs/training.md)")
    lora: LoraSettings | None = None
    gradient_checkpointing: bool = False
    bf16: bool | None = Field(default=None, description="None: on when a GPU supports it")
    deepspeed: str | None = Field(default=None, description="DeepSpeed config JSON (configs/ds_zero2.json, ...)")
    seed: int = 0
    logging_steps: int = 5
    save_steps: int | None = Field(default=None, ge=1, description="checkpoint every N steps (resumable)")
    prompt: str = "generate"
    unlabelled_as: Difficulty = Field(default="medium", description="difficulty assumed for unlabelled CoTs")


def _torch_setup() -> Any:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch


def _bf16(cfg: SFTSettings) -> bool:
    import torch

    if cfg.bf16 is not None:
        return cfg.bf16
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


class _MlflowLogCallback:
    """Forward trainer logs (loss, lr, grad norm) to the active MLflow run, prefixed by the stage."""

    def __new__(cls, prefix: str) -> Any:
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_log(
                self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
            ) -> None:
                import mlflow

                if not logs or mlflow.active_run() is None:
                    return
                metrics = {f"{prefix}.{k}": float(v) for k, v in logs.items() if isinstance(v, int | float)}
                if metrics:
                    mlflow.log_metrics(metrics, step=int(state.global_step))

        return Callback()


def train_sft(
    samples: Sequence[Sample],
    cfg: SFTSettings,
    *,
    problems: Sequence[Problem],
    model_dir: str | Path,
    work_dir: str | Path | None = None,
) -> tuple[Path, StageStats]:
    """Train the student through the curriculum into ``model_dir``; returns it and the stats."""
    from kubedistill.models import resolve_model
    from kubedistill.train.data import sft_rows

    torch = _torch_setup()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    final = Path(model_dir)
    work_root = Path(work_dir) if work_dir else final.with_name(final.name + ".work")
    stats = StageStats(stage=STAGE, n_in=len(samples))
    t0 = time.perf_counter()
    rows = sft_rows(samples, problems, stats, cfg.prompt)
    if not rows:
        raise ValueError(
            f"sft: no CoTs to train on ({len(samples)} sample(s) in, {stats.n_dropped} unusable: "
            f"{dict(stats.dropped)}); if verify kept none, see its rejects — the teacher may be too weak for these "
            "problems"
        )
    for r in rows:
        if r["difficulty"] not in ("easy", "medium", "hard"):
            r["difficulty"] = cfg.unlabelled_as
    # Checkpoints belong to one (config, data) pair: a changed recipe or data set never resumes from them.
    ckpt_root = work_root / _fingerprint(cfg, rows)
    base = resolve_model(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_path: str | Path = base
    used: set[str] = set()
    history: dict[str, Any] = {}
    for i, stage in enumerate(cfg.curriculum):
        stage_rows = [r for r in rows if r["difficulty"] in stage.difficulties]
        done_dir = ckpt_root / f"{i}-{stage.name}" / "final"
        if (done_dir / "config.json").exists():  # finished before a restart
            model_path = done_dir
            used.update(r["sample_id"] for r in stage_rows)
            history[stage.name] = json.loads((done_dir / "kubedistill_stage.json").read_text())
            continue
        if not stage_rows:
            history[stage.name] = {"rows": 0, "skipped": "no CoTs of these difficulties"}
            continue
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in stage_rows])
        stage_dir = ckpt_root / f"{i}-{stage.name}"
        steps_per_epoch = math.ceil(len(stage_rows) / (cfg.per_device_batch_size * cfg.gradient_accumulation_steps))
        args = SFTConfig(
            output_dir=str(stage_dir),
            num_train_epochs=stage.epochs,
            max_steps=stage.max_steps or -1,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler_type,
            warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
            per_device_train_batch_size=cfg.per_device_batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            max_length=cfg.max_length,
            packing=cfg.packing,
            gradient_checkpointing=cfg.gradient_checkpointing,
            bf16=_bf16(cfg),
            deepspeed=cfg.deepspeed,
            seed=cfg.seed,
            logging_steps=max(1, min(cfg.logging_steps, steps_per_epoch)),
            save_strategy="steps" if cfg.save_steps else "no",
            save_steps=cfg.save_steps or 500,
            save_total_limit=2,
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=False,
        )
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if _bf16(cfg) else torch.float32)
        peft_config = None
        if cfg.lora is not None:
            from peft import LoraConfig

            peft_config = LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=cfg.lora.target_modules,
                task_type="CAUSAL_LM",
            )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=ds,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[_MlflowLogCallback(f"sft.{stage.name}")],
        )
        resume = _last_checkpoint(stage_dir)
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        trained = trainer.model
        if cfg.lora is not None:
            trained = trained.merge_and_unload()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        history[stage.name] = {
            "rows": len(stage_rows),
            "steps": int(trainer.state.global_step),
            "train_loss": float(result.training_loss),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "resumed_from": str(resume) if resume else None,
        }
        tmp = done_dir.with_name("final.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        trained.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "kubedistill_stage.json").write_text(json.dumps(history[stage.name]))
        os.replace(tmp, done_dir)
        model_path = done_dir
        used.update(r["sample_id"] for r in stage_rows)
        del trainer, model, trained
    if model_path == base:
        raise ValueError("no curriculum stage had CoTs to train on (check the difficulties in sft.curriculum)")
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(model_path, final, ignore=shutil.ignore_patterns("kubedistill_stage.json"))
    stats.n_out = len(used)
    unused = len(rows) - len(used)
    if unused:
        stats.dropped["not_in_curriculum"] = unused
    stats.elapsed_s = time.perf_counter() - t0
    stats.info["curriculum"] = history
    stats.info["base_model"] = cfg.base_model
    for name, h in history.items():
        for k in ("train_loss", "first_loss", "last_loss", "steps"):
            if h.get(k) is not None:
                stats.metrics[f"{name}.{k}"] = float(h[k])
    return final, stats


def _fingerprint(cfg: SFTSettings, rows: Sequence[dict[str, Any]]) -> str:
    import hashlib

    h = hashlib.sha256(cfg.model_dump_json().encode())
    for r in rows:
        h.update(json.dumps([r["prompt"], r["completion"], r["difficulty"]], sort_keys=True).encode())
    return h.hexdigest()[:16]


def _last_checkpoint(stage_dir: Path) -> Path | None:
    if not stage_dir.exists():
        return None
    ckpts = sorted(
        (p for p in stage_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    return ckpts[-1] if ckpts else None
