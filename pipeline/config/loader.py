"""YAML -> `extends:` chain -> `a.b.c=value` overrides, remembering where every value came from.

The result is a plain merged mapping plus an origin map (path -> file:line or command line), which
`pipeline.config.experiment` validates and uses to point each problem at the file that caused it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.errors import ConfigProblem, Origin, dotted

Key = tuple[str, ...]  # a path in the document; list indices are kept as their decimal string


# Bounds on what one experiment may hold, so that a hostile or broken file is rejected in bounded time
# and memory (the demo holds ~150 values, nested 5 deep, in 2 KB).
MAX_FILE_BYTES = 256 * 1024  # pure-Python YAML parses this in about a second
MAX_DEPTH = 64  # nesting of mappings and lists, counted through aliases
MAX_NODES = 100_000  # keys, values and list items, each alias counted as the whole value it repeats
MAX_EXTENDS_DEPTH = 16  # files in one line of an extends chain
MAX_EXTENDS_FILES = 64  # files read for one experiment, all extends branches together
_MERGE_TAG = "tag:yaml.org,2002:merge"


class LimitExceeded(yaml.MarkedYAMLError):
    """A document over one of the bounds above (reported as such, not as invalid YAML)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 insists on `1.0e-4`) and stops composing
    a document nested deeper than MAX_DEPTH (PyYAML's composer would recurse until Python gives up)."""

    def __init__(self, stream: str) -> None:
        self._depth = 0
        super().__init__(stream)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's constructors raise what they meet (`!!float ''` is an IndexError, a 5000-digit integer
        a ValueError): make each a YAML error at the value's line."""
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever a constructor raises is a bad value
            reason = str(error).split(";")[0] or type(error).__name__
            raise yaml.constructor.ConstructorError(
                problem=f"cannot read this {node.tag.rsplit(':', 1)[-1]} value ({reason})", problem_mark=node.start_mark
            ) from None

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise LimitExceeded(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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


def parse_yaml_value(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """How a command-line override value is typed: as YAML (`3` int, `1e-4` float, `[1,2]` list).

    Raises yaml.YAMLError (LimitExceeded past the bounds) for text that is not such a value."""
    node = compose_bounded(text, max_depth)
    return construct(node) if node is not None else None


def compose_bounded(text: str, max_depth: int = MAX_DEPTH) -> yaml.Node | None:
    """The node graph of a one-document YAML text, checked against the bounds before anything is built."""
    loader = _Loader(text)  # the reader rejects control characters here
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if node is not None:
        check_graph(node, max_depth)
    return node


def construct(node: yaml.Node) -> Any:
    """Python values of a composed (and checked) node graph."""
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def check_graph(root: yaml.Node, max_depth: int = MAX_DEPTH) -> None:
    """Reject a recursive alias, or a graph whose expansion (aliases repeat what they name) is deeper than
    `max_depth` or larger than MAX_NODES, without expanding it: a 1 KB file of nested aliases
    ("billion laughs") stands for billions of values."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()  # entered, not finished: the ancestors of what is being visited
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            open_nodes.discard(id(node))
            children = _children(node)
            size[id(node)] = 1 + sum(size[id(child)] for child in children)
            depth[id(node)] = 1 + max((depth[id(child)] for child in children), default=0)
            _check_bounds(node, size[id(node)], depth[id(node)], max_depth)
            continue
        if id(node) in size:
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise LimitExceeded(
                    problem="recursive alias: a value that contains itself", problem_mark=child.start_mark
                )
            if id(child) not in size:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_bounds(node: yaml.Node, size: int, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        problem = f"nested deeper than {max_depth} levels (counting what aliases repeat)"
        raise LimitExceeded(problem=problem, problem_mark=node.start_mark)
    if size > MAX_NODES:
        problem = f"more than {MAX_NODES} values (counting what aliases repeat)"
        raise LimitExceeded(problem=problem, problem_mark=node.start_mark)


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
    layers = _load_chain(Path(path), _Chain(), problems)
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


@dataclass
class _Chain:
    """The files above the one being read (to catch cycles) and how many files were read so far."""

    above: tuple[Path, ...] = ()
    reads: list[int] = field(default_factory=lambda: [0])  # shared by every branch of the chain

    def below(self, path: Path) -> _Chain:
        return _Chain((*self.above, path), self.reads)


def _load_chain(path: Path, chain: _Chain, problems: list[ConfigProblem]) -> list[Layer]:
    """Layers of `path`'s extends chain, bases first, `path` itself last."""
    resolved = Path(os.path.realpath(path))  # never raises: a symlink loop is reported when reading
    if resolved in chain.above:
        cycle = " -> ".join(str(p) for p in (*chain.above, resolved))
        problems.append(ConfigProblem("extends", f"extends cycle: {cycle}", Origin(str(chain.above[-1]))))
        return []
    chain.reads[0] += 1
    layer = _read_layer(path, problems)
    if layer is None:
        return []
    layers: list[Layer] = []
    for reference, origin in _extends_references(layer, path, problems):
        target, missing = _extends_target(path, reference)
        if target is None:
            problems.append(ConfigProblem("extends", missing or "file not found", origin))
            continue
        below = chain.below(resolved)
        if _within_bounds(below, origin, problems):
            layers.extend(_load_chain(target, below, problems))
    layers.append(layer)
    return layers


def _within_bounds(chain: _Chain, origin: Origin, problems: list[ConfigProblem]) -> bool:
    """Extends chains of at most MAX_EXTENDS_DEPTH files, at most MAX_EXTENDS_FILES files read in all."""
    if len(chain.above) >= MAX_EXTENDS_DEPTH:
        message = f"extends chain deeper than {MAX_EXTENDS_DEPTH} files (from {chain.above[0]}); flatten some bases"
    elif chain.reads[0] >= MAX_EXTENDS_FILES:
        message = f"more than {MAX_EXTENDS_FILES} files read through extends; is a base listed many times?"
    else:
        return True
    if not any(problem.message == message for problem in problems):
        problems.append(ConfigProblem("extends", message, origin))
    return False


def _extends_target(path: Path, reference: str) -> tuple[Path | None, str | None]:
    """The file `reference` names (relative to `path`'s directory), or None and why it cannot be used."""
    try:
        target = (path.parent / reference).expanduser()
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None, f"file not found: '{_short(reference)}' (looked for {_short(str(target), 200)})"
    except (OSError, ValueError, RuntimeError) as error:  # symlink loop, name too long, NUL byte, unknown ~user
        return None, f"cannot use '{_short(reference)}': {_os_reason(error)}"
    if not stat.S_ISREG(mode):
        return None, f"'{_short(reference)}' is not a regular file"
    return target, None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: Any) -> str:
    """A short repr, also of an integer too long for repr (over 4300 digits)."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"
    return _short(repr(value)) if not isinstance(value, (dict, list)) else f"a {type(value).__name__}"


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
                ConfigProblem(
                    "extends", f"expected a file path or a list of file paths, got {_shown(reference)}", origin
                )
            )
    return valid


def _read_layer(path: Path, problems: list[ConfigProblem]) -> Layer | None:
    source = str(path)
    text = _read_text(path, source, problems)
    if text is None:
        return None
    origins: dict[Key, Origin] = {(): Origin(source)}
    try:
        node = compose_bounded(text)
        if node is not None:
            _collect_origins(node, (), source, origins, problems)  # before constructing: that flattens merge keys
        data = construct(node) if node is not None else {}
    except yaml.YAMLError as error:
        problems.append(_yaml_problem(error, text, source))
        return None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(
            ConfigProblem("", f"expected a mapping of keys to values, got {type(data).__name__}", Origin(source, 1))
        )
        return None
    return Layer(data, origins)


def _read_text(path: Path, source: str, problems: list[ConfigProblem]) -> str | None:
    """The file's text; None (with a problem) for what is not a readable regular UTF-8 file of bounded size
    (a FIFO or device would block or never end)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            problems.append(ConfigProblem("", "not a regular file", Origin(source)))
            return None
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            message = f"larger than {MAX_FILE_BYTES // 1024} KiB: not an experiment"
            problems.append(ConfigProblem("", message, Origin(source)))
            return None
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        problems.append(ConfigProblem("", f"cannot read the file: {_os_reason(error)}", Origin(source)))
        return None


def _os_reason(error: Exception) -> str:
    """'[Errno 40] Too many levels of symbolic links' without the (possibly very long) file name."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror} (errno {error.errno})"
    return str(error)


def _yaml_problem(error: yaml.YAMLError, text: str, source: str) -> ConfigProblem:
    """One problem for a YAML error, at the line it names."""
    line = _error_line(error, text)
    if isinstance(error, LimitExceeded):
        return ConfigProblem("", f"rejected: {error.problem}", Origin(source, line))
    return ConfigProblem("", f"invalid YAML: {_yaml_reason(error)}", Origin(source, line))


def _error_line(error: yaml.YAMLError, text: str) -> int | None:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is not None:
        return mark.line + 1
    position = getattr(error, "position", None)  # a ReaderError (control character) has only a position
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else None


def _yaml_reason(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.reader.ReaderError):
        character = error.character if isinstance(error.character, str) else chr(error.character)
        return (
            f"control character {character!r} (#x{ord(character):04x}) is not allowed; "
            "write it escaped in a double-quoted string"
        )
    problem = getattr(error, "problem", None)
    context = getattr(error, "context", None)
    return " ".join(part for part in (context, problem) if part) or str(error).splitlines()[0]


def _collect_origins(
    node: yaml.Node, path: Key, source: str, origins: dict[Key, Origin], problems: list[ConfigProblem]
) -> None:
    """Record the line of every key and list item; report duplicate keys (PyYAML keeps the last silently).

    A merge key (`<<: *base`) brings in the keys of `base` that the mapping does not set itself."""
    if isinstance(node, yaml.MappingNode):
        for key, (key_node, value_node) in _effective_pairs(node, dotted(path), source, problems).items():
            origins[(*path, key)] = Origin(source, key_node.start_mark.line + 1)
            _collect_origins(value_node, (*path, key), source, origins, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            origins[(*path, str(index))] = Origin(source, item.start_mark.line + 1)
            _collect_origins(item, (*path, str(index)), source, origins, problems)


NodePair = tuple[yaml.Node, yaml.Node]


def _effective_pairs(
    node: yaml.MappingNode, where: str, source: str, problems: list[ConfigProblem]
) -> dict[str, NodePair]:
    """Key -> (key node, value node) as the constructed mapping will have them: merged keys first, then
    the mapping's own keys, which win. Only a key written twice in the mapping itself is a duplicate."""
    merged: dict[str, NodePair] = {}
    own: dict[str, NodePair] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            for key, pair in _merged_pairs(value_node).items():
                merged.setdefault(key, pair)  # in `<<: [*a, *b]`, a wins over b
            continue
        key = _key_text(key_node)
        if key in own:
            first = own[key][0].start_mark.line + 1
            at = f"{where}.{key}" if where else key
            origin = Origin(source, key_node.start_mark.line + 1)
            problems.append(ConfigProblem(at, f"duplicate key (first at line {first})", origin))
        own[key] = (key_node, value_node)
    return {**merged, **own}


def _merged_pairs(value_node: yaml.Node) -> dict[str, NodePair]:
    """The pairs a merge key's value brings: one mapping, or a list of them (the first wins)."""
    sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
    pairs: dict[str, NodePair] = {}
    for source_node in sources:
        if isinstance(source_node, yaml.MappingNode):
            for key, pair in _effective_pairs(source_node, "", "", []).items():
                pairs.setdefault(key, pair)
    return pairs  # anything else under `<<` is a constructor error, reported when the file is built


def _key_text(key_node: yaml.Node) -> str:
    return str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else f"<{key_node.id} key>"


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
            message = f"override '{_short(text)}' is not of the form a.b.c=value"
            problems.append(ConfigProblem(key.strip(), message, Origin("command line")))
            continue
        if len(keys) >= MAX_DEPTH:
            message = f"override path of {len(keys)} keys: at most {MAX_DEPTH - 1}"
            problems.append(ConfigProblem(_short(key), message, Origin("command line")))
            continue
        try:
            value = parse_yaml_value(raw_value, max_depth=MAX_DEPTH - len(keys))
        except yaml.YAMLError as error:
            kind = "is rejected" if isinstance(error, LimitExceeded) else "is not valid YAML"
            reason = error.problem if isinstance(error, LimitExceeded) else _yaml_reason(error)
            problems.append(ConfigProblem(key, f"override value {kind}: {reason}", Origin("command line")))
            continue
        overrides.append(Override(keys, value, text))
    return overrides


def _apply_overrides(
    data: dict[str, Any], origins: dict[Key, Origin], overrides: list[Override], problems: list[ConfigProblem]
) -> None:
    for override in overrides:
        origin = Origin(f"command line '{_short(override.text)}'")
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
                index = _list_index(last)
                if index is None or index >= len(container):
                    problems.append(ConfigProblem(".".join(override.keys), "list index out of range", origin))
                    continue
                container[index] = override.value
            else:
                container[last] = override.value
            _forget_below(origins, override.keys)  # the file's lines no longer describe what is there
            origins[override.keys] = origin


_MISSING = object()


def _forget_below(origins: dict[Key, Origin], prefix: Key) -> None:
    for key in [key for key in origins if len(key) > len(prefix) and key[: len(prefix)] == prefix]:
        del origins[key]


def _child(container: Any, key: str) -> Any:
    if isinstance(container, list):
        index = _list_index(key)
        return container[index] if index is not None and index < len(container) else None
    return container.get(key, _MISSING)


def _list_index(key: str) -> int | None:
    """'3' -> 3; None for anything else (including '³' and digit strings too long to be an index)."""
    return int(key) if key.isascii() and key.isdigit() and len(key) <= 9 else None
