"""The Kubeflow UI form (issue 15): each compiled pipeline's top-level parameters are flat, typed,
stage-prefixed and described (the pipeline docstring's ``Args:``, which KFP copies into the compiled YAML's
inputDefinitions), with defaults for a GPU cluster; the recipe can still be passed whole (the section JSONs
``kubedistill submit`` sends win over the form), and a form left at its defaults gives sections that validate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kubedistill.chat.config import EndpointConfig
from kubedistill.core.config import ConfigError
from kubedistill.recipes import FORMS, SECTION_MODELS, form_sections, load_recipe, validate_sections

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KFP_TYPES = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from kubedistill_kfp.compile import compile_all

    out = tmp_path_factory.mktemp("dist")
    return {p.stem: yaml.safe_load(p.read_text()) for p in compile_all(out, log=lambda _: None)}


def _sections(spec: dict) -> dict[str, dict]:
    params = spec["root"]["inputDefinitions"]["parameters"]
    return {k: {} for k in params if k in SECTION_MODELS}


def test_every_parameter_of_every_pipeline_is_described(compiled: dict[str, dict]) -> None:
    for name, spec in compiled.items():
        params = spec["root"]["inputDefinitions"]["parameters"]
        undescribed = [k for k, p in params.items() if not p.get("description")]
        assert not undescribed, f"{name}: {undescribed}"


def test_the_form_fields_are_flat_typed_stage_prefixed_with_cluster_defaults(compiled: dict[str, dict]) -> None:
    for name, spec in compiled.items():
        params = spec["root"]["inputDefinitions"]["parameters"]
        sections = {k.removesuffix("_config") for k in params if k in SECTION_MODELS}
        for f in FORMS[name]:
            p = params[f.name]
            assert p["parameterType"] == KFP_TYPES[f.type], f"{name}.{f.name}"
            assert p["defaultValue"] == f.default
            prefix = f.name.split("_", 1)[0]
            assert f.name.startswith(tuple(f"{s}_" for s in sections)) or prefix == "teacher", f.name
            assert f.help.strip() and p["description"] == f.help
    # a real student model id, not a local alias; a teacher URL inside the cluster
    for name, key in (("slow_thinking", "sft_base_model"), ("adaptive_thinking", "sft_base_model")):
        assert HUB_ID.match(compiled[name]["root"]["inputDefinitions"]["parameters"][key]["defaultValue"])
    grpo = compiled["grpo"]["root"]["inputDefinitions"]["parameters"]
    assert HUB_ID.match(grpo["grpo_base_model"]["defaultValue"])
    assert "base_model" not in grpo  # the old top-level `tiny-qwen3` default is gone
    teacher = compiled["slow_thinking"]["root"]["inputDefinitions"]["parameters"]["teacher_url"]["defaultValue"]
    assert teacher.startswith("http://") and ".svc.cluster.local/" in teacher and teacher.endswith("/openai/v1")


@pytest.mark.parametrize("pipeline", ["slow_thinking", "adaptive_thinking", "reward_models", "grpo", "evaluate"])
def test_a_form_left_at_its_defaults_gives_valid_sections(compiled: dict[str, dict], pipeline: str) -> None:
    merged = form_sections(pipeline, _sections(compiled[pipeline]), {})
    checked = validate_sections(pipeline, merged)
    if "generate_config" in checked:
        (teacher,) = checked["generate_config"].teachers
        assert teacher.model == "qwq-32b" and teacher.api_key_env is None  # empty string: no key
        assert checked["generate_config"].temperatures == [0.6]
        assert checked["collect_config"].sources[0].limit == 20000
    for section in ("judge_config", "score_config"):  # judges default to the teacher
        if section in checked:
            assert checked[section].judge == checked["generate_config"].teachers[0]
    if pipeline == "slow_thinking":
        assert checked["rewrite_config"].rewriter == checked["generate_config"].teachers[0]
        assert checked["sft_config"].base_model == "Qwen/Qwen2.5-7B-Instruct"
        assert checked["sft_config"].deepspeed == "zero3"


def test_form_values_land_in_their_sections_and_a_bad_one_is_named() -> None:
    sections = {k: {} for k in ("collect_config", "generate_config", "sft_config", "tracking")}
    form = {"sft_learning_rate": 3e-6, "teacher_api_key_env": "TEACHER_KEY", "generate_num_generations": 8}
    merged = form_sections("adaptive_thinking", sections, form)
    assert merged["sft_config"]["learning_rate"] == 3e-6
    assert merged["generate_config"]["teachers"][0]["api_key_env"] == "TEACHER_KEY"
    assert merged["generate_config"]["num_generations"] == 8
    bad = form_sections("adaptive_thinking", sections, {"sft_learning_rate": -1.0, "generate_num_generations": 0})
    with pytest.raises(ConfigError) as e:
        validate_sections("adaptive_thinking", bad)
    assert "generate_config.num_generations" in str(e.value) or "sft_config.learning_rate" in str(e.value)


@pytest.mark.parametrize("example", ["quickstart.yaml", "cluster_slow_thinking.yaml", "grpo.yaml"])
def test_a_recipe_passed_whole_wins_over_the_form(example: str) -> None:
    """What submit and `run --local` send (every section, whole) comes out of the merge unchanged, whatever
    the form says: a CI run is the recipe, not the form's defaults."""
    recipe = load_recipe(ROOT / "examples" / example, check=False)
    args = recipe.pipeline_arguments([EndpointConfig(url="http://127.0.0.1:9/v1", model="t")])
    sections = {k: v for k, v in args.items() if k in SECTION_MODELS}
    form = {f.name: f.default for f in FORMS[recipe.recipe]}
    form["sft_learning_rate"] = form["grpo_learning_rate"] = 0.5  # ignored: the sections are given
    merged = form_sections(recipe.recipe, sections, form)
    if not args.get("deploy"):  # no deploy: the unused serve section is the form's
        assert sections.pop("serve_config", {}) == {} and merged.pop("serve_config", None) is not None
    assert merged == sections
    validate_sections(recipe.recipe, merged)


