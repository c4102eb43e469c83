"""Are two compiled pipelines the same pipeline? A structural diff of KFP YAML for refactors.

Two packages are *equivalent* when they have the same DAG (tasks, their components, dependencies,
inputs, loops, conditions, caching), the same component interfaces (inputs, outputs, types, defaults),
the same images, resources and environment per executor, the same top-level parameters and the same
Kubernetes platform spec. What may differ: the embedded Python source of the components (their
bodies) and the SDK version stamp.

    python -m kubedistill_kfp.testing.equivalence dist-before/ dist-after/

prints every difference (``path: before != after``) and exits 1 when there is one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

# Executor fields that hold the component's source code (command / args) or change with the SDK.
_SOURCE_KEYS = {"command", "args"}


def load(path: str | Path) -> dict[str, Any]:
    """A compiled package as ``{"pipeline": spec, "platform": platform spec or {}}``."""
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    pipeline = docs[0]
    platform = docs[1] if len(docs) > 1 else {}
    return {"pipeline": _normalise(pipeline), "platform": platform}


def _normalise(spec: dict[str, Any]) -> dict[str, Any]:
    spec = dict(spec)
    spec.pop("sdkVersion", None)
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    clean = {}
    for name, ex in executors.items():
        container = {k: v for k, v in ex.get("container", {}).items() if k not in _SOURCE_KEYS}
        clean[name] = {**{k: v for k, v in ex.items() if k != "container"}, "container": container}
    if executors:
        spec["deploymentSpec"] = {**spec["deploymentSpec"], "executors": clean}
    return spec


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Every place where ``a`` and ``b`` differ, as ``path: a != b`` (dict keys sorted, lists in order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a:
                yield f"{sub}: (absent) != {_short(b[key])}"
            elif key not in b:
                yield f"{sub}: {_short(a[key])} != (absent)"
            else:
                yield from differences(a[key], b[key], sub)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path}: {len(a)} items != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {_short(a)} != {_short(b)}"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 120 else text[:117] + "..."


def compare(before: str | Path, after: str | Path) -> list[str]:
    """Differences between two compiled packages (files) or two folders of them (by file name)."""
    b, a = Path(before), Path(after)
    if b.is_dir():
        out: list[str] = []
        names = sorted({p.name for p in b.glob("*.yaml")} | {p.name for p in a.glob("*.yaml")})
        for name in names:
            if not (b / name).exists() or not (a / name).exists():
                out.append(f"{name}: present in only one of the folders")
                continue
            out += [f"{name}: {d}" for d in differences(load(b / name), load(a / name))]
        return out
    return list(differences(load(b), load(a)))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m kubedistill_kfp.testing.equivalence BEFORE AFTER (files or folders)", file=sys.stderr)
        return 2
    diffs = compare(*args)
    for d in diffs:
        print(d)
    print(f"{len(diffs)} difference(s)" if diffs else "equivalent")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
