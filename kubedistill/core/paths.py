"""Where kubedistill keeps things between runs: one default for every cache directory.

* :func:`cache_root` — built models, downloaded registry versions: ``$KUBEDISTILL_CACHE``, else
  ``$XDG_CACHE_HOME/kubedistill``, else ``~/.cache/kubedistill`` (on the cluster: a PVC path).
* :func:`request_cache_dir` — the durable cache of endpoint answers (kubedistill/chat/cache.py) for one
  stage: the configured directory, else ``$KUBEDISTILL_REQUEST_CACHE/<stage>`` (set by ``kubedistill run
  --local`` and, on the cluster, on every pod that mounts the storage PVC), else ``<output>.cache``
  beside the stage's output; one sub-directory per shard (parallel pods never share one SQLite file).
"""

from __future__ import annotations

import os
from pathlib import Path

REQUEST_CACHE_ENV = "KUBEDISTILL_REQUEST_CACHE"


def cache_root() -> Path:
    """The directory for built models and registry downloads (see the module docstring)."""
    root = os.environ.get("KUBEDISTILL_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubedistill"


def request_cache_dir(
    configured: str | Path | None,
    *,
    stage: str | None = None,
    beside: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Path | None:
    """The request cache of one stage run: ``configured``, else ``$KUBEDISTILL_REQUEST_CACHE/<stage>``
    (when that variable is set and ``stage`` is given), else ``<beside>.cache`` (when the stage writes
    ``beside``), else None (no cache). With ``shard = (index, count)`` and ``count > 1``, the shard's own
    sub-directory ``shard-INDEX-of-COUNT``: a problem always lands in the same shard, so a re-run finds
    its answers there. The variable is read at run time, so the directory is never part of a task's
    inputs (nor, therefore, of its cache key)."""
    root = os.environ.get(REQUEST_CACHE_ENV)
    if configured is not None:
        base: Path | None = Path(configured)
    elif root and stage:
        base = Path(root) / stage
    elif beside is not None:
        out = Path(beside)
        base = out.with_name(out.name + ".cache")
    else:
        base = None
    index, count = shard
    if base is not None and count > 1:
        base = base / f"shard-{index}-of-{count}"
    return base
