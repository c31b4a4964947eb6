"""Components by import path: `{type: import, target: package.module.Class, params: {...}}`, or the
Hydra way, `{_target_: package.module.Class, <keyword arguments>}`.

Validation imports the class (the user's module may import torch; ours never do here) and checks
`params` against its constructor: unknown, missing and mistyped arguments are reported at their YAML
paths, every one at once. What a pipeline stage must know about the component before building it
(its latent width, downsampling ratio, ...) is read from the block itself, from a constructor argument
of that name, or from a class attribute of that name, in that order (`stated`)."""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.config.errors import did_you_mean

TARGET_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"
HYDRA_TARGET = "_target_"
IMPORT_TYPE = "import"

Problems = list[tuple[tuple[str | int, ...], str]]


def from_hydra(raw: Any) -> Any:
    """`{_target_: X, **kwargs}` -> `{type: import, target: X, params: kwargs, hydra: true}`; with a
    `params` key beside it, `_target_` is only another spelling of `target`. Anything else unchanged."""
    if not isinstance(raw, dict) or HYDRA_TARGET not in raw or raw.get("type", IMPORT_TYPE) != IMPORT_TYPE:
        return raw
    rest = {key: value for key, value in raw.items() if key not in (HYDRA_TARGET, "type")}
    if "params" in rest or "target" in rest:
        return {"type": IMPORT_TYPE, "target": raw[HYDRA_TARGET], **rest}
    return {"type": IMPORT_TYPE, "target": raw[HYDRA_TARGET], "params": rest, "hydra": True}


def import_target(target: str) -> Any:
    """The object `package.module.Name` (or `package.module.Outer.Inner`) names; ValueError saying why not."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            value: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            if missing.name and (module_name == missing.name or module_name.startswith(missing.name + ".")):
                continue  # a shorter module path may hold the rest as attributes
            raise ValueError(f"cannot import {target}: importing {module_name} failed ({missing})") from None
        except Exception as error:  # the user's module raised while importing: say so, in one line
            raise ValueError(
                f"cannot import {target}: importing {module_name} raised {type(error).__name__}: {error}"
            ) from None
        for attribute in parts[split:]:
            if not hasattr(value, attribute):
                raise ValueError(f"cannot import {target}: {'.'.join(parts[:split])} has no attribute {attribute!r}")
            value = getattr(value, attribute)
        return value
    raise ValueError(f"cannot import {target}: no module {parts[0]!r} (is its package installed or on PYTHONPATH?)")


def argument_problems(cls: type, params: Mapping[str, Any], prefix: tuple[str, ...], target: str) -> Problems:
    """Unknown, missing and mistyped constructor arguments of `cls`, at `prefix + (name,)`."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return []  # a builtin without a signature: nothing to check
    named = {
        name: parameter
        for name, parameter in signature.parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    any_keyword = any(parameter.kind is parameter.VAR_KEYWORD for parameter in signature.parameters.values())
    hints = _hints(cls)
    problems: Problems = []
    for key, value in params.items():
        if key not in named:
            if not any_keyword:
                hint = did_you_mean(key, list(named))
                problems.append(
                    ((*prefix, key), f"unknown argument of {target}{hint}; its arguments: {', '.join(named) or 'none'}")
                )
            continue
        annotation = hints.get(key, named[key].annotation)
        if not fits(value, annotation):
            problems.append(((*prefix, key), f"{target} takes {describe(annotation)} here, got {_show(value)}"))
    for name, parameter in named.items():
        if parameter.default is parameter.empty and name not in params:
            problems.append((prefix, f"missing required argument {name!r} of {target}"))
    return problems


def _hints(cls: type) -> dict[str, Any]:
    init = cls.__init__ if isinstance(cls, type) else cls
    try:
        return typing.get_type_hints(init)
    except Exception:  # names only imported for type checkers: check what is resolvable
        return {key: value for key, value in getattr(init, "__annotations__", {}).items() if not isinstance(value, str)}


def fits(value: Any, annotation: Any) -> bool:
    """Whether a YAML value can be `annotation`; types YAML cannot write (tensors, modules) pass."""
    if annotation in (inspect.Parameter.empty, Any) or isinstance(annotation, (str, typing.TypeVar)):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return fits(value, args[0])
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, member) for member in args)
    if origin is typing.Literal:
        return value in args
    if annotation is None or annotation is type(None):
        return value is None
    scalar = _SCALARS.get(annotation)
    if scalar is not None:
        return scalar(value)
    container = origin or annotation
    if container in (list, tuple, set, frozenset, Sequence) or (isinstance(container, type) and container is Sequence):
        return isinstance(value, (list, tuple)) and _items_fit(value, container, args)
    if container in (dict, Mapping):
        return isinstance(value, dict)
    return True


def _items_fit(value: Sequence[Any], container: Any, args: tuple[Any, ...]) -> bool:
    if container is tuple and args and Ellipsis not in args:
        return len(value) == len(args) and all(fits(item, arg) for item, arg in zip(value, args))
    return not args or all(fits(item, args[0]) for item in value)


_SCALARS = {
    bool: lambda value: isinstance(value, bool),
    int: lambda value: isinstance(value, int) and not isinstance(value, bool),
    float: lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    str: lambda value: isinstance(value, str),
}


def describe(annotation: Any) -> str:
    name = getattr(annotation, "__name__", None)
    if name and not typing.get_args(annotation):
        return {"int": "an integer", "float": "a number", "bool": "a boolean", "str": "a string"}.get(name, name)
    return str(annotation).replace("typing.", "")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def stated(cls: Any, params: Mapping[str, Any], name: str, own: Any = None) -> Any:
    """A fact about the component: the block's own value, else the constructor argument `name` (as
    given, or its default), else the class attribute `name` (None when none states it)."""
    if own is not None:
        return own
    if name in params:
        return params[name]
    default = _default(cls, name)
    if default is not None:
        return default
    value = inspect.getattr_static(cls, name, None)
    return None if isinstance(value, (property, types.FunctionType, classmethod, staticmethod)) else value


def _default(cls: Any, name: str) -> Any:
    try:
        parameter = inspect.signature(cls).parameters.get(name)
    except (TypeError, ValueError):
        return None
    return None if parameter is None or parameter.default is parameter.empty else parameter.default


def missing_methods(cls: Any, names: Sequence[str]) -> list[str]:
    return [name for name in names if not callable(getattr(cls, name, None))]
