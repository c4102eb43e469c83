"""Outputs by path (kubedistill_kfp/storage.py) and the runtime's guards: content-addressed, write-once
objects; references a KFP artifact holds and the next component resolves; a storage the pods' uid cannot
write is a one-line error; a tracked stage on a cluster refuses a pod-local MLflow store."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubedistill.core.errors import UserError
from kubedistill_kfp.runtime import check_tracking_store, on_cluster, run_component
from kubedistill_kfp.storage import Storage, StorageError, digest, read_ref, resolve, write_ref


def _model(root: Path, text: str) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(text)
    (root / "weights").mkdir()
    (root / "weights" / "model.safetensors").write_bytes(b"\0" * 4096)
    return root


def test_the_same_content_lands_at_the_same_path_and_different_content_never_shares_one(tmp_path: Path) -> None:
    store = Storage(tmp_path / "storage")
    a = store.commit(_model(tmp_path / "a", '{"x": 1}'))
    b = store.commit(_model(tmp_path / "b", '{"x": 1}'))
    c = store.commit(_model(tmp_path / "c", '{"x": 2}'))
    assert a == b and a.path != c.path
    assert Path(a.path).name == a.sha256 == digest(a.path)[0] and (a.bytes, a.files) == (4096 + 8, 2)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # moved, or dropped as a duplicate
    assert json.loads((Path(a.path) / "config.json").read_text()) == {"x": 1}  # write-once: never overwritten


def test_a_reference_resolves_to_the_stored_path_and_an_ordinary_artifact_to_itself(tmp_path: Path) -> None:
    store = Storage(tmp_path / "storage")
    ref = store.commit(_model(tmp_path / "m", "{}"))
    artifact = tmp_path / "kfp" / "model"
    write_ref(artifact, ref)
    assert artifact.stat().st_size < 1000 and read_ref(artifact) == ref and resolve(artifact) == ref.path
    plain = tmp_path / "records.jsonl"
    plain.write_text('{"id": "p1"}\n')
    assert read_ref(plain) is None and resolve(plain) == str(plain)
    (Path(ref.path) / "config.json").unlink()
    with pytest.raises(StorageError, match="bytes on storage"):
        resolve(artifact)
    import shutil

    shutil.rmtree(ref.path)
    with pytest.raises(StorageError, match="is not on storage: this task must mount the storage PVC"):
        resolve(artifact)


def test_storage_the_pods_user_cannot_write_is_a_one_line_error(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to become another uid")
    root = tmp_path / "storage"
    root.mkdir(mode=0o755)  # owned by root, as a fresh volume is
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child becomes the pods' user, as a task would run
        try:
            os.close(read)
            os.setgid(1000)
            os.setuid(1000)
            try:
                Storage(root).staging("sft", "model")
                os.write(write, b"written")
            except StorageError as e:
                os.write(write, str(e).encode())
        finally:
            os._exit(0)
    os.close(write)
    message = os.read(read, 4096).decode()
    os.waitpid(pid, 0)
    assert "\n" not in message
    assert message.startswith(f"storage {root} is not writable by uid 1000 gid 1000") and "storage-init-job" in message


def test_on_a_cluster_a_tracked_stage_refuses_a_pod_local_mlflow_store() -> None:
    cluster = {"KUBEDISTILL_ON_CLUSTER": "1"}
    with pytest.raises(UserError, match="MLFLOW_TRACKING_URI is not set in this pod"):
        check_tracking_store({}, cluster)
    with pytest.raises(UserError, match="is pod-local"):
        check_tracking_store({}, {**cluster, "MLFLOW_TRACKING_URI": "sqlite:////tmp/mlflow.db"})
    with pytest.raises(UserError, match="points at the pod itself"):
        check_tracking_store({}, {"KFP_POD_NAME": "p", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    check_tracking_store({}, {**cluster, "MLFLOW_TRACKING_URI": "http://kubedistill-mlflow.kubedistill:5000"})
    check_tracking_store({"enabled": False}, cluster)  # tracking off: nothing to lose
    check_tracking_store({}, {})  # kfp.local and the CLI: the local SQLite store is the point
    assert not on_cluster({}) and on_cluster({"KFP_POD_NAME": "x"})


@dataclass
class _Artifact:
    """What KFP's executor hands a component (``.path``, ``.uri``, ``.metadata``, ``.log_metric``)."""

    path: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return self.path

    def log_metric(self, key: str, value: float) -> None:
        self.metadata[key] = value


def test_a_component_resolves_stored_inputs_and_stores_large_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEDISTILL_STORAGE", str(tmp_path / "storage"))
    monkeypatch.setenv("KUBEDISTILL_INLINE_LIMIT", "0")
    store = Storage(tmp_path / "storage")
    parts = []
    for i in range(2):
        records = tmp_path / f"part{i}.jsonl"
        records.write_text(json.dumps({"id": f"p{i}", "problem": f"{i}+1?", "answer": str(i + 1)}) + "\n")
        artifact = _Artifact(str(tmp_path / "kfp" / f"part{i}"))
        write_ref(artifact.path, store.commit(records))
        parts.append(artifact)
    empty = []
    for i in range(2):
        (tmp_path / f"rej{i}").write_text("")
        empty.append(_Artifact(str(tmp_path / f"rej{i}")))
    out = {name: _Artifact(str(tmp_path / "kfp" / "out" / name)) for name in ("merged", "rejects", "metrics")}
    run_component("merge_shards", {"parts": parts, "part_rejects": empty, "part_metrics": [], **out})
    ref = read_ref(out["merged"].path)
    assert ref is not None and out["merged"].metadata["sha256"] == ref.sha256  # over the limit: by path
    merged = [json.loads(line) for line in Path(ref.path).read_text().splitlines()]
    assert [r["id"] for r in merged] == ["p0", "p1"]
    assert read_ref(out["metrics"].path) is None  # metrics always travel through KFP


@pytest.mark.parametrize("stage", ["register", "sft", "merge_shards"])
def test_a_tracked_component_on_a_cluster_without_a_tracking_server_stops_before_it_runs(
    stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubedistill.stages import stage as stage_spec

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("KUBEDISTILL_ON_CLUSTER", raising=False)
    monkeypatch.setenv("KFP_POD_NAME", "slow-thinking-abc-register")  # what KFP's launcher sets in a task
    monkeypatch.setenv("KUBEDISTILL_STORAGE", str(tmp_path / "storage"))
    args = {"tracking": {"experiment": "e"}}  # nothing else: a guard that let the stage start would fail otherwise
    if stage_spec(stage).tracked:
        with pytest.raises(UserError, match="MLFLOW_TRACKING_URI is not set in this pod"):
            run_component(stage, args)
        assert not (tmp_path / "storage").exists()  # stopped before anything was staged
    else:  # an untracked stage has no MLflow state to lose: the guard lets it through (it fails on its inputs)
        with pytest.raises(Exception) as e:
            run_component(stage, args)
        assert not isinstance(e.value, UserError) or "MLFLOW_TRACKING_URI" not in str(e.value)
