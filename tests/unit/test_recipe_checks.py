"""A recipe is checked in full before its first task: strict YAML (a key given twice is an error), every
key validated, and every reference resolved — models, benchmarks, reasoning-gym tasks and their options,
data files, prompts, DeepSpeed configs — with one line naming the key, in seconds. The same strict YAML
serves every front door that takes a YAML file (``--config``, ``--cluster-config``, ``serve --settings``,
``run`` / ``submit --recipe``)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubedistill.cli import main
from kubedistill.core.config import ConfigError, load_yaml, parse_overrides
from kubedistill.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())


def _recipe(tmp_path: Path, change: Any = None, text: str | None = None) -> Path:
    data = yaml.safe_load(yaml.safe_dump(QUICKSTART))
    if change is not None:
        change(data)
    p = tmp_path / "recipe.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return p


def _set(dotted: str, value: Any) -> Any:
    """A change to a recipe dict: ``dotted`` key (list indices as numbers) set to ``value``."""

    def change(d: dict[str, Any]) -> None:
        *head, last = dotted.split(".")
        cur: Any = d
        for k in head:
            cur = cur[int(k)] if isinstance(cur, list) else cur[k]
        cur[last] = value

    return change


def _rename_task(d: dict[str, Any]) -> None:
    src = d["collect"]["sources"][0]
    src["tasks"] = {"chain_sums": 8}
    src["task_config"] = {"chain_sums": src["task_config"]["chain_sum"]}


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_the_example_recipes_pass_in_seconds() -> None:
    t0 = time.perf_counter()
    for name in ("quickstart", "adaptive_thinking", "reward_models", "grpo", "evaluate"):
        load_recipe(ROOT / "examples" / f"{name}.yaml")
    assert time.perf_counter() - t0 < 20  # reasoning-gym's import is most of it


def test_a_key_given_twice_is_an_error_naming_the_key_and_both_lines(tmp_path: Path) -> None:
    text = (
        (ROOT / "examples" / "quickstart.yaml")
        .read_text()
        .replace("  num_generations: 2\n", "  num_generations: 2\n  num_generations: 64\n")
    )
    msg = _error(_recipe(tmp_path, text=text))
    assert "generate.num_generations: key appears twice (line" in msg and "keep one" in msg


def test_a_misspelt_base_model_fails_before_anything_runs(tmp_path: Path) -> None:
    msg = _error(_recipe(tmp_path, lambda d: d["sft"].__setitem__("base_model", "tiny-qwen")))
    assert "sft.base_model: 'tiny-qwen' is not a model directory" in msg and "did you mean 'tiny-qwen3'" in msg


def test_a_recipe_for_the_cluster_is_checked_for_what_can_be_checked_here(tmp_path: Path) -> None:
    """`submit` (here=False): the pods download hub models and mount volumes this machine has not got; a
    hub id and an absolute path are theirs to resolve, a misspelt alias or a relative path is still ours."""

    def for_cluster(d: dict[str, Any]) -> None:
        d["sft"]["base_model"] = "Qwen/Qwen2.5-7B-Instruct"
        d["collect"]["sources"].append({"kind": "file", "path": "/mnt/kubedistill/data/problems.jsonl"})

    path = _recipe(tmp_path, for_cluster)
    assert load_recipe(path, here=False).sft.base_model == "Qwen/Qwen2.5-7B-Instruct"
    msg = _error(path)  # run here, the same recipe cannot resolve either
    assert "not a model in the local Hugging Face cache" in msg and "/mnt/kubedistill/data/problems.jsonl" in msg
    for change, expected in [
        (_set("sft.base_model", "tiny-qwen"), "did you mean 'tiny-qwen3'"),
        (_set("sft.base_model", "./students/none"), "./students/none: no such model"),
        (_set("generate.prompt", "generat"), "no prompt named 'generat'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            load_recipe(_recipe(tmp_path, change), here=False)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set("sft.base_model", "./students/none"), "sft.base_model: ./students/none: no such model"),
        (_set("sft.base_model", "models:/x@"), "is not models:/NAME/VERSION"),
        (_set("sft.base_model", "NoSuchOrg/no-such-model"), "not a model in the local Hugging"),
        (_set("teacher.local.model", "smollm2-135m"), "teacher.local.model: 'smollm2-135m'"),
        (_set("dpo.deepspeed", "zero4"), "dpo.deepspeed: 'zero4' is not a DeepSpeed config"),
        (_set("generate.prompt", "generat"), "generate.prompt: no prompt named 'generat'"),
        (_rename_task, "collect.sources.0.tasks: unknown reasoning-gym task 'chain_sums' (did you mean 'chain_sum'?)"),
        (_set("collect.sources.0.task_config.chain_sum.min_terms", 0), "refuses its task_config"),
        (
            lambda d: d["collect"]["sources"].append({"kind": "file", "path": "/no/such/problems.jsonl"}),
            "collect.sources.1.path: /no/such/problems.jsonl: no such file",
        ),
        (
            _set("collect.decontaminate", {"benchmarks": ["math-500"]}),
            "collect.decontaminate.benchmarks.0.name: unknown benchmark 'math-500' (did you mean 'math500'?)",
        ),
        (
            _set("collect.decontaminate", {"benchmarks": [{"name": "mine", "path": "/nope.jsonl"}]}),
            "/nope.jsonl: no such file or directory",
        ),
        (_set("collect.holdout.fraction", 0.0), "collect.holdout.fraction: 0 holds out"),
        (_set("tracking.enabled", False), "tracking.enabled: false"),
    ],
)
def test_every_reference_resolves_or_the_line_names_the_key(
    tmp_path: Path, change: Any, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # (as conftest sets it) a hub id must be in the local cache
    assert expected in _error(_recipe(tmp_path, change))


def test_several_failures_are_one_line_naming_each_key(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["sft"]["base_model"] = "tiny-qwen"
        d["generate"]["prompt"] = "nope"

    msg = _error(_recipe(tmp_path, change))
    assert "generate.prompt:" in msg and "sft.base_model:" in msg


def test_evaluate_recipe_benchmarks_and_paths(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "examples" / "evaluate.yaml").read_text())
    data["benchmarks"] = ["humaneval", "aime2025", "reasoning_gym:chain_sums", "mine"]
    data["benchmark_paths"] = {"mine": str(tmp_path / "none.jsonl"), "other": str(tmp_path)}
    data["models"]["student"] = "models:/bad name"
    p = tmp_path / "eval.yaml"
    p.write_text(yaml.safe_dump(data))
    msg = _error(p)
    assert "benchmarks.1: unknown benchmark 'aime2025' (did you mean 'aime2024'?" in msg
    assert "benchmarks.2: unknown reasoning-gym task 'chain_sums'" in msg
    assert "benchmarks.3: " in msg and "none.jsonl: no such file" in msg
    assert "benchmark_paths.other: names no benchmark" in msg
    assert "models.student: 'models:/bad name' is not models:/NAME/VERSION" in msg


def test_a_registered_model_is_looked_up_where_the_run_logs(tmp_path: Path) -> None:
    from kubedistill.preflight import UnresolvedReference, check_registered_models

    recipe = load_recipe(ROOT / "examples" / "evaluate.yaml")
    with pytest.raises(
        UnresolvedReference, match=r"models.student: models:/kubedistill-quickstart@candidate: not found"
    ):
        check_registered_models(recipe, "evaluate.yaml", f"sqlite:///{tmp_path / 'empty.db'}")


# ------------------------------------------------------------------------------------ strict YAML


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a: 1\nb:\n  c: 1\n  c: 2\n", "b.c: key appears twice (line 3 and line 4)"),
        (b"", "the file is empty"),
        (b"# only a comment\n", "the file is empty"),
        (b"a: caf\xe9\n", "byte 0xe9 at line 1, column 7 is not UTF-8"),
        ("a: 1\n".encode("utf-16"), "is UTF-16 text"),
        (b"a: [1,\n", "not valid YAML (line 2"),
        (b"\x1f\x8b\x08\x00rest", "is a gzip file"),
    ],
)
def test_yaml_faults_are_one_line(tmp_path: Path, data: bytes, expected: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        load_yaml(p)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_yaml_with_a_bom_and_merge_keys_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(b"\xef\xbb\xbfbase: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert load_yaml(p) == {"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}}
    with pytest.raises(ConfigError, match="directory"):
        load_yaml(tmp_path)
    with pytest.raises(ConfigError, match="appears twice"):
        parse_overrides(["generate={a: 1, a: 2}"])


def test_set_indexes_lists_and_never_turns_one_into_a_mapping() -> None:
    from kubedistill.core.config import set_dotted

    data = {"collect": {"sources": [{"kind": "file", "path": "a"}, {"kind": "hf", "preset": "x"}]}, "seed": 3}
    set_dotted(data, "collect.sources.1.limit", 50)
    set_dotted(data, "collect.sources.-1.split", "test")
    set_dotted(data, "generate.teachers", [{"url": "u"}])
    set_dotted(data, "generate.teachers.0.model", "m")
    assert data["collect"]["sources"][1] == {"kind": "hf", "preset": "x", "limit": 50, "split": "test"}
    assert data["generate"] == {"teachers": [{"url": "u", "model": "m"}]}
    cases = [
        ("collect.sources.limit", "collect.sources is a list of 2: give an index 0..1 .e.g. collect.sources.0.limit"),
        ("collect.sources.2.limit", r"collect.sources is a list of 2: no index 2 \(0..1\)"),
        ("seed.value", "seed is 3, not a mapping"),
    ]
    for key, message in cases:
        with pytest.raises(ConfigError, match=message):
            set_dotted(data, key, 1)
    assert data["collect"]["sources"][0] == {"kind": "file", "path": "a"} and data["seed"] == 3  # nothing replaced


def test_run_set_reaches_a_list_item_of_the_recipe(tmp_path: Path) -> None:
    from kubedistill.recipes import load_recipe

    recipe = load_recipe("examples/quickstart.yaml", {"collect.sources.0.limit": 9})
    assert recipe.collect.sources[0].limit == 9
    with pytest.raises(ConfigError, match=r"collect\.sources is a list"):
        load_recipe("examples/quickstart.yaml", {"collect.sources.limit": 9})


FRONT_DOORS = [
    ["verify", "--input", "{x}", "--problems", "{x}", "--output", "{out}", "--config", "{bad}"],
    ["compile", "--cluster-config", "{bad}", "--output-dir", "{out}"],
    ["serve", "--model", "tiny-qwen3", "--render", "--settings", "{bad}"],
    ["submit", "--recipe", "{bad}", "--dry-run"],
    ["run", "--local", "--recipe", "{bad}", "--workdir", "{out}"],
    [
        "evaluate",
        "--endpoint",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--benchmark",
        "humaneval",
        "--config",
        "{bad}",
        "--output",
        "{out}",
    ],
]


@pytest.mark.parametrize("args", FRONT_DOORS, ids=[a[0] for a in FRONT_DOORS])
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"samples: 2\nsamples: 64\n", "key appears twice"),
        (b"a: caf\xe9\n", "is not UTF-8"),
        (b"", "the file is empty"),
    ],
    ids=["duplicate-key", "latin-1", "empty"],
)
def test_every_yaml_front_door_is_strict(
    tmp_path: Path, args: list[str], data: bytes, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(data)
    x = tmp_path / "x.jsonl"
    x.write_text('{"id": "p0", "problem": "1 + 1?", "source": "t"}\n')
    filled = [a.format(bad=bad, x=x, out=tmp_path / "out") for a in args]
    assert main(filled) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err and "bad.yaml" in err, err


@pytest.mark.parametrize(
    "args",
    [["run", "--local", "--recipe", "{r}", "--workdir", "{w}"], ["submit", "--recipe", "{r}", "--dry-run"]],
    ids=["run", "submit"],
)
def test_a_misspelt_base_model_stops_run_and_submit_before_the_first_task(
    tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: `sft.base_model` misspelt used to pass and fail inside the sft task, after every
    teacher-bound stage had spent its budget. Now the command stops first: one line, exit 2, in seconds."""
    recipe = _recipe(tmp_path, _set("sft.base_model", "tiny-qwen"))
    work = tmp_path / "work"
    t0 = time.perf_counter()
    assert main([a.format(r=recipe, w=work) for a in args]) == 2
    assert time.perf_counter() - t0 < 20
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sft.base_model: 'tiny-qwen'" in err and "did you mean 'tiny-qwen3'" in err, err
    assert not work.exists()  # no task ran


