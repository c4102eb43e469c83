"""The evaluation gate: a registered student becomes ``champion`` only when its scores pass.

``register`` points the ``candidate`` alias at every new version; :func:`promote` then checks the
version's metrics against a :class:`Gate` and, when it passes, moves the ``champion`` alias to it — the
alias the deploy step serves (``models:/NAME@champion``). Every decision is written on the version as
tags (``kubedistill.gate``: passed / failed, ``kubedistill.gate.reasons``), so the registry shows why a
candidate was or was not promoted.

    promote("kubedistill-student", "7", metrics,
            {"metric": "student.heldout.accuracy", "min": 0.3, "beat_base_by": 0.0})

Metric names are those ``register`` logs: ``<label>.<benchmark>.<key>`` with label ``student`` or ``base``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from kubedistill.config import StrictModel, validate_config


class Gate(StrictModel):
    """When a candidate may become champion. Every check that is set must pass."""

    metric: str = Field(default="student.heldout.accuracy", description="the score to judge (higher is better)")
    min: float | None = Field(default=None, description="the score must be at least this")
    beat_base_by: float | None = Field(
        default=None, description="score - base score must be at least this (0.0: no worse than the base student)"
    )
    base_metric: str | None = Field(default=None, description="default: `metric` with its `student.` made `base.`")
    beat_champion_by: float | None = Field(
        default=None, description="score - the current champion's score must be at least this (if there is one)"
    )
    alias: str = Field(default="champion", description="the alias a passing version gets")

    def base_name(self) -> str:
        if self.base_metric:
            return self.base_metric
        head, _, rest = self.metric.partition(".")
        return f"base.{rest}" if head == "student" and rest else f"base.{self.metric}"


class GateResult(StrictModel):
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    score: float | None = None


def check_gate(
    metrics: Mapping[str, float], gate: Gate | Mapping[str, Any], champion_metrics: Mapping[str, float] | None = None
) -> GateResult:
    """Judge ``metrics`` against ``gate``; ``champion_metrics`` are the current champion's (if any)."""
    g = gate if isinstance(gate, Gate) else validate_config(Gate, dict(gate), "gate")
    reasons: list[str] = []
    score = metrics.get(g.metric)
    if score is None:
        return GateResult(passed=False, reasons=[f"{g.metric} is not among the version's metrics"])
    score = float(score)
    ok = True
    if g.min is not None:
        if score >= g.min:
            reasons.append(f"{g.metric}={score:.4g} >= min {g.min:g}")
        else:
            ok = False
            reasons.append(f"{g.metric}={score:.4g} < min {g.min:g}")
    if g.beat_base_by is not None:
        base = metrics.get(g.base_name())
        if base is None:
            ok = False
            reasons.append(f"{g.base_name()} is missing (evaluate with compare_base: true)")
        elif score - float(base) >= g.beat_base_by:
            reasons.append(f"beats base {float(base):.4g} by {score - float(base):.4g} >= {g.beat_base_by:g}")
        else:
            ok = False
            reasons.append(f"beats base {float(base):.4g} by {score - float(base):.4g} < {g.beat_base_by:g}")
    if g.beat_champion_by is not None and champion_metrics is not None:
        champ = champion_metrics.get(g.metric)
        if champ is not None:
            margin = score - float(champ)
            if margin >= g.beat_champion_by:
                reasons.append(f"beats champion {float(champ):.4g} by {margin:.4g} >= {g.beat_champion_by:g}")
            else:
                ok = False
                reasons.append(f"beats champion {float(champ):.4g} by {margin:.4g} < {g.beat_champion_by:g}")
    return GateResult(passed=ok, reasons=reasons, score=score)


def _client(tracking_uri: str | None) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from kubedistill.tracking import resolve_tracking_uri

    return mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))


def version_metrics(client: Any, model_name: str, version: str) -> dict[str, float]:
    """The metrics of the run that registered ``model_name`` version ``version``."""
    mv = client.get_model_version(model_name, str(version))
    if not mv.run_id:
        return {}
    return {k: float(v) for k, v in client.get_run(mv.run_id).data.metrics.items()}


def promote(
    model_name: str,
    version: str | int,
    metrics: Mapping[str, float] | None,
    gate: Gate | Mapping[str, Any],
    *,
    tracking_uri: str | None = None,
) -> bool:
    """Set the gate's alias (``champion``) on ``model_name`` ``version`` if ``metrics`` pass ``gate``.

    ``metrics`` None: read the version's own (those ``register`` logged). Returns whether it was
    promoted. The decision and its reasons are tagged on the version either way; a failing candidate
    leaves the current champion where it is."""
    g = gate if isinstance(gate, Gate) else validate_config(Gate, dict(gate), "gate")
    client = _client(tracking_uri)
    version = str(version)
    mv = client.get_model_version(model_name, version)  # raises if there is no such version
    if metrics is None:
        metrics = version_metrics(client, model_name, version)
    champion_metrics = None
    if g.beat_champion_by is not None:
        try:
            champ = client.get_model_version_by_alias(model_name, g.alias)
        except Exception:  # no champion yet
            champ = None
        if champ is not None and str(champ.version) != version:
            champion_metrics = version_metrics(client, model_name, champ.version)
    result = check_gate(metrics, g, champion_metrics)
    client.set_model_version_tag(model_name, mv.version, "kubedistill.gate", "passed" if result.passed else "failed")
    client.set_model_version_tag(model_name, mv.version, "kubedistill.gate.reasons", "; ".join(result.reasons)[:5000])
    if result.passed:
        client.set_registered_model_alias(model_name, g.alias, mv.version)
    return result.passed
