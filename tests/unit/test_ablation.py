"""The ablation harness's pieces that need no model: arms, their data, the budget split, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubedistill.ablation import (
    DEFAULT_ARMS,
    REFERENCE,
    Arm,
    ArmConfig,
    Budget,
    _sft_config,
    arm_samples,
    load_rows,
    paired_delta,
    plot_png,
    table_markdown,
)
from kubedistill.core.config import ConfigError
from kubedistill.core.records import Sample


def _pool() -> list[Sample]:
    out = []
    for i in range(12):
        out.append(
            Sample(  # id derived: p<i % 6>::t::t0.7::<i // 6>; the test names CoT i "s<i>" (_name)
                problem_id=f"p{i % 6}",
                teacher="t",
                temperature=0.7,
                sample_index=i // 6,
                text=f"<think>\nstep {i}\n</think>\n\n\\boxed{{{i}}}",
                finish_reason="length" if i == 11 else "stop",
                correct=i % 3 != 0,  # s0, s3, s6, s9 wrong
                difficulty=("easy" if i in (1, 4) else "medium" if i % 2 else "hard") if i % 3 else None,
                rv=i % 10 if i % 3 else None,
                cd=(i * 2) % 10 if i % 3 else None,
            )
        )
    return out


def _name(sample: Sample) -> str:
    """The test's name of a pool CoT: "s<i>" for the i-th of _pool()."""
    problem, index = int(sample.problem_id[1:]), sample.sample_index
    return f"s{problem + 6 * index}"


def _cfg(**kw: object) -> ArmConfig:
    return ArmConfig(budget=Budget(sft_steps=10, dpo_steps=2, grpo_steps=2), **kw)  # type: ignore[arg-type]


def test_each_arm_trains_on_its_own_cots() -> None:
    pool, cfg = _pool(), _cfg()
    ids = {a.name: [_name(s) for s in arm_samples(pool, cfg.arm(a.name), cfg)[0]] for a in cfg.arms if a.kind == "sft"}
    assert ids["sft_all"] == [f"s{i}" for i in range(11)]  # every finished CoT, right or wrong
    assert ids["sft_verified"] == ["s1", "s2", "s4", "s5", "s7", "s8", "s10"]  # s11 verified but cut off
    assert ids["curriculum"] == ids["shuffled"] == ["s2", "s5", "s7", "s8", "s10"]  # verified, medium or hard
    window = ids["window"]
    assert window and set(window) <= set(ids["sft_verified"])
    assert len(ids["random"]) == len(window) and set(ids["random"]) <= set(ids["sft_verified"])
    again = arm_samples(pool, cfg.arm("random"), cfg)[0]
    assert [_name(s) for s in again] == ids["random"]  # seeded


def test_the_budget_is_the_same_and_a_curriculum_splits_it() -> None:
    cfg = _cfg()
    plain = _sft_config(cfg.arm("shuffled"), cfg)
    staged = _sft_config(cfg.arm("curriculum"), cfg)
    assert [s.max_steps for s in plain.curriculum] == [10]
    assert [(s.difficulties, s.max_steps) for s in staged.curriculum] == [(["medium"], 5), (["medium", "hard"], 5)]
    assert plain.base_model == staged.base_model == cfg.base_model and plain.seed == cfg.seed


def test_arms_by_name_and_their_checks() -> None:
    cfg = _cfg(arms=["sft_verified", "base", {"name": "dpo_hi", "kind": "dpo", "description": "x"}])
    assert [a.name for a in cfg.arms] == ["sft_verified", "base", "dpo_hi"]
    with pytest.raises(ConfigError, match="no arm 'nope'"):
        cfg.arm("nope")
    with pytest.raises(ValueError, match="unknown arm"):
        _cfg(arms=["sft_verified", "nope"])
    with pytest.raises(ValueError, match="start from the reference arm"):
        _cfg(arms=["base", "dpo"])
    with pytest.raises(ValueError, match="rewards are for grpo arms"):
        Arm(name="x", kind="sft", rewards=["rv"])
    assert {a.name for a in DEFAULT_ARMS} | {REFERENCE.name} == {a.name for a in _cfg().arms}


