"""DPO with per-pair beta: the loss maths against TRL's and by hand, and real training on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubedistill.core.records import PreferencePair, Problem, StageStats
from kubedistill.train.dpo import DPOConfig, build_dpo_trainer, dpo_rows, train_dpo

pytestmark = pytest.mark.integration


def _data(n: int = 16) -> tuple[list[Problem], list[PreferencePair]]:
    problems = [Problem(id=f"p{i}", problem=f"What is {i} + {i}?", answer=str(2 * i), source="t") for i in range(n)]
    pairs = [
        PreferencePair(
            id=f"pair{i}",
            problem_id=f"p{i}",
            chosen_sample_id=f"s{i}",
            chosen=f"<think>\n{i} + {i} = {2 * i}\n</think>\n\nThe answer is \\boxed{{{2 * i}}}.",
            rejected=f"<think>\n{i} + {i} = {2 * i + 7}\n</think>\n\nThe answer is \\boxed{{{2 * i + 7}}}.",
            corruption="number",
            magnitude=0.3,
            beta=0.5 if i % 3 == 0 else None,  # some pairs carry their own beta
        )
        for i in range(n)
    ]
    return problems, pairs


def _cfg(tiny_model: Path, **kw: object) -> DPOConfig:
    base = {
        "base_model": str(tiny_model),
        "beta": 0.1,
        "learning_rate": 5e-3,
        "per_device_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_length": 256,
        "logging_steps": 1,
        "warmup_ratio": 0.0,
        "lr_scheduler_type": "constant",
    }
    base.update(kw)
    return DPOConfig(**base)  # type: ignore[arg-type]


def _batch(trainer, n: int = 4):  # type: ignore[no-untyped-def]
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def _perturb(model) -> None:  # type: ignore[no-untyped-def]
    """Move the policy away from the reference so that the log-ratios are not all zero."""
    import torch

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _completion_logps(model, batch):  # type: ignore[no-untyped-def]
    """Σ log π(token) over completion tokens, per sequence, by hand."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (logp * batch["completion_mask"][:, 1:]).sum(dim=1)