@pytest.mark.parametrize("args", FRONT_DOORS, ids=[a[0] for a in FRONT_DOORS])
def test_a_directory_at_a_yaml_front_door_is_one_line(
    tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.mkdir()
    x = tmp_path / "x.jsonl"
    x.write_text('{"id": "p0", "problem": "1 + 1?", "source": "t"}\n')
    assert main([a.format(bad=bad, x=x, out=tmp_path / "out") for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "directory" in err and "bad.yaml" in err and "Traceback" not in err, err


def _imported_recipe(tmp_path: Path, rows: list[dict[str, Any]], name: str, **source: Any) -> Path:
    import json

    data = yaml.safe_load((ROOT / "examples" / "adaptive_thinking_imported.yaml").read_text())
    f = tmp_path / name
    if name.endswith(".parquet"):
        import pandas as pd

        pd.DataFrame(rows).to_parquet(f)
    else:
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data["collect"]["sources"][0].update({"path": str(f), **source})
    p = tmp_path / "imported.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_mapped_column_missing_from_a_local_file_is_refused_before_any_task(tmp_path: Path, suffix: str) -> None:
    """A user's copy of a corpus with a renamed CoT column: the recipe is refused when it is loaded (exit 2,
    one line naming the key, the missing column and the columns there are), not by a failed collect task."""
    import json

    rows = [json.loads(x) for x in (ROOT / "examples" / "data" / "openr1_math_tiny.jsonl").read_text().splitlines()]
    renamed = [{("gens" if k == "generations" else k): v for k, v in r.items()} for r in rows]
    msg = _error(_imported_recipe(tmp_path, renamed, f"renamed{suffix}"))
    assert "collect.sources.0.path: source 'openr1-math': mapped column(s) ['generations'] not in the dataset" in msg
    assert "'gens'" in msg
    # a column that only a later row has is not a mistake within the rows read; the unchanged copy passes
    assert load_recipe(_imported_recipe(tmp_path, rows, f"ok{suffix}")).collect.sources[0].path.endswith(suffix)
    # a `cots` mapping of one's own on a file source is checked the same way
    own = _imported_recipe(
        tmp_path, rows, f"own{suffix}", preset=None, import_cots=False, cots={"text": ["solution_text"]}
    )
    data = yaml.safe_load(own.read_text())
    src = data["collect"]["sources"][0]
    data["collect"]["sources"][0] = {
        "kind": "file",
        "path": src["path"],
        "cots": src["cots"],
        "fields": {"problem": "problem", "answer": "answer"},
    }
    own.write_text(yaml.safe_dump(data, sort_keys=False))
    assert "mapped column(s) ['solution_text'] not in the dataset" in _error(own)
