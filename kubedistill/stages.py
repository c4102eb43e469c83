"""The stage table: every step of every pipeline, in pipeline order, in one place.

A row (:class:`Stage`) says what a stage is — its function, its config model, what it reads and writes,
the role its pod plays on a cluster, which drop reasons make it fail, and how its CLI subcommand looks —
and everything else is derived from the rows:

* ``kubedistill <stage>`` subcommands (:mod:`kubedistill.cli.stages`);
* the KFP components, one per row, with typed artifacts (:mod:`kubedistill_kfp.components`);
* the run report's stage order (:data:`STAGE_ORDER`) and the report task's inputs;
* the cluster roles of the components (:func:`component_roles`);
* the one wrapper that runs a stage over files (:func:`kubedistill.runner.run_stage`: reading, rejects,
  stats, MLflow, exit codes).

Functions and config models are named by import path (``module:attribute``) and imported only when a
stage runs, so the CLI starts fast (``kubedistill generate`` never imports torch).

Adding a stage means one function and one row; docs/ARCHITECTURE.md walks through an example.

The calling convention a stage function follows, by :attr:`Stage.kind`:

``records``  ``fn(<first input>, cfg, *, <other inputs>, <params>) -> (records, StageStats)`` — inputs are
             lists of records (the first one is sharded), output records are written by the runner
             (a dict ``{output name: records}`` when a stage writes several record outputs; an iterable
             is written to JSONL as it yields). A row with ``streams`` gets its first input as a
             :class:`~kubedistill.core.records.RecordStream` (read lazily, again on each iteration) and a
             ``reject_sink`` keyword (the rejects file, written as rejects come), and returns an iterator:
             resident memory does not grow with the input.
``files``    ``fn(<first input>, cfg, *, <other inputs>, <output paths>, <params>) -> (anything, StageStats)``
             — the function writes its outputs (model directories, reports) itself; a ``train`` stage
             on a pod with several GPUs is started once per GPU (kubedistill/launch.py).
``task``     ``fn(**ports and params) -> value`` — no MLflow run, rejects or stats of the runner's (pipeline
             plumbing: shards, registry, report, promotion, deployment); the value is the component's
             return value.

A function that declares a ``tracking`` parameter gets the stage's :class:`~kubedistill.tracking.TrackingConfig`
(None when tracking is off); a stage run by the runner has an active MLflow run then.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["cpu", "teacher_bound", "train", "serve"]
ROLES: tuple[Role, ...] = ("cpu", "teacher_bound", "train", "serve")
Kind = Literal["records", "files", "task"]
ArtifactType = Literal["Dataset", "Model", "Metrics", "Markdown", "HTML"]
RecordType = Literal["Problem", "Sample", "PreferencePair"]


@dataclass(frozen=True)
class Port:
    """An input or output of a stage: a KFP artifact on the cluster, a path on the command line.

    ``records`` names the record class of a JSONL/Parquet records file (the runner reads or writes it);
    None means a path handed to the function as it is (a model directory, a results directory, a report
    file). ``many`` is a list of artifacts (``dsl.Collected`` over shards)."""

    name: str
    type: ArtifactType = "Dataset"
    records: RecordType | None = None
    optional: bool = False
    many: bool = False
    help: str = ""
    cli_optional: bool = False  # required in the pipeline, optional on the command line
    empty_ok: bool = False  # a records input that may have no rows (else an empty file is refused, exit 2)
    streamed: bool = False  # a records input other than the first, handed over as a RecordStream (shard-filtered)
    suffix: str = ""  # a path output of a records stage: the command line's default, beside --output


@dataclass(frozen=True)
class Param:
    """A plain parameter (str, int, bool, dict, list) with its default (``required``: none)."""

    name: str
    type: type
    default: Any = None
    help: str = ""
    required: bool = False
    model_reference: bool = False  # names a model: resolved before the stage starts (kubedistill/preflight.py)


@dataclass(frozen=True)
class Option:
    """A CLI flag of a stage's subcommand that sets a config key (``key``, dotted) or a function argument
    (``arg``). ``action`` is argparse's (``store``, ``append``, ``store_true``)."""

    flag: str
    help: str
    key: str | None = None
    arg: str | None = None
    type: type = str
    action: Literal["store", "append", "store_true"] = "store"
    metavar: str | None = None


