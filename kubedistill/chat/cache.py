"""Durable request cache: a killed run, started again, repeats no finished request and loses none.

One SQLite file (WAL journal) per cache directory. A response is committed the moment it arrives
(~50 µs), so a ``kill -9`` loses at most the requests that were in flight. Keys are content hashes of who
answers and what was asked (the endpoint's label and URL — or its ``cache_identity`` —, model, extra
body, messages, sampling parameters, sample index): see :meth:`ChatRequest.cache_key`. The same cache
serves any run and any shard; two teachers never share an answer; replicas of one teacher share its
answers when they are one URL (a Service in front of the replicas) or name one ``cache_identity``.
Responses are stored with known secret values removed (kubedistill/core/secrets.py).

On a shared network filesystem give each concurrent writer (e.g. each ParallelFor shard) its own
cache directory; SQLite locking over NFS is not reliable.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class RequestCache:
    """A key → response mapping persisted in ``<dir>/requests.sqlite``."""

    FILENAME = "requests.sqlite"

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / self.FILENAME
        # isolation_level=None: autocommit; each put is its own durable transaction.
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL with WAL survives a killed process (only an OS crash can lose the last commits).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {}
        chunk = 500
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", part)
            for key, response in rows:
                found[key] = json.loads(response)
        return found

    def put(self, key: str, model: str, response: dict[str, Any]) -> None:
        from kubedistill.core.secrets import mask_values

        self._db.execute(
            "INSERT OR REPLACE INTO responses (key, model, response, created) VALUES (?, ?, ?, ?)",
            (key, model, json.dumps(mask_values(response), ensure_ascii=False), time.time()),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
