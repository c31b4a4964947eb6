"""The experiment reference: Markdown generated from the experiment's JSON Schema, never written by hand.

`schema_reference` turns any schema of the shapes pydantic emits ($ref into $defs, anyOf for Optional,
enums, consts, lists, tuples, mappings, discriminated unions as `type` enum + if/then) into one table
per top-level section: dotted path, type, default (or required), constraints, description, and the
runtime-only mark (`x-runtime-only`). A component chosen by `type:` gets one table per member. A schema
keyword it does not know is an error, so a new construct is never silently left out of the reference.
`pipeline schema --markdown` prints `experiment_reference()`; `make schema` writes it to
docs/experiment-reference.md."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.config.stages import RUNTIME_ONLY_KEY

Schema = Mapping[str, Any]

# Keywords the generator renders (or knows carry nothing a reader needs: title, $schema, additionalProperties: false).
KNOWN_KEYWORDS = frozenset(
    {
        "$schema",
        "$defs",
        "$ref",
        "title",
        "description",
        "type",
        "format",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "anyOf",
        "oneOf",
        "allOf",
        "if",
        "then",
        "enum",
        "const",
        "default",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "uniqueItems",
        RUNTIME_ONLY_KEY,
    }
)
SCALAR_NAMES = {"integer": "int", "number": "float", "boolean": "bool", "null": "null", "string": "string"}
MAX_HEADING = 6

LEGEND = """\
- **field**: the dotted path of the key; `[]` stands for any item of a list, `<key>` for any key of a mapping.
- **type**: `int`, `float`, `bool`, `string`, `path`; `` `a` | `b` `` lists the only values allowed; `X or null` may be null.
- **default**: what a key left out means, within its parent (a parent written without the key gets this
  default); **required** keys have none. An object whose default is just its fields' defaults says so.
- **constraints**: `x` is the value: `≤` and `≥` include the bound, `<` and `>` exclude it.
- *runtime-only* fields change how a stage runs, not what it produces: they never enter a stage hash.
- A key chosen by `type:` (a registered component) has one table per `type` below its section's table."""


@dataclass(frozen=True)
class Row:
    """One field of the reference, every cell already text."""

    path: str
    type: str
    default: str
    constraints: str
    description: str


@dataclass(frozen=True)
class Variant:
    """One member of a union: the discriminator's value (or the member's title) and its object schema."""

    label: str
    node: dict[str, Any]
    refs: tuple[str, ...]


@dataclass(frozen=True)
class Union:
    """A value that is one of several objects: by `key` (a discriminated union) or, with key None, any of them."""

    path: str
    key: str | None
    description: str
    variants: tuple[Variant, ...]
    runtime_only: bool
    seen: tuple[str, ...]


@dataclass
class Table:
    """The rows of one table and the unions met on the way, each rendered after the table."""

    rows: list[Row] = field(default_factory=list)
    unions: list[Union] = field(default_factory=list)


class SchemaReferenceError(ValueError):
    """The schema holds something the reference cannot render (an unknown keyword, a $ref outside the file)."""


def experiment_reference() -> str:
    """docs/experiment-reference.md: the reference of the experiment schema (`experiment_schema()`)."""
    from pipeline.config.schema import experiment_schema

    intro = (
        "Every key of an experiment file, generated from the experiment's JSON Schema "
        "([schema/experiment.schema.json](../schema/experiment.schema.json), from the models in "
        "`pipeline/config/`) by `pipeline schema --markdown`: do not edit it, run `make schema` (a test fails "
        "when it is stale). How files are loaded, extended, overridden and hashed, and the checks between "
        "sections: [configuration.md](configuration.md).\n\n"
        "Unknown keys are errors everywhere. A `path` is expanded (`~`, `$VARIABLES`) and resolved against "
        "the current working directory when the experiment is loaded."
    )
    return schema_reference(experiment_schema(), title="Experiment reference", intro=intro)


def schema_reference(schema: Schema, *, title: str = "Reference", intro: str = "") -> str:
    """Markdown reference of `schema`: a table of the top-level keys, then one section per object among them."""
    return _Reader(schema).document(title, intro)


