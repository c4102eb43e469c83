"""Pydantic configuration: shared building blocks, stage configs and recipe loading.

Every config model forbids unknown keys, so a typo in a recipe is an error with the key's path, not a
silently ignored setting. :func:`load_config` turns YAML into a validated model and raises
:class:`ConfigError` with a one-line message (``file: path.to.key: what is wrong``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from kubedistill.core.errors import BadInputError


class ConfigError(BadInputError, ValueError):
    """A configuration cannot be used; the message is one line and names the offending key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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


def load_yaml(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such file")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None


def load_config(path: str | os.PathLike[str], cls: type[M], overrides: dict[str, Any] | None = None) -> M:
    """Load a YAML file into ``cls``; ``overrides`` (dotted keys) are applied before validation."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    return validate_config(cls, data, str(path))


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[k] = nxt
        cur = nxt
    cur[keys[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as ``{dotted key: value}`` (VALUE is YAML: ``2``, ``[0.6, 1.0]``, ``true``).
    Raises :class:`ConfigError` for an item without ``=``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: use KEY=VALUE, e.g. generate.num_generations=2")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not YAML ({str(e).splitlines()[0]})") from None
    return out
