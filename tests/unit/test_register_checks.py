"""`kubedistill register` checks what it is given before it touches MLflow: a model directory (config
with a model_type, weights), readable results, tracking on — one line and exit 2 otherwise, and no MLflow
run or store is created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubedistill.cli import main


def _model(d: Path, config: str = '{"model_type": "qwen3"}', weights: bool = True) -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text(config)
    if weights:
        (d / "model.safetensors").write_bytes(b"\0" * 8)
    return d


def _jsonl(t: Path) -> Path:
    (t / "samples.jsonl").write_text("{}\n")
    return t / "samples.jsonl"


@pytest.mark.parametrize(
    ("make", "extra", "expected"),
    [
        (
            lambda t: (t / "samples.jsonl").write_text("{}\n") and t / "samples.jsonl",
            [],
            "is a file, not a model directory",
        ),
        (lambda t: t / "nope", [], "no such directory"),
        (lambda t: _model(t / "m", weights=False), [], "holds no weights"),
        (lambda t: _model(t / "m", config="{not json"), [], "config.json: is not valid JSON"),
        (lambda t: _model(t / "m", config='{"hidden_size": 8}'), [], "names no model_type"),
        (lambda t: _model(t / "m"), ["--results", "{t}/no-results"], "--results"),
        (lambda t: _model(t / "m"), ["--no-tracking"], "tracking is off (--no-tracking)"),
    ],
    ids=["jsonl-file", "missing", "no-weights", "bad-config", "no-model-type", "no-results", "no-tracking"],
)
def test_register_refuses_before_mlflow(
    tmp_path: Path, make, extra: list[str], expected: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "store" / "mlflow.db"
    model = make(tmp_path)
    args = ["register", "--model", str(model), "--tracking-uri", f"sqlite:///{store}"]
    assert main(args + [a.format(t=tmp_path) for a in extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err, err
    assert not store.exists()  # no MLflow run was opened


def test_results_must_be_evaluation_results(tmp_path: Path) -> None:
    from kubedistill.core.errors import UserError
    from kubedistill.registry import read_results

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(json.dumps({"student": {"heldout": {"accuracy": 0.5, "n": 4}}}))
    assert read_results(tmp_path / "r") == {"student.heldout.accuracy": 0.5, "student.heldout.n": 4.0}
    (tmp_path / "r" / "results.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not evaluation results"):
        read_results(tmp_path / "r")
    (tmp_path / "r" / "results.json").write_bytes(b'{"caf\xe9": 1}')
    with pytest.raises(UserError, match="not UTF-8"):
        read_results(tmp_path / "r")
