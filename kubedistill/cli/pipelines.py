"""``kubedistill compile`` / ``run`` / ``submit``: the pipelines, on Kubeflow or here under kfp.local.

The commands are thin: compiling, local runs and submissions live in the KFP front-end, kubedistill_kfp.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any


def compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", type=Path, default=Path("dist"), help="where the YAML goes (default: dist/)")
    p.add_argument("--pipeline", action="append", default=None, help="only these pipelines (default: all)")
    p.add_argument("--image-registry", default=None, help="registry of the kubedistill images")
    p.add_argument("--image-tag", default=None, help="tag of the kubedistill images")
    p.add_argument(
        "--image",
        action="append",
        default=None,
        metavar="NAME=REF",
        help="one image by full reference, e.g. train=registry/kubedistill-train@sha256:... (base, train, serve)",
    )
    p.add_argument(
        "--cluster-config",
        type=Path,
        default=None,
        help="cluster settings (examples/cluster.yaml): resources, GPUs, PVC, secrets, node selectors",
    )


def cmd_compile(ns: argparse.Namespace) -> int:
    from kubedistill_kfp.compile import compile_all, parse_images

    for path in compile_all(
        ns.output_dir,
        image_registry=ns.image_registry,
        image_tag=ns.image_tag,
        images=parse_images(ns.image),
        names=ns.pipeline,
        cluster_config=ns.cluster_config,
    ):
        print(path)
    return 0


def submit_args(p: argparse.ArgumentParser) -> None:
    """The options of `kubedistill submit`."""
    p.add_argument("--recipe", required=True, type=Path, help="recipe YAML (its sections become the parameters)")
    p.add_argument("--package", type=Path, default=None, help="compiled pipeline (default: dist/<recipe kind>.yaml)")
    p.add_argument("--host", default=None, help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT, else kubeconfig)")
    p.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user KFP)")
    p.add_argument("--experiment", default=None, help="KFP experiment (default: the recipe's tracking.experiment)")
    p.add_argument("--run-name", default=None, help="run name (default: <recipe name>-<UTC timestamp>)")
    p.add_argument("--pipeline-name", default=None, help="pipeline name in KFP (default: the compiled name)")
    p.add_argument("--version", default=None, help="pipeline version name (default: <pipeline>-<content hash>)")
    p.add_argument("--service-account", default=None, help="Kubernetes service account of the run's pods")
    p.add_argument(
        "--token-env",
        default="KF_PIPELINES_TOKEN",
        metavar="VAR",
        help="environment variable holding a bearer token for the KFP API (default: %(default)s; unset: none)",
    )
    p.add_argument("--ca-cert", default=None, help="CA bundle for the KFP API's TLS certificate")
    p.add_argument("--teacher-url", default=None, help="use this OpenAI-compatible teacher instead of the recipe's")
    p.add_argument("--teacher-model", default=None, help="its model name")
    p.add_argument("--teacher-api-key-env", default=None, help="environment variable with its API key (in the pods)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value (VALUE is YAML)"
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be done; contact nothing")
    p.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 3 unless it succeeded")
    p.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to wait with --wait")
    p.add_argument("--json", action="store_true", help="print the result (or the plan) as JSON on stdout")


def cmd_submit(ns: argparse.Namespace) -> int:
    """The handler of `kubedistill submit`."""
    from kubedistill.core.config import parse_overrides
    from kubedistill.core.secrets import mask, mask_url
    from kubedistill_kfp.submit import SubmitPlan, SubmitResult, submit

    token = os.environ.get(ns.token_env) if ns.token_env else None
    result = submit(
        ns.recipe,
        ns.package,
        host=ns.host,
        namespace=ns.namespace,
        experiment=ns.experiment,
        run_name=ns.run_name,
        pipeline_name=ns.pipeline_name,
        version=ns.version,
        overrides=parse_overrides(ns.set),
        teacher_url=ns.teacher_url,
        teacher_model=ns.teacher_model,
        teacher_api_key_env=ns.teacher_api_key_env,
        service_account=ns.service_account,
        token=token,
        ssl_ca_cert=ns.ca_cert,
        dry_run=ns.dry_run,
        wait=ns.wait,
        timeout_s=ns.timeout,
    )
    if ns.json:
        data = asdict(result)
        if isinstance(result, SubmitPlan):
            data["arguments"] = mask(data["arguments"])
            data["host"] = mask_url(data["host"])
        print(json.dumps(data, indent=2, sort_keys=True))
    elif isinstance(result, SubmitResult):
        print(result.run_url)
    return 0


def run_args(p: argparse.ArgumentParser, *, local_flag: bool = True) -> None:
    p.add_argument("--recipe", required=True, type=Path, help="recipe YAML (examples/*.yaml)")
    if local_flag:  # `run` needs it (a cluster run is `submit`); `ablate` always runs here
        p.add_argument("--local", action="store_true", help="run on this machine with kfp.local (required)")
    p.add_argument("--workdir", type=Path, default=Path("outputs"), help="local runs write here (default: outputs/)")
    p.add_argument("--teacher-url", default=None, help="use this OpenAI-compatible teacher instead of the recipe's")
    p.add_argument("--teacher-model", default=None, help="its model name")
    p.add_argument("--teacher-api-key-env", default=None, help="environment variable with its API key")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set generate.num_generations=2 (VALUE is YAML)",
    )


def cmd_run(ns: argparse.Namespace) -> int:
    from kubedistill.core.config import parse_overrides
    from kubedistill.core.errors import UserError
    from kubedistill.report import print_run_summary
    from kubedistill_kfp.local import run_local

    if not ns.local:
        raise UserError("only --local runs start from `kubedistill run`; use `kubedistill submit` for a cluster")
    result = run_local(
        ns.recipe,
        workdir=ns.workdir,
        teacher_url=ns.teacher_url,
        teacher_model=ns.teacher_model,
        teacher_api_key_env=ns.teacher_api_key_env,
        overrides=parse_overrides(ns.set),
    )
    print_run_summary(result)
    return 0


def ablate_args(p: argparse.ArgumentParser) -> None:
    """The options of `kubedistill ablate` (those of `run`, without --local: an ablation runs here)."""
    run_args(p, local_flag=False)
    p.set_defaults(local=True)


def cmd_ablate(ns: argparse.Namespace) -> int:
    """Run an ablation recipe here (kfp.local): the pool once (cached), every arm, one table; print the table."""
    from kubedistill.core.config import parse_overrides
    from kubedistill.core.errors import UserError
    from kubedistill.recipes import load_recipe
    from kubedistill.report import print_ablation_table, print_run_summary
    from kubedistill_kfp.local import run_local

    overrides = parse_overrides(ns.set)
    recipe = load_recipe(ns.recipe, overrides)
    if recipe.recipe != "ablation":
        raise UserError(f"{ns.recipe}: `kubedistill ablate` runs ablation recipes (this one is {recipe.recipe!r})")
    result = run_local(
        ns.recipe,
        workdir=ns.workdir,
        teacher_url=ns.teacher_url,
        teacher_model=ns.teacher_model,
        teacher_api_key_env=ns.teacher_api_key_env,
        overrides=overrides,
    )
    print_ablation_table(result)
    print_run_summary(result)
    return 0


COMMANDS: dict[str, tuple[Any, Any, str]] = {
    "compile": (
        compile_args,
        cmd_compile,
        "compile every pipeline to KFP YAML (one file per pipeline) for the Kubeflow UI",
    ),
    "submit": (
        submit_args,
        cmd_submit,
        "upload a compiled pipeline (or a new version) to Kubeflow Pipelines and start a run",
    ),
    "run": (run_args, cmd_run, "run a recipe's pipeline: --local runs it here under kfp.local (the embedded default)"),
    "ablate": (
        ablate_args,
        cmd_ablate,
        "run an ablation recipe here: one pool of CoTs (cached), every arm trained from it, one table and plot",
    ),
}
