"""The layout of docs/ARCHITECTURE.md holds: import contracts, one stage table that the CLI, the KFP
components, the report and the cluster roles come from, and a package list that misses nothing."""

import ast
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kubedistill import stages
from kubedistill.stages import ALL, STAGE_ORDER, Cli, Port, Stage

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    """import-linter's contracts in pyproject.toml: layers point down, KFP only in the front-end, no cycles."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_the_package_list_names_every_package_folder() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapped = {name: ROOT / folder for name, folder in cfg["package-dir"].items()}
    found = set()
    for top in ("kubedistill", "kubedistill_kfp"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    for name, folder in mapped.items():
        for init in folder.rglob("__init__.py"):
            found.add(".".join((name, *init.parent.relative_to(folder).parts)))
    assert listed == found
    # nothing generic lands on the import path
    assert not any(p.split(".")[0] in ("components", "pipelines") for p in listed)


def test_every_row_resolves_and_documents_its_function() -> None:
    for spec in ALL:
        fn = spec.load_fn()
        assert f"Stage `{spec.name}`" in (fn.__doc__ or ""), f"{spec.fn} needs a docstring naming the stage"
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
        record_inputs = [p.name for p in spec.inputs if p.records]
        expected = [p.name for p in spec.inputs] + [p.name for p in spec.params]
        if spec.kind != "records":  # a records stage returns its record outputs; others get paths
            expected += [p.name for p in spec.outputs if p.name != "metrics"]
        if spec.kind != "task" and record_inputs:  # the first record input is positional, the config next
            assert next(iter(params)) == record_inputs[0], spec.name
        for name in expected:
            if name in ("shard_index", "shard_count"):
                continue  # the runner applies shards itself
            assert name in params or takes_any, (spec.name, name)
        if spec.config:
            assert spec.load_config() is not None


def test_the_cli_has_a_subcommand_for_every_row_with_a_cli() -> None:
    from kubedistill.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for spec in stages.cli_stages():
        assert spec.command in sub.choices, spec.command
        help_text = sub.choices[spec.command].format_help()
        assert "--input" in help_text or spec.cli.input is None
        assert "--output" in help_text or spec.cli.output is None


def test_components_come_from_the_table() -> None:
    from kubedistill_kfp.components import COMPONENTS

    assert set(COMPONENTS) == {s.name for s in ALL if s.component}
    for spec in (s for s in ALL if s.component):
        comp = COMPONENTS[spec.name].component_spec
        names = set(comp.inputs or {}) | set(comp.outputs or {})
        for port in (*spec.inputs, *spec.outputs):
            assert port.name in names, (spec.name, port.name)
        for param in spec.params:
            assert param.name in names, (spec.name, param.name)


def test_the_report_takes_the_metrics_of_every_funnel_stage_in_pipeline_order() -> None:
    from kubedistill import report

    assert report.STAGE_ORDER == STAGE_ORDER
    metrics_inputs = [p.name.removesuffix("_metrics") for p in stages.REPORT.inputs if p.name.endswith("_metrics")]
    assert tuple(metrics_inputs) == STAGE_ORDER
    assert STAGE_ORDER.index("generate") < STAGE_ORDER.index("verify") < STAGE_ORDER.index("sft")


def test_cluster_roles_are_the_tables() -> None:
    from kubedistill_kfp.cluster import DEFAULT_ROLES

    # every pipeline's preflight (components/__init__.py: generated per pipeline, not a row) is a CPU task
    assert {s.component_name: s.role for s in ALL if s.component} | {"preflight-op": "cpu"} == DEFAULT_ROLES


def test_the_cli_starts_without_torch_or_kfp() -> None:
    code = "import sys; from kubedistill.cli import build_parser; build_parser().parse_args(['generate', '--help'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--teacher-url" in proc.stdout
    code = (
        "import sys; import kubedistill.cli; kubedistill.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'kfp', 'mlflow', 'transformers') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_exit_codes_are_defined_once() -> None:
    """Only kubedistill/core/errors.py assigns an exit code constant."""
    offenders = []
    for path in (ROOT / "kubedistill").rglob("*.py"):
        if path.name == "errors.py" and path.parent.name == "core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.startswith("EXIT_"):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_a_new_row_is_a_new_cli_subcommand_and_component(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Adding a stage: one function and one row (docs/ARCHITECTURE.md's worked example, with an existing
    function standing in for the new one)."""
    from kfp import compiler, dsl
    from kubedistill_kfp.components import _make, component_source

    from kubedistill.cli import main
    from kubedistill.core.records import Sample, read_records, write_records

    row = Stage(
        "keep_correct",
        "kubedistill.cot.select:select",
        "Keep the correct CoTs that fit the student (an example row).",
        role="cpu",
        config="kubedistill.cot.select:SelectConfig",
        inputs=(Port("samples", records="Sample"),),
        outputs=(Port("kept", records="Sample"), Port("rejects"), Port("metrics", type="Metrics")),
        cli=Cli(input="samples", output="kept"),
    )
    monkeypatch.setattr(stages, "ALL", (*stages.ALL, row))
    monkeypatch.setitem(stages.BY_NAME, row.name, row)
    samples = [
        Sample(
            problem_id=f"p{i}",
            teacher="t",
            temperature=0.6,
            sample_index=0,
            text="x",
            correct=i < 2,
            rv=1,
            cd=1,
        )
        for i in range(3)
    ]
    write_records(tmp_path / "in.jsonl", samples)
    assert (
        main(
            [
                "keep-correct",
                "--input",
                str(tmp_path / "in.jsonl"),
                "--output",
                str(tmp_path / "out.jsonl"),
                "--no-tracking",
            ]
        )
        == 0
    )
    assert [s.id for s in read_records(tmp_path / "out.jsonl", Sample)] == ["p0::t::t0.6::0", "p1::t::t0.6::0"]
    assert (tmp_path / "out.rejects.jsonl").read_text().count("not_correct") == 1

    source = component_source(row)
    assert "def keep_correct_op(" in source and "kept: Output[Dataset]" in source
    op = _make(row)

    @dsl.pipeline(name="example")
    def example(config: dict = {}, tracking: dict = {}) -> None:  # noqa: B006 - KFP parameter defaults
        op(
            config=config,
            tracking=tracking,
            samples=dsl.importer(artifact_uri="gs://b/s", artifact_class=dsl.Dataset).output,
        )

    compiler.Compiler().compile(example, str(tmp_path / "example.yaml"))
    assert "keep-correct-op" in (tmp_path / "example.yaml").read_text()
