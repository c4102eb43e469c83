"""The shipped DeepSpeed ZeRO configs validate offline, once "auto" is filled as the HF Trainer does."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from kubedistill.train.deepspeed import NAMES, config_path, load_config

pytest.importorskip("deepspeed")


def _filled(name: str, *, bf16: bool, hidden_size: int = 1536) -> dict:
    """Fill the "auto" values exactly as transformers' Trainer does (HfTrainerDeepSpeedConfig)."""
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    args = TrainingArguments(
        output_dir="unused",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=8,
        learning_rate=1e-5,
        max_grad_norm=1.0,
        bf16=bf16,
        use_cpu=True,
        report_to=[],
    )
    hf = HfTrainerDeepSpeedConfig(load_config(name))
    hf.trainer_config_process(args)
    hf.trainer_config_finalize(args, SimpleNamespace(config=SimpleNamespace(hidden_size=hidden_size)), 1000)
    return hf.config


@pytest.mark.parametrize("name", NAMES)
def test_shipped_config_validates_with_deepspeed(name: str) -> None:
    from deepspeed.runtime.config import DeepSpeedConfig

    raw = load_config(name)
    assert "auto" in json.dumps(raw)  # filled from the training arguments, so one file serves every trainer
    cfg = _filled(name, bf16=False)
    assert '"auto"' not in json.dumps(cfg)
    ds = DeepSpeedConfig(cfg, mpu=None)
    assert ds.train_micro_batch_size_per_gpu == 2
    assert ds.gradient_accumulation_steps == 8
    assert ds.train_batch_size == 16  # x world size 1
    assert ds.gradient_clipping == 1.0
    stage = {"zero2": 2, "zero3": 3, "zero3_offload": 3}[name]
    assert ds.zero_optimization_stage == stage
    offload = ds.zero_config.offload_optimizer
    if name == "zero3_offload":
        assert offload is not None and str(offload.device).endswith("cpu")
        assert str(ds.zero_config.offload_param.device).endswith("cpu")
        assert ds.optimizer_name == "adamw" and ds.optimizer_params["lr"] == 1e-5
    else:
        assert offload is None and ds.optimizer_name is None  # the HF Trainer's AdamW is used
    if stage == 3:
        assert cfg["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * 1536 * 1536)
        assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert cfg["zero_optimization"]["reduce_bucket_size"] == 1536 * 1536


def test_bf16_follows_the_training_arguments() -> None:
    assert _filled("zero2", bf16=False)["bf16"]["enabled"] is False
    cfg = _filled("zero3", bf16=True)
    assert cfg["bf16"]["enabled"] is True and cfg["fp16"]["enabled"] is False


def test_config_paths_resolve_names_and_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for name in NAMES:
        assert config_path(name).endswith(f"deepspeed/{name}.json")
    own = tmp_path / "mine.json"
    own.write_text("{}")
    assert config_path(str(own)) == str(own)
    with pytest.raises(FileNotFoundError, match="zero2"):
        config_path("zero9")


def test_trainer_settings_accept_the_shipped_names() -> None:
    from kubedistill.train.common import training_arguments
    from kubedistill.train.sft import SFTConfig

    def deepspeed(cfg: SFTConfig) -> str | None:
        return training_arguments(cfg, output_dir="o", rows=1, epochs=1, max_steps=None)["deepspeed"]

    assert deepspeed(SFTConfig()) is None
    assert deepspeed(SFTConfig(deepspeed="zero3_offload")).endswith("zero3_offload.json")