@dataclass(frozen=True)
class EndpointOptions:
    """``--<prefix>-url/--<prefix>-model/--<prefix>-api-key-env``: one endpoint into config key ``key``; with
    ``many``, a list given by repeating the flags in order, each with an optional ``--<prefix>-name``."""

    prefix: str
    key: str
    title: str
    many: bool = False


@dataclass(frozen=True)
class ClientOptions:
    """The chat client's flags (``--concurrency``, ``--max-retries``, ``--timeout``, ``--cache-dir``,
    ``--no-progress``) into config key ``key``; ``only`` limits them (e.g. to ``cache_dir``)."""

    key: str = "client"
    only: tuple[str, ...] = ()


CliOption = Option | EndpointOptions | ClientOptions


@dataclass(frozen=True)
class Cli:
    """How a stage looks on the command line. ``input`` / ``output`` are the ports behind ``--input`` and
    ``--output`` (other ports get ``--<port-name>``); ``config_required`` makes ``--config`` mandatory."""

    input: str | None = None
    output: str | None = None
    options: tuple[CliOption, ...] = ()
    config_required: bool = False
    name: str | None = None  # the subcommand (default: the stage name with - for _)
    # (port, metric): the metric that counts each record output's rows, where n_out does not (collect)
    counts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Stage:
    """One row of the stage table (see the module docstring)."""

    name: str
    fn: str
    help: str
    role: Role
    kind: Kind = "records"
    config: str | None = None
    config_param: str = "config"  # the component's name for the config parameter
    tracked: bool = True  # the component also takes `tracking` (an MLflow run per call)
    inputs: tuple[Port, ...] = ()
    outputs: tuple[Port, ...] = ()
    params: tuple[Param, ...] = ()
    returns: type | None = None
    fatal: tuple[str, ...] = ()
    shardable: bool = False
    streams: bool = False  # the first input is a RecordStream, the output an iterator, rejects streamed to file
    funnel: bool = True  # its metrics are a row of the run report's funnel
    log_outputs: tuple[str, ...] = ()  # output directories logged as MLflow artifacts of the stage's run
    cli: Cli | None = None
    component: bool = True  # False: a command-line stage only (no KFP component)

    @property
    def component_name(self) -> str:
        """The KFP component (as KFP names it in a compiled pipeline): ``judge`` -> ``judge-op``."""
        return f"{self.name.replace('_', '-')}-op"

    @property
    def command(self) -> str:
        return (self.cli.name if self.cli and self.cli.name else None) or self.name.replace("_", "-")

    @property
    def record_outputs(self) -> tuple[Port, ...]:
        return tuple(p for p in self.outputs if p.records is not None)

    @property
    def writes_rejects(self) -> bool:
        return self.kind == "records"

    def load_fn(self) -> Callable[..., Any]:
        return _load(self.fn)

    def load_config(self) -> type | None:
        return _load(self.config) if self.config else None


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# ------------------------------------------------------------------------------------------ ports

PROBLEMS = Port("problems", records="Problem", help="problems (.jsonl or .parquet)")
SAMPLES = Port("samples", records="Sample", help="CoT samples (.jsonl or .parquet)")
REJECTS = Port("rejects", help="refused rows, each with its reason (JSONL)")
METRICS = Port("metrics", type="Metrics", help="the stage's counts and metrics")
SHARD = (Param("shard_index", int, 0, "this task's shard"), Param("shard_count", int, 1, "number of shards"))
WORK_DIR = Param("work_dir", str, "", "checkpoints, for resuming (default: <output>.work)")
MODEL_OUT = Port("model", type="Model", help="model directory to write (transformers- and vLLM-loadable)")
EVAL_OUTPUTS = (
    Port("results", help="results directory: <label>/ per model, compare/, results.json"),
    Port("report", type="Markdown", help="the evaluation report (Markdown)"),
    Port("report_html", type="HTML", help="the evaluation report (HTML, with plots)"),
    METRICS,
)

COLLECT_OUTPUTS = (
    Port("problems", records="Problem", help="the training problems"),
    Port("heldout", records="Problem", help="the held-out problems (default: <output>.heldout.jsonl)"),
    Port(
        "samples",
        records="Sample",
        help="existing CoTs of the training problems, from sources with `cots` / `import_cots` "
        "(default: <output>.samples.jsonl; empty when no source imports CoTs)",
    ),
    REJECTS,
    METRICS,
)

