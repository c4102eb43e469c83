"""The ablation harness: which parts of the recipes make a student better, measured side by side.

One pool is built once (the ``ablation`` pipeline's first half, cached like every task): problems, CoTs from
the teachers, each CoT verified (all kept, ``correct`` set), the verified ones judged for difficulty
(DistilQwen2.5-R1) and scored for reasoning verbosity (RV) and cognitive difficulty (CD) (ThoughtX), DPO
pairs of verified vs corrupted CoTs, and RV / CD reward models distilled from the judge's scores. Then
every **arm** trains a student from that pool — same base model, same seed, same optimizer settings and
the same number of optimizer steps per kind (``budget``) — and every arm is evaluated on the same
held-out problems (greedy pass@1, :mod:`kubedistill.evaluate`), which no training CoT saw.

The arms (:data:`DEFAULT_ARMS`; a recipe may list fewer):

================  ==============================================================================
``base``          the base student, untrained
``sft_all``       SFT on every complete CoT, verified or not
``sft_verified``  SFT on the verified CoTs (the *reference* student the DPO and GRPO arms start from)
``curriculum``    SFT on verified medium CoTs, then medium + hard (DistilQwen2.5-R1), half the steps each
``shuffled``      the same medium and hard CoTs in one shuffled stage
``dpo``           the reference + DPO on (verified CoT, corrupted copy) pairs
``window``        SFT on the verified CoTs inside the student's RV / CD windows (target-aware selection)
``random``        SFT on a random subset of the verified CoTs, as many as ``window`` selected
``grpo``          the reference + GRPO with R = format + accuracy
``grpo_rv``       ... + R_RV, the interval penalty on the RV reward model (eqs. 1-3 of ThoughtY)
``grpo_cd``       ... + R_CD
``grpo_rv_cd``    ... + both
================  ==============================================================================

Per arm the harness reports accuracy with its 95% interval (Wilson), the paired difference to ``base``
with its 95% interval, mean and median completion tokens, the training rows and tokens, and — where RV / CD
reward models were trained — the share of the arm's held-out completions whose predicted RV and CD lie
inside the GRPO target intervals and their mean distance to them (how far training moved the
distribution toward the target). Every arm's train and evaluate runs are nested in MLflow under one parent
run; the table and a plot go into the HTML report.

Stages (rows of kubedistill/stages.py): ``arm_train`` (:func:`train_arm`), ``arm_evaluate``
(:func:`evaluate_arm`), ``ablation_report`` (:func:`ablation_report`).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kubedistill.core.config import ConfigError, StrictModel
from kubedistill.core.records import PreferencePair, Problem, Sample, StageStats
from kubedistill.cot.select import SelectConfig
from kubedistill.evaluate.stage import LocalEvalConfig
from kubedistill.train.dpo import DPOConfig
from kubedistill.train.grpo import GRPOConfig
from kubedistill.train.sft import CurriculumStage, SFTConfig

ArmKind = Literal["base", "sft", "dpo", "grpo"]
ArmData = Literal["all", "verified", "verified_medium_hard", "window", "random"]
Head = Literal["rv", "cd"]
ARM_FILE = "kubedistill_arm.json"  # in an arm's model directory: what it trained on, its run
RESULT_FILE = "arm.json"  # in an arm's results directory: everything the table needs


class Arm(StrictModel):
    """One arm of the ablation: what it trains (``kind``), on which CoTs (``data``), how."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: ArmKind
    data: ArmData = Field(default="verified", description="the CoTs an SFT arm trains on")
    curriculum: bool = Field(default=False, description="SFT on medium CoTs, then medium + hard (half the steps each)")
    rewards: list[Head] = Field(default_factory=list, description="GRPO interval rewards on top of format + accuracy")
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Arm:
        if self.rewards and self.kind != "grpo":
            raise ValueError(f"arm {self.name}: rewards are for grpo arms")
        if self.curriculum and self.kind != "sft":
            raise ValueError(f"arm {self.name}: curriculum is for sft arms")
        return self

    @property
    def starts_from_reference(self) -> bool:
        """DPO and GRPO arms improve the reference student (``sft_verified``)."""
        return self.kind in ("dpo", "grpo")


