"""Field types shared by sections: byte sizes, resolved paths."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationInfo, WithJsonSchema

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_SIZE_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_byte_size(value: Any) -> Any:
    """'2GB' -> 2_000_000_000, '512MiB' -> 536870912; ints pass through for pydantic to check."""
    if not isinstance(value, str):
        return value
    match = _SIZE_PATTERN.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a byte size such as 500MB, 2GB or 1GiB, got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


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


def _resolve_path(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are taken from the working directory the experiment is loaded in (see docs)."""
    path = Path(os.path.expandvars(str(path))).expanduser()
    base_dir = (info.context or {}).get("base_dir")
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return Path(os.path.normpath(path)) if path.is_absolute() else path


ResolvedPath = Annotated[Path, AfterValidator(_resolve_path)]