class _Reader:
    """Walks one schema; `$ref`s are resolved against its `$defs` (JSON pointers into the same document)."""

    def __init__(self, schema: Schema) -> None:
        self.root = schema

    # --- resolving -------------------------------------------------------------------------------------

    def resolve(self, node: Any, where: str = "") -> tuple[dict[str, Any], tuple[str, ...]]:
        """`node` with its `$ref` (and plain `allOf` members) merged in, its own keys winning; the refs followed."""
        if not isinstance(node, Mapping):
            raise SchemaReferenceError(f"{where or 'schema'}: expected a schema object, got {node!r}")
        merged: dict[str, Any] = dict(node)
        refs: list[str] = []
        while "$ref" in merged:
            reference = merged.pop("$ref")
            if reference in refs:
                raise SchemaReferenceError(f"{where}: $ref {reference!r} refers to itself")
            refs.append(reference)
            merged = {**self._target(reference, where), **merged}
        conditional = []
        for member in merged.pop("allOf", []):
            if "if" in member:
                conditional.append(member)
            else:
                inner, inner_refs = self.resolve(member, where)
                merged = {**inner, **merged}
                refs.extend(inner_refs)
        if conditional:
            merged["allOf"] = conditional
        unknown = sorted(set(merged) - KNOWN_KEYWORDS)
        if unknown:
            raise SchemaReferenceError(f"{where or 'schema'}: unsupported schema keyword(s) {', '.join(unknown)}")
        return merged, tuple(refs)

    def _target(self, reference: str, where: str) -> dict[str, Any]:
        if not reference.startswith("#"):
            raise SchemaReferenceError(f"{where}: only references into the same schema are supported: {reference!r}")
        node: Any = self.root
        for part in reference[1:].lstrip("/").split("/") if reference != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise SchemaReferenceError(f"{where}: $ref {reference!r} points nowhere")
            node = node[part]
        return dict(node)

    def members(self, node: dict[str, Any], where: str) -> tuple[list[dict[str, Any]], bool] | None:
        """The non-null members of an anyOf/oneOf/type list and whether null is allowed; None if not a union."""
        if "anyOf" in node or "oneOf" in node:
            raw = node.get("anyOf", []) + node.get("oneOf", [])
            resolved = [self.resolve(member, where)[0] for member in raw]
            return [m for m in resolved if m.get("type") != "null"], any(m.get("type") == "null" for m in resolved)
        if isinstance(node.get("type"), list):
            names = node["type"]
            rest = {key: value for key, value in node.items() if key != "type"}
            return [{**rest, "type": name} for name in names if name != "null"], "null" in names
        return None

    def discriminated(self, node: dict[str, Any], where: str) -> tuple[str, list[tuple[str, Any]]] | None:
        """(`type` key, [(value, member schema)]) of a union written as an enum plus one if/then per member."""
        branches = node.get("allOf")
        if not branches:
            return None
        found: list[tuple[str, Any]] = []
        key = None
        for branch in branches:
            condition, then = branch.get("if", {}), branch.get("then")
            absent = condition.get("not", {}).get("required", [])
            if then is not None and len(absent) == 1 and key in (None, absent[0]):
                key = absent[0]  # the member for a value without the key (autoencoder.model's encoder/decoder)
                found.append((f"(no {key})", then))
                continue
            conditions = condition.get("properties", {})
            if then is None or len(conditions) != 1:
                raise SchemaReferenceError(f"{where}: an if/then that is not one `key: const` per member")
            ((branch_key, constant),) = conditions.items()
            if key not in (None, branch_key) or "const" not in constant:
                raise SchemaReferenceError(f"{where}: if/then members must test one key for a const")
            key = branch_key
            found.append((constant["const"], then))
        assert key is not None
        return key, found

    def object_members(self, node: dict[str, Any], where: str) -> list[Variant]:
        """The members of a union value that are objects with fields (the ones that get a table)."""
        union = self.discriminated(node, where)
        if union is not None:
            key, branches = union
            variants = []
            for value, branch in branches:
                member, refs = self.resolve(branch, f"{where} ({key}: {value})")
                variants.append(Variant(_literal(value), member, refs))
            return variants
        members = self.members(node, where)
        if members is None:
            return []
        raw = node.get("anyOf", []) + node.get("oneOf", [])
        variants = []
        for index, member in enumerate(raw):
            resolved, refs = self.resolve(member, where)
            if "properties" in resolved:
                variants.append(Variant(resolved.get("title", f"member {index + 1}"), resolved, refs))
        return variants

    # --- cells -----------------------------------------------------------------------------------------

    def type_text(self, node: dict[str, Any], where: str) -> str:
        union = self.discriminated(node, where)
        if union is not None:
            key, branches = union
            return f"object by `{key}`: " + " | ".join(_code(_literal(value)) for value, _ in branches)
        if "const" in node:
            return f"{_code(_literal(node['const']))} only"
        if "enum" in node:
            return " | ".join(_code(_literal(value)) for value in node["enum"])
        members = self.members(node, where)
        if members is not None:
            non_null, nullable = members
            return " or ".join(_unique([self.type_text(member, where) for member in non_null]) + ["null"] * nullable)
        kind = node.get("type")
        if kind == "string":
            form = node.get("format")
            return "path" if form == "path" else f"string ({form})" if form else "string"
        if kind in SCALAR_NAMES:
            return SCALAR_NAMES[kind]
        if kind == "array" or "items" in node or "prefixItems" in node:
            if "prefixItems" in node:
                parts = [self.type_text(self.resolve(item, where)[0], where) for item in node["prefixItems"]]
                return "[" + ", ".join(parts) + "]"
            if "items" in node:
                return "list of " + _grouped(self.type_text(self.resolve(node["items"], where)[0], where))
            return "list"
        if isinstance(node.get("additionalProperties"), Mapping):
            value = self.resolve(node["additionalProperties"], where)[0]
            return "mapping of string to " + _grouped(self.type_text(value, where))
        if kind == "object" or "properties" in node:
            return "object"
        return "any"

    def constraints(self, node: dict[str, Any], where: str) -> str:
        if self.discriminated(node, where) is not None:
            return ""  # each member's table has its own
        members = self.members(node, where)
        if members is not None:
            found = [(self.type_text(m, where), self.constraints(m, where)) for m in members[0]]
            found = [(kind, text) for kind, text in found if text]
            if len(found) == 1:
                return found[0][1]
            return "; ".join(f"{kind}: {text}" for kind, text in found)
        parts = []
        bounds = _bounds(node, "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "x")
        if bounds:
            parts.append(bounds)
        if "multipleOf" in node:
            parts.append(f"multiple of {_number(node['multipleOf'])}")
        length = _bounds(node, "minLength", None, "maxLength", None, "length")
        if length:
            parts.append(length)
        if "pattern" in node:
            parts.append(f"matches {_code(node['pattern'])}")
        if node.get("minItems") is not None and node.get("minItems") == node.get("maxItems"):
            parts.append(f"exactly {node['minItems']} items")
        else:
            items = _bounds(node, "minItems", None, "maxItems", None, "items")
            if items:
                parts.append(items)
        if node.get("uniqueItems"):
            parts.append("items unique")
        if "prefixItems" in node:
            each = [self.constraints(self.resolve(item, where)[0], where) for item in node["prefixItems"]]
            if each and all(text == each[0] for text in each) and each[0]:
                parts.append(f"each {each[0]}")
            else:
                parts.extend(f"item {index + 1}: {text}" for index, text in enumerate(each) if text)
        elif "items" in node:
            each_item = self.constraints(self.resolve(node["items"], where)[0], where)
            if each_item:
                parts.append(f"each {each_item}")
        if isinstance(node.get("additionalProperties"), Mapping):
            each_value = self.constraints(self.resolve(node["additionalProperties"], where)[0], where)
            if each_value:
                parts.append(f"each value {each_value}")
        return "; ".join(parts)

    def default_text(self, node: dict[str, Any], required: bool, where: str) -> str:
        if required:
            return "**required**"
        if "default" not in node:
            return "—"
        default = node["default"]
        expanded = self._expandable_object(node, where)
        if expanded is not None and isinstance(default, dict):
            if _same(self.fill({}, expanded, where), self.fill(default, expanded, where)):
                return "its fields' defaults"
        return _code(json.dumps(default, ensure_ascii=False, separators=(", ", ": ")))

    def _expandable_object(self, node: dict[str, Any], where: str) -> dict[str, Any] | None:
        """The one object with fields that `node` holds (itself, or its only object member), else None."""
        if "properties" in node and self.discriminated(node, where) is None:
            return node
        members = self.members(node, where)
        if members is not None:
            objects = [member for member in members[0] if "properties" in member]
            if len(objects) == 1 and len(members[0]) == 1:
                return objects[0]
        return None

    def fill(self, value: Any, node: Any, where: str) -> Any:
        """`value` with every default the schema gives written in, at any depth (as validation would)."""
        node = self.resolve(node, where)[0]
        union = self.discriminated(node, where)
        if union is not None and isinstance(value, dict):
            key, branches = union
            for constant, branch in branches:
                if value.get(key) == constant:
                    return self.fill(value, branch, where)
            return value
        members = self.members(node, where)
        if members is not None:
            objects = [member for member in members[0] if "properties" in member or "allOf" in member]
            return self.fill(value, objects[0], where) if len(objects) == 1 and isinstance(value, dict) else value
        if "properties" in node and isinstance(value, dict):
            filled = dict(value)
            for name, prop in node["properties"].items():
                resolved = self.resolve(prop, where)[0]
                if name not in filled and "default" in resolved:
                    filled[name] = copy.deepcopy(resolved["default"])
                if name in filled:
                    filled[name] = self.fill(filled[name], resolved, where)
            return filled
        if "items" in node and isinstance(value, list):
            return [self.fill(item, node["items"], where) for item in value]
        return value

    def description(self, node: dict[str, Any], runtime_only: bool, where: str) -> str:
        text = node.get("description", "")
        if not text:
            expanded = self._expandable_object(node, where)
            text = expanded.get("description", "") if expanded is not None else ""
        text = " ".join(str(text).split())
        return f"*runtime-only*. {text}" if runtime_only and text else "*runtime-only*" if runtime_only else text

    # --- walking ---------------------------------------------------------------------------------------

    def field_row(
        self, path: str, prop: Any, required: bool, seen: tuple[str, ...], table: Table, runtime: bool
    ) -> None:
        """The row of the field at `path`, then the rows (and unions) of what it holds."""
        node, refs = self.resolve(prop, path)
        runtime = runtime or bool(node.get(RUNTIME_ONLY_KEY))
        recursive = bool(set(refs) & set(seen))
        kind = self.type_text(node, path) + (" (recursive: see above)" if recursive else "")
        table.rows.append(
            Row(
                path,
                kind,
                self.default_text(node, required, path),
                self.constraints(node, path),
                self.description(node, runtime, path),
            )
        )
        if not recursive:
            self.children(path, node, (*seen, *refs), table, runtime)

    def children(self, path: str, node: dict[str, Any], seen: tuple[str, ...], table: Table, runtime: bool) -> None:
        """The fields inside the value at `path`: an object's fields, a list's items, a mapping's values."""
        variants = self.object_members(node, path)
        union = self.discriminated(node, path)
        if union is not None or len(variants) > 1:
            description = " ".join(str(node.get("description", "")).split())
            key = union[0] if union is not None else None
            table.unions.append(Union(path, key, description, tuple(variants), runtime, seen))
            return
        members = self.members(node, path)
        if members is not None:
            for member in members[0]:
                self.children(path, member, seen, table, runtime)
            return
        if "properties" in node:
            self.fields(path, node, seen, table, runtime)
        elif "prefixItems" in node:
            for index, item in enumerate(node["prefixItems"]):
                self._inner(f"{path}[{index}]", item, seen, table, runtime)
        elif "items" in node:
            self._inner(f"{path}[]", node["items"], seen, table, runtime)
        elif isinstance(node.get("additionalProperties"), Mapping):
            self._inner(f"{path}.<key>", node["additionalProperties"], seen, table, runtime)

    def _inner(self, path: str, item: Any, seen: tuple[str, ...], table: Table, runtime: bool) -> None:
        resolved, refs = self.resolve(item, path)
        if not set(refs) & set(seen):
            self.children(path, resolved, (*seen, *refs), table, runtime)

    def fields(
        self,
        prefix: str,
        node: dict[str, Any],
        seen: tuple[str, ...],
        table: Table,
        runtime: bool,
        skip: str | None = None,
    ) -> None:
        required = set(node.get("required", []))
        for name, prop in node.get("properties", {}).items():
            if name != skip:
                path = f"{prefix}.{name}" if prefix else name
                self.field_row(path, prop, name in required, seen, table, runtime)

    # --- rendering -------------------------------------------------------------------------------------

    def document(self, title: str, intro: str) -> str:
        root, _ = self.resolve(self.root, "schema")
        if "properties" not in root:
            raise SchemaReferenceError("schema: the top level is not an object with properties")
        lines = [f"# {title}", ""]
        if intro:
            lines += [intro, ""]
        if root.get("description"):
            lines += [" ".join(str(root["description"]).split()), ""]
        lines += [LEGEND, "", "## Top level", ""]
        top, sections = Table(), []
        required = set(root.get("required", []))
        for name, prop in root["properties"].items():
            node, refs = self.resolve(prop, name)
            runtime = bool(node.get(RUNTIME_ONLY_KEY))
            section = Table()
            self.children(name, node, refs, section, runtime)
            description = self.description(node, runtime, name)
            if section.rows or section.unions:
                sections.append((name, node, section))
                link = f"[`{name}`](#{name})" if re.fullmatch(r"[a-z0-9_-]+", name) else f"`{name}`"
                description = f"{description} (fields: {link})" if description else f"fields: {link}"
            top.rows.append(
                Row(
                    name,
                    self.type_text(node, name),
                    self.default_text(node, name in required, name),
                    self.constraints(node, name),
                    description,
                )
            )
        lines += _table_lines(top.rows)
        for name, node, section in sections:
            lines += ["", f"## `{name}`", ""]
            lines += _paragraphs(
                node.get("description"), (self._expandable_object(node, name) or {}).get("description")
            )
            if section.rows:
                lines += _table_lines(section.rows)
            lines += self.union_lines(section.unions, 3)
        return "\n".join(lines) + "\n"

    def union_lines(self, unions: list[Union], level: int) -> list[str]:
        lines: list[str] = []
        for union in unions:
            by = f": one table per `{union.key}`" if union.key else ": one of these objects"
            lines += ["", f"{'#' * min(level, MAX_HEADING)} `{union.path}`{by}", ""]
            if union.description:
                lines += [union.description, ""]
            for variant in union.variants:
                label = f"`{union.key}: {variant.label}`" if union.key else f"`{variant.label}`"
                lines += [f"{'#' * min(level + 1, MAX_HEADING)} `{union.path}` with {label}", ""]
                lines += _paragraphs(variant.node.get("description"))
                table = Table()
                self.fields(
                    union.path, variant.node, (*union.seen, *variant.refs), table, union.runtime_only, union.key
                )
                if table.rows:
                    lines += _table_lines(table.rows)
                else:
                    lines += [f"No fields besides `{union.key}`." if union.key else "No fields."]
                lines += self.union_lines(table.unions, level + 2)
                lines.append("")
            lines.pop()
        return lines


def _table_lines(rows: list[Row]) -> list[str]:
    lines = ["| field | type | default | constraints | description |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (_code(row.path), row.type, row.default, row.constraints, row.description)
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return lines


def _paragraphs(*texts: Any) -> list[str]:
    """Each distinct, non-empty text as one paragraph (whitespace collapsed)."""
    lines: list[str] = []
    for text in _unique([" ".join(str(text).split()) for text in texts if text]):
        lines += [text, ""]
    return lines


def _cell(text: str) -> str:
    """A table cell: one line, pipes escaped (GitHub reads `\\|` as a pipe even inside code spans)."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _literal(value: Any) -> str:
    """An enum or const value as one writes it in YAML: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _number(value: Any) -> str:
    return json.dumps(value)


def _bounds(node: dict[str, Any], low: str, low_open: str | None, high: str, high_open: str | None, name: str) -> str:
    """`1 ≤ x < 2`, `x ≥ 0`, `length ≤ 128` from a node's (exclusive) minimum and maximum."""
    lower = (node[low], "≤") if low in node else (node[low_open], "<") if low_open and low_open in node else None
    upper = (node[high], "≤") if high in node else (node[high_open], "<") if high_open and high_open in node else None
    if lower and upper:
        return f"{_number(lower[0])} {lower[1]} {name} {upper[1]} {_number(upper[0])}"
    if lower:
        return f"{name} {'≥' if lower[1] == '≤' else '>'} {_number(lower[0])}"
    if upper:
        return f"{name} {upper[1]} {_number(upper[0])}"
    return ""


def _grouped(text: str) -> str:
    return f"({text})" if " or " in text or " | " in text or text.startswith("object by") else text


def _same(a: Any, b: Any) -> bool:
    """Equal, lists of scalars in any order: a factory's default is the validated value, whose lists a
    validator may have normalised (`data.extensions` sorted)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        if all(not isinstance(item, (dict, list)) for item in [*a, *b]):
            return sorted(map(json.dumps, a)) == sorted(map(json.dumps, b))
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