REFERENCE = Arm(
    name="sft_verified", kind="sft", data="verified", description="SFT on the verified CoTs (the reference student)"
)
DEFAULT_ARMS: tuple[Arm, ...] = (
    Arm(name="base", kind="base", description="the base student, untrained"),
    Arm(name="sft_all", kind="sft", data="all", description="SFT on every complete CoT, verified or not"),
    Arm(
        name="curriculum",
        kind="sft",
        data="verified_medium_hard",
        curriculum=True,
        description="verified medium CoTs, then medium + hard (DistilQwen2.5-R1)",
    ),
    Arm(
        name="shuffled",
        kind="sft",
        data="verified_medium_hard",
        description="the curriculum's CoTs in one shuffled stage",
    ),
    Arm(name="dpo", kind="dpo", description="the reference + DPO on (verified, corrupted) pairs"),
    Arm(name="window", kind="sft", data="window", description="verified CoTs inside the RV / CD windows"),
    Arm(name="random", kind="sft", data="random", description="a random subset of verified CoTs, window's size"),
    Arm(name="grpo", kind="grpo", description="the reference + GRPO, R = format + accuracy"),
    Arm(name="grpo_rv", kind="grpo", rewards=["rv"], description="GRPO, + R_RV"),
    Arm(name="grpo_cd", kind="grpo", rewards=["cd"], description="GRPO, + R_CD"),
    Arm(name="grpo_rv_cd", kind="grpo", rewards=["rv", "cd"], description="GRPO, + R_RV + R_CD"),
)
ARM_ORDER: tuple[str, ...] = ("base", "sft_all", REFERENCE.name, *(a.name for a in DEFAULT_ARMS[2:]))


class Budget(StrictModel):
    """What every arm of a kind gets: optimizer steps (same batch size, learning rate and seed)."""

    sft_steps: int = Field(ge=1, description="optimizer steps of every SFT arm (a curriculum splits them in half)")
    dpo_steps: int = Field(ge=1, description="DPO steps on top of the reference student")
    grpo_steps: int = Field(ge=1, description="GRPO steps on top of the reference student")


class ArmConfig(StrictModel):
    """The settings every arm shares (stages ``arm_train`` and ``arm_evaluate``). The trainer sections give
    the optimizer settings; their ``base_model``, ``seed``, steps and curriculum are set by the harness."""

    base_model: str = Field(default="tiny-qwen3", description="the student every arm starts from")
    seed: int = 0
    budget: Budget
    sft: SFTConfig = Field(default_factory=SFTConfig)
    dpo: DPOConfig = Field(default_factory=lambda: DPOConfig(too_few_pairs="skip"))
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    select: SelectConfig = Field(default_factory=SelectConfig, description="the window arm's selection")
    evaluate: LocalEvalConfig = Field(
        default_factory=lambda: LocalEvalConfig(temperature=0.0, n=1, k=[1], compare_base=False)
    )
    arms: list[Arm] = Field(
        default_factory=lambda: [REFERENCE, *DEFAULT_ARMS],
        description="the arms by name (the reference, sft_verified, among them when DPO or GRPO arms are)",
    )

    @field_validator("arms", mode="before")
    @classmethod
    def _named(cls, v: Any) -> Any:
        """An arm may be given by the name of a built-in one (``curriculum``) or in full."""
        known = {a.name: a for a in (REFERENCE, *DEFAULT_ARMS)}
        if not isinstance(v, list):
            return v
        out = []
        for a in v:
            if isinstance(a, str):
                if a not in known:
                    raise ValueError(f"unknown arm {a!r} (built in: {', '.join(known)}; or give it in full)")
                out.append(known[a])
            else:
                out.append(a)
        return out

    @model_validator(mode="after")
    def _arms(self) -> ArmConfig:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names repeat: {names}")
        if any(a.starts_from_reference for a in self.arms) and REFERENCE.name not in names:
            raise ValueError(f"dpo and grpo arms start from the reference arm {REFERENCE.name!r}: list it too")
        return self

    def arm(self, name: str) -> Arm:
        """The arm called ``name``; ``ConfigError`` for an unknown one."""
        for a in self.arms:
            if a.name == name:
                return a
        raise ConfigError(f"no arm {name!r} (arms: {', '.join(a.name for a in self.arms)})")


