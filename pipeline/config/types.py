"""Field types shared by sections: byte sizes, resolved paths."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationInfo, WithJsonSchema

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


MAX_BYTE_SIZE = 2**63 - 1  # past this a size is a typo; each field has its own, lower bound too


def parse_byte_size(value: Any) -> Any:
    """'2GB' -> 2_000_000_000, '512MiB' -> 536870912; ints pass through for pydantic to check.

    A size too large to hold ('1e400GB' as digits) is a field error, never an OverflowError: pydantic
    does not catch those, so one would hide every other problem of the file."""
    if not isinstance(value, str):
        return value
    match = _SIZE_PATTERN.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a byte size such as 500MB, 2GB or 1GiB, got {_shown(value)}")
    size = float(match.group(1)) * _SIZE_UNITS[unit]  # a long digit string reads as inf, never raises
    if not size <= MAX_BYTE_SIZE:
        raise ValueError(f"expected a byte size such as 500MB, 2GB or 1GiB, got {_shown(value)}: too large")
    return int(size)


def _shown(value: str, limit: int = 40) -> str:
    return repr(value) if len(value) <= limit else repr(value[: limit - 3]) + "..."


ByteSize = Annotated[
    int,
    BeforeValidator(parse_byte_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*([kKmMgGtT][iI]?)?[bB]?\s*$"},
            ],
            "description": "bytes, or a size with a unit: 500MB, 2GB, 1GiB",
        }
    ),
]


NAME_MAX = 255  # bytes in one path component, on every file system the pipeline runs on
PATH_MAX = 4095  # bytes in a whole path (Linux)


def _non_empty(value: Any) -> Any:
    """An empty string would be read as '.', the current directory: say it."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty (write '.' for the current directory)")
    return value


def _resolve_path(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are taken from the working directory the experiment is loaded in (see docs)."""
    try:
        path = Path(os.path.expandvars(str(path))).expanduser()
    except RuntimeError as error:  # ~user of no known user
        raise ValueError(f"cannot expand '~': {error}") from None
    base_dir = (info.context or {}).get("base_dir")
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    path = Path(os.path.normpath(path)) if path.is_absolute() else path
    _check_usable(path)
    return path


def _check_usable(path: Path) -> None:
    """What the operating system would refuse later, with an OSError deep inside a stage."""
    text = str(path)
    if "\0" in text:
        raise ValueError("must not contain a NUL character")
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            raise ValueError(f"has a component of {size} bytes ({_shown(part)}); file systems allow {NAME_MAX}")
    if len(os.fsencode(text)) > PATH_MAX:
        raise ValueError(f"is {len(os.fsencode(text))} bytes long; at most {PATH_MAX}")


ResolvedPath = Annotated[
    Path,
    BeforeValidator(_non_empty),
    AfterValidator(_resolve_path),
    WithJsonSchema({"type": "string", "format": "path", "minLength": 1}),
]
