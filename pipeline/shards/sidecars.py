"""Metadata sidecars beside an audio file: `<stem>.json` (fields merged into the sample JSON) and
`<stem>.txt` (its text as `prompt`), the way stable-audio-tools reads captions.

A sidecar is used only when it is a regular file of at most 16 MiB of UTF-8 that can be written back as
strict JSON: no NaN or Infinity (Python's json.dump writes them), no numbers that overflow, no lone
surrogates, nesting at most 100 levels deep. Anything else is a metadata error for its items, never a
crash of the shard stage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.audio.files import InputRejected, read_bytes_limited
from pipeline.utils.atomic import canonical_json

SIDECAR_SUFFIXES = (".json", ".txt")
MAX_SIDECAR_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 100
_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def sidecar_kind(relpath: str) -> str | None:
    """ "json" / "txt" for a sidecar file name (extension compared case-insensitively), else None."""
    suffix = PurePosixPath(relpath).suffix.lower()
    return suffix.lstrip(".") if suffix in SIDECAR_SUFFIXES else None


def check_sidecar(audio_dir: Path, relpath: str, kind: str) -> dict[str, Any]:
    """The plan's entry for a sidecar: `relpath` and `sha256`, plus `error` when it cannot be used."""
    entry: dict[str, Any] = {"relpath": relpath}
    try:
        data = read_bytes_limited(audio_dir / relpath, MAX_SIDECAR_BYTES)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        parse_sidecar(data, kind)
    except InputRejected as rejection:
        entry["error"] = str(rejection)
    return entry


def parse_sidecar(data: bytes, kind: str) -> dict[str, Any]:
    """The metadata fields a sidecar's bytes contribute; InputRejected with the reason otherwise."""
    text = _utf8(data)
    if kind == "json":
        return parse_json_object(text)
    return {"prompt": text.replace("\r\n", "\n").replace("\r", "\n").strip()}  # as text-mode reading gave


def load_sidecars(audio_dir: Path, sidecars: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Metadata from a plan file entry's sidecars (json fields, then txt as `prompt`) and the problems
    as (sidecar relpath, reason); one the plan already found unusable is not read again."""
    metadata: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for kind in ("json", "txt"):
        entry = sidecars.get(kind)
        if entry is None:
            continue
        if "error" in entry:
            problems.append((entry["relpath"], entry["error"]))
            continue
        try:
            metadata.update(parse_sidecar(read_bytes_limited(audio_dir / entry["relpath"], MAX_SIDECAR_BYTES), kind))
        except InputRejected as rejection:
            problems.append((entry["relpath"], str(rejection)))
    return metadata, problems


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputRejected(f"not UTF-8 text ({error.reason} at byte {error.start})") from None


def parse_json_object(text: str) -> dict[str, Any]:
    """Strict JSON object text -> dict, or InputRejected saying what is wrong."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise InputRejected("invalid JSON: nested too deeply to parse") from None
    except ValueError as error:
        raise InputRejected(f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InputRejected(f"expected a JSON object, got {_JSON_TYPE_NAMES.get(type(value), 'null')}")
    if json_depth(value) > MAX_JSON_DEPTH:
        raise InputRejected(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    _check_writable(value)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (strict JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is out of range (it would be infinity)")
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of objects/arrays (a flat object is 1), computed without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _check_writable(value: dict[str, Any]) -> None:
    """What the shard stage writes is strict UTF-8 JSON: catch here whatever would fail there."""
    try:
        canonical_json(value).encode("utf-8")
    except UnicodeEncodeError as error:
        bad = error.object[error.start : error.end]
        raise InputRejected(f"a string holds {bad!r}, which is not valid Unicode (a lone surrogate)") from None
    except (ValueError, RecursionError) as error:
        raise InputRejected(f"cannot be written as strict JSON: {error}") from None
