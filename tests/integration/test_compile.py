"""Every pipeline compiles to KFP YAML, one file per pipeline, on the configured images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubedistill_kfp.pipelines import PIPELINES

pytestmark = pytest.mark.integration


def test_compile_writes_one_yaml_per_pipeline_on_the_configured_images(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    # a fresh process: the image registry/tag are fixed when the components are imported
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubedistill.cli",
            "compile",
            "--output-dir",
            str(out),
            "--image-registry",
            "registry.example.com/ml",
            "--image-tag",
            "1.2.3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.yaml" for name in PIPELINES)
    for name in PIPELINES:
        spec = yaml.safe_load((out / f"{name}.yaml").read_text())
        assert spec["pipelineInfo"]["name"] == name.replace("_", "-")
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        assert images and all(
            i.startswith("registry.example.com/ml/kubedistill-") and i.endswith(":1.2.3") for i in images
        )
        # no pip install of kfp at run time: the images carry it
        commands = " ".join(
            " ".join(e["container"].get("command", [])) for e in spec["deploymentSpec"]["executors"].values()
        )
        assert "pip install" not in commands
    assert "without --cluster-config" in proc.stderr  # a plain compile says what it leaves out


def test_compile_pins_images_by_digest(tmp_path: Path) -> None:
    from kubedistill_kfp.submit import SPEC_NAME

    digest = "sha256:" + "0f" * 32
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "kubedistill.cli", "compile", "--output-dir", str(tmp_path)),
            *("--pipeline", "slow_thinking", "--image-registry", "registry.example.com/ml", "--image-tag", "1.2.3"),
            *("--image", f"train=registry.example.com/ml/kubedistill-train@{digest}"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    spec = yaml.safe_load((tmp_path / "slow_thinking.yaml").read_text())
    images = {n: e["container"]["image"] for n, e in spec["deploymentSpec"]["executors"].items()}
    assert images["exec-sft-op"] == images["exec-dpo-op"] == f"registry.example.com/ml/kubedistill-train@{digest}"
    assert images["exec-collect-shard-op"] == "registry.example.com/ml/kubedistill-base:1.2.3"
    assert SPEC_NAME.match(spec["pipelineInfo"]["name"])  # a name the KFP server accepts
    bad = subprocess.run(
        [sys.executable, "-m", "kubedistill.cli", "compile", "--output-dir", str(tmp_path), "--image", "gpu=x@y"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "the images are base, train, serve" in bad.stderr


def test_pipeline_shapes(tmp_path: Path) -> None:
    from kubedistill_kfp.compile import compile_all

    paths = {p.stem: p for p in compile_all(tmp_path)}
    spec = yaml.safe_load(paths["slow_thinking"].read_text())
    tasks = spec["root"]["dag"]["tasks"]
    gates = [t for t in tasks if t.startswith("condition-")]  # the promotion gate: dsl.If around promote-op
    assert len(gates) == 1 and tasks[gates[0]]["triggerPolicy"]["condition"]
    loops = [t for t in tasks if t.startswith("for-loop-")]  # collect's shards; the CoT stages': dsl.ParallelFor
    assert len(loops) == 2
    bodies = {n: spec["components"][tasks[n]["componentRef"]["name"]]["dag"]["tasks"] for n in loops}
    (collect_loop,) = [n for n, b in bodies.items() if set(b) == {"collect-shard-op"}]
    (cot_loop,) = [n for n in loops if n != collect_loop]
    loop = tasks[cot_loop]
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("shard-plan-op-2-Output")
    body = bodies[cot_loop]
    # one merge task decides dedup over every collect shard's keys; its problems feed the CoT stages
    merge = tasks["collect-merge-op"]["inputs"]["artifacts"]
    assert {"parts", "part_samples", "part_keys", "part_rejects"} <= set(merge)
    assert loop["inputs"]["artifacts"]["pipelinechannel--collect-merge-op-problems"]["taskOutputArtifact"] == {
        "outputArtifactKey": "problems",
        "producerTask": "collect-merge-op",
    }
    # teacher-bound stages, then the CPU stages whose decisions are per CoT, over the same shards
    assert set(body) == {"generate-op", "judge-op", "rewrite-op", "verify-op", "pairs-op"}
    assert body["verify-op"]["inputs"]["artifacts"]["samples"]["taskOutputArtifact"]["producerTask"] == "rewrite-op"
    assert body["pairs-op"]["inputs"]["artifacts"]["samples"]["taskOutputArtifact"]["producerTask"] == "verify-op"
    assert {t for t in tasks if t.startswith("merge-shards-op")} == {
        "merge-shards-op",
        "merge-shards-op-2",
        "merge-shards-op-3",
        "merge-shards-op-4",
        "merge-shards-op-5",
    }
    assert set(tasks) - set(gates) - set(loops) - {t for t in tasks if t.startswith("merge-shards-op")} == {
        "preflight-op",
        "collect-merge-op",
        "shard-plan-op",
        "shard-plan-op-2",
        "sft-op",
        "dpo-op",
        "evaluate-op",
        "register-op",
        "report-op",
    }
    # DPO trains the SFT student; evaluation and registration take the DPO student
    dpo_inputs = tasks["dpo-op"]["inputs"]["artifacts"]
    assert dpo_inputs["base_model"]["taskOutputArtifact"] == {"outputArtifactKey": "model", "producerTask": "sft-op"}
    assert dpo_inputs["pairs"]["taskOutputArtifact"]["producerTask"] == "merge-shards-op-5"  # pairs, merged
    sft_inputs = tasks["sft-op"]["inputs"]["artifacts"]
    assert sft_inputs["samples"]["taskOutputArtifact"]["producerTask"] == "merge-shards-op-4"  # verified, merged
    for t in ("evaluate-op", "register-op"):
        assert tasks[t]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "dpo-op"
    for t in ("generate-op", "judge-op", "rewrite-op"):  # teacher-bound: retried
        assert body[t]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["register-op"]["cachingOptions"] == {"enableCache": True}  # a re-run reports its version
    assert "enableCache" in body["verify-op"]["cachingOptions"]  # deterministic stages stay cached
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"collect_config", "generate_config", "judge_config", "sft_config", "eval_config", "tracking"} <= set(params)
    assert params["shards"]["defaultValue"] == 1
    # the first task checks the run; every stage reads its section from it
    assert tasks["preflight-op"]["cachingOptions"] == {}  # never cached: its checks are of the moment
    assert "dependentTasks" not in tasks["preflight-op"]
    assert tasks["collect-merge-op"]["inputs"]["parameters"]["config"]["taskOutputParameter"] == {
        "outputParameterKey": "checked_collect_config",
        "producerTask": "preflight-op",
    }
    assert tasks["evaluate-op"]["inputs"]["parameters"]["base_model"]["taskOutputParameter"] == {
        "outputParameterKey": "base_model",
        "producerTask": "preflight-op",
    }

    for name in ("adaptive_thinking", "reward_models", "grpo"):  # collect, then generate -> verify -> score, sharded
        doc = yaml.safe_load(paths[name].read_text())
        bodies = [
            set(doc["components"][t["componentRef"]["name"]]["dag"]["tasks"])
            for n, t in doc["root"]["dag"]["tasks"].items()
            if n.startswith("for-loop-")
        ]
        assert sorted(map(sorted, bodies)) == [["collect-shard-op"], ["generate-op", "score-op", "verify-op"]]
    adaptive = yaml.safe_load(paths["adaptive_thinking"].read_text())["root"]["dag"]["tasks"]
    # the merged scores, collect's problems (each CoT's domain, for select.mix), and its section from the preflight
    assert adaptive["select-op"]["dependentTasks"] == ["collect-merge-op", "merge-shards-op-3", "preflight-op"]
    evaluate = yaml.safe_load(paths["evaluate"].read_text())["root"]["dag"]["tasks"]
    assert set(evaluate) == {"preflight-op", "evaluate-models-op"}

    grpo = yaml.safe_load(paths["grpo"].read_text())["root"]["dag"]["tasks"]
    assert {"reward-models-op", "grpo-op", "evaluate-op", "register-op"} <= set(grpo)
    rm = grpo["grpo-op"]["inputs"]["artifacts"]["reward_models"]["taskOutputArtifact"]
    assert rm == {"outputArtifactKey": "models", "producerTask": "reward-models-op"}
    assert grpo["evaluate-op"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "grpo-op"


@pytest.mark.parametrize("example", sorted(p.name for p in Path("examples").glob("*.yaml") if p.name != "cluster.yaml"))
def test_every_example_recipe_gives_exactly_its_pipelines_parameters(example: str, tmp_path: Path) -> None:
    from kubedistill.chat.config import EndpointConfig
    from kubedistill.recipes import load_recipe
    from kubedistill_kfp.compile import compile_all

    recipe = load_recipe(Path("examples") / example, here="cluster" not in example)  # cluster: the pods'
    kind = getattr(recipe, "pipeline", recipe.recipe)  # cot_source: imported -> <recipe>_imported
    (path,) = compile_all(tmp_path, names=[kind])
    params = yaml.safe_load(path.read_text())["root"]["inputDefinitions"]["parameters"]
    args = recipe.pipeline_arguments([EndpointConfig(url="http://127.0.0.1:9/v1", model="t")])
    assert set(args) <= set(params), set(args) - set(params)
    # every parameter without a real default comes from the recipe
    assert {k for k in params if k.endswith("_config")} <= set(args)


def test_a_cluster_compile_refuses_a_pod_local_tracking_store_in_one_line(tmp_path: Path) -> None:
    data = yaml.safe_load(Path("examples/cluster.yaml").read_text())
    data["tracking"] = {"uri": "sqlite:///mlflow.db"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "kubedistill.cli", "compile", "--output-dir", str(tmp_path / "dist")),
            *("--cluster-config", str(tmp_path / "cluster.yaml")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "tracking.uri: 'sqlite:///mlflow.db' is pod-local" in line
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())
