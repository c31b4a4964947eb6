"""Component registry: the discriminated unions the experiment validates against, and `build`.

A component is a class plus a pydantic config class whose `type` field is `Literal[name]`. The two
live in two modules, so that loading and validating an experiment never imports torch:

    # pipeline/models/autoencoder/oobleck_config.py   (torch-free: pydantic and the config basics only)
    @register_config("encoder", "oobleck", component="pipeline.models.autoencoder.oobleck:OobleckEncoder")
    class OobleckEncoderConfig(ComponentConfig):
        type: Literal["oobleck"] = "oobleck"
        ...

    # pipeline/models/autoencoder/oobleck.py          (the nn.Module; imported only when it is built)
    @register("encoder", "oobleck", config=OobleckEncoderConfig)
    class OobleckEncoder(nn.Module): ...

`discover()` imports the config modules only: every module named `*_config` below a package of
COMPONENT_PACKAGES (and a module listed there itself). `build(kind, config)` imports the component's
module on first use; its `@register` must name the same kind, name and config class, or the build
fails, so the two halves cannot drift apart. Facts that validation needs about a component (the
VAE's encoder width factor) are class attributes of its config, never of the component class.

A component with no heavy imports may be registered by `@register` alone, next to its config in a
discovered module (the shard codecs): the config is then registered together with the class.
Either way, adding a component is one class + one config class and no edit anywhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, Union

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from pipeline.config.base import ComponentConfig
from pipeline.config.imported import from_hydra

# Modules imported before the experiment model is built, and packages whose `*_config` modules
# (recursively) are. Config modules are leaves: they import pipeline.config.base/registry and other
# config modules, never torch, a component module or the experiment.
COMPONENT_PACKAGES = ("pipeline.audio.codecs", "pipeline.models")
CONFIG_MODULE_SUFFIX = "_config"

T = TypeVar("T")
C = TypeVar("C", bound=type[ComponentConfig])


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    config: type[ComponentConfig]
    target: str  # "package.module:QualName" of the component class

    @property
    def component(self) -> type:
        """The component class, importing its module on first use (it may import torch)."""
        if self.target not in _classes:
            importlib.import_module(self.target.partition(":")[0])
        cls = _classes.get(self.target)
        if cls is None:
            raise LookupError(
                f"{self.kind} '{self.name}': {self.target} is not registered; decorate it with "
                f"@register({self.kind!r}, {self.name!r}, config={self.config.__name__})"
            )
        return cls


_registry: dict[str, dict[str, Registration]] = {}
_classes: dict[str, type] = {}  # target -> the class its @register decorated


def register_config(kind: str, name: str, *, component: str) -> Callable[[C], C]:
    """Config-class decorator: `{type: name, ...}` is valid wherever `kind` is configured, and builds
    `component` ("package.module:ClassName", imported when built)."""
    if component.count(":") != 1 or not all(component.partition(":")[::2]):
        raise ValueError(f"{kind} '{name}': component must be 'package.module:ClassName', got {component!r}")

    def decorate(config: C) -> C:
        _add(Registration(kind, name, config, component))
        return config

    return decorate


def register(kind: str, name: str, *, config: type[ComponentConfig]) -> Callable[[type[T]], type[T]]:
    """Component-class decorator: `cls` is what `build` makes for `{type: name}` configs of `kind`.
    If `config` was registered by `register_config`, both must name this class."""
    _check_config_class(kind, name, config)

    def decorate(cls: type[T]) -> type[T]:
        target = f"{cls.__module__}:{cls.__qualname__}"
        existing = _registry.get(kind, {}).get(name)
        if existing is None or existing.target != target:
            _add(Registration(kind, name, config, target))  # a config-less registration, or "registered twice"
        elif not _same_class(existing.config, config):
            raise ValueError(
                f"{kind} '{name}': {target} is registered with config {_qualified(config)}, but "
                f"{_qualified(existing.config)} was registered for it"
            )
        _classes[target] = cls
        cls.config_class = config  # type: ignore[attr-defined]
        cls.registered_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def _add(entry: Registration) -> None:
    _check_config_class(entry.kind, entry.name, entry.config)
    entries = _registry.setdefault(entry.kind, {})
    existing = entries.get(entry.name)
    # The same declaration seen again (a module imported twice, e.g. as __main__) replaces the first.
    if existing is not None and (existing.target != entry.target or not _same_class(existing.config, entry.config)):
        raise ValueError(
            f"{entry.kind} '{entry.name}' is registered twice: {existing.target} (config "
            f"{_qualified(existing.config)}) and {entry.target} (config {_qualified(entry.config)})"
        )
    entries[entry.name] = entry


def _same_class(a: type, b: type) -> bool:
    return _qualified(a) == _qualified(b)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


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
        return Annotated[configs[0], BeforeValidator(_require_type_key), BeforeValidator(from_hydra)]
    union = Annotated[Union[tuple(configs)], Field(discriminator="type")]  # noqa: UP007 (X | Y cannot unpack)
    # `{_target_: pkg.mod.Class, ...}` (Hydra's way) is `{type: import, ...}`, before the tag is read.
    return Annotated[union, BeforeValidator(from_hydra)]


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
    """Import COMPONENT_PACKAGES' config modules once, so their registrations run (no component module)."""
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
            if not module.ispkg and module.name.endswith(CONFIG_MODULE_SUFFIX):
                importlib.import_module(module.name)
    _discovered = True