# collect's record outputs are counted by its metrics (n_out counts both splits): the same for the merge
COLLECT_CLI = Cli(
    output="problems",
    config_required=True,
    counts=(("problems", "train"), ("heldout", "heldout"), ("samples", "cots_out")),
)

TEACHERS = EndpointOptions(
    "teacher", "teachers", "teachers (repeat --teacher-url/--teacher-model per teacher, in order)", many=True
)
TRACKING_KEY = "tracking"


def _judge_cli(output: str, endpoint_key: str, title: str) -> Cli:
    return Cli(
        input="samples",
        output=output,
        options=(EndpointOptions("judge", endpoint_key, title), ClientOptions(only=("cache_dir",))),
    )


# ------------------------------------------------------------------------------------------ the table

STAGES: tuple[Stage, ...] = (
    Stage(
        "collect",
        "kubedistill.data.collect:collect_stage",
        "Load problems from the configured sources; dedup, decontaminate, re-sample; split off a held-out set.",
        role="cpu",
        config="kubedistill.data.collect:CollectConfig",
        outputs=COLLECT_OUTPUTS,
        cli=COLLECT_CLI,
    ),
    Stage(
        "collect_shard",
        "kubedistill.data.collect:collect_shard_stage",
        "One shard of a sharded collect: this shard's rows of every source, normalised, with their dedup keys and "
        "decontamination verdicts (dedup is global: `collect-merge` decides it over all shards).",
        role="cpu",
        config="kubedistill.data.collect:CollectConfig",
        outputs=(
            Port("problems", records="Problem", help="this shard's problems (normalised, before dedup)"),
            Port(
                "samples",
                records="Sample",
                help="the existing CoTs of this shard's problems (default: <output>.samples.jsonl)",
            ),
            Port(
                "keys",
                help="the shard's dedup keys and decontamination verdicts (.npz; default: <output>.keys.npz)",
                suffix=".keys.npz",
            ),
            REJECTS,
            METRICS,
        ),
        params=SHARD,
        funnel=False,
        cli=Cli(output="problems", config_required=True, counts=(("samples", "cots"),)),
    ),
    Stage(
        "collect_merge",
        "kubedistill.data.collect:collect_merge_stage",
        "Join a sharded collect: global dedup over every shard's keys (a duplicate in two shards is caught), "
        "decontamination, re-sampling and the held-out split, in collect's order: the outputs of one `collect`.",
        role="cpu",
        config="kubedistill.data.collect:CollectConfig",
        inputs=(
            Port("parts", many=True, help="each shard's problems, in shard order"),
            Port("part_samples", many=True, help="each shard's imported CoTs, in shard order"),
            Port("part_keys", many=True, help="each shard's keys, in shard order"),
            Port("part_rejects", many=True, help="each shard's rejects, in shard order"),
        ),
        outputs=COLLECT_OUTPUTS,
        cli=COLLECT_CLI,
    ),
    Stage(
        "generate",
        "kubedistill.cot.generate:generate",
        "Ask every teacher for CoTs (teachers x temperatures x num_generations), through the cached, retrying client.",
        role="teacher_bound",
        config="kubedistill.cot.generate:GenerateConfig",
        inputs=(
            PROBLEMS,
            Port(
                "imported",
                records="Sample",
                optional=True,
                empty_ok=True,
                streamed=True,
                help="existing CoTs (collect's samples): those of these problems are passed on beside the generated",
            ),
        ),
        outputs=(Port("samples", records="Sample", help="CoT samples"), REJECTS, METRICS),
        params=SHARD,
        fatal=("request_failed",),
        shardable=True,
        streams=True,
        cli=Cli(
            input="problems",
            output="samples",
            options=(
                TEACHERS,
                Option(
                    "--temperature", "repeat for several temperatures", key="temperatures", type=float, action="append"
                ),
                Option(
                    "--num-generations", "CoTs per (problem, teacher, temperature)", key="num_generations", type=int
                ),
                Option("--max-tokens", "at most this many tokens per CoT", key="max_tokens", type=int),
                Option("--top-p", "nucleus sampling", key="top_p", type=float),
                Option("--seed", "base seed (each sample derives its own)", key="seed", type=int),
                ClientOptions(),
            ),
        ),
    ),
    Stage(
        "judge",
        "kubedistill.cot.judge:judge_difficulty",
        "LLM judge: each CoT's difficulty for the student (easy / medium / hard).",
        role="teacher_bound",
        config="kubedistill.cot.judge:JudgeConfig",
        inputs=(SAMPLES, PROBLEMS),
        outputs=(Port("judged", records="Sample", help="CoTs with their difficulty"), REJECTS, METRICS),
        params=SHARD,
        fatal=("request_failed",),
        shardable=True,
        streams=True,
        cli=_judge_cli("judged", "judge", "judge endpoint"),
    ),
    Stage(
        "rewrite",
        "kubedistill.cot.rewrite:rewrite",
        "Extend easy CoTs (add the missing steps), simplify hard ones.",
        role="teacher_bound",
        config="kubedistill.cot.rewrite:RewriteConfig",
        inputs=(SAMPLES, PROBLEMS),
        outputs=(Port("rewritten", records="Sample", help="CoTs, easy and hard ones rewritten"), REJECTS, METRICS),
        params=SHARD,
        shardable=True,
        streams=True,
        cli=_judge_cli("rewritten", "rewriter", "rewriter endpoint"),
    ),
    Stage(
        "verify",
        "kubedistill.cot.verify:verify_samples",
        "Check every CoT's answer (math-verify, sandboxed code, choice letter); keep the correct ones.",
        role="cpu",
        config="kubedistill.cot.verify:VerifyConfig",
        inputs=(SAMPLES, PROBLEMS),
        outputs=(Port("verified", records="Sample", help="CoTs with `correct` set"), REJECTS, METRICS),
        params=SHARD,
        shardable=True,
        streams=True,
        cli=Cli(
            input="samples",
            output="verified",
            options=(Option("--keep-all", "keep wrong CoTs, with correct=false", key="keep_all", action="store_true"),),
        ),
    ),
    Stage(
        "score",
        "kubedistill.cot.judge:score_rv_cd",
        "LLM judge: reasoning verbosity (RV) and cognitive difficulty (CD), 0-9, for each CoT.",
        role="teacher_bound",
        config="kubedistill.cot.judge:JudgeConfig",
        inputs=(SAMPLES, PROBLEMS),
        outputs=(Port("scored", records="Sample", help="CoTs with RV and CD"), REJECTS, METRICS),
        params=SHARD,
        fatal=("request_failed",),
        shardable=True,
        streams=True,
        cli=_judge_cli("scored", "judge", "judge endpoint"),
    ),
    Stage(
        "select",
        "kubedistill.cot.select:select",
        "Target-aware selection: correct CoTs whose RV / CD fit the student, at most K per problem.",
        role="cpu",
        config="kubedistill.cot.select:SelectConfig",
        inputs=(
            SAMPLES,
            Port("problems", records="Problem", optional=True, help="problems (for mix_by: domain / domain_source)"),
        ),
        outputs=(Port("selected", records="Sample", help="the CoTs that fit the student"), REJECTS, METRICS),
        streams=True,
        cli=Cli(
            input="samples",
            output="selected",
            options=(
                Option("--profile", "small | medium | large (student size)", key="profile"),
                Option("--per-problem", "at most K CoTs per problem", key="per_problem", type=int),
                Option("--target-size", "at most this many CoTs", key="target_size", type=int),
            ),
        ),
    ),
    Stage(
        "pairs",
        "kubedistill.cot.pairs:make_pairs",
        "DPO preference pairs: a verified CoT vs a corrupted copy (kind and magnitude recorded).",
        role="cpu",
        config="kubedistill.cot.pairs:PairsConfig",
        inputs=(SAMPLES, PROBLEMS),
        outputs=(Port("pairs", records="PreferencePair", help="preference pairs"), REJECTS, METRICS),
        params=SHARD,
        shardable=True,
        streams=True,
        cli=Cli(input="samples", output="pairs"),
    ),
    Stage(
        "sft",
        "kubedistill.train.sft:train_sft",
        "Curriculum SFT of the student on verified CoTs (TRL); writes a transformers/vLLM model directory.",
        role="train",
        kind="files",
        config="kubedistill.train.sft:SFTConfig",
        inputs=(Port("samples", records="Sample", help="verified samples"), PROBLEMS),
        outputs=(MODEL_OUT, METRICS),
        params=(WORK_DIR,),
        cli=Cli(
            input="samples",
            output="model",
            options=(Option("--base-model", "student to start from (dir, hub id, tiny-qwen3, ...)", key="base_model"),),
        ),
    ),
    Stage(
        "dpo",
        "kubedistill.train.dpo:train_dpo",
        "DPO of the SFT student on the preference pairs (per-pair beta); writes a transformers/vLLM model directory.",
        role="train",
        kind="files",
        config="kubedistill.train.dpo:DPOConfig",
        inputs=(
            Port(
                "pairs",
                records="PreferencePair",
                help="preference pairs (from `kubedistill pairs`)",
                empty_ok=True,  # no usable pair: `too_few_pairs` decides (skip passes the SFT student on)
            ),
            PROBLEMS,
            Port(
                "base_model",
                type="Model",
                help="the student to start from (default: the config's base_model)",
                cli_optional=True,
            ),
        ),
        outputs=(MODEL_OUT, METRICS),
        params=(WORK_DIR,),
        cli=Cli(input="pairs", output="model"),
    ),
    Stage(
        "reward_models",
        "kubedistill.train.reward_model:train_reward_models",
        "RV and CD regressors distilled from the judge's scores (models/rv, models/cd); MAE and Spearman held out.",
        role="train",
        kind="files",
        config="kubedistill.train.reward_model:RewardModelConfig",
        inputs=(Port("samples", records="Sample", help="samples scored by `kubedistill score`"), PROBLEMS),
        outputs=(Port("models", type="Model", help="directory to write <output>/rv, <output>/cd"), METRICS),
        log_outputs=("models",),
        cli=Cli(
            input="samples",
            output="models",
            options=(Option("--base-model", "model the regressors start from", key="base_model"),),
        ),
    ),
    Stage(
        "grpo",
        "kubedistill.train.grpo:train_grpo",
        "GRPO with R = format + accuracy + interval rewards on the distilled RV / CD scores.",
        role="train",
        kind="files",
        config="kubedistill.train.grpo:GRPOConfig",
        inputs=(
            Port("problems", records="Problem", help="the prompts (with answers / tests to verify)"),
            Port("reward_models", type="Model", help="directory from `kubedistill reward-models`", cli_optional=True),
        ),
        outputs=(MODEL_OUT, METRICS),
        params=(
            Param(
                "base_model",
                str,
                "",
                "the policy to start from (default: the config's base_model)",
                model_reference=True,
            ),
            WORK_DIR,
        ),
        cli=Cli(output="model"),
    ),
    Stage(
        "evaluate",
        "kubedistill.evaluate.stage:evaluate_student",
        "Serve the student (and the base student) with vLLM; score them on the held-out problems, side by side.",
        role="serve",
        kind="files",
        config="kubedistill.evaluate.stage:LocalEvalConfig",
        inputs=(PROBLEMS, Port("model", type="Model", help="the student's model directory")),
        outputs=EVAL_OUTPUTS,
        params=(Param("base_model", str, "", "the base student, evaluated beside it", model_reference=True),),
        funnel=False,
    ),
    Stage(
        "evaluate_models",
        "kubedistill.evaluate.stage:evaluate_models",
        "Score registered students (served here with vLLM) or endpoints on named benchmarks, side by side.",
        role="serve",
        kind="files",
        config="kubedistill.evaluate.stage:LocalEvalConfig",
        outputs=EVAL_OUTPUTS,
        params=(
            Param("models", dict, required=True, help="label -> model reference or endpoint"),
            Param("benchmarks", list, required=True, help="benchmark names"),
            Param("benchmark_paths", dict, required=True, help="benchmark -> local files"),
            Param("limit", int, 0, "at most this many problems per benchmark (0: all)"),
        ),
        funnel=False,
    ),
    Stage(
        "evaluate_endpoint",
        "kubedistill.evaluate.stage:evaluate_on_endpoint",
        "Score one OpenAI-compatible endpoint on benchmarks: pass@k, accuracy, CoT lengths, plots, reports.",
        role="teacher_bound",
        kind="files",
        config="kubedistill.evaluate.core:EvalConfig",
        outputs=(Port("results", help="output directory (results.json, items/, plots/, reports)"),),
        params=(
            Param("endpoint", dict, required=True, help="{url, model, name, api_key_env}"),
            Param("benchmarks", list, required=True, help="benchmark names or files"),
            Param("benchmark_paths", dict, {}, "benchmark -> local files"),
            Param("limit", int, 0, "at most this many problems per benchmark (0: all)"),
            Param("allow_failed", bool, False, "succeed although requests failed after every retry"),
        ),
        funnel=False,
        component=False,  # the command line's `kubedistill evaluate` (its own flags: kubedistill/cli/evaluate.py)
    ),
    Stage(
        "register",
        "kubedistill.registry:register",
        "Register the student in the MLflow model registry with its scores; returns models:/NAME/VERSION.",
        role="cpu",
        kind="task",
        config="kubedistill.registry:RegisterConfig",
        inputs=(
            Port("model", type="Model", help="model directory"),
            Port("results", help="evaluation results dir (its scores are logged)", cli_optional=True),
        ),
        returns=str,
        cli=Cli(
            name="register",
            options=(
                Option("--name", "registered model name", key="name"),
                Option("--alias", "alias to set (repeat; default: candidate)", key="aliases", action="append"),
            ),
        ),
    ),
    Stage(
        "register_reward_models",
        "kubedistill.registry:register_reward_models",
        "Register the RV / CD reward models in MLflow (<name>-rv, <name>-cd); returns their models:/ URIs.",
        role="cpu",
        kind="task",
        config="kubedistill.registry:RewardRegisterConfig",
        inputs=(Port("models", type="Model", help="directory with rv/ and/or cd/"),),
        returns=str,
    ),
    Stage(
        "shard_plan",
        "kubedistill.core.sharding:shard_plan",
        "The shard indices (0 .. count-1) the teacher-bound stages fan out over.",
        role="cpu",
        kind="task",
        tracked=False,
        params=(
            Param("count", int, required=True, help="number of shards"),
            Param("settings", dict, {}, "sections every shard's tasks take (each item: index + these)"),
        ),
        returns=list,
    ),
    Stage(
        "merge_shards",
        "kubedistill.core.sharding:merge_shards",
        "Join a sharded stage's parts: records, rejects, and metrics (counts summed over shards).",
        role="cpu",
        kind="task",
        tracked=False,
        inputs=(
            Port("parts", many=True),
            Port("part_rejects", many=True),
            Port("part_metrics", type="Metrics", many=True),
        ),
        outputs=(Port("merged"), REJECTS, METRICS),
    ),
    Stage(
        "promote",
        "kubedistill.registry:promote_uri",
        "Evaluation gate: move the `champion` alias to this student if its scores pass the gate.",
        role="cpu",
        kind="task",
        tracked=False,
        config="kubedistill.registry:GateConfig",
        config_param="gate",
        params=(Param("model_uri", str, required=True, help="models:/NAME/VERSION"),),
        returns=bool,
    ),
    Stage(
        "deploy",
        "kubedistill.serve.kserve:deploy_uri",
        "Serve the student with KServe (OpenAI routes), wait until Ready, smoke-test; returns its base URL.",
        role="cpu",
        kind="task",
        tracked=False,
        config="kubedistill.serve.kserve:ServeConfig",
        config_param="settings",
        params=(Param("model_uri", str, required=True, help="models:/NAME/VERSION or @ALIAS"),),
        returns=str,
    ),
)

