"""The evaluation gate against a real local MLflow store: `champion` moves only when the gate passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubedistill.core.config import ConfigError
from kubedistill.registry import GateConfig, check_gate, promote

pytestmark = pytest.mark.integration

GATE = {"metric": "student.heldout.accuracy", "min": 0.3, "beat_base_by": 0.0}


@pytest.fixture
def registry(tracking_uri: str, tmp_path: Path):
    import mlflow

    from kubedistill.registry import register_student

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")

    def register(**metrics: float) -> str:
        version, _ = register_student(model_dir, "student", metrics=metrics)
        return version

    return register, mlflow.MlflowClient(tracking_uri)


def _champion(client) -> str | None:
    try:
        return str(client.get_model_version_by_alias("student", "champion").version)
    except Exception:
        return None


def test_promote_sets_champion_only_when_the_gate_passes(registry) -> None:
    register, client = registry
    good = {"student.heldout.accuracy": 0.45, "base.heldout.accuracy": 0.30}
    v1 = register(**good)
    assert promote("student", v1, good, GATE) is True
    assert _champion(client) == v1
    tags = client.get_model_version("student", v1).tags
    assert tags["kubedistill.gate"] == "passed" and "beats base 0.3 by 0.15" in tags["kubedistill.gate.reasons"]
    assert "champion" in client.get_model_version("student", v1).aliases

    worse_than_base = {"student.heldout.accuracy": 0.35, "base.heldout.accuracy": 0.40}
    v2 = register(**worse_than_base)
    assert promote("student", v2, worse_than_base, GATE) is False
    assert _champion(client) == v1  # the champion stays
    v2_tags = client.get_model_version("student", v2).tags
    assert v2_tags["kubedistill.gate"] == "failed" and "< 0" in v2_tags["kubedistill.gate.reasons"]

    too_low = {"student.heldout.accuracy": 0.2, "base.heldout.accuracy": 0.1}
    v3 = register(**too_low)
    assert promote("student", v3, too_low, GATE) is False and _champion(client) == v1


def test_promote_reads_the_versions_own_metrics_and_can_require_beating_the_champion(registry) -> None:
    register, client = registry
    v1 = register(**{"student.heldout.accuracy": 0.5, "base.heldout.accuracy": 0.2})
    assert promote("student", v1, None, GATE) is True  # metrics read from the registering run
    gate = {**GATE, "beat_champion_by": 0.01}
    v2 = register(**{"student.heldout.accuracy": 0.505, "base.heldout.accuracy": 0.2})
    assert promote("student", v2, None, gate) is False and _champion(client) == v1
    v3 = register(**{"student.heldout.accuracy": 0.6, "base.heldout.accuracy": 0.2})
    assert promote("student", v3, None, gate) is True and _champion(client) == v3


def test_gate_edge_cases() -> None:
    assert not check_gate({}, GATE).passed  # the metric is missing
    r = check_gate({"student.heldout.accuracy": 0.5}, GATE)
    assert not r.passed and "base.heldout.accuracy is missing" in r.reasons[-1]
    assert check_gate({"student.heldout.accuracy": 0.3}, {"min": 0.3}).passed  # the bound is inclusive
    assert GateConfig(metric="student.aime.pass_at_1").base_name() == "base.aime.pass_at_1"
    with pytest.raises(ConfigError, match="minimum: unknown key"):
        check_gate({}, {"minimum": 0.3})
