"""Shared fixtures. Tests use real parts: real HTTP servers on 127.0.0.1, a real MLflow store,
real TRL steps on tiny models built offline. Nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("KUBEDISTILL_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow.tracking.fluent as fluent

    # an experiment set by an earlier test belongs to that test's store: forget it
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # set_experiment() exports it too
    return uri


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache shared by the session's tests (tiny students are built once)."""
    root = tmp_path_factory.mktemp("kd-cache")
    os.environ["KUBEDISTILL_CACHE"] = str(root)
    return root


@pytest.fixture(scope="session")
def tiny_model(model_cache: Path) -> Path:
    """A tiny Qwen3 student built offline (~150K parameters)."""
    from kubedistill.models import resolve_model

    return resolve_model("tiny-qwen3")


@pytest.fixture(scope="session")
def bwrap_sandbox() -> None:
    """For tests that run code in the local bubblewrap sandbox: skips them, with bwrap's own words,
    only where the kernel or the container refuses bwrap the namespaces it needs (user namespaces off,
    AppArmor's or a seccomp profile's refusal, root without CAP_SYS_ADMIN); any other failure to build
    a sandbox is an error of the test run, never a skip."""
    from kubedistill.verifiers.bwrap import kernel_refused, unavailable

    reason = unavailable()
    if reason is not None and kernel_refused(reason):
        pytest.skip(
            f"the kernel or container refuses bubblewrap its namespaces here ({reason}); root needs"
            " CAP_SYS_ADMIN, any other user needs unprivileged user namespaces (docs/verifiers.md)"
        )
    if reason is not None:
        pytest.fail(f"bubblewrap cannot build a sandbox here (not a kernel refusal): {reason}")
