"""Files that appear at their final path only when complete: write to a temp name, fsync, rename.

A killed job leaves at most a `.<name>.tmp-*` file beside the target, never a file that looks whole."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserFacingError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is fsynced and renamed onto `target`."""
    target = Path(target)
    handle, temp_name = _create_temp(target)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, target)
        _fsync_directory(target.parent)
    finally:
        temp.unlink(missing_ok=True)


def _create_temp(target: Path) -> tuple[int, str]:
    """A temp file beside `target`; an unwritable directory is a user error naming it, not a traceback."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        directory = error.filename or target.parent
        raise UserFacingError(f"cannot create directory {directory}: {error.strerror or error}") from None
    try:
        return tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    except OSError as error:
        raise UserFacingError(f"cannot write {target.name} in {target.parent}: {error.strerror or error}") from None


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as temp:
        temp.write_bytes(data)


def canonical_json(data: Any) -> str:
    """Deterministic JSON text: sorted keys, UTF-8, no NaN, trailing newline."""
    return json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write_json_atomic(target: str | Path, data: Any) -> None:
    write_bytes_atomic(target, canonical_json(data).encode("utf-8"))


def write_json_if_changed(target: str | Path, data: Any) -> bool:
    """Write only when the content differs, so an unchanged file keeps its mtime (Snakemake reruns on it)."""
    text = canonical_json(data).encode("utf-8")
    target = Path(target)
    with contextlib.suppress(OSError):  # unreadable or missing: write it (an unwritable directory is reported there)
        if target.is_file() and target.read_bytes() == text:
            return False
    write_bytes_atomic(target, text)
    return True


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_temps(directory: str | Path, name: str) -> None:
    """Delete temp files a killed writer of `name` left behind."""
    for stale in Path(directory).glob(f".{name}.tmp-*"):
        stale.unlink(missing_ok=True)
