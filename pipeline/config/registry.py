"""Component registry: `@register(kind, name, config=...)` and the discriminated unions built from it.

A component is a class plus a pydantic config class whose `type` field is `Literal[name]`. Every
registered config of a kind forms the union that the experiment validates against, so adding a
component is one new module under a discovered package and no edit anywhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, TypeVar, Union

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from pipeline.config.base import ComponentConfig

# Modules, and packages whose modules (recursively), are imported before the experiment model is built.
# Component modules are leaves: they import pipeline.config.base/registry, never the experiment.
COMPONENT_PACKAGES = ("pipeline.audio.codecs", "pipeline.models")

T = TypeVar("T")


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    component: type
    config: type[ComponentConfig]


_registry: dict[str, dict[str, Registration]] = {}


def register(kind: str, name: str, *, config: type[ComponentConfig]) -> Callable[[type[T]], type[T]]:
    """Class decorator: make `cls` available as `{type: name, ...}` wherever `kind` is configured."""
    _check_config_class(kind, name, config)

    def decorate(cls: type[T]) -> type[T]:
        entries = _registry.setdefault(kind, {})
        existing = entries.get(name)
        if existing is not None and existing.component.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"{kind} '{name}' is registered twice: {existing.component.__module__}."
                f"{existing.component.__qualname__} and {cls.__module__}.{cls.__qualname__}"
            )
        entries[name] = Registration(kind, name, cls, config)
        cls.config_class = config  # type: ignore[attr-defined]
        cls.registered_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def _check_config_class(kind: str, name: str, config: type) -> None:
    if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
        raise TypeError(f"{kind} '{name}': config must be a ComponentConfig subclass, got {config!r}")
    annotation = config.model_fields["type"].annotation
    if typing.get_origin(annotation) is not typing.Literal or typing.get_args(annotation) != (name,):
        raise TypeError(f"{kind} '{name}': {config.__name__}.type must be Literal['{name}'], got {annotation!r}")


def registered(kind: str) -> dict[str, Registration]:
    """Every registration of `kind`, by name (empty if none)."""
    return dict(_registry.get(kind, {}))


def kinds() -> list[str]:
    return sorted(_registry)


def component_union(kind: str) -> Any:
    """The `type`-discriminated union of every config registered for `kind`."""
    configs = [entry.config for entry in _registry.get(kind, {}).values()]
    if not configs:
        raise LookupError(f"no component of kind '{kind}' is registered (packages searched: {COMPONENT_PACKAGES})")
    if len(configs) == 1:
        # A one-member union cannot carry a discriminator; require `type` as the union would (and as the
        # JSON Schema does), so a file stays valid when a second component of the kind registers.
        return Annotated[configs[0], BeforeValidator(_require_type_key)]
    return Annotated[Union[tuple(configs)], Field(discriminator="type")]


def _require_type_key(value: Any) -> Any:
    if isinstance(value, dict) and "type" not in value:
        message = "needs a 'type' key naming the component"
        raise PydanticCustomError("union_tag_not_found", message, {"discriminator": "'type'"})
    return value


def build(kind: str, config: ComponentConfig, **kwargs: Any) -> Any:
    """Instantiate the component registered for `config.type`, passing the config and `kwargs`."""
    entry = _registry.get(kind, {}).get(config.type)
    if entry is None:
        raise LookupError(f"no {kind} named '{config.type}'; registered: {sorted(_registry.get(kind, {}))}")
    return entry.component(config, **kwargs)


_discovered = False


def discover() -> None:
    """Import COMPONENT_PACKAGES and every module below them once, so their `@register` calls run."""
    global _discovered
    if _discovered:
        return
    for package_name in COMPONENT_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError as missing:
            if missing.name == package_name:
                continue
            raise
        for module in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=package_name + "."):
            importlib.import_module(module.name)
    _discovered = True
