"""KFP components, one per row of the stage table (kubedistill/stages.py), made from the row.

Each is a lightweight Python component on the project's image for its role (images.py) with typed
artifacts: record inputs and outputs are ``Dataset`` s, models ``Model`` s, counts ``Metrics``. Its body
is one call — ``run_component("<stage>", locals())`` (kubedistill_kfp/runtime.py), which hands the
artifact paths and parameters to :func:`kubedistill.runner.run_stage` — so kfp.local's SubprocessRunner
runs the very code the cluster runs, and a component holds no logic.

The source of each component is generated from its row and kept in :mod:`linecache`, where KFP reads it
(``inspect.getsource``) to embed it in the compiled pipeline; :func:`component_source` shows it. A new
stage needs no code here: its row makes its component.

    from kubedistill_kfp.components import judge_op, sft_op
"""

from __future__ import annotations

import linecache
from typing import Any

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output
from kubedistill_kfp.components.images import image_for

from kubedistill.stages import ALL, Param, Port, Stage

_ARTIFACTS = {"Dataset": Dataset, "Model": Model, "Metrics": Metrics, "Markdown": Markdown, "HTML": HTML}
_NAMESPACE: dict[str, Any] = {
    "__name__": __name__,
    "dsl": dsl,
    "Input": Input,
    "Output": Output,
    **_ARTIFACTS,
}


def _port(port: Port, direction: str) -> str:
    kind = f"list[{port.type}]" if port.many else port.type
    text = f"{port.name}: {direction}[{kind}]"
    return text + " = None" if port.optional and direction == "Input" else text


def _param(param: Param) -> str:
    text = f"{param.name}: {param.type.__name__}"
    return text if param.required else f"{text} = {param.default!r}"


def component_source(spec: Stage) -> str:
    """The Python source of the component of ``spec`` (what the compiled pipeline embeds)."""
    first = [f"{spec.config_param}: dict"] if spec.config else []
    first += ["tracking: dict"] if spec.tracked else []
    first += [_param(p) for p in spec.params if p.required]
    inputs = [_port(p, "Input") for p in spec.inputs if not p.optional]
    outputs = [_port(p, "Output") for p in spec.outputs]
    last = [_param(p) for p in spec.params if not p.required] + [_port(p, "Input") for p in spec.inputs if p.optional]
    args = "".join(f"    {a},\n" for a in (*first, *inputs, *outputs, *last))
    returns = f" -> {spec.returns.__name__}" if spec.returns is not None else ""
    call = f'run_component("{spec.name}", locals())'
    return (
        f"def {spec.name}_op(\n{args}){returns}:\n"
        f'    """{spec.help}"""\n'
        "    from kubedistill_kfp.runtime import run_component\n\n"
        f"    {'return ' if spec.returns is not None else ''}{call}\n"
    )


def _make(spec: Stage) -> Any:
    source = component_source(spec)
    filename = f"<kubedistill-component {spec.name}_op>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace = dict(_NAMESPACE)
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # our own generated source
    fn = namespace[f"{spec.name}_op"]
    return dsl.component(base_image=image_for(spec.role), install_kfp_package=False)(fn)


COMPONENTS: dict[str, Any] = {spec.name: _make(spec) for spec in ALL if spec.component}
globals().update({f"{name}_op": op for name, op in COMPONENTS.items()})

__all__ = ["COMPONENTS", "component_source", "preflight_op", "preflight_source", *(f"{name}_op" for name in COMPONENTS)]


# ------------------------------------------------------------------------------------------ preflight
#
# Not a row of the stage table: its inputs are a pipeline's own parameters (the section JSONs and the UI
# form's flat fields, kubedistill/recipes.py FORMS), so each pipeline gets its own, generated the same way.


def preflight_source(
    pipeline: str, sections: tuple[str, ...], base_model: bool, deploy: bool = False, loop: bool = False
) -> str:
    """The Python source of ``pipeline``'s preflight component: its section parameters and form fields in,
    each section (merged, validated, checked) out as ``checked_<section>``, ``base_model`` where the
    pipeline compares its student with a base, and with ``loop`` the sections its shard loop takes
    (``loop_sections``) as one ``loop_settings`` dict (for :func:`kubedistill.core.sharding.shard_plan`)."""
    from kubedistill.recipes import form_fields

    args = [f"{name}: dict" for name in sections]
    args += [f"{f.name}: {f.type.__name__}" for f in form_fields(pipeline)]
    args += ["crds: list"] + (["deploy: bool"] if deploy else []) + (["loop_sections: list"] if loop else [])
    outputs = [f'("checked_{name}", dict)' for name in sections] + (['("base_model", str)'] if base_model else [])
    outputs += ['("loop_settings", dict)'] if loop else []
    body = "".join(f"    {a},\n" for a in args)
    return (
        f"def preflight_op(\n{body}) -> NamedTuple('Checked', [{', '.join(outputs)}]):\n"
        f'    """Preflight of {pipeline}: the form merged into the sections, each validated; teachers and judges '
        "answer, the tracking server and object store are reachable, references and secrets resolve, CRDs are "
        'installed."""\n'
        "    from kubedistill_kfp.runtime import run_preflight\n\n"
        f'    return run_preflight("{pipeline}", locals())\n'
    )


_PREFLIGHT: dict[tuple[str, tuple[str, ...], bool, bool, bool], Any] = {}


def preflight_op(
    pipeline: str, sections: tuple[str, ...], base_model: bool = False, deploy: bool = False, loop: bool = False
) -> Any:
    """The preflight component of ``pipeline`` (one per pipeline; its component name is ``preflight-op``);
    with ``deploy`` it takes the pipeline's ``deploy`` switch (the KServe CRD is checked only with it on)."""
    key = (pipeline, sections, base_model, deploy, loop)
    if key not in _PREFLIGHT:
        from typing import NamedTuple

        source = preflight_source(pipeline, sections, base_model, deploy, loop)
        filename = f"<kubedistill-component preflight_op of {pipeline}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        namespace = {**_NAMESPACE, "NamedTuple": NamedTuple}
        exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # our own generated source
        _PREFLIGHT[key] = dsl.component(base_image=image_for("cpu"), install_kfp_package=False)(
            namespace["preflight_op"]
        )
    return _PREFLIGHT[key]
