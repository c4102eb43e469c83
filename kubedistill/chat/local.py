"""``local://MODEL`` endpoints: the teacher a local run serves on this machine, started on demand.

``kubedistill run --local`` does not start its teacher up front. It runs a small broker
(kubedistill/serve/lazy.py) and names it in ``$KUBEDISTILL_LOCAL_TEACHER``; the pipeline's tasks, child
processes of that run, know the teacher as ``local://MODEL``. The first task that has a request its
request cache cannot answer asks the broker for the teacher's URL, and the broker starts the server then
(about 90 s for vLLM on 2 cores), once for the whole run. A re-run whose answers are all cached starts
nothing, and the URL in every task's inputs stays ``local://MODEL``, so kfp.local's task cache hits.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request

from kubedistill.core.errors import BadInputError, UserError

BROKER_ENV = "KUBEDISTILL_LOCAL_TEACHER"

_lock = threading.Lock()
_resolved: dict[str, str] = {}


def local_teacher_url(url: str, *, timeout_s: float = 3600.0) -> str:
    """The ``http://127.0.0.1:PORT/v1`` base URL of the local teacher ``url`` (``local://MODEL``), started
    by the broker of this run if it is not running yet; remembered for the process.

    Blocks while the server starts (the broker bounds that by the recipe's ``teacher.local.startup_timeout_s``).
    Raises ``UserError`` outside a local run (no ``$KUBEDISTILL_LOCAL_TEACHER``) and ``BadInputError`` when
    the broker cannot start the teacher (its message names the server's log)."""
    with _lock:
        if url in _resolved:
            return _resolved[url]
        broker = os.environ.get(BROKER_ENV)
        if not broker:
            raise UserError(
                f"{url} is the teacher `kubedistill run --local` serves on this machine; outside such a run give "
                "the teacher's http(s) URL (e.g. with --teacher-url)"
            )
        model = url.removeprefix("local://").strip("/")
        query = urllib.parse.urlencode({"model": model})
        try:
            with urllib.request.urlopen(f"{broker}/start?{query}", data=b"", timeout=timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("error", detail)
            raise BadInputError(f"the local teacher {model!r} could not be started: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise BadInputError(f"the local teacher's broker at {broker} does not answer: {e}") from None
        _resolved[url] = str(body["url"])
        return _resolved[url]
