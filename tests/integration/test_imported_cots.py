"""Recipes where generation is optional: an imported CoT corpus runs the adaptive-thinking path with no
generate step (CLI: collect -> verify -> score with the scripted judge -> select; the compiled
`adaptive_thinking_imported` pipeline), and imported CoTs merge with newly generated ones of the same
problems (`cot_source: both`: generate passes its shard's imported CoTs on beside the teachers')."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubedistill.cli import main
from kubedistill.core.config import ConfigError
from kubedistill.core.records import Sample, read_records
from kubedistill.testing.openai_server import ServerScript, running_server

pytestmark = pytest.mark.integration

CORPUS = Path("examples/data/openr1_math_tiny.jsonl")
JUDGE_ANSWERS = [
    (r"REASONING VERBOSITY", "Short and direct.\n<score>3</score>"),
    (r"COGNITIVE DIFFICULTY", "Routine.\n<score>2</score>"),
]


@pytest.fixture
def judge_url(tmp_path: Path):  # type: ignore[no-untyped-def]
    with running_server(ServerScript(answers=JUDGE_ANSWERS, log_path=str(tmp_path / "server.jsonl"))) as url:
        yield url


def _collect_config(tmp_path: Path, holdout: float = 0.25) -> Path:
    cfg = {
        "sources": [{"kind": "hf", "preset": "openr1-math", "import_cots": True, "path": str(CORPUS)}],
        "holdout": {"fraction": holdout, "max_items": 4},
        "seed": 5,
    }
    path = tmp_path / "collect.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_runs_the_adaptive_path_on_an_imported_corpus_without_generate(tmp_path: Path, judge_url: str) -> None:
    problems, samples = tmp_path / "problems.jsonl", tmp_path / "problems.samples.jsonl"
    no = ["--no-tracking"]
    assert main(["collect", "--config", str(_collect_config(tmp_path)), "--output", str(problems), *no]) == 0
    collected = json.loads((tmp_path / "problems.stats.json").read_text())
    imported = read_records(samples, Sample)
    train_ids = {json.loads(line)["id"] for line in problems.read_text().splitlines()}
    assert imported and {s.problem_id for s in imported} == train_ids  # held-out problems' CoTs stay out
    assert collected["info"]["cots"]["out"] == len(imported)
    assert collected["info"]["cots"]["dropped"]["heldout"] > 0

    verified = tmp_path / "verified.jsonl"
    assert main(["verify", "--input", str(samples), "--problems", str(problems), "--output", str(verified), *no]) == 0
    vstats = json.loads((tmp_path / "verified.stats.json").read_text())
    assert vstats["dropped"].get("truncated", 0) > 0 and vstats["dropped"].get("incorrect", 0) > 0
    kept = read_records(verified, Sample)
    assert kept and all(s.correct is True and s.teacher == "deepseek-r1" for s in kept)

    scored = tmp_path / "scored.jsonl"
    judge = ["--judge-url", judge_url, "--judge-model", "scripted", "--cache-dir", str(tmp_path / "cache")]
    rc = main(["score", "--input", str(verified), "--problems", str(problems), "--output", str(scored), *judge, *no])
    assert rc == 0
    assert {(s.rv, s.cd) for s in read_records(scored, Sample)} == {(3, 2)}

    selected = tmp_path / "selected.jsonl"
    assert main(["select", "--input", str(scored), "--output", str(selected), "--per-problem", "1", *no]) == 0
    chosen = read_records(selected, Sample)
    assert len(chosen) == len({s.problem_id for s in kept})  # one fitting CoT per problem with a correct one
    assert all(s.metadata["imported_from"] == "openr1-math" for s in chosen)


def test_both_imported_and_generated_cots_of_the_same_problems(tmp_path: Path, judge_url: str) -> None:
    from kubedistill.runner import run_stage

    problems, samples = tmp_path / "problems.jsonl", tmp_path / "problems.samples.jsonl"
    no = ["--no-tracking"]
    assert main(["collect", "--config", str(_collect_config(tmp_path, 0.0)), "--output", str(problems), *no]) == 0
    n_imported = len(read_records(samples, Sample))
    teacher = {"url": judge_url, "model": "scripted", "name": "qwq-endpoint"}
    generated = tmp_path / "generated.jsonl"
    shard_sizes = []
    for shard in range(2):  # as the pipeline's ParallelFor runs it: each shard takes its problems' CoTs
        part = tmp_path / f"generated-{shard}.jsonl"
        result = run_stage(
            "generate",
            config={"teachers": [teacher], "temperatures": [0.6], "client": {"cache_dir": str(tmp_path / "c")}},
            paths={"problems": problems, "imported": samples, "samples": part},
            params={"shard_index": shard, "shard_count": 2},
            tracking={"enabled": False},
        )
        assert result.stats is not None
        shard_sizes.append(result.stats.metrics["samples.imported"])
    both = [s for shard in range(2) for s in read_records(tmp_path / f"generated-{shard}.jsonl", Sample)]
    generated.write_text("".join(s.model_dump_json() + "\n" for s in both))
    assert sum(shard_sizes) == n_imported and all(n > 0 for n in shard_sizes)
    assert {s.teacher for s in both} == {"deepseek-r1", "qwq-endpoint"}
    per_problem = {pid: {s.teacher for s in both if s.problem_id == pid} for pid in {s.problem_id for s in both}}
    assert all(t == {"deepseek-r1", "qwq-endpoint"} for t in per_problem.values())
    verified = tmp_path / "verified.jsonl"
    rc = main(["verify", "--input", str(generated), "--problems", str(problems), "--output", str(verified), *no])
    assert rc == 0 and {s.teacher for s in read_records(verified, Sample)} == {"deepseek-r1", "qwq-endpoint"}


def test_the_imported_pipeline_has_no_generate_step(tmp_path: Path) -> None:
    from kubedistill_kfp.compile import compile_all

    (path,) = compile_all(tmp_path, names=["adaptive_thinking_imported"])
    doc = yaml.safe_load(path.read_text())
    tasks = doc["root"]["dag"]["tasks"]
    assert (
        "generate-op" not in json.dumps(doc["root"])
        and "generate_config" not in doc["root"]["inputDefinitions"]["parameters"]
    )
    loops = {
        frozenset(doc["components"][t["componentRef"]["name"]]["dag"]["tasks"]): t
        for n, t in tasks.items()
        if n.startswith("for-loop-")
    }
    # collect fans out too: a shard's rows, keys and verdicts per task; one merge decides dedup over them all
    assert set(loops) == {frozenset({"verify-op", "score-op"}), frozenset({"collect-shard-op"})}
    assert "collect-op" not in tasks and tasks["collect-merge-op"]["inputs"]["artifacts"]["part_keys"]
    loop = loops[frozenset({"verify-op", "score-op"})]
    verify = doc["components"][loop["componentRef"]["name"]]["dag"]["tasks"]["verify-op"]
    assert verify["inputs"]["artifacts"]["samples"]["componentInputArtifact"]  # collect's samples, fanned out
    # the teacher pipelines pass collect's samples to generate (imported beside generated with cot_source: both)
    (adaptive,) = compile_all(tmp_path / "a", names=["adaptive_thinking"])
    text = adaptive.read_text()
    assert "imported" in yaml.safe_load(text)["components"]["comp-generate-op"]["inputDefinitions"]["artifacts"]


def test_the_example_recipe_and_its_checks() -> None:
    from kubedistill.recipes import load_recipe

    recipe = load_recipe("examples/adaptive_thinking_imported.yaml")
    assert recipe.cot_source == "imported" and recipe.pipeline == "adaptive_thinking_imported"
    from kubedistill.chat.config import EndpointConfig

    local = EndpointConfig(url="http://127.0.0.1:9/v1", model="smollm2-judge")  # what `run --local` starts
    args = recipe.pipeline_arguments([local])
    assert "generate_config" not in args and args["score_config"]["judge"]["model"] == "smollm2-judge"
    assert args["collect_config"]["sources"][0]["cots"]["text"] == ["generations"]
    with pytest.raises(ConfigError, match=r"score.judge: no judge endpoint"):
        recipe.pipeline_arguments(None)  # teacher.local has no URL until `run --local` starts it

    base = yaml.safe_load(Path("examples/adaptive_thinking_imported.yaml").read_text())
    cases = [
        ({"cot_source": "teachers"}, "import CoTs but cot_source is teachers"),
        ({"cot_source": "imported", "recipe": "slow_thinking"}, "cot_source: imported .no generate step. is available"),
        ({"cot_source": "both", "teacher": None}, "needs teacher.endpoints or teacher.local"),
    ]
    for change, message in cases:
        data = {**base, **change}
        if data["recipe"] == "slow_thinking":
            data = {k: v for k, v in data.items() if k not in ("score", "select")}
        if data.get("teacher") is None:
            data.pop("teacher", None)
        with pytest.raises(ConfigError, match=message):
            from kubedistill.core.config import validate_config
            from kubedistill.recipes import RECIPES

            validate_config(RECIPES[data["recipe"]], data, "recipe")
    plain = {**base, "cot_source": "imported"}
    plain["collect"] = {**base["collect"], "sources": [{"kind": "hf", "preset": "openr1-math", "path": str(CORPUS)}]}
    with pytest.raises(ConfigError, match="needs a collect source that imports CoTs"):
        from kubedistill.core.config import validate_config
        from kubedistill.recipes import RECIPES

        validate_config(RECIPES["adaptive_thinking"], plain, "recipe")


def test_the_imported_example_runs_end_to_end_under_kfp_local(
    tmp_path: Path, tracking_uri: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/adaptive_thinking_imported.yaml under kfp.local, with the scripted server as the RV/CD judge
    (in place of the local vLLM judge): no generate task, a student trained on imported CoTs, registered."""
    from kubedistill.report import RunSummary
    from kubedistill_kfp.local import run_local

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    recipe = yaml.safe_load(Path("examples/adaptive_thinking_imported.yaml").read_text())
    with running_server(ServerScript(models=["scripted"], answers=JUDGE_ANSWERS)) as url:
        recipe["teacher"] = {"endpoints": [{"url": url, "model": "scripted", "name": "judge"}]}
        recipe["shards"] = 2
        recipe["sft"]["curriculum"][0]["epochs"] = 1
        recipe["evaluate"]["max_tokens"] = 8
        recipe["registry"]["name"] = "kd-imported-test"
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        result = run_local(path, workdir=tmp_path / "out")
    assert result.pipeline == "adaptive_thinking_imported"
    assert result.model_uri == "models:/kd-imported-test/1"
    summary = RunSummary.model_validate_json(Path(result.outputs["summary"].path).read_text())
    funnel = {r.stage: r for r in summary.funnel}
    assert "generate" not in funnel
    # collect ran as 2 collect_shard tasks and a merge; its row is the whole collect's
    assert funnel["collect"].n_in == funnel["collect"].n_out + sum(funnel["collect"].dropped.values()) > 0
    assert funnel["verify"].n_in > funnel["verify"].n_out > 0  # wrong and truncated imported CoTs dropped
    assert funnel["select"].n_out > 0 and funnel["sft"].n_in == funnel["select"].n_out
