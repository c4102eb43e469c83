"""The images the repository builds: each one's Python dependencies resolve, for the image's own Python and
platform, with pip's resolver against the package index (a conflict fails here, not in a Docker build that
only warns); the train image's CUDA is the CUDA of its torch wheel; the serve image's transformers has the
major version students are saved with; every Dockerfile copies every package the project installs.

No Docker runs here: ``pip install --dry-run --report`` with ``--python-version/--platform/--abi`` and
``--only-binary=:all:`` resolves what the image's ``pip install`` would. Packages that PyPI ships as source
only (kfp-server-api, pycosat, ...) are built here once, and a metadata-only wheel of each stands in for
them during resolution (cached in ``<venv>/tools/image-resolve``); one that compiles C needs a compiler in
the Dockerfile's build stage, which is checked too. Needs the package index (as ``make setup`` does).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
IMAGES = sorted(p.parent.name for p in (ROOT / "images").glob("*/Dockerfile"))
WHEELS = Path(sys.prefix) / "tools" / "image-resolve"
# What each base image is: its Python (the image's own, or the distribution's python3) and glibc.
BASES: list[tuple[str, str, int]] = [
    (r"^python:3\.11[.\d]*-slim-bookworm$", "3.11", 36),
    (r"^python:3\.12[.\d]*-slim-bookworm$", "3.12", 36),
    (r"^nvidia/cuda:[\d.]+-cudnn-devel-ubuntu24\.04$", "3.12", 39),
]
# Packages of these images that PyPI ships as source only (found by resolve(); listed so that a fresh machine
# builds their metadata wheels up front instead of one resolution attempt per package).
SOURCE_ONLY = ["kfp-server-api==2.17.3", "cellpylib==2.4.0", "pycosat==0.6.6", "zss==1.2.0", "deepspeed==0.19.8"]
# Dependencies of pyproject.toml the serve image does without, and why.
NOT_ON_SERVE = {
    "torch": "vllm pins its own",
    "transformers": "vllm pins its own (same major version: checked below)",
    "trl": "trainers run on the train image",
    "accelerate": "trainers run on the train image",
    "peft": "trainers run on the train image",
    "mlflow": "mlflow-skinny: the client without the server",
    "kserve": "the deploy step runs on the base image",
    "kubeflow": "the Trainer SDK: TrainJobs are launched from the train role's pods (train image)",
}


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(image: str) -> list[str]:
    lines = (ROOT / "images" / image / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def _dockerfile(image: str) -> str:
    return (ROOT / "images" / image / "Dockerfile").read_text()


def _stages(image: str) -> list[tuple[str, str]]:
    """``[(base image, the stage's text)]`` in order."""
    parts = re.split(r"^FROM\s+", _dockerfile(image), flags=re.M)[1:]
    return [(p.split()[0], p) for p in parts]


def _pip_stage(image: str) -> tuple[str, str]:
    """The stage that installs the project (its ``pip install`` of the requirements)."""
    return next((base, text) for base, text in _stages(image) if f"images/{image}/requirements.txt" in text)


def _python_and_glibc(base: str) -> tuple[str, int]:
    for pattern, python, glibc in BASES:
        if re.match(pattern, base):
            return python, glibc
    raise AssertionError(f"unknown base image {base}: add its Python and glibc to BASES")


def _installs_project_with_deps(image: str) -> bool:
    """Whether the Dockerfile installs the project with its dependencies (``pip install ... .``)."""
    text = _pip_stage(image)[1]
    return bool(re.search(r"pip install -r images/\w+/requirements\.txt \.", text))


def _wanted(image: str) -> list[str]:
    reqs = _requirements(image)
    return [*_pyproject()["project"]["dependencies"], *reqs] if _installs_project_with_deps(image) else reqs


def _index_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=20) as r:
            return r.status == 200
    except OSError:
        return False


def _metadata_wheel(built: Path, out: Path) -> bool:
    """A wheel holding only ``built``'s metadata, tagged for any platform (resolution reads nothing else).
    Returns whether ``built`` was pure Python."""
    with zipfile.ZipFile(built) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = z.read(meta_name)
    dist_info = meta_name.split("/")[0]
    name, version = dist_info.removesuffix(".dist-info").rsplit("-", 1)
    with zipfile.ZipFile(out / f"{name}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{dist_info}/METADATA", meta)
        z.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: kubedistill-tests\nTag: py3-none-any\n")
        z.writestr(f"{dist_info}/RECORD", "")
    pure = built.name.endswith("-none-any.whl")
    (out / f"{name}-{version}.compiled").write_text("" if pure else "needs a C compiler\n")
    return pure


@cache
def resolve(image: str) -> dict[str, Any]:
    """pip's resolution of the image's Python dependencies for its Python and platform: ``{"install": [...],
    "sdists": {name: pure?}}`` (see the module docstring)."""
    python, glibc = _python_and_glibc(_pip_stage(image)[0])
    WHEELS.mkdir(parents=True, exist_ok=True)
    platforms = [a for i in range(17, glibc + 1) for a in ("--platform", f"manylinux_2_{i}_x86_64")]
    abi = "cp" + python.replace(".", "")
    env = {"PIP_CONSTRAINT": "/dev/null", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # the image has no local caps
    sdists: dict[str, bool] = {}
    for spec in SOURCE_ONLY:
        name, version = spec.split("==")
        if not any(WHEELS.glob(f"{name.replace('-', '_')}-{version}.compiled")):
            _build_metadata_wheel(spec, env)
    for _ in range(12):
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            cmd = [
                *(sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report)),
                *("--target", f"{tmp}/target", "--find-links", str(WHEELS), "--python-version", python),
                *("--implementation", "cp", "--abi", abi, *platforms, "--platform", "manylinux2014_x86_64"),
                "--only-binary=:all:",
                *_wanted(image),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**_environ(), **env})
            if proc.returncode == 0:
                data = json.loads(report.read_text())
                for item in data["install"]:
                    marker = WHEELS / f"{item['metadata']['name']}-{item['metadata']['version']}.compiled"
                    if marker.exists():
                        sdists[item["metadata"]["name"]] = marker.read_text() == ""
                data["sdists"] = sdists
                return data
            missing = re.search(r"No matching distribution found for (\S+)", proc.stderr)
            if not missing:
                pytest.fail(f"images/{image}: its dependencies do not resolve:\n{_errors(proc.stderr)}")
            problem = _build_metadata_wheel(missing.group(1), env)
            if problem:
                pytest.fail(
                    f"images/{image}: {missing.group(1)} has no wheel for Python {python} on glibc 2.{glibc} and "
                    f"does not build from source:\n{_errors(proc.stderr + problem)}"
                )
    pytest.fail(f"images/{image}: too many source-only packages")


