"""Large outputs by path: model weights and big datasets live on shared storage, KFP passes a small reference.

KFP uploads every output artifact to its object store (SeaweedFS, 20 GiB upstream) and downloads it again
into each consuming pod; one 7B student fills that store. With ``$KUBEDISTILL_STORAGE`` set (on the
cluster: a folder of the PVC every task mounts, from ``ClusterConfig.storage``; under ``kubedistill run
--local``: ``<run dir>/storage``) a component instead:

* writes every ``Model`` output straight into a staging folder on that storage, and any other output that
  ends up larger than ``$KUBEDISTILL_INLINE_LIMIT`` bytes (default 256 MiB) is moved there afterwards;
* files it under its **content digest**, ``<storage>/objects/<sha256>`` (a rename on the same volume):
  the same bytes always land at the same path, different bytes never share one, and nothing is ever
  written in place — so a result KFP reuses from its cache still points at exactly what it pointed at;
* writes, as the KFP artifact itself, a reference of a few hundred bytes (:class:`StoredRef`: path,
  digest, bytes, files), which the consuming component resolves back to the path (:func:`resolve`).

Metrics, reports and records files under the limit still travel as ordinary artifacts. Storage must be
writable by the pods' uid (1000): manifests/pipeline-namespace/storage-init-job.yaml prepares the volume,
and :class:`StorageError` says so in one line when it is not. Nothing here imports KFP.

    store = Storage.from_env()                        # None when $KUBEDISTILL_STORAGE is unset
    staging = store.staging("sft", "model")           # the trainer writes the model here
    ref = store.commit(staging)                       # -> <storage>/objects/<sha256>
    write_ref(artifact_path, ref)                     # what KFP stores and passes on
    resolve(artifact_path)                            # -> <storage>/objects/<sha256> in the next task
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubedistill.core.errors import UserError

STORAGE_ENV = "KUBEDISTILL_STORAGE"
INLINE_LIMIT_ENV = "KUBEDISTILL_INLINE_LIMIT"
DEFAULT_INLINE_LIMIT = 256 * 1024 * 1024  # bytes
REF_KEY = "kubedistill_stored"  # marks a reference file
_REF_MAX_BYTES = 4096
_CHUNK = 8 * 1024 * 1024


class StorageError(UserError):
    """Storage cannot be used (not writable by this uid, a referenced object missing); one line, exit 2."""


@dataclass(frozen=True)
class StoredRef:
    """What a KFP artifact holds for an output kept on storage: ``path`` (``<storage>/objects/<sha256>``),
    ``sha256`` (the digest of the content: every file's relative path and bytes, in sorted order),
    ``bytes`` and ``files`` (its size and file count, checked when it is read back)."""

    path: str
    sha256: str
    bytes: int
    files: int


def digest(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """``(sha256 hex, bytes, files)`` of a file or a directory tree (relative paths and contents, sorted;
    symlinks are followed). Reads everything once: about 1 GB/s on local disk, slower on network volumes."""
    root = Path(path)
    h = hashlib.sha256()
    total = count = 0
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        rel = "." if f == root else f.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
                total += len(chunk)
        h.update(b"\0")
        count += 1
    return h.hexdigest(), total, count


def size_of(path: str | os.PathLike[str]) -> int:
    """Bytes of a file or a directory tree (0 when it does not exist)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return 0


def read_ref(path: str | os.PathLike[str]) -> StoredRef | None:
    """The reference a KFP artifact file holds, or None when it is an ordinary artifact."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size > _REF_MAX_BYTES:
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get(REF_KEY) != 1:
        return None
    return StoredRef(path=data["path"], sha256=data["sha256"], bytes=int(data["bytes"]), files=int(data["files"]))


def write_ref(path: str | os.PathLike[str], ref: StoredRef) -> None:
    """Make the KFP artifact at ``path`` a reference to ``ref`` (replacing whatever was there)."""
    p = Path(path)
    if p.is_dir():
        shutil.rmtree(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({REF_KEY: 1, **asdict(ref)}, indent=1), encoding="utf-8")


def resolve(path: str | os.PathLike[str]) -> str:
    """The path to read an input artifact from: the stored object a reference points at (checked to exist
    with its size), else the artifact's own path. Raises :class:`StorageError` when the object is gone."""
    ref = read_ref(path)
    if ref is None:
        return str(path)
    target = Path(ref.path)
    if not target.exists():
        raise StorageError(
            f"{ref.path} (sha256 {ref.sha256[:12]}) is not on storage: this task must mount the storage PVC, "
            "and stored objects must not be deleted while a cached result refers to them (re-run uncached)"
        )
    if size_of(target) != ref.bytes:
        raise StorageError(f"{ref.path}: {size_of(target)} bytes on storage, {ref.bytes} when it was stored")
    return str(target)


class Storage:
    """A storage root (see the module docstring): ``objects/`` (content-addressed, write-once),
    ``staging/`` (outputs being written), ``work/`` (checkpoints a retried task resumes from)."""

    def __init__(self, root: str | os.PathLike[str], inline_limit: int = DEFAULT_INLINE_LIMIT) -> None:
        self.root = Path(root)
        self.inline_limit = inline_limit

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Storage | None:
        """The storage of ``$KUBEDISTILL_STORAGE`` (and ``$KUBEDISTILL_INLINE_LIMIT``), or None."""
        env = os.environ if environ is None else environ
        root = env.get(STORAGE_ENV)
        if not root:
            return None
        limit = env.get(INLINE_LIMIT_ENV)
        return cls(root, int(limit) if limit else DEFAULT_INLINE_LIMIT)

    def _dir(self, name: str) -> Path:
        d = self.root / name
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / f".write-test-{uuid.uuid4().hex}"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise StorageError(
                f"storage {self.root} is not writable by uid {os.getuid()} gid {os.getgid()} ({e.strerror}): "
                "run the storage init Job (manifests/pipeline-namespace/storage-init-job.yaml) once"
            ) from None
        return d

    def staging(self, stage: str, port: str) -> Path:
        """A fresh path on storage for output ``port`` of ``stage`` to be written to (not created)."""
        return self._dir("staging") / f"{stage}-{port}-{uuid.uuid4().hex}"

    def work_dir(self, stage: str, key: str) -> Path:
        """The checkpoint folder of one stage run, keyed by its inputs (a retry with the same inputs resumes)."""
        return self._dir("work") / stage / key

    def commit(self, path: str | os.PathLike[str]) -> StoredRef:
        """File ``path`` (on storage or not) under its content digest and return the reference. The same
        content already stored is kept as it is (write-once) and ``path`` is removed."""
        src = Path(path)
        if not src.exists():
            raise StorageError(f"{src}: the stage wrote no output there")
        sha, total, count = digest(src)
        target = self._dir("objects") / sha
        if target.exists():
            _remove(src)
        else:
            tmp = target.with_name(f".{sha}.{uuid.uuid4().hex}")
            shutil.move(str(src), tmp)  # a copy when src is on another volume, then an atomic rename
            try:
                os.replace(tmp, target)
            except OSError:  # another task stored the same content first (a directory cannot be replaced)
                if not target.exists():
                    raise
                _remove(tmp)
        return StoredRef(path=str(target), sha256=sha, bytes=total, files=count)

    def discard(self, path: str | os.PathLike[str]) -> None:
        """Remove a staging path (a failed stage's partial output)."""
        _remove(Path(path))


def _remove(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def input_key(stage: str, config: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    """A short digest of what a stage run depends on (config, parameters, input identities), for
    :meth:`Storage.work_dir`."""
    blob = json.dumps(
        {"stage": stage, "config": config, "params": params, "inputs": inputs}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