# The ablation harness (kubedistill/ablation.py): every arm trained from one pool, evaluated on one held-out set.
ARM = Param("arm", str, required=True, help="the arm's name (one of the config's arms)")
STAGES += (
    Stage(
        "arm_train",
        "kubedistill.ablation:train_arm",
        "Ablation: train one arm (SFT on a subset, curriculum, DPO or GRPO) from the shared pool, same budget.",
        role="train",
        kind="files",
        config="kubedistill.ablation:ArmConfig",
        inputs=(
            Port("samples", records="Sample", help="the pool: every CoT with `correct` set (labels on verified ones)"),
            Port("problems", records="Problem", help="the training problems"),
            Port("pairs", records="PreferencePair", optional=True, help="DPO pairs (the dpo arm)"),
            Port("reward_models", type="Model", optional=True, help="rv/ and cd/ reward models (grpo arms)"),
            Port(
                "reference", type="Model", optional=True, help="the reference student (dpo and grpo arms start from it)"
            ),
        ),
        outputs=(MODEL_OUT, METRICS),
        params=(ARM, WORK_DIR),
        funnel=False,
        cli=Cli(input="samples", output="model", config_required=True),
    ),
    Stage(
        "arm_evaluate",
        "kubedistill.ablation:evaluate_arm",
        "Ablation: one arm's student on the held-out problems (greedy pass@1), its CoT lengths and RV / CD vs target.",
        role="serve",
        kind="files",
        config="kubedistill.ablation:ArmConfig",
        inputs=(
            Port("problems", records="Problem", help="the held-out problems"),
            Port("model", type="Model", help="the arm's model directory (from arm_train)"),
            Port(
                "reward_models", type="Model", optional=True, help="rv/ and cd/ reward models (RV / CD of completions)"
            ),
        ),
        outputs=(Port("results", help="results directory: <arm>/ the evaluation, arm.json the table row"), METRICS),
        params=(ARM,),
        funnel=False,
        cli=Cli(input="problems", output="results", config_required=True),
    ),
    Stage(
        "ablation_report",
        "kubedistill.ablation:ablation_report",
        "Ablation: one table (accuracy with 95% intervals, lengths, training tokens, RV / CD vs target) and a plot; "
        "an MLflow parent run over every arm.",
        role="cpu",
        kind="task",
        inputs=(
            Port("arms", many=True, help="the arms' results directories"),
            Port("reference", optional=True, help="the reference arm's results directory"),
        ),
        outputs=(
            Port("report", type="Markdown", help="the ablation table (Markdown)"),
            Port("report_html", type="HTML", help="the table and the plot (HTML)"),
            Port("summary", help="every arm's row (JSON)"),
            METRICS,
        ),
        params=(
            Param("name", str, "ablation", "the ablation's name"),
            Param("run_name", str, "", "the run's name (default: $KFP_RUN_ID on the cluster)"),
        ),
        funnel=False,
    ),
)

