"""Opening input files safely: only regular files are ever opened (a FIFO would block forever), every
failure has a specific reason, and native decoder chatter on stderr is kept out of the output."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HEAD_BYTES = 64

# Leading bytes of the containers libsndfile reads (what a file *is*, whatever its extension says).
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"RIFF", "WAV"),
    (0, b"RIFX", "WAV"),
    (0, b"RF64", "WAV"),
    (0, b"BW64", "WAV"),
    (0, b"riff\x2e\x91\xcf\x11", "W64"),
    (0, b"FORM", "AIFF"),
    (0, b"fLaC", "FLAC"),
    (0, b"OggS", "OGG"),
    (0, b"ID3", "MP3"),
    (0, b".snd", "AU"),
    (0, b"caff", "CAF"),
    (0, b"NIST_1A", "NIST"),
    (0, b"Creative Voice File", "VOC"),
    (0, b"wvpk", "WAVPACK"),
    (0, b"MAC ", "APE"),
    (0, b"2BIT", "AVR"),
    (0, b"#!rts", "RTS"),
    (0, b"\x64\xa3\x01\x00", "IRCAM"),
    (0, b"\x00\x01\xa3\x64", "IRCAM"),
    (0, b"\x64\xa3\x02\x00", "IRCAM"),
    (0, b"\x00\x02\xa3\x64", "IRCAM"),
    (0, b"\x64\xa3\x03\x00", "IRCAM"),
    (0, b"\x00\x03\xa3\x64", "IRCAM"),
    (0, b"\x64\xa3\x04\x00", "IRCAM"),
    (0, b"\x00\x04\xa3\x64", "IRCAM"),
    (8, b"ftyp", "MP4"),
)

_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class InputRejected(Exception):
    """The file cannot be used; the message is the reason recorded for it."""


def stat_regular_file(path: str | Path) -> os.stat_result:
    """`os.stat` of `path` (following symlinks) if it is a regular file, else InputRejected saying why."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise InputRejected(stat_failure_reason(path, error)) from None
    if not stat.S_ISREG(info.st_mode):
        raise InputRejected(f"not a regular file: {file_kind(info.st_mode)}; never opened")
    return info


def file_kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def stat_failure_reason(path: str | Path, error: OSError) -> str:
    """Why `stat` failed, in words: symlink loop, broken link, permission."""
    if error.errno == errno.ELOOP:
        return "symlink loop: the link leads back to itself (or through more than 40 links)"
    if error.errno == errno.ENOENT and os.path.islink(path):
        return f"broken symbolic link: its target {os.readlink(path)!r} does not exist"
    if error.errno == errno.EACCES:
        return "unreadable: permission denied (a directory on its path is not searchable)"
    return f"unreadable: {error.strerror or error}"


def read_head(path: str | Path, size: int = HEAD_BYTES) -> bytes:
    """The first `size` bytes of a regular file; never blocks (O_NONBLOCK, checked again after opening)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as error:
        if error.errno == errno.EACCES:
            raise InputRejected("unreadable: permission denied") from None
        raise InputRejected(stat_failure_reason(path, error)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputRejected(f"not a regular file: {file_kind(mode)}; never opened")
        return os.read(fd, size)
    except OSError as error:
        raise InputRejected(f"unreadable: {error.strerror or error}") from None
    finally:
        os.close(fd)


def read_bytes_limited(path: str | Path, limit: int) -> bytes:
    """A whole regular file of at most `limit` bytes (sidecars); InputRejected otherwise."""
    size = stat_regular_file(path).st_size
    if size > limit:
        raise InputRejected(f"too large: {size} bytes (the limit is {limit})")
    return read_head(path, limit + 1)


def sniff_format(head: bytes) -> str | None:
    """The container the leading bytes announce, or None for none libsndfile reads."""
    for offset, magic, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "MP3"  # MPEG audio frame sync
    return None


_DECODER_CHATTER = (b"Note:", b"Warning:", b"[src/libmpg123")


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Catch what native decoders write to file descriptor 2 while the block runs.

    libmpg123 (inside libsndfile) prints notes and warnings ("Illegal Audio-MPEG-Header", "Trying to
    resync", Xing size) straight to stderr; those are dropped, because a file that really is broken is
    rejected with its reason anyway. Any other line is passed through to stderr afterwards."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved is None:
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            _pass_through(capture.read())


def _pass_through(captured: bytes) -> None:
    kept = [line for line in captured.splitlines(keepends=True) if not line.lstrip().startswith(_DECODER_CHATTER)]
    if kept:
        with contextlib.suppress(OSError):
            os.write(2, b"".join(kept))