@pytest.mark.parametrize("pipeline", ["slow_thinking", "adaptive_thinking", "grpo"])
def test_the_deploy_step_sits_behind_the_promotion_gate(compiled: dict[str, dict], pipeline: str) -> None:
    """promotion-gate (promote on) -> promote-op -> passed-gate (its verdict) -> deploy-student (deploy on) ->
    deploy-op, serving the version register-op registered with the serve section the preflight checked;
    the preflight checks KServe's CRD only with deploy on."""
    spec = compiled[pipeline]
    comps = spec["components"]

    def conditions(dag: dict) -> dict[str, dict]:
        return {n: t for n, t in dag["tasks"].items() if n.startswith("condition-")}

    (gate,) = conditions(spec["root"]["dag"]).values()
    assert "promote" in gate["triggerPolicy"]["condition"]
    inner = comps[gate["componentRef"]["name"]]["dag"]
    assert "promote-op" in inner["tasks"]
    (passed,) = conditions(inner).values()
    assert "promote-op-Output'] == true" in passed["triggerPolicy"]["condition"]
    (wanted,) = conditions(comps[passed["componentRef"]["name"]]["dag"]).values()
    assert "pipelinechannel--deploy'] == true" in wanted["triggerPolicy"]["condition"]
    deploy = comps[wanted["componentRef"]["name"]]["dag"]["tasks"]["deploy-op"]
    assert deploy["inputs"]["parameters"]["model_uri"]["componentInputParameter"].endswith("register-op-Output")
    settings = deploy["inputs"]["parameters"]["settings"]["componentInputParameter"]
    assert settings.endswith("preflight-op-checked_serve_config")
    assert deploy.get("cachingOptions", {}).get("enableCache") is not True
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["deploy"]["defaultValue"] is False and params["serve_gpus"]["defaultValue"] == 1
    pre = spec["root"]["dag"]["tasks"]["preflight-op"]["inputs"]["parameters"]
    assert pre["deploy"] == {"componentInputParameter": "deploy"}
    (crd,) = pre["crds"]["runtimeValue"]["constant"]
    assert crd["plural"] == "inferenceservices" and crd["when"] == "deploy"


def test_a_recipe_that_deploys_needs_a_gate(tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "examples" / "cluster_slow_thinking.yaml").read_text())
    recipe["serve"] = {"name": "student", "gpus": 1}
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(recipe))
    args = load_recipe(ok, check=False).pipeline_arguments()
    assert args["deploy"] is True and args["serve_config"]["name"] == "student"
    assert "namespace" not in args["serve_config"]  # the pipeline's own namespace
    del recipe["registry"]["gate"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match="serve: the deploy step serves the student that passes the gate"):
        load_recipe(bad, check=False)