def test_equal_betas_give_trls_loss_and_per_pair_betas_follow_the_maths(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    import torch.nn.functional as F

    problems, pairs = _data(4)
    cfg = _cfg(tiny_model, beta=0.2)
    uniform = [p.model_copy(update={"beta": None}) for p in pairs]
    rows = dpo_rows(uniform, problems, StageStats(stage="dpo"), cfg)
    assert all(r["beta"] == 0.2 for r in rows)
    ours = build_dpo_trainer(rows, cfg, base=tiny_model, output_dir=tmp_path / "a")
    stock = build_dpo_trainer(rows, cfg, base=tiny_model, output_dir=tmp_path / "b", per_pair_beta=False)
    assert type(stock).__name__ == "DPOTrainer" and type(ours).__name__ == "PerPairBetaDPOTrainer"
    stock.model.load_state_dict(ours.model.state_dict())
    _perturb(ours.model)
    _perturb(stock.model)
    batch = _batch(ours)
    assert batch["beta"].tolist() == pytest.approx([0.2] * 4)
    stock_batch = {k: v for k, v in batch.items() if k != "beta"}
    loss_ours = ours.compute_loss(ours.model, dict(batch))
    loss_stock = stock.compute_loss(stock.model, dict(stock_batch))
    assert loss_stock.item() != pytest.approx(0.6931, abs=1e-3)  # the log-ratios are not zero
    torch.testing.assert_close(loss_ours, loss_stock, rtol=1e-6, atol=1e-6)

    # per-pair beta: loss = mean_i -log σ(β_i Δ_i), Δ_i from the policy and reference log-probs
    logps = _completion_logps(ours.model, batch)
    ref = _completion_logps(ours.ref_model, batch)
    chosen, rejected = (logps - ref).chunk(2)
    delta = chosen - rejected
    betas = torch.tensor([0.05, 0.2, 1.0, 3.0])
    batch["beta"] = betas
    loss_pp = ours.compute_loss(ours.model, dict(batch))
    expected = (-F.logsigmoid(betas * delta)).mean()
    torch.testing.assert_close(loss_pp, expected, rtol=1e-4, atol=1e-5)
    uniform_expected = (-F.logsigmoid(0.2 * delta)).mean()
    torch.testing.assert_close(loss_stock, uniform_expected, rtol=1e-4, atol=1e-5)
    assert abs(loss_pp.item() - loss_stock.item()) > 1e-4  # the betas matter
    assert ours.beta == 0.2  # the scalar is restored after each loss


def test_per_pair_beta_in_ipo_uses_each_pairs_margin(tiny_model: Path, tmp_path: Path) -> None:
    import torch

    problems, pairs = _data(4)
    cfg = _cfg(tiny_model, loss_type="ipo", beta=0.5)
    rows = dpo_rows(pairs, problems, StageStats(stage="dpo"), cfg)
    trainer = build_dpo_trainer(rows, cfg, base=tiny_model, output_dir=tmp_path / "ipo")
    _perturb(trainer.model)
    batch = _batch(trainer)
    logps = _completion_logps(trainer.model, batch)
    ref = _completion_logps(trainer.ref_model, batch)
    n_tokens = batch["completion_mask"].sum(dim=1).float()
    chosen, rejected = ((logps - ref) / n_tokens).chunk(2)
    betas = torch.tensor([0.1, 0.5, 1.0, 2.0])
    batch["beta"] = betas
    loss = trainer.compute_loss(trainer.model, dict(batch))
    expected = ((chosen - rejected - 1 / (2 * betas)) ** 2).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


def test_precomputed_reference_log_probs_work_with_per_pair_beta(tiny_model: Path, tmp_path: Path) -> None:
    import torch

    problems, pairs = _data(4)
    rows = dpo_rows(pairs, problems, StageStats(stage="dpo"), _cfg(tiny_model))
    live = build_dpo_trainer(rows, _cfg(tiny_model), base=tiny_model, output_dir=tmp_path / "live")
    pre = build_dpo_trainer(
        rows, _cfg(tiny_model, precompute_ref_log_probs=True), base=tiny_model, output_dir=tmp_path / "pre"
    )
    assert pre.ref_model is None and "ref_chosen_logps" in pre.train_dataset.column_names
    _perturb(live.model)
    _perturb(pre.model)
    batch_live, batch_pre = _batch(live), _batch(pre)
    assert "ref_chosen_logps" in batch_pre and batch_pre["beta"].tolist() == batch_live["beta"].tolist()
    torch.testing.assert_close(
        pre.compute_loss(pre.model, dict(batch_pre)),
        live.compute_loss(live.model, dict(batch_live)),
        atol=1e-5,
        rtol=1e-5,
    )


def test_train_dpo_learns_the_preference_and_saves_a_reloadable_model(
    tiny_model: Path, tmp_path: Path, tracking_uri: str
) -> None:
    import mlflow

    problems, pairs = _data()
    too_long = pairs[0].model_copy(update={"id": "long", "chosen": pairs[0].chosen + " pad" * 400})
    same = pairs[1].model_copy(update={"id": "same", "rejected": pairs[1].chosen})
    orphan = pairs[2].model_copy(update={"id": "orphan", "problem_id": "nope"})
    cfg = _cfg(tiny_model, epochs=4)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run() as run:
        model_dir, stats = train_dpo([*pairs, too_long, same, orphan], cfg, problems=problems, model=tmp_path / "dpo")
    logged = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "dpo.loss")
    assert len(logged) == stats.metrics["steps"]  # the loss history went to the active MLflow run
    assert stats.dropped == {"too_long": 1, "identical": 1, "unknown_problem": 1}
    assert stats.n_out == 16 and stats.n_in == 19
    assert stats.info["per_pair_beta"] == {"min": 0.1, "max": 0.5, "pairs_with_own": 6}
    m = stats.metrics
    assert m["first_loss"] == pytest.approx(0.6931, abs=0.01)  # policy == reference at the start
    assert m["last_loss"] < 0.5 * m["first_loss"]
    assert m["rewards.accuracies"] > 0.7
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    out = model.generate(**tok("What is 1 + 1?", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 0
