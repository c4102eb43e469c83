"""The cluster guide, the CI guide and the cluster config name only files that exist (a guide that sends a
new user to a missing recipe or kustomization is a bug the tests catch), and every module they name imports."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    "docs/cluster.md",
    "docs/ci.md",
    "manifests/README.md",
    "examples/cluster.yaml",
    "examples/ci/github-actions.yaml",
]
PATH = re.compile(
    r"(?<![\w/.$-])((?:manifests|examples|images|docs|kubedistill|kubedistill_kfp|components|pipelines|tests|tools)/[\w./*{},-]*\w)"
)
MODULE = re.compile(r"(?:from|import)\s+(kubedistill(?:_kfp)?(?:\.\w+)*)")


def _expand(path: str) -> list[str]:
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    return [p for alt in m.group(1).split(",") for p in _expand(path[: m.start()] + alt + path[m.end() :])]


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_guide_names_exists(doc: str) -> None:
    text = (ROOT / doc).read_text()
    missing = []
    for raw in sorted(set(PATH.findall(text))):
        for path in _expand(raw.rstrip(".")):
            if "<" in path or "$" in path:
                continue
            if not (any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
                missing.append(path)
    assert missing == [], f"{doc} names files that do not exist"


@pytest.mark.parametrize("doc", ["docs/cluster.md", "docs/ci.md"])
def test_every_module_a_guide_imports_exists(doc: str) -> None:
    for module in sorted(set(MODULE.findall((ROOT / doc).read_text()))):
        importlib.import_module(module)
