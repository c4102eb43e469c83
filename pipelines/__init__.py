"""The KFP pipelines, by name: composed from the components of kubedistill_kfp.components.

==================  ======================================================================
slow_thinking       DistilQwen2.5-R1: generate, judge, rewrite, verify; curriculum SFT, DPO
adaptive_thinking   ThoughtX/ThoughtY: RV/CD scores, target-aware selection, SFT
adaptive_thinking_  the same on an existing CoT corpus, no generate step (``cot_source: imported``)
 imported
reward_models       RV and CD regressors distilled from the judge's scores
grpo                GRPO with format + accuracy + RV/CD interval rewards
evaluate            registered students or endpoints on named benchmarks, side by side
ablation            one pool of CoTs, arms trained from it side by side, one table
==================  ======================================================================

A recipe's ``recipe:`` key names its pipeline (kubedistill/recipes.py; ``Recipe.pipeline``: with
``cot_source: imported`` the ``<recipe>_imported`` one).
"""

from __future__ import annotations

from typing import Any

from kubedistill_kfp.pipelines.ablation import ablation
from kubedistill_kfp.pipelines.adaptive_thinking import adaptive_thinking, adaptive_thinking_imported
from kubedistill_kfp.pipelines.evaluate import evaluate
from kubedistill_kfp.pipelines.grpo import grpo
from kubedistill_kfp.pipelines.reward_models import reward_models
from kubedistill_kfp.pipelines.slow_thinking import slow_thinking

from kubedistill.core.errors import UserError

PIPELINES: dict[str, Any] = {
    "slow_thinking": slow_thinking,
    "adaptive_thinking": adaptive_thinking,
    "adaptive_thinking_imported": adaptive_thinking_imported,
    "reward_models": reward_models,
    "grpo": grpo,
    "evaluate": evaluate,
    "ablation": ablation,
}


def pipeline_function(name: str) -> Any:
    """The ``@dsl.pipeline`` named ``name``; ``UserError`` (exit 2) for an unknown name."""
    if name not in PIPELINES:
        raise UserError(f"unknown pipeline {name!r} (known: {', '.join(PIPELINES)})")
    return PIPELINES[name]