def _build_metadata_wheel(spec: str, env: dict[str, str]) -> str:
    """Build ``spec`` here and keep a metadata-only wheel of it in WHEELS; returns pip's errors ("" when done)."""
    with tempfile.TemporaryDirectory() as tmp:
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, spec],
            capture_output=True,
            text=True,
            timeout=900,
            env={**_environ(), **env},
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if build.returncode != 0 or not wheels:
            return build.stderr or "no wheel built"
        for wheel in wheels:
            _metadata_wheel(wheel, WHEELS)
    return ""


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def _errors(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("WARNING: Location"))[-3000:]


def _installed(image: str) -> dict[str, str]:
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in resolve(image)["install"]}


@pytest.fixture(scope="module", autouse=True)
def _index() -> None:
    if not _index_reachable():
        pytest.skip("the package index is not reachable: the image resolution needs it (as make setup does)")


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("image", IMAGES)
def test_each_images_python_dependencies_resolve_for_its_python_and_platform(image: str) -> None:
    installed = _installed(image)
    for line in _wanted(image):
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in installed, f"{image}: {req} is not in the resolution"
        assert req.specifier.contains(installed[name], prereleases=True), (image, str(req), installed[name])
    assert "kfp" in installed and "mlflow-skinny" in installed  # every task runs KFP's executor and MLflow
    # a package built from source needs a compiler where pip runs
    compiled = [n for n, pure in resolve(image)["sdists"].items() if not pure]
    base, stage = _pip_stage(image)
    if compiled:
        assert "gcc" in stage or "-devel-" in base, f"{image}: {compiled} compile C: install gcc in that stage"


def test_the_train_images_cuda_is_the_cuda_of_its_torch_wheel() -> None:
    installed = _installed("train")
    assert (
        installed["torch"]
        == Requirement(next(d for d in _pyproject()["project"]["dependencies"] if d.startswith("torch")))
        .specifier.__iter__()
        .__next__()
        .version
    )
    runtime = next(v for n, v in installed.items() if n.startswith("nvidia-cuda-runtime"))
    base = _pip_stage("train")[0]
    cuda = re.match(r"nvidia/cuda:(\d+)\.(\d+)", base)
    assert cuda is not None, base
    assert runtime.split(".")[:2] == [cuda.group(1), cuda.group(2)], (
        f"torch {installed['torch']} needs the CUDA {runtime} runtime, the image is {base}: DeepSpeed's op "
        "builder refuses the mismatch"
    )
    # the [train] extra and the image agree on DeepSpeed
    extra = _pyproject()["project"]["optional-dependencies"]["train"]
    assert set(extra) <= set(_requirements("train"))


def test_the_serve_image_has_what_the_evaluate_step_needs_and_students_transformers() -> None:
    installed = _installed("serve")
    serve = {canonicalize_name(Requirement(r).name) for r in _requirements("serve")}
    for dep in _pyproject()["project"]["dependencies"]:
        name = canonicalize_name(Requirement(dep).name)
        assert name in serve or name in NOT_ON_SERVE, f"serve: {name} is needed by kubedistill: add it or say why not"
    assert "vllm" in installed
    pinned = next(d for d in _pyproject()["project"]["dependencies"] if d.startswith("transformers"))
    trained_with = next(iter(Requirement(pinned).specifier)).version
    assert installed["transformers"].split(".")[0] == trained_with.split(".")[0], (
        f"students are saved by transformers {trained_with} and would be served by {installed['transformers']}"
    )
    hub = installed["huggingface-hub"]
    datasets = installed["datasets"]
    assert datasets.split(".")[0] == "5" and int(hub.split(".")[0]) >= 1  # datasets 5.x needs hub >= 1.x


@pytest.mark.parametrize("image", IMAGES)
def test_every_dockerfile_copies_every_package_the_project_installs(image: str) -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    folders = {p.split(".")[0] for p in setuptools["packages"]} | set(setuptools["package-dir"].values())
    text = _dockerfile(image)
    for folder in sorted(folders):
        assert re.search(rf"^COPY {folder} \./{folder}$", text, flags=re.M), f"{image}: COPY {folder}"
    assert re.search(r"^USER 1000$", text, flags=re.M)  # the uid the storage init Job hands the PVC to
