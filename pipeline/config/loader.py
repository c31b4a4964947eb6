"""YAML -> `extends:` chain -> `a.b.c=value` overrides, remembering where every value came from.

The result is a plain merged mapping plus an origin map (path -> file:line or command line), which
`pipeline.config.experiment` validates and uses to point each problem at the file that caused it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from pipeline.config.errors import ConfigProblem, Origin, dotted

Key = tuple[str, ...]  # a path in the document; list indices are kept as their decimal string


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 insists on `1.0e-4`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml_value(text: str) -> Any:
    """How a command-line override value is typed: as YAML (`3` int, `1e-4` float, `[1,2]` list)."""
    return yaml.load(text, Loader=_Loader)


@dataclass
class Layer:
    """One source of values: a file of the extends chain, or the command-line overrides."""

    data: dict[str, Any]
    origins: dict[Key, Origin] = field(default_factory=dict)


@dataclass
class Document:
    """A merged experiment mapping with the origin of every value and the problems met so far."""

    data: dict[str, Any]
    origins: dict[Key, Origin]
    problems: list[ConfigProblem]
    source: str
    incomplete: bool = False  # a file of the chain could not be read: keys may be missing because of it

    def origin_of(self, loc: Iterable[object]) -> Origin | None:
        """Origin of the longest known prefix of `loc` (a missing key points at its parent)."""
        path = tuple(str(part) for part in loc)
        for end in range(len(path), -1, -1):
            origin = self.origins.get(path[:end])
            if origin is not None:
                return origin
        return None


def load_document(path: str | Path, overrides: Iterable[str] = ()) -> Document:
    """Read `path` with its extends chain, apply overrides; problems are collected, not raised."""
    problems: list[ConfigProblem] = []
    layers = _load_chain(Path(path), (), problems)
    data: dict[str, Any] = {}
    origins: dict[Key, Origin] = {}
    for layer in layers:
        data = deep_merge(data, layer.data)
        origins.update(layer.origins)
    incomplete = any(p.path in ("", "extends") for p in problems)  # a file of the chain is missing
    override_layer = _override_layer(list(overrides), problems)
    _apply_overrides(data, origins, override_layer, problems)
    return Document(data, origins, problems, str(path), incomplete)


def deep_merge(base: Any, child: Any) -> Any:
    """Mappings merge key by key (the child wins); anything else is replaced by the child."""
    if not (isinstance(base, dict) and isinstance(child, dict)):
        return child
    merged = dict(base)
    for key, value in child.items():
        merged[key] = deep_merge(base[key], value) if key in base else value
    return merged


def _load_chain(path: Path, chain: tuple[Path, ...], problems: list[ConfigProblem]) -> list[Layer]:
    """Layers of `path`'s extends chain, bases first, `path` itself last."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        problems.append(ConfigProblem("extends", f"extends cycle: {cycle}", Origin(str(chain[-1]))))
        return []
    layer = _read_layer(path, problems)
    if layer is None:
        return []
    layers: list[Layer] = []
    for reference, origin in _extends_references(layer, path, problems):
        target = (path.parent / reference).expanduser()
        if not target.is_file():
            problems.append(ConfigProblem("extends", f"file not found: '{reference}' (looked for {target})", origin))
            continue
        layers.extend(_load_chain(target, (*chain, resolved), problems))
    layers.append(layer)
    return layers


def _extends_references(layer: Layer, path: Path, problems: list[ConfigProblem]) -> list[tuple[str, Origin]]:
    """Pop `extends` from the layer: a path or a list of paths, relative to the file's directory."""
    if "extends" not in layer.data:
        return []
    value = layer.data.pop("extends")
    origin = layer.origins.get(("extends",), Origin(str(path)))
    references = value if isinstance(value, list) else [value]
    valid = []
    for reference in references:
        if isinstance(reference, str) and reference.strip():
            valid.append((reference, origin))
        else:
            problems.append(
                ConfigProblem("extends", f"expected a file path or a list of file paths, got {reference!r}", origin)
            )
    return valid


def _read_layer(path: Path, problems: list[ConfigProblem]) -> Layer | None:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        problems.append(ConfigProblem("", f"cannot read the file: {error}", Origin(source)))
        return None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problems.append(ConfigProblem("", f"invalid YAML: {_yaml_reason(error)}", Origin(source, line)))
        return None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(
            ConfigProblem("", f"expected a mapping of keys to values, got {type(data).__name__}", Origin(source, 1))
        )
        return None
    origins: dict[Key, Origin] = {(): Origin(source)}
    _collect_origins(node, (), source, origins, problems)
    return Layer(data, origins)


def _yaml_reason(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None)
    context = getattr(error, "context", None)
    return " ".join(part for part in (context, problem) if part) or str(error)


def _collect_origins(
    node: yaml.Node | None, path: Key, source: str, origins: dict[Key, Origin], problems: list[ConfigProblem]
) -> None:
    """Record the line of every key and list item; report duplicate keys (PyYAML keeps the last silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    ConfigProblem(dotted((*path, key)), f"duplicate key (first at line {seen[key]})", Origin(source, line))
                )
            seen[key] = line
            origins[(*path, key)] = Origin(source, line)
            _collect_origins(value_node, (*path, key), source, origins, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            origins[(*path, str(index))] = Origin(source, item.start_mark.line + 1)
            _collect_origins(item, (*path, str(index)), source, origins, problems)


@dataclass(frozen=True)
class Override:
    keys: tuple[str, ...]
    value: Any
    text: str


def _override_layer(texts: list[str], problems: list[ConfigProblem]) -> list[Override]:
    overrides = []
    for text in texts:
        key, sep, raw_value = text.partition("=")
        keys = tuple(key.strip().split("."))
        if not sep or not all(keys):
            problems.append(
                ConfigProblem(key.strip(), f"override '{text}' is not of the form a.b.c=value", Origin("command line"))
            )
            continue
        try:
            value = parse_yaml_value(raw_value)
        except yaml.YAMLError as error:
            problems.append(
                ConfigProblem(key, f"override value is not valid YAML: {_yaml_reason(error)}", Origin("command line"))
            )
            continue
        overrides.append(Override(keys, value, text))
    return overrides


def _apply_overrides(
    data: dict[str, Any], origins: dict[Key, Origin], overrides: list[Override], problems: list[ConfigProblem]
) -> None:
    for override in overrides:
        origin = Origin(f"command line '{override.text}'")
        container: Any = data
        for depth, key in enumerate(override.keys[:-1]):
            step = _child(container, key)
            if step is _MISSING:
                container[key] = step = {}
                origins[override.keys[: depth + 1]] = origin
            elif not isinstance(step, (dict, list)):
                where = ".".join(override.keys[: depth + 1])
                problems.append(ConfigProblem(where, f"cannot set '{override.text}': {where} is not a mapping", origin))
                break
            container = step
        else:
            last = override.keys[-1]
            if isinstance(container, list):
                if not (last.isdigit() and int(last) < len(container)):
                    problems.append(ConfigProblem(".".join(override.keys), "list index out of range", origin))
                    continue
                container[int(last)] = override.value
            else:
                container[last] = override.value
            origins[override.keys] = origin


_MISSING = object()


def _child(container: Any, key: str) -> Any:
    if isinstance(container, list):
        return container[int(key)] if key.isdigit() and int(key) < len(container) else None
    return container.get(key, _MISSING)
