"""Recipes: one pydantic model per pipeline, loaded from YAML (examples/*.yaml).

A recipe holds every knob of a pipeline run, grouped by stage. ``pipeline_arguments()`` turns it into
the pipeline's parameters (one JSON object per stage — each well under KFP's ~10 KB parameter limit),
which is what ``kubedistill run --local`` passes to kfp.local and ``kubedistill submit`` to the KFP API.
Unknown keys are errors, with the key's path in a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from kubedistill.ablation import REFERENCE, ArmConfig
from kubedistill.chat.config import EndpointConfig
from kubedistill.core.config import ConfigError, StrictModel, load_config, load_yaml, reference
from kubedistill.cot.generate import GenerateConfig
from kubedistill.cot.judge import JudgeConfig
from kubedistill.cot.pairs import PairsConfig
from kubedistill.cot.rewrite import RewriteConfig
from kubedistill.cot.select import SelectConfig
from kubedistill.cot.verify import VerifyConfig
from kubedistill.data.collect import CollectConfig
from kubedistill.evaluate.stage import LocalEvalConfig
from kubedistill.registry import RegisterConfig, RewardRegisterConfig
from kubedistill.serve.kserve import ServeConfig
from kubedistill.tracking import TrackingConfig
from kubedistill.train.dpo import DPOConfig
from kubedistill.train.grpo import GRPOConfig
from kubedistill.train.reward_model import RewardModelConfig
from kubedistill.train.sft import SFTConfig

Backend = Literal["vllm", "transformers", "auto"]


class LocalTeacherConfig(StrictModel):
    """A teacher served on this machine for a local run (started and stopped by `kubedistill run`)."""

    model: str = reference("model", "smollm2-135m-instruct", description="model reference (kubedistill/models/)")
    backend: Backend = "vllm"
    served_name: str = "teacher"
    max_model_len: int = 2048
    startup_timeout_s: float = 900.0


class TeacherConfig(StrictModel):
    """Where CoTs come from: remote endpoints, a local server, or both."""

    endpoints: list[EndpointConfig] = Field(default_factory=list)
    local: LocalTeacherConfig | None = None

    @model_validator(mode="after")
    def _some_teacher(self) -> TeacherConfig:
        if not self.endpoints and self.local is None:
            raise ValueError("give teacher.endpoints or teacher.local")
        return self


class _DataRecipe(StrictModel):
    """Where CoTs come from: teachers, problems, generation, verification; and where runs are logged."""

    name: str
    description: str = ""
    teacher: TeacherConfig
    collect: CollectConfig
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    shards: int = Field(
        default=1,
        ge=1,
        le=64,
        description="the teacher-bound stages run as this many parallel tasks (dsl.ParallelFor), each on the "
        "problems whose id hashes to it",
    )

    @model_validator(mode="after")
    def _tracking_on(self) -> _DataRecipe:
        if not self.tracking.enabled:
            raise ValueError(
                "tracking.enabled: false, but the pipeline ends by registering its model in the MLflow registry; "
                "leave tracking on (tracking.tracking_uri picks the store)"
            )
        return self

    def _endpoints(self, teachers: list[EndpointConfig] | None) -> list[EndpointConfig]:
        endpoints = teachers if teachers is not None else self.teacher.endpoints
        if not endpoints:
            raise ConfigError(f"recipe {self.name!r}: no teacher endpoint (teacher.local is started by `run --local`)")
        return endpoints

    def _common(self, endpoints: list[EndpointConfig]) -> dict[str, Any]:
        generate = self.generate.model_copy(update={"teachers": self.generate.teachers or endpoints})
        return {
            "collect_config": kfp_param(self.collect, "collect"),
            "generate_config": kfp_param(generate, "generate"),
            "verify_config": kfp_param(self.verify, "verify"),
            "tracking": kfp_param(self.tracking, "tracking"),
            "shards": self.shards,
        }


class _Recipe(_DataRecipe):
    """A recipe that trains a student, evaluates it against its base and registers it."""

    evaluate: LocalEvalConfig = Field(default_factory=LocalEvalConfig)
    registry: RegisterConfig = Field(default_factory=RegisterConfig)
    serve: ServeConfig | None = Field(
        default=None,
        description="deploy the student that passes the gate on KServe (the pipeline's deploy step); None: no deploy",
    )

    @model_validator(mode="after")
    def _deploy_behind_the_gate(self) -> _Recipe:
        if self.serve is not None and self.registry.gate is None:
            raise ValueError("serve: the deploy step serves the student that passes the gate; set registry.gate")
        return self

    @model_validator(mode="after")
    def _something_to_evaluate(self) -> _Recipe:
        h = self.collect.holdout
        if h.fraction == 0 or h.max_items == 0:
            key = "fraction" if h.fraction == 0 else "max_items"
            raise ValueError(
                f"collect.holdout.{key}: 0 holds out no problem, and the pipeline evaluates the student on the "
                "held-out problems; hold some out (e.g. fraction: 0.1)"
            )
        return self

    def _common(self, endpoints: list[EndpointConfig]) -> dict[str, Any]:
        return {
            **super()._common(endpoints),
            "eval_config": kfp_param(self.evaluate, "evaluate"),
            "register_config": kfp_param(self.registry.model_copy(update={"gate": None}), "registry"),
            "gate": kfp_param(self.registry.gate, "registry.gate") if self.registry.gate else {},
            "promote": self.registry.gate is not None,
            "deploy": self.serve is not None,
            "serve_config": kfp_param(self.serve, "serve") if self.serve is not None else {},
        }


class _SFTRecipe(_Recipe):
    sft: SFTConfig = Field(default_factory=SFTConfig)

    def _common(self, endpoints: list[EndpointConfig]) -> dict[str, Any]:
        return {
            **super()._common(endpoints),
            "sft_config": kfp_param(self.sft, "sft"),
        }


def _judge_with(section: JudgeConfig, endpoints: list[EndpointConfig]) -> JudgeConfig:
    """A judge section whose endpoint defaults to the first teacher."""
    return section if section.judge is not None else section.model_copy(update={"judge": endpoints[0]})


class SlowThinkingRecipe(_SFTRecipe):
    """DistilQwen2.5-R1: collect → generate → difficulty judge → rewrite (extend easy, simplify hard) →
    verify → curriculum SFT (medium, then hard) → DPO pairs → DPO → evaluate → register."""

    recipe: Literal["slow_thinking"] = "slow_thinking"
    name: str = "slow-thinking"
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)

    def pipeline_arguments(self, teachers: list[EndpointConfig] | None = None) -> dict[str, Any]:
        """The pipeline's parameters. ``teachers`` are the endpoints to use (a local teacher's URL is only
        known once it is started); by default the recipe's own endpoints. Judge and rewriter default to the
        first teacher."""
        endpoints = self._endpoints(teachers)
        judge = _judge_with(self.judge, endpoints)
        rewrite = self.rewrite if self.rewrite.rewriter else self.rewrite.model_copy(update={"rewriter": endpoints[0]})
        if rewrite.judge is None and rewrite.keep_rewrites != "all":  # rewrites are re-judged by the same judge
            rewrite = rewrite.model_copy(update={"judge": judge})
        return {
            **self._common(endpoints),
            "judge_config": kfp_param(judge, "judge"),
            "rewrite_config": kfp_param(rewrite, "rewrite"),
            "pairs_config": kfp_param(self.pairs, "pairs"),
            "dpo_config": kfp_param(self.dpo, "dpo"),  # its base is the SFT student (an artifact)
        }

    @model_validator(mode="after")
    def _dpo_after_sft(self) -> SlowThinkingRecipe:
        if "base_model" in self.dpo.model_fields_set:
            raise ValueError("dpo.base_model: DPO here trains the pipeline's SFT student; set sft.base_model instead")
        return self


class AdaptiveThinkingRecipe(_SFTRecipe):
    """ThoughtX/ThoughtY: collect → generate → verify → RV/CD scores → target-aware selection → SFT →
    evaluate → register."""

    recipe: Literal["adaptive_thinking"] = "adaptive_thinking"
    name: str = "adaptive-thinking"
    score: JudgeConfig = Field(default_factory=JudgeConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)

    def pipeline_arguments(self, teachers: list[EndpointConfig] | None = None) -> dict[str, Any]:
        endpoints = self._endpoints(teachers)
        return {
            **self._common(endpoints),
            "score_config": kfp_param(_judge_with(self.score, endpoints), "score"),
            "select_config": kfp_param(self.select, "select"),
        }


class RewardModelsRecipe(_DataRecipe):
    """RV and CD reward models: collect → generate → verify → RV/CD scores by the judge → two regressors
    distilled from them → registered as ``<registry.name>-rv`` / ``-cd``."""

    recipe: Literal["reward_models"] = "reward_models"
    name: str = "reward-models"
    score: JudgeConfig = Field(default_factory=JudgeConfig)
    reward_models: RewardModelConfig = Field(default_factory=RewardModelConfig)
    registry: RewardRegisterConfig = Field(default_factory=RewardRegisterConfig)

    def pipeline_arguments(self, teachers: list[EndpointConfig] | None = None) -> dict[str, Any]:
        endpoints = self._endpoints(teachers)
        return {
            **self._common(endpoints),
            "score_config": kfp_param(_judge_with(self.score, endpoints), "score"),
            "reward_models_config": kfp_param(self.reward_models, "reward_models"),
            "register_config": kfp_param(self.registry, "registry"),
        }


class GRPORecipe(_Recipe):
    """ThoughtY RL: collect → generate → verify → RV/CD scores → RV and CD reward models → GRPO of
    ``grpo.base_model`` (the policy: e.g. the adaptive-thinking student) → evaluate → register."""

    recipe: Literal["grpo"] = "grpo"
    name: str = "grpo"
    score: JudgeConfig = Field(default_factory=JudgeConfig)
    reward_models: RewardModelConfig = Field(default_factory=RewardModelConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)

    def pipeline_arguments(self, teachers: list[EndpointConfig] | None = None) -> dict[str, Any]:
        endpoints = self._endpoints(teachers)
        return {
            **self._common(endpoints),
            "score_config": kfp_param(_judge_with(self.score, endpoints), "score"),
            "reward_models_config": kfp_param(self.reward_models, "reward_models"),
            "grpo_config": kfp_param(self.grpo, "grpo"),
        }


class AblationRecipe(_DataRecipe):
    """The ablation harness (kubedistill/ablation.py): one pool — collect → generate → verify (every CoT kept,
    ``correct`` set) → difficulty judge and RV / CD scores on the verified CoTs → DPO pairs, RV / CD reward
    models — then every arm of ``ablation.arms`` trained from it with the same budget and seed, each evaluated
    on the same held-out problems; one table, one plot, one MLflow parent run."""

    recipe: Literal["ablation"] = "ablation"
    name: str = "ablation"
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    score: JudgeConfig = Field(default_factory=JudgeConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    reward_models: RewardModelConfig = Field(default_factory=RewardModelConfig)
    ablation: ArmConfig

    def pipeline_arguments(self, teachers: list[EndpointConfig] | None = None) -> dict[str, Any]:
        """The pipeline's parameters. The pool keeps wrong CoTs (``verify.keep_all``: the ``sft_all`` arm trains
        on them) and judges and scores only the verified ones (``only_correct``), unless the recipe says
        otherwise; the reference arm (``sft_verified``) trains first, the other arms side by side after it."""
        endpoints = self._endpoints(teachers)
        common = self._common(endpoints)
        common["verify_config"] = kfp_param(self.verify.model_copy(update={"keep_all": True}), "verify")
        judges = {}
        for key, section in (("judge", self.judge), ("score", self.score)):
            if "only_correct" not in section.model_fields_set:
                section = section.model_copy(update={"only_correct": True})
            judges[f"{key}_config"] = kfp_param(_judge_with(section, endpoints), key)
        return {
            **common,
            **judges,
            "pairs_config": kfp_param(self.pairs, "pairs"),
            "reward_models_config": kfp_param(self.reward_models, "reward_models"),
            "arm_config": kfp_param(self.ablation, "ablation"),
            "arms": [a.name for a in self.ablation.arms if a.name != REFERENCE.name],
            "reference_arm": REFERENCE.name,
            "name": self.name,
        }

    @model_validator(mode="after")
    def _with_reference(self) -> AblationRecipe:
        if REFERENCE.name not in [a.name for a in self.ablation.arms]:  # every table has the reference student
            self.ablation.arms.insert(0, REFERENCE)
        return self


class EvaluateRecipe(StrictModel):
    """Evaluate students (registered or served) against baselines on named benchmarks."""

    recipe: Literal["evaluate"] = "evaluate"
    name: str = "evaluate"
    description: str = ""
    models: dict[str, str | EndpointConfig] = reference(
        "models",
        min_length=1,
        description="label -> models:/NAME@ALIAS, a directory, an alias, or an endpoint; first = baseline",
    )
    benchmarks: list[str] = reference("benchmarks", min_length=1)
    benchmark_paths: dict[str, str] = Field(default_factory=dict, description="benchmark -> local files")
    limit: int | None = Field(default=None, ge=1, description="at most this many problems per benchmark")
    evaluate: LocalEvalConfig = Field(default_factory=LocalEvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def pipeline_arguments(self, teachers: list[EndpointConfig] | None = None) -> dict[str, Any]:
        return {
            "models": {
                k: (v.model_dump(mode="json", exclude_none=True) if isinstance(v, EndpointConfig) else v)
                for k, v in self.models.items()
            },
            "benchmarks": list(self.benchmarks),
            "benchmark_paths": dict(self.benchmark_paths),
            "eval_config": kfp_param(self.evaluate, "evaluate"),
            "tracking": kfp_param(self.tracking, "tracking"),
            "limit": self.limit or 0,
        }


def kfp_param(section: StrictModel, where: str) -> dict[str, Any]:
    """A config section as a KFP dict parameter. KFP parameters cannot hold null, so unset (None) values
    are left out — which must give back the same config; where it would not, say which key to set."""
    data = section.model_dump(mode="json", exclude_none=True)
    if type(section).model_validate(data) != section:
        full = section.model_dump(mode="json")
        lost = [
            k
            for k, v in full.items()
            if v is None and getattr(type(section).model_fields[k], "default", None) is not None
        ]
        raise ConfigError(
            f"{where}: {', '.join(lost) or 'a value'} is null, which a KFP parameter cannot carry; give it a value"
        )
    return data


RECIPES: dict[str, type[StrictModel]] = {
    "slow_thinking": SlowThinkingRecipe,
    "adaptive_thinking": AdaptiveThinkingRecipe,
    "reward_models": RewardModelsRecipe,
    "grpo": GRPORecipe,
    "evaluate": EvaluateRecipe,
    "ablation": AblationRecipe,
}


def load_recipe(
    path: str | Path, overrides: dict[str, Any] | None = None, *, check: bool = True, here: bool = True
) -> Any:
    """Load a recipe YAML, checked in full before anything runs; its ``recipe:`` key picks the model
    (default slow_thinking).

    Strict YAML (a key given twice is an error), every key validated (unknown keys, wrong types), then —
    with ``check`` — every reference resolved (:func:`kubedistill.preflight.check_references`: models,
    benchmarks, reasoning-gym tasks and their options, data files, prompts, DeepSpeed configs), so a
    misspelt ``sft.base_model`` fails here, in seconds, not in the SFT task after the teacher-bound
    stages spent their budget. Registry references (``models:/``) are checked for their form here and
    looked up by :func:`kubedistill.preflight.check_registered_models` where the run's store is known.
    Every failure is one :class:`ConfigError` line naming the file and the keys (exit 2). ``here=False``:
    the recipe runs in a cluster's pods (``kubedistill submit``), whose hub downloads and volumes cannot
    be checked from here (:func:`kubedistill.preflight.check_references`)."""
    from kubedistill.core.secrets import remember_config

    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    kind = data.get("recipe", "slow_thinking")
    cls = RECIPES.get(kind)
    if cls is None:
        raise ConfigError(f"{path}: recipe: unknown recipe {kind!r} (known: {', '.join(RECIPES)})")
    remember_config(data)
    recipe = load_config(path, cls, overrides)
    if check:
        from kubedistill.preflight import check_references

        check_references(recipe, str(path), here=here)
    return recipe


# ------------------------------------------------------------------------------------------ the UI form
#
# A person starting a run from the Kubeflow UI fills a form: each pipeline's top-level parameters are flat,
# typed and stage-prefixed (``sft_learning_rate: float``), described by the pipeline's docstring ``Args:``
# (KFP copies them into the compiled YAML's inputDefinitions), with defaults that fit a GPU cluster. Beside
# them each pipeline keeps one JSON parameter per section (``sft_config``...): what ``kubedistill submit`` and
# ``kubedistill run --local`` send, the recipe passed whole. The first task of every pipeline (preflight)
# merges the two with :func:`form_sections`: a section given (non-empty) is taken whole and its form fields
# are ignored; an empty section is built from its form fields over the section's defaults.

# The section parameters and their config models (what preflight validates each merged section with).
SECTION_MODELS: dict[str, type[StrictModel]] = {
    "collect_config": CollectConfig,
    "generate_config": GenerateConfig,
    "verify_config": VerifyConfig,
    "judge_config": JudgeConfig,
    "score_config": JudgeConfig,
    "rewrite_config": RewriteConfig,
    "pairs_config": PairsConfig,
    "sft_config": SFTConfig,
    "dpo_config": DPOConfig,
    "select_config": SelectConfig,
    "reward_models_config": RewardModelConfig,
    "grpo_config": GRPOConfig,
    "eval_config": LocalEvalConfig,
    "register_config": RegisterConfig,
    "arm_config": ArmConfig,
    "tracking": TrackingConfig,
    "serve_config": ServeConfig,
}
# Sections whose model differs in one pipeline.
PIPELINE_SECTION_MODELS: dict[str, dict[str, type[StrictModel]]] = {
    "reward_models": {"register_config": RewardRegisterConfig},
}
# Sections whose endpoint defaults to the first teacher (the recipe's `_judge_with` rule), by key.
_TEACHER_DEFAULTED = {"judge_config": "judge", "score_config": "judge", "rewrite_config": "rewriter"}


@dataclass(frozen=True)
class FormField:
    """One field of a pipeline's UI form: pipeline parameter ``name`` (stage-prefixed) sets ``key`` of the
    section parameter ``param`` when that section is left empty. ``key`` ``teachers.url`` / ``.model`` /
    ``.api_key_env`` make the one teacher endpoint; ``sources.preset`` / ``sources.limit`` the one source;
    ``as_list`` puts the value in a one-item list (``generate.temperatures``). An empty string is "unset"."""

    name: str
    param: str
    key: str
    type: type
    default: Any
    help: str
    as_list: bool = False

    @property
    def docstring_line(self) -> str:
        return f"{self.name}: {self.help}"


def _field(param: str, key: str, default: Any, help: str = "", *, name: str = "", as_list: bool = False) -> FormField:
    stem = param.removesuffix("_config")
    leaf = key.rsplit(".", 1)[-1] if "." in key else key
    name = name or f"{stem}_{leaf}"
    if not help:
        model = SECTION_MODELS[param]
        info = model.model_fields.get(key)
        help = (info.description if info is not None else None) or key.replace("_", " ")
    return FormField(name, param, key, type(default), default, help, as_list)


CLUSTER_STUDENT = "Qwen/Qwen2.5-7B-Instruct"
_DATA_FORM: tuple[FormField, ...] = (
    _field(
        "generate_config",
        "teachers.url",
        "http://qwq-32b-teacher.kubedistill.svc.cluster.local/openai/v1",
        "the teacher's OpenAI API base (a KServe teacher: <url>/openai/v1); judges and rewriters default to it",
        name="teacher_url",
    ),
    _field("generate_config", "teachers.model", "qwq-32b", "the teacher's served model name", name="teacher_model"),
    _field(
        "generate_config",
        "teachers.api_key_env",
        "",
        "the environment variable holding the teacher's API key (a Secret mapped by the cluster config); empty: no key",
        name="teacher_api_key_env",
    ),
    _field("collect_config", "sources.preset", "deepmath-103k", "the problem set: a preset name (docs/recipes.md)"),
    _field("collect_config", "sources.limit", 20000, "read at most this many problems of it"),
    _field("collect_config", "seed", 7),
    _field("generate_config", "num_generations", 2, "CoTs per problem and teacher"),
    _field(
        "generate_config",
        "temperatures",
        0.6,
        "sampling temperature of the teacher",
        name="generate_temperature",
        as_list=True,
    ),
    _field("generate_config", "max_tokens", 16384, "at most this many tokens per CoT"),
    _field("tracking", "experiment", "kubedistill", "the MLflow experiment", name="tracking_experiment"),
)


def _trainer_form(param: str, base: str, *, lr: float, deepspeed: str = "zero3") -> tuple[FormField, ...]:
    return (
        _field(param, "base_model", base, "the model trained: a hub id, a models:/ URI or a path on the storage PVC"),
        _field(param, "learning_rate", lr, "peak learning rate"),
        _field(param, "deepspeed", deepspeed, "DeepSpeed: zero2 | zero3 | a JSON file; empty: none"),
        _field(param, "per_device_batch_size", 1, "sequences per GPU per step"),
        _field(param, "gradient_accumulation_steps", 16, "steps accumulated per optimizer step"),
    )


_EVAL_FORM = (
    _field("eval_config", "n", 4, "samples per held-out problem (pass@1 averaged over them)"),
    _field("eval_config", "max_tokens", 16384, "at most this many tokens per answer"),
)
_REGISTER_FORM = (
    _field("register_config", "name", "kubedistill-student", "MLflow registered model name"),
    _field("serve_config", "name", "kubedistill-student", "the deploy step's InferenceService (with deploy on)"),
    _field("serve_config", "gpus", 1, "GPUs of each student replica (tensor parallel above 1)"),
    _field("serve_config", "max_model_len", 16384, "the student's context length (vLLM)"),
    _field("serve_config", "min_replicas", 1, "replicas kept up (0: scale to zero when idle)"),
)

FORMS: dict[str, tuple[FormField, ...]] = {
    "slow_thinking": (
        *_DATA_FORM,
        _field("judge_config", "max_tokens", 512, "the difficulty judge's answer budget"),
        _field("rewrite_config", "max_tokens", 16384, "at most this many tokens per rewritten CoT"),
        *_trainer_form("sft_config", CLUSTER_STUDENT, lr=1e-5),
        _field("sft_config", "max_length", 16384, "longest training sequence (tokens)"),
        _field("dpo_config", "learning_rate", 5e-7, "DPO's peak learning rate"),
        _field("dpo_config", "beta", 0.1, "DPO's beta (per pair when pairs carry one)"),
        _field("dpo_config", "deepspeed", "zero3", "DeepSpeed of the DPO step"),
        *_EVAL_FORM,
        *_REGISTER_FORM,
    ),
    "adaptive_thinking": (
        *_DATA_FORM,
        _field("score_config", "max_tokens", 512, "the RV / CD judge's answer budget"),
        _field("select_config", "profile", "medium", "the student's size: small | medium | large (RV/CD windows)"),
        *_trainer_form("sft_config", CLUSTER_STUDENT, lr=1e-5),
        _field("sft_config", "max_length", 16384, "longest training sequence (tokens)"),
        *_EVAL_FORM,
        *_REGISTER_FORM,
    ),
    "reward_models": (
        *_DATA_FORM,
        _field("score_config", "max_tokens", 512, "the RV / CD judge's answer budget"),
        *_trainer_form("reward_models_config", "Qwen/Qwen2.5-1.5B-Instruct", lr=2e-5, deepspeed=""),
        _field("register_config", "name", "kubedistill-student", "the reward models register as <name>-rv, -cd"),
    ),
    "grpo": (
        *_DATA_FORM,
        _field("score_config", "max_tokens", 512, "the RV / CD judge's answer budget"),
        *_trainer_form("reward_models_config", "Qwen/Qwen2.5-1.5B-Instruct", lr=2e-5, deepspeed=""),
        *_trainer_form("grpo_config", CLUSTER_STUDENT, lr=1e-6),
        _field("grpo_config", "num_generations", 8, "completions per prompt (the GRPO group)"),
        _field("grpo_config", "max_completion_length", 8192, "at most this many tokens per completion"),
        *_EVAL_FORM,
        *_REGISTER_FORM,
    ),
    "evaluate": (*_EVAL_FORM, _DATA_FORM[-1]),
    # the arms' loop takes tracking as given (pipelines/ablation.py): no tracking field here
    "ablation": tuple(f for f in _DATA_FORM if f.param != "tracking"),
}
# The parameter the evaluation compares against (the student's base), by pipeline: preflight's `base_model`.
BASE_MODEL_OF: dict[str, tuple[str, str]] = {
    "slow_thinking": ("sft_config", "base_model"),
    "adaptive_thinking": ("sft_config", "base_model"),
    "grpo": ("grpo_config", "base_model"),
}


def form_fields(pipeline: str) -> tuple[FormField, ...]:
    """The UI form of ``pipeline`` (``slow_thinking``...), in form order."""
    return FORMS[pipeline]


def form_docstring(pipeline: str, sections: dict[str, str]) -> str:
    """The ``Args:`` docstring of a pipeline: every section parameter (``sections``: name -> help) and every
    form field, one line each (KFP puts them in the compiled YAML's inputDefinitions descriptions)."""
    lines = [f"{name}: {help}" for name, help in sections.items()]
    lines += [f.docstring_line for f in FORMS[pipeline]]
    return "Args:\n" + "\n".join(f"    {line}" for line in lines) + "\n"


def form_sections(pipeline: str, sections: dict[str, Any], form: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Merge the section parameters ``sections`` (``sft_config`` -> dict, as submit sends them) with the
    form's values ``form`` (field name -> value; a missing field takes its default): a non-empty section is
    taken whole, an empty one is built from its form fields. Endpoints left unset in the judge, score and
    rewrite sections built from the form are the teacher's. Returns every section, not yet validated
    (:func:`validate_sections` does that)."""
    out = {name: dict(value or {}) for name, value in sections.items() if isinstance(value, dict)}
    given = {name for name, value in sections.items() if value}
    teacher: dict[str, Any] = {}
    source: dict[str, Any] = {}
    for f in FORMS.get(pipeline, ()):
        if f.param in given or f.param not in out:
            continue
        value = form.get(f.name, f.default)
        if value == "" and f.type is str:
            continue
        if f.key.startswith("teachers."):
            teacher[f.key.split(".", 1)[1]] = value
        elif f.key.startswith("sources."):
            source[f.key.split(".", 1)[1]] = value
        else:
            out[f.param][f.key] = [value] if f.as_list else value
    if teacher and "generate_config" not in given:
        out["generate_config"]["teachers"] = [teacher]
    if source and "collect_config" not in given:
        out["collect_config"]["sources"] = [{"kind": "hf", **source}]
    teachers = out.get("generate_config", {}).get("teachers") or []
    if teachers:
        for param, key in _TEACHER_DEFAULTED.items():
            if param in out and param not in given and key not in out[param]:
                out[param][key] = dict(teachers[0])
        rewrite = out.get("rewrite_config")
        if rewrite is not None and "rewrite_config" not in given and rewrite.get("keep_rewrites", "medium") != "all":
            rewrite.setdefault("judge", out.get("judge_config") or {"judge": dict(teachers[0])})
    return out


def validate_sections(pipeline: str, sections: dict[str, dict[str, Any]]) -> dict[str, StrictModel]:
    """Each section validated by its config model (:data:`SECTION_MODELS`); one :class:`ConfigError` line
    naming every section and key that is wrong."""
    from pydantic import ValidationError

    models = {**SECTION_MODELS, **PIPELINE_SECTION_MODELS.get(pipeline, {})}
    checked: dict[str, StrictModel] = {}
    problems: list[str] = []
    for name, data in sections.items():
        model = models.get(name)
        if model is None:
            continue
        try:
            checked[name] = model.model_validate(data)
        except ValidationError as e:
            for err in e.errors():
                where = ".".join(str(p) for p in err["loc"]) or "(section)"
                problems.append(f"{name}.{where}: {err['msg']}")
    if problems:
        raise ConfigError("; ".join(problems))
    return checked