# ------------------------------------------------------------------------------------------ the data


def arm_samples(samples: Sequence[Sample], arm: Arm, cfg: ArmConfig) -> tuple[list[Sample], dict[str, Any]]:
    """The CoTs an SFT arm trains on, and a note of how they were chosen. Deterministic for ``cfg.seed``.

    ``all``: every CoT that finished (a truncated one has no answer to learn); ``verified``: those whose answer
    verified; ``verified_medium_hard``: verified and judged medium or hard (unlabelled counts as medium);
    ``window``: the verified ones the ``select`` stage keeps (RV / CD windows); ``random``: a random subset
    of the verified ones, as large as the window's."""
    from kubedistill.cot.select import select

    finished = [s for s in samples if not s.truncated]
    verified = [s for s in finished if s.correct is True]
    note: dict[str, Any] = {"pool": len(samples), "finished": len(finished), "verified": len(verified)}
    if arm.data == "all":
        return finished, note
    if arm.data == "verified":
        return verified, note
    if arm.data == "verified_medium_hard":
        return [s for s in verified if (s.difficulty or "medium") in ("medium", "hard")], note
    chosen, stats = select(verified, cfg.select.model_copy(update={"seed": cfg.seed}))
    note["window"] = len(chosen)
    note["window_dropped"] = dict(stats.dropped)
    if arm.data == "window":
        return chosen, note
    rng = random.Random(cfg.seed)
    return rng.sample(verified, len(chosen)), note


