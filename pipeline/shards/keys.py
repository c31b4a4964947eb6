"""Sample keys: stable per source item and segment, safe in any tar reader, unique."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_READABLE_CHARS = 80


def item_key(relpath: str, segment: int) -> str:
    """`dir/My Song.v2.wav`, segment 3 -> `dir_My_Song_v2_wav-<10 hex of the exact path>-s0003`.

    No dots (WebDataset splits a member name at the first dot), only [A-Za-z0-9_-]. The readable part
    is cut to 80 characters; the digest of the exact relative path keeps keys unique when two paths
    sanitise alike."""
    readable = _UNSAFE.sub("_", relpath).strip("_")[:MAX_READABLE_CHARS].strip("_") or "item"
    digest = hashlib.sha1(relpath.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{readable}-{digest}-s{segment:04d}"
