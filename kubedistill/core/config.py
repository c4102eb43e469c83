"""Pydantic configuration: shared building blocks, stage configs and recipe loading.

Every config model forbids unknown keys, so a typo in a recipe is an error with the key's path, not a
silently ignored setting. :func:`load_config` turns YAML into a validated model and raises
:class:`ConfigError` with a one-line message (``file: path.to.key: what is wrong``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticUndefined

from kubedistill.core.errors import BadInputError


class ConfigError(BadInputError, ValueError):
    """A configuration cannot be used; the message is one line and names the offending key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------------------------------- references

#: What a config value can name that must exist before any work starts (kubedistill/preflight.py checks
#: each kind): a model (directory, alias, ``models:/`` URI, hub id), models by label (a dict whose string
#: values are models), benchmark names (a list, with a sibling ``benchmark_paths``), benchmark references
#: (``{name, path}``), reasoning-gym tasks (a dict task -> size, with a sibling ``task_config``), a local
#: path or glob of data files, a prompt template, a DeepSpeed config.
ReferenceKind = Literal[
    "model",
    "models",
    "benchmarks",
    "benchmark_refs",
    "reasoning_gym_tasks",
    "files",
    "data_path",
    "prompt",
    "deepspeed",
]
REFERENCE_KEY = "kubedistill_reference"


def reference(kind: ReferenceKind, default: Any = PydanticUndefined, **kwargs: Any) -> Any:
    """A pydantic ``Field`` whose value names something that must exist (see :data:`ReferenceKind`);
    :func:`iter_references` finds it, and the preflight resolves it before a stage or a recipe runs."""
    return Field(default, json_schema_extra={REFERENCE_KEY: kind}, **kwargs)


def iter_references(obj: BaseModel, prefix: str = "") -> Iterator[tuple[str, str, Any, BaseModel]]:
    """Every set reference in a config, recursively: ``(dotted key, kind, value, the model holding it)``."""
    for name, field in type(obj).model_fields.items():
        value = getattr(obj, name, None)
        key = f"{prefix}.{name}" if prefix else name
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        kind = extra.get(REFERENCE_KEY)
        if kind and value not in (None, "", [], {}):
            yield key, str(kind), value, obj
        if isinstance(value, BaseModel):
            yield from iter_references(value, key)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from iter_references(item, f"{key}.{i}")
        elif isinstance(value, dict):
            for k, item in value.items():
                if isinstance(item, BaseModel):
                    yield from iter_references(item, f"{key}.{k}")


# ------------------------------------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)


def format_validation_error(err: ValidationError, source: str = "") -> str:
    """One line: ``source: key.path: message; other.key: message``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            got = e.get("input")
            if not isinstance(got, dict | list) and got is not None:
                msg += f" (got {got!r})"
        parts.append(f"{loc}: {msg}")
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(parts)


def validate_config(cls: type[M], data: Any, source: str = "config") -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader; :func:`parse_yaml` adds the duplicate-key check."""


def _key_of(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        key = loader.construct_object(node, deep=True)
        hash(key)
    except Exception:  # an unhashable or odd key: the constructor reports it below
        return None
    return key


def _check_duplicates(loader: yaml.SafeLoader, node: yaml.Node | None, path: str, seen_nodes: set[int]) -> None:
    """Raise :class:`ConfigError` at the first key that appears twice in one mapping (merge keys ``<<``
    excepted: YAML lets explicit keys override merged ones)."""
    if node is None or id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = _key_of(loader, key_node)
            where = f"{path}.{key}" if path else str(key)
            if key is not None:
                if key in first:
                    raise _DuplicateKey(where, first[key], key_node.start_mark.line + 1)
                first[key] = key_node.start_mark.line + 1
            _check_duplicates(loader, value_node, where, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(loader, item, f"{path}.{i}" if path else str(i), seen_nodes)


class _DuplicateKey(Exception):
    def __init__(self, key: str, first_line: int, line: int) -> None:
        super().__init__(f"{key}: key appears twice (line {first_line} and line {line}); keep one")
        self.key, self.first_line, self.line = key, first_line, line


def parse_yaml(text: str, source: str = "") -> Any:
    """Strict YAML: one document, safe types only, **a key that appears twice in a mapping is an error**
    (PyYAML would silently keep the last one). Returns None for a document with no content. Raises
    :class:`ConfigError` with one line (``source: line L, column C: problem`` or ``source: key.path: key
    appears twice (line A and line B)``)."""
    prefix = f"{source}: " if source else ""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        _check_duplicates(loader, node, "", set())
        return loader.construct_document(node) if node is not None else None
    except _DuplicateKey as e:
        raise ConfigError(f"{prefix}{e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{prefix}not valid YAML{where}: {problem}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """A YAML file (a stage's ``--config``, a recipe, ``--cluster-config``, ``serve --settings``), strictly
    (:func:`parse_yaml`). A missing path, a directory, an empty file (nothing but blanks and comments), a
    file that is not UTF-8 text (a leading byte-order mark is fine) or not valid YAML is a
    :class:`ConfigError` with one line naming the file and, where there is one, the line."""
    from kubedistill.core.files import read_text

    text = read_text(path, what="YAML file", error=ConfigError)
    data = parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: the file is empty (no settings in it)")
    return data


def load_config(path: str | os.PathLike[str], cls: type[M], overrides: dict[str, Any] | None = None) -> M:
    """Load a YAML file into ``cls``; ``overrides`` (dotted keys) are applied before validation."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    return validate_config(cls, data, str(path))


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``value`` at ``dotted`` (``generate.num_generations``; a number indexes a list:
    ``collect.sources.0.limit``), creating the mappings on the way. Raises :class:`ConfigError` for a key
    into a list that is not an index in it, and for a key under a value that is neither a mapping nor a
    list (nothing is replaced on the way: a list is never turned into a mapping)."""
    keys = dotted.split(".")
    cur: Any = data
    for depth, k in enumerate(keys):
        last = depth == len(keys) - 1
        here = ".".join(keys[:depth]) or "the recipe"
        if isinstance(cur, list):
            if not k.lstrip("-").isdigit():
                raise ConfigError(
                    f"{dotted}: {here} is a list of {len(cur)}: give an index 0..{len(cur) - 1} "
                    f"(e.g. {here}.0.{'.'.join(keys[depth:])})"
                )
            if not -len(cur) <= int(k) < len(cur):
                raise ConfigError(f"{dotted}: {here} is a list of {len(cur)}: no index {k} (0..{len(cur) - 1})")
            if last:
                cur[int(k)] = value
                return
            cur = cur[int(k)]
            continue
        if not isinstance(cur, dict):
            raise ConfigError(f"{dotted}: {here} is {cur!r}, not a mapping: {k!r} cannot be set under it")
        if last:
            cur[k] = value
            return
        if cur.get(k) is None:
            cur[k] = {}
        cur = cur[k]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as ``{dotted key: value}`` (VALUE is YAML: ``2``, ``[0.6, 1.0]``, ``true``).
    Raises :class:`ConfigError` for an item without ``=``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: use KEY=VALUE, e.g. generate.num_generations=2")
        try:
            out[key.strip()] = parse_yaml(value)
        except ConfigError as e:
            raise ConfigError(f"--set {item!r}: the value is not YAML ({e})") from None
    return out