def _sft_config(arm: Arm, cfg: ArmConfig) -> SFTConfig:
    steps = cfg.budget.sft_steps
    if arm.curriculum:
        first = max(1, steps // 2)
        stages = [
            CurriculumStage(name="medium", difficulties=["medium"], max_steps=first),
            CurriculumStage(name="hard", difficulties=["medium", "hard"], max_steps=max(1, steps - first)),
        ]
    else:
        stages = [CurriculumStage(name="all", difficulties=["easy", "medium", "hard"], max_steps=steps)]
    return cfg.sft.model_copy(update={"base_model": cfg.base_model, "seed": cfg.seed, "curriculum": stages})


# ------------------------------------------------------------------------------------------ training


def train_arm(
    samples: Sequence[Sample],
    cfg: ArmConfig,
    *,
    problems: Sequence[Problem],
    model: str | Path,
    arm: str,
    pairs: Sequence[PreferencePair] | None = None,
    reward_models: str | None = None,
    reference: str | None = None,
    work_dir: str = "",
    tracking: Any = None,
) -> tuple[Path, StageStats]:
    """Stage `arm_train`: train the arm called ``arm`` (one of ``cfg.arms``) from the pool ``samples`` (every
    CoT, ``correct`` set; difficulty / RV / CD on the verified ones) into the model directory ``model``.

    SFT arms start from ``cfg.base_model``; DPO and GRPO arms from ``reference`` (the ``sft_verified``
    arm's model directory; ``ConfigError`` without it). DPO trains on ``pairs``; GRPO on ``problems`` (the
    training problems), with the interval rewards of ``arm.rewards`` from ``reward_models`` (a directory
    with ``rv/`` and ``cd/``; ``ConfigError`` when a needed head is missing). The ``base`` arm trains
    nothing (its directory only names the base model); an SFT arm with no CoTs of its kind is skipped
    (``data.skipped`` says why; evaluate_arm and the table carry it as a row). Writes
    ``model/kubedistill_arm.json`` (the arm, its training figures, its MLflow run). Metrics: ``rows`` (the
    training examples: CoTs of an SFT arm, pairs of the DPO arm, prompts a GRPO arm saw), ``training_tokens``
    (tokens the trainer processed, TRL's count), ``steps`` and the trainer's."""
    from kubedistill.train.dpo import train_dpo
    from kubedistill.train.grpo import train_grpo
    from kubedistill.train.sft import train_sft

    spec = cfg.arm(arm)
    out = Path(model)
    t0 = time.perf_counter()
    run_id = _tag_run(spec, "train")
    note: dict[str, Any] = {}
    if spec.kind == "base":
        stats = StageStats(stage="arm_train", n_in=0)
        out.mkdir(parents=True, exist_ok=True)
    elif spec.kind == "sft" and not (chosen := arm_samples(samples, spec, cfg))[0]:
        # nothing to train on (e.g. a curriculum arm when the judge labelled no CoT medium or hard): the arm is
        # a row of the table that says so, not a failed harness
        note = chosen[1]
        note["skipped"] = f"no CoTs of kind {spec.data!r} in the pool ({_pool_labels(samples)})"
        stats = StageStats(stage="arm_train", n_in=len(samples))
        stats.info["skipped"] = note["skipped"]
        stats.metrics["rows"] = 0.0
        out.mkdir(parents=True, exist_ok=True)
    elif spec.kind == "sft":
        rows, note = chosen
        _, stats = train_sft(rows, _sft_config(spec, cfg), problems=problems, model=out, work_dir=work_dir or None)
        stats.metrics["rows"] = float(len(rows))
        stats.metrics["training_tokens"] = sum(
            v for k, v in stats.metrics.items() if k.endswith(".num_tokens")
        ) or _estimate_sft_tokens(stats, cfg.sft.per_device_batch_size * cfg.sft.gradient_accumulation_steps)
    else:
        if not reference:
            raise ConfigError(f"arm {spec.name}: a {spec.kind} arm needs the reference student (input `reference`)")
        if spec.kind == "dpo":
            dpo_cfg = cfg.dpo.model_copy(update={"max_steps": cfg.budget.dpo_steps, "seed": cfg.seed})
            _, stats = train_dpo(
                list(pairs or []),
                dpo_cfg,
                problems=problems,
                model=out,
                base_model=reference,
                work_dir=work_dir or None,
            )
            stats.metrics["rows"] = float(stats.n_out)
        else:
            heads = {h: str(Path(reward_models or "") / h) for h in spec.rewards}
            missing = [h for h, p in heads.items() if not Path(p).is_dir()]
            if missing:
                raise ConfigError(f"arm {spec.name}: no {', '.join(missing)} reward model in {reward_models!r}")
            grpo_cfg = cfg.grpo.model_copy(update={"max_steps": cfg.budget.grpo_steps, "seed": cfg.seed})
            _, stats = train_grpo(
                problems, grpo_cfg, model=out, reward_models=heads, base_model=reference, work_dir=work_dir or None
            )
            per_step = grpo_cfg.per_device_batch_size * grpo_cfg.gradient_accumulation_steps
            stats.metrics["rows"] = float(cfg.budget.grpo_steps * per_step // grpo_cfg.num_generations)  # prompts
        stats.metrics["training_tokens"] = float(stats.metrics.get("num_tokens", 0.0))
    stats.stage = "arm_train"
    stats.elapsed_s = time.perf_counter() - t0
    record = {
        "arm": spec.model_dump(mode="json"),
        "base_model": cfg.base_model,
        "seed": cfg.seed,
        "budget": cfg.budget.model_dump(mode="json"),
        "data": note,
        "training": {k: v for k, v in stats.metrics.items() if isinstance(v, int | float)},
        "train_seconds": stats.elapsed_s,
        "run_id": run_id,
    }
    (out / ARM_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
    stats.info["arm"] = record
    return out, stats


def _pool_labels(samples: Sequence[Sample]) -> str:
    """The verified CoTs' difficulty labels, counted: why a data kind can come out empty."""
    counts: dict[str, int] = {}
    for s in samples:
        if s.correct is True:
            key = s.difficulty or "unlabelled"
            counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + " verified" if counts else "none verified"


def _estimate_sft_tokens(stats: StageStats, rows_per_step: int) -> float:
    """Tokens an SFT run processed when the trainer did not count them: steps x rows per step x mean row."""
    total = 0.0
    for h in (stats.info.get("curriculum") or {}).values():
        if isinstance(h, dict) and h.get("sequences"):
            total += float(h.get("steps", 0)) * rows_per_step * h["tokens"] / h["sequences"]
    return total


def _tag_run(arm: Arm, role: str) -> str | None:
    """Tag the stage's active MLflow run with the arm (the report nests it under the ablation's parent run)."""
    try:
        import mlflow
    except ImportError:  # pragma: no cover - a dependency of the project
        return None
    run = mlflow.active_run()
    if run is None:
        return None
    mlflow.set_tags({"kubedistill.ablation.arm": arm.name, "kubedistill.ablation.role": role})
    return str(run.info.run_id)


# ------------------------------------------------------------------------------------------ evaluation


def evaluate_arm(
    problems: Sequence[Problem],
    cfg: ArmConfig,
    *,
    model: str | Path,
    results: str | Path,
    arm: str,
    reward_models: str | None = None,
    tracking: Any = None,
) -> tuple[dict[str, Any], StageStats]:
    """Stage `arm_evaluate`: the student of arm ``arm`` (``model``; the ``base`` arm: ``cfg.base_model``) on the
    held-out ``problems`` with ``cfg.evaluate`` (the same harness as ``kubedistill evaluate``), into the
    directory ``results`` (``<arm>/`` the evaluation, ``arm.json`` the arm's row of the table).

    With ``reward_models`` (``rv/``, ``cd/``), every completion's RV and CD are predicted ([0, 1], the
    judge's 0-9 scale / 9) and compared with the GRPO target intervals ``cfg.grpo.rv`` / ``cfg.grpo.cd``:
    share inside, mean distance ``|f - clip(f, L, H)|`` (eq. 3's penalty, without its sign). Returns the
    row and stats whose metrics are ``accuracy``, ``ci95.low`` / ``.high``, token lengths, RV / CD figures."""
    from kubedistill.evaluate.stage import evaluate_local
    from kubedistill.models import resolve_model

    spec = cfg.arm(arm)
    run_id = _tag_run(spec, "evaluate")
    out = Path(results)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(model)
    trained = model_dir / ARM_FILE
    skipped = json.loads(trained.read_text()).get("data", {}).get("skipped") if trained.exists() else None
    if skipped:  # the arm had nothing to train on: a row that says why, no evaluation
        row = {"arm": spec.model_dump(mode="json"), "skipped": skipped, "runs": {"evaluate": run_id}}
        (out / RESULT_FILE).write_text(json.dumps(row, indent=2, sort_keys=True))
        stats = StageStats(stage="arm_evaluate", n_in=len(problems))
        stats.info["skipped"] = skipped
        return row, stats
    ref: Path = resolve_model(cfg.base_model) if spec.kind == "base" else model_dir
    scores, stats = evaluate_local(
        {spec.name: ref},
        {"heldout": list(problems)},
        cfg.evaluate,
        results=out,
        report=out / "report.md",
        report_html=out / "report.html",
        tracking=tracking,
    )
    r = scores[spec.name]["heldout"]
    items = _read_items(out / spec.name / "items" / "heldout.jsonl")
    row: dict[str, Any] = {
        "arm": spec.model_dump(mode="json"),
        "n_problems": r["n_problems"],
        "accuracy": r["accuracy"],
        "ci95": list(r.get("accuracy_ci95") or (0.0, 1.0)),
        "tokens_mean": r["lengths"]["mean"],
        "tokens_median": r["lengths"]["median"],
        "answered_rate": r.get("answered_rate", 0.0),
        "per_problem": {it["problem_id"]: it.get("correct") is True for it in items},
        "runs": {"evaluate": run_id},
    }
    if trained.exists():
        record = json.loads(trained.read_text())
        row["training"] = record.get("training", {})
        row["data"] = record.get("data", {})
        row["seed"] = record.get("seed")
        row["runs"]["train"] = record.get("run_id")
    if reward_models:
        row.update(_distribution(items, problems, cfg, reward_models))
    (out / RESULT_FILE).write_text(json.dumps(row, indent=2, sort_keys=True))
    stats.stage = "arm_evaluate"
    stats.metrics = {
        "accuracy": float(row["accuracy"]),
        "ci95.low": float(row["ci95"][0]),
        "ci95.high": float(row["ci95"][1]),
        "tokens_mean": float(row["tokens_mean"]),
        "tokens_median": float(row["tokens_median"]),
        **{f"{h}.{k}": float(v) for h in ("rv", "cd") for k, v in (row.get(h) or {}).items()},
    }
    return row, stats


def _read_items(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _distribution(
    items: Sequence[Mapping[str, Any]], problems: Sequence[Problem], cfg: ArmConfig, reward_models: str
) -> dict[str, Any]:
    """Predicted RV / CD of the completions vs the GRPO target intervals (see :func:`evaluate_arm`)."""
    from kubedistill.train.reward_model import load_scorer
    from kubedistill.train.rewards import interval_penalty

    by_id = {p.id: p.problem for p in problems}
    texts = [str(it.get("text") or "") for it in items]
    prompts = [by_id.get(str(it.get("problem_id")), "") for it in items]
    out: dict[str, Any] = {}
    for head in ("rv", "cd"):
        path = Path(reward_models) / head
        if not path.is_dir() or not texts:
            continue
        target = getattr(cfg.grpo, head)
        f = load_scorer(path).score_many(prompts, texts)
        dist = [-interval_penalty(float(x), target.low, target.high) for x in f]
        out[head] = {
            "mean": float(statistics.fmean(f)),
            "inside": sum(1 for d in dist if d == 0.0) / len(dist),
            "distance": float(statistics.fmean(dist)),
            "low": target.low,
            "high": target.high,
        }
    return out


# ------------------------------------------------------------------------------------------ the table


def load_rows(dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The arms' rows (``arm.json`` of each results directory), in the harness's arm order."""
    rows = []
    for d in dirs:
        f = Path(d) / RESULT_FILE
        if f.exists():
            rows.append(json.loads(f.read_text()))
    rank = {name: i for i, name in enumerate(ARM_ORDER)}
    return sorted(rows, key=lambda r: (rank.get(r["arm"]["name"], len(rank)), r["arm"]["name"]))


def paired_delta(row: Mapping[str, Any], base: Mapping[str, Any] | None) -> dict[str, float] | None:
    """The arm minus the base on the problems both answered: mean per-problem difference and its paired 95%
    interval (mean ± 1.96 standard errors over problems)."""
    if base is None or row is base:
        return None
    a, b = row.get("per_problem") or {}, base.get("per_problem") or {}
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    d = [float(a[p]) - float(b[p]) for p in shared]
    mean = statistics.fmean(d)
    se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
    return {"delta": mean, "low": mean - 1.96 * se, "high": mean + 1.96 * se, "n": float(len(d))}


def table_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The ablation table (Markdown)."""
    base = next((r for r in rows if r["arm"]["name"] == "base"), None)
    head = (
        "| arm | what | accuracy [95% interval] | Δ vs base [95% interval] | mean / median tokens | rows | "
        "training tokens | RV in target (dist.) | CD in target (dist.) |"
    )
    lines = [head, "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("skipped"):
            what = f"| {r['arm']['name']} | {r['arm'].get('description', '')} | skipped: {r['skipped']} |"
            lines.append(what + " — | — | 0 | 0 | — | — |")
            continue
        d = paired_delta(r, base)
        delta = f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" if d else "—"
        tr = r.get("training") or {}
        dist = {
            h: (f"{r[h]['inside']:.0%} ({r[h]['distance']:.3f})" if isinstance(r.get(h), dict) else "—")
            for h in ("rv", "cd")
        }
        lines.append(
            f"| {r['arm']['name']} | {r['arm'].get('description', '')} | {r['accuracy']:.3f} "
            f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {delta} | {r['tokens_mean']:.0f} / {r['tokens_median']:.0f} | "
            f"{tr.get('rows', 0):.0f} | {tr.get('training_tokens', 0):.0f} | {dist['rv']} | {dist['cd']} |"
        )
    return "\n".join(lines)


def plot_png(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Accuracy per arm with its 95% interval, and the RV / CD distance to the target per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if not r.get("skipped")]  # the table says why
    names = [r["arm"]["name"] for r in rows]
    acc = [r["accuracy"] for r in rows]
    err = [
        [a - r["ci95"][0] for a, r in zip(acc, rows, strict=True)],
        [r["ci95"][1] - a for a, r in zip(acc, rows, strict=True)],
    ]
    has_dist = any(isinstance(r.get("rv"), dict) for r in rows)
    fig, axes = plt.subplots(
        1, 2 if has_dist else 1, figsize=(12 if has_dist else 7, 0.45 * len(rows) + 1.5), squeeze=False
    )
    ax = axes[0][0]
    colors = [
        "#8395a7"
        if r["arm"]["kind"] == "base"
        else "#2e86de"
        if r["arm"]["kind"] == "sft"
        else "#10ac84"
        if r["arm"]["kind"] == "dpo"
        else "#ee5253"
        for r in rows
    ]
    ax.barh(range(len(rows)), acc, xerr=err, color=colors, capsize=3)
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("held-out accuracy (greedy pass@1), 95% interval")
    ax.set_title("Accuracy by arm")
    if has_dist:
        ax2 = axes[0][1]
        for i, head in enumerate(("rv", "cd")):
            vals = [r[head]["distance"] if isinstance(r.get(head), dict) else 0.0 for r in rows]
            ax2.barh([j + (i - 0.5) * 0.4 for j in range(len(rows))], vals, height=0.4, label=head.upper())
        ax2.set_yticks(range(len(rows)), names)
        ax2.invert_yaxis()
        ax2.set_xlabel("mean distance of predicted score to the target interval (0 = inside)")
        ax2.set_title("RV / CD vs target")
        ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ablation_report(
    *,
    arms: Sequence[str],
    report: str,
    report_html: str,
    summary: str,
    reference: str | None = None,
    name: str = "ablation",
    run_name: str = "",
    tracking: Any = None,
) -> dict[str, float]:
    """Stage `ablation_report`: the table of every arm (``arms``: their ``arm_evaluate`` results directories;
    ``reference``: the reference student's) as Markdown (``report``), HTML with the plot (``report_html``)
    and JSON (``summary``: the rows). With ``tracking``, an MLflow parent run ``ablation:<name>`` gets the
    table, the plot and every arm's metrics, and every arm's train and evaluate runs are nested under it.
    Returns the flat metrics (``<arm>.accuracy``, ...)."""
    import base64
    import html
    import os

    rows = load_rows([*arms, *([reference] if reference else [])])
    base = next((r for r in rows if r["arm"]["name"] == "base"), None)
    for r in rows:
        r["delta_vs_base"] = paired_delta(r, base)
    md = "\n".join(
        [
            f"# {name} — ablation",
            "",
            f"{len(rows)} arms, every one evaluated on the same "
            f"{next((r['n_problems'] for r in rows if 'n_problems' in r), 0)} held-out "
            "problems (greedy pass@1); same base model, seed and optimizer steps per kind.",
            "",
            table_markdown(rows),
            "",
        ]
    )
    Path(report).write_text(md)
    png = plot_png(rows, Path(report_html).with_suffix(".png")) if rows else None
    img = (
        f'<img alt="ablation" src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">'
        if png is not None
        else ""
    )
    table_rows = [ln for ln in table_markdown(rows).splitlines() if not set(ln) <= set("|-: ")]
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in ln.strip("|").split("|")) + "</tr>"
        for ln in table_rows
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}"
        "td{border:1px solid #ccc;padding:.3em .6em}tr:first-child td{font-weight:bold;background:#f4f6f8}"
        "img{max-width:100%}"
    )
    Path(report_html).write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)} ablation</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(name)} — ablation</h1><table>{cells}</table>"
        f"<h2>Accuracy and RV / CD by arm</h2>{img}</body></html>"
    )
    metrics: dict[str, float] = {}
    for r in rows:
        arm = r["arm"]["name"]
        if r.get("skipped"):
            metrics[f"{arm}.skipped"] = 1.0
            continue
        metrics[f"{arm}.accuracy"] = float(r["accuracy"])
        metrics[f"{arm}.tokens_mean"] = float(r["tokens_mean"])
        if r.get("delta_vs_base"):
            metrics[f"{arm}.delta_vs_base"] = float(r["delta_vs_base"]["delta"])
        for h in ("rv", "cd"):
            if isinstance(r.get(h), dict):
                metrics[f"{arm}.{h}.distance"] = float(r[h]["distance"])
    parent_id = None
    if tracking is not None and getattr(tracking, "enabled", True):
        run_name = run_name or os.environ.get("KFP_RUN_ID", "")  # not a task input: the task stays cacheable
        parent_id = _log_parent(name, run_name, tracking, metrics, rows, report, report_html, png)
    Path(summary).write_text(json.dumps({"name": name, "parent_run_id": parent_id, "rows": rows}, indent=2))
    local_copy = os.environ.get("KUBEDISTILL_REPORT_DIR")  # a local run: the report lands beside its outputs
    if local_copy:
        Path(local_copy).mkdir(parents=True, exist_ok=True)
        (Path(local_copy) / "ablation.html").write_text(Path(report_html).read_text())
        (Path(local_copy) / "ablation.md").write_text(md)
        (Path(local_copy) / "ablation.json").write_text(Path(summary).read_text())
    return metrics


def _log_parent(
    name: str,
    run_name: str,
    tracking: Any,
    metrics: Mapping[str, float],
    rows: Sequence[Mapping[str, Any]],
    report: str,
    report_html: str,
    png: Path | None,
) -> str:
    """The parent MLflow run; every arm's runs become its children (``mlflow.parentRunId``)."""
    import mlflow

    from kubedistill import tracking as tr

    with tr.stage_run(
        f"ablation:{name}",
        experiment=tracking.experiment,
        tracking_uri=tracking.tracking_uri,
        tags={"kubedistill.kind": "ablation", "kubedistill.run_name": run_name},
    ) as run:
        mlflow.log_metrics({tr.metric_key(k): v for k, v in metrics.items()})
        for f in (report, report_html, str(png) if png else None):
            if f:
                mlflow.log_artifact(f, artifact_path="ablation")
        parent = str(run.info.run_id)
    client = mlflow.MlflowClient()
    for r in rows:
        for role, child in (r.get("runs") or {}).items():
            if child:
                client.set_tag(child, "mlflow.parentRunId", parent)
                client.set_tag(child, "kubedistill.ablation.parent", parent)
                del role
    return parent