# The run report: the stages whose metrics make its funnel, in pipeline order.
STAGE_ORDER: tuple[str, ...] = tuple(s.name for s in STAGES if s.funnel and s.kind != "task")
TRAINING_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.role == "train")

REPORT = Stage(
    "report",
    "kubedistill.report:write_report",
    "The run report: stage funnel, student vs base, CoT lengths, RV/CD distribution (Markdown + HTML).",
    role="cpu",
    kind="task",
    params=(
        Param("pipeline", str, required=True, help="the pipeline's name"),
        Param("run_name", str, "", "the run's name (default: $KFP_RUN_ID on the cluster, else none)"),
        Param("model_uri", str, "", "models:/NAME/VERSION of the registered model"),
    ),
    inputs=(
        Port("results", optional=True, help="evaluation results"),
        Port("scored", optional=True, help="scored samples (RV/CD distribution)"),
        *(Port(f"{name}_metrics", type="Metrics", optional=True) for name in STAGE_ORDER),
    ),
    outputs=(
        Port("report", type="Markdown", help="the run report (Markdown)"),
        Port("report_html", type="HTML", help="the run report (HTML)"),
        Port("summary", help="the run summary (JSON)"),
    ),
    funnel=False,
)

ALL: tuple[Stage, ...] = (*STAGES, REPORT)
BY_NAME: dict[str, Stage] = {s.name: s for s in ALL}


def stage(name: str) -> Stage:
    """The row of stage ``name`` (``judge``, ``reward_models``, ``reward-models``)."""
    key = name.replace("-", "_")
    if key not in BY_NAME:
        raise KeyError(f"unknown stage {name!r} (known: {', '.join(BY_NAME)})")
    return BY_NAME[key]


def cli_stages() -> Iterator[Stage]:
    """The stages that have a ``kubedistill <stage>`` subcommand, in table order."""
    return (s for s in ALL if s.cli is not None)


def component_roles() -> dict[str, Role]:
    """Component name (``judge-op``) -> the role its pods play on a cluster (kubedistill_kfp/cluster.py)."""
    return {s.component_name: s.role for s in ALL if s.component}
