"""Component registry: registration checks, unions built from the registry, discovery of new modules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from pipeline.config.base import ComponentConfig
from pipeline.config.registry import build, component_union, register, register_config, registered


class WidgetA(ComponentConfig):
    type: Literal["a"] = "a"
    size: int = 1


class WidgetB(ComponentConfig):
    type: Literal["b"] = "b"
    colour: str = "red"


@register("test_widget", "a", config=WidgetA)
class ComponentA:
    def __init__(self, config: WidgetA, scale: int = 1):
        self.value = config.size * scale


@register("test_widget", "b", config=WidgetB)
class ComponentB:
    def __init__(self, config: WidgetB):
        self.colour = config.colour


class Holder(BaseModel):
    widget: component_union("test_widget")  # type: ignore[valid-type]


def test_union_dispatches_on_type_and_builds_the_component():
    holder = Holder.model_validate({"widget": {"type": "a", "size": 3}})
    assert isinstance(holder.widget, WidgetA)
    assert build("test_widget", holder.widget, scale=2).value == 6
    assert isinstance(Holder.model_validate({"widget": {"type": "b"}}).widget, WidgetB)
    assert ComponentA.config_class is WidgetA and ComponentA.registered_name == "a"


def test_union_rejects_unknown_type_and_foreign_keys():
    with pytest.raises(ValidationError, match="union_tag_invalid|does not match any of the expected tags"):
        Holder.model_validate({"widget": {"type": "c"}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        Holder.model_validate({"widget": {"type": "b", "size": 3}})  # `size` belongs to `a`


def test_registering_a_second_class_under_a_taken_name_fails():
    with pytest.raises(ValueError, match="registered twice"):

        @register("test_widget", "a", config=WidgetA)
        class Impostor:
            pass


def test_config_type_literal_must_match_the_name():
    with pytest.raises(TypeError, match="Literal\\['c'\\]"):
        register("test_widget", "c", config=WidgetA)
    with pytest.raises(TypeError, match="ComponentConfig subclass"):
        register("test_widget", "d", config=dict)  # type: ignore[arg-type]


def test_unknown_kind_and_unknown_name():
    with pytest.raises(LookupError, match="no component of kind"):
        component_union("no_such_kind")
    with pytest.raises(LookupError, match="registered: \\['a', 'b'\\]"):
        build("test_widget", WidgetA.model_construct(type="zzz"))


def test_builtin_codecs_are_discovered():
    from pipeline.config import sections  # noqa: F401  (importing it runs discovery)

    assert {"flac", "wav"} <= set(registered("codec"))


def test_a_new_component_module_needs_no_edit_elsewhere(tmp_path):
    """A config module in a discovered package registers a codec: the experiment and its schema accept it
    without importing the component's module, which `build` imports (and checks) when it is built."""
    package = tmp_path / "extra_components"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "raw_config.py").write_text(
        textwrap.dedent(
            """
            from typing import Literal
            from pipeline.config.base import ComponentConfig
            from pipeline.config.registry import register_config

            @register_config("codec", "raw", component="extra_components.raw:RawCodec")
            class RawCodecConfig(ComponentConfig):
                type: Literal["raw"] = "raw"
                endian: Literal["little", "big"] = "little"
            """
        )
    )
    (package / "raw.py").write_text(
        textwrap.dedent(
            """
            from pipeline.config.registry import register
            from extra_components.raw_config import RawCodecConfig

            @register("codec", "raw", config=RawCodecConfig)
            class RawCodec:
                def __init__(self, config):
                    self.config = config
            """
        )
    )
    script = textwrap.dedent(
        """
        import json, sys
        import pipeline.config.registry as registry
        registry.COMPONENT_PACKAGES = (*registry.COMPONENT_PACKAGES, "extra_components")
        from pipeline.config.experiment import Experiment
        from pipeline.config.schema import experiment_schema
        exp = Experiment.model_validate(
            {"name": "x", "paths": {"audio_dir": "a"}, "data": {"codec": {"type": "raw", "endian": "big"}}})
        imported_early = "extra_components.raw" in sys.modules
        codec = registry.build("codec", exp.data.codec)
        print(json.dumps({"codec": type(exp.data.codec).__name__, "built": type(codec).__name__,
                          "imported_early": imported_early,
                          "in_schema": "RawCodecConfig" in experiment_schema()["$defs"]}))
        """
    )
    env_path = f"{tmp_path}"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "codec": "RawCodecConfig",
        "built": "RawCodec",
        "imported_early": False,
        "in_schema": True,
    }


class LazyWidget(ComponentConfig):
    type: Literal["lazy"] = "lazy"


class Stray(ComponentConfig):
    type: Literal["lazy"] = "lazy"


class LazyComponent:  # decorated in the tests below, as its module's @register would
    def __init__(self, config: LazyWidget):
        self.config = config


def test_a_config_registered_by_path_builds_the_class_that_registers_it():
    register_config("test_lazy", "lazy", component=f"{__name__}:LazyComponent")(LazyWidget)
    with pytest.raises(LookupError, match="is not registered; decorate it with @register"):
        build("test_lazy", LazyWidget())  # the module is imported, but nothing registered that class
    register("test_lazy", "lazy", config=LazyWidget)(LazyComponent)
    assert isinstance(build("test_lazy", LazyWidget()), LazyComponent)


def test_class_and_config_registrations_must_agree():
    register_config("test_agree", "lazy", component="somewhere.else:Thing")(LazyWidget)
    with pytest.raises(ValueError, match="registered twice"):  # another class than the config names
        register("test_agree", "lazy", config=LazyWidget)(LazyComponent)
    register_config("test_agree2", "lazy", component=f"{__name__}:LazyComponent")(LazyWidget)
    with pytest.raises(ValueError, match="is registered with config .*Stray, but .*LazyWidget was registered"):
        register("test_agree2", "lazy", config=Stray)(LazyComponent)
    with pytest.raises(ValueError, match="package.module:ClassName"):
        register_config("test_agree3", "lazy", component="no_colon")