def _row(name: str, kind: str, acc: float, per: dict[str, bool], **extra: object) -> dict:
    return {
        "arm": {"name": name, "kind": kind, "description": name},
        "n_problems": len(per),
        "accuracy": acc,
        "ci95": [max(0.0, acc - 0.1), min(1.0, acc + 0.1)],
        "tokens_mean": 50.0,
        "tokens_median": 48.0,
        "per_problem": per,
        "training": {"rows": 12.0, "training_tokens": 3456.0},
        **extra,
    }


def test_the_table_pairs_every_arm_with_the_base(tmp_path: Path) -> None:
    per_base = {f"p{i}": i < 2 for i in range(10)}
    per_arm = {f"p{i}": i < 6 for i in range(10)}
    dist = {"mean": 0.4, "inside": 0.5, "distance": 0.05, "low": 0.0, "high": 0.44}
    for name, kind, acc, per in (
        ("grpo_rv", "grpo", 0.6, per_arm),
        ("base", "base", 0.2, per_base),
        ("sft_verified", "sft", 0.6, per_arm),
    ):
        d = tmp_path / name
        d.mkdir()
        (d / "arm.json").write_text(json.dumps(_row(name, kind, acc, per, rv=dist)))
    rows = load_rows([tmp_path / "grpo_rv", tmp_path / "base", tmp_path / "sft_verified", tmp_path / "missing"])
    assert [r["arm"]["name"] for r in rows] == ["base", "sft_verified", "grpo_rv"]  # the harness's order
    d = paired_delta(rows[1], rows[0])
    assert d is not None and d["delta"] == pytest.approx(0.4) and d["low"] > 0 and d["n"] == 10
    assert paired_delta(rows[0], rows[0]) is None
    md = table_markdown(rows)
    assert "| sft_verified | sft_verified | 0.600 [0.500, 0.700] | +0.400 [" in md
    assert "| 50 / 48 | 12 | 3456 | 50% (0.050) | — |" in md
    png = plot_png(rows, tmp_path / "plot.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_ablation_report_writes_the_table_and_nests_every_arm_run(tmp_path: Path, tracking_uri: str) -> None:
    import mlflow

    from kubedistill.ablation import ablation_report
    from kubedistill.tracking import TrackingConfig

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("kd-ablation-test")
    children = []
    for name in ("base", "sft_verified"):
        with mlflow.start_run(run_name=f"arm:{name}") as run:
            children.append(run.info.run_id)
        d = tmp_path / name
        d.mkdir()
        per = {f"p{i}": name != "base" and i < 5 for i in range(10)}
        (d / "arm.json").write_text(
            json.dumps(
                _row(
                    name,
                    "base" if name == "base" else "sft",
                    0.5 * (name != "base"),
                    per,
                    runs={"evaluate": run.info.run_id},
                )
            )
        )
    metrics = ablation_report(
        arms=[str(tmp_path / "base")],
        reference=str(tmp_path / "sft_verified"),
        report=str(tmp_path / "t.md"),
        report_html=str(tmp_path / "t.html"),
        summary=str(tmp_path / "t.json"),
        name="unit",
        tracking=TrackingConfig(experiment="kd-ablation-test", tracking_uri=tracking_uri),
    )
    assert metrics["sft_verified.accuracy"] == 0.5 and metrics["sft_verified.delta_vs_base"] == pytest.approx(0.5)
    assert "| base |" in (tmp_path / "t.md").read_text()
    assert "data:image/png;base64," in (tmp_path / "t.html").read_text()
    parent = json.loads((tmp_path / "t.json").read_text())["parent_run_id"]
    for child in children:
        assert mlflow.get_run(child).data.tags["mlflow.parentRunId"] == parent


def test_an_arm_without_what_it_starts_from_is_refused_before_training(tmp_path: Path) -> None:
    from kubedistill.ablation import train_arm
    from kubedistill.core.records import Problem

    cfg = _cfg(arms=["sft_verified", "dpo", "grpo_rv", "grpo_rv_cd"])
    problems = [Problem(id=f"p{i}", problem=f"{i}+{i}", answer=str(2 * i), source="t") for i in range(6)]
    (tmp_path / "rm" / "rv").mkdir(parents=True)  # an RV reward model, no CD one
    kw = {"problems": problems, "reward_models": str(tmp_path / "rm")}
    with pytest.raises(ConfigError, match="dpo arm needs the reference student"):
        train_arm(_pool(), cfg, model=tmp_path / "m", arm="dpo", **kw)
    with pytest.raises(ConfigError, match="grpo_rv_cd: no cd reward model"):
        train_arm(_pool(), cfg, model=tmp_path / "m", arm="grpo_rv_cd", reference=str(tmp_path), **kw)
    with pytest.raises(ConfigError, match="no arm 'grpo_cd'"):  # not among the recipe's arms
        train_arm(_pool(), cfg, model=tmp_path / "m", arm="grpo_cd", reference=str(tmp_path), **kw)


def test_the_recipe_always_has_the_reference_arm_and_the_pool_keeps_wrong_cots() -> None:
    from kubedistill.chat.config import EndpointConfig
    from kubedistill.recipes import load_recipe

    recipe = load_recipe("examples/ablation.yaml", {"ablation.arms": ["base", "sft_all"]})
    assert [a.name for a in recipe.ablation.arms] == ["sft_verified", "base", "sft_all"]  # the reference added first
    args = recipe.pipeline_arguments([EndpointConfig(url="http://127.0.0.1:9/v1", model="t")])
    assert args["arms"] == ["base", "sft_all"] and args["reference_arm"] == "sft_verified"
    assert args["verify_config"]["keep_all"] is True
    assert args["judge_config"]["only_correct"] is args["score_config"]["only_correct"] is True
    with pytest.raises(ConfigError, match="start from the reference arm 'sft_verified': list it too"):
        load_recipe("examples/ablation.yaml", {"ablation.arms": ["base", "dpo"]})
    with pytest.raises(ConfigError, match="unknown arm 'grpo_len'"):
        load_recipe("examples/ablation.yaml", {"ablation.arms": ["sft_verified", "grpo_len"]})
    with pytest.raises(ConfigError, match="sft_steps"):
        load_recipe("examples/ablation.yaml", {"ablation.budget.sft_steps": 0})


def test_an_arm_with_nothing_to_train_on_is_a_row_that_says_why_not_a_failed_harness(tmp_path: Path) -> None:
    """A 135M judge labels every CoT easy: the curriculum arms (medium / hard CoTs) have no data. The arm is
    skipped with its reason, not evaluated, and the table and report carry on with the other arms."""
    from kubedistill.ablation import ablation_report, evaluate_arm, train_arm
    from kubedistill.core.records import Problem

    pool = [s.model_copy(update={"difficulty": "easy"}) if s.correct else s for s in _pool()]
    cfg = _cfg(arms=["sft_verified", "curriculum", "shuffled"])
    problems = [Problem(id=f"p{i}", problem=f"{i}+{i}", answer=str(2 * i), source="t") for i in range(6)]
    for arm in ("curriculum", "shuffled"):
        out, stats = train_arm(pool, cfg, problems=problems, model=tmp_path / arm / "model", arm=arm)
        assert stats.metrics["rows"] == 0.0
        assert "no CoTs of kind 'verified_medium_hard'" in stats.info["skipped"]
        assert "8 easy verified" in stats.info["skipped"]  # why: the pool's labels
        row, _ = evaluate_arm(problems, cfg, model=out, results=tmp_path / arm / "results", arm=arm)
        assert row["skipped"] == stats.info["skipped"] and "accuracy" not in row
    base_dir = tmp_path / "base" / "results"
    base_dir.mkdir(parents=True)
    (base_dir / "arm.json").write_text(json.dumps(_row("base", "base", 0.2, {f"p{i}": i < 2 for i in range(6)})))
    md = table_markdown(load_rows([base_dir, tmp_path / "curriculum" / "results"]))
    assert "| curriculum | " in md and "skipped: no CoTs of kind 'verified_medium_hard'" in md
    metrics = ablation_report(
        arms=[str(base_dir), str(tmp_path / "curriculum" / "results"), str(tmp_path / "shuffled" / "results")],
        report=str(tmp_path / "t.md"),
        report_html=str(tmp_path / "t.html"),
        summary=str(tmp_path / "t.json"),
    )
    assert metrics["curriculum.skipped"] == 1.0 and metrics["base.accuracy"] == 0.2
    assert "skipped:" in (tmp_path / "t.html").read_text()
