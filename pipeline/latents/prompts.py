"""Pre-computed prompt embeddings: one HDF5 file per text conditioner beside the latent stores
(`<work_dir>/latents/prompts/<conditioner id>.h5`), so that training reads each item's frozen T5
output instead of running the encoder every step.

    /keys     (N,) S64      sha256 of each prompt's UTF-8 text, sorted: the row of a prompt
    /tokens   (N, L, D)     the encoder's last hidden state (float16 for a float16 encoder, else float32)
    /mask     (N, L) bool   its attention mask (False: padding)

Root attributes, the provenance (as the latent stores record theirs): format name and version, the
conditioner id, the encoder's identity (`encoder_identity`: its directory, the sha256 of every file
in it, max_length, dtype), width, package version, creation time. A file whose identity is not the
conditioner's is rebuilt, never used. Written to a temporary name and renamed when complete. Readable
with plain h5py."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import __version__
from pipeline.errors import UserFacingError
from pipeline.utils.atomic import atomic_path, sha256_file

FORMAT = "pipeline-prompt-embeddings"
VERSION = 1
# Files of a T5 directory that change what the encoder or the tokenizer computes.
ENCODER_FILES = (".json", ".safetensors", ".bin", ".model", ".txt")


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def encoder_identity(conditioner: Any) -> dict[str, Any]:
    """What a t5 conditioner's embeddings depend on (its config: model_dir, max_length, dtype)."""
    directory = Path(conditioner.model_dir).expanduser()
    files = sorted(path for path in directory.iterdir() if path.is_file() and path.suffix in ENCODER_FILES)
    return {
        "model_dir": str(directory.resolve()),
        "files_sha256": {path.name: sha256_file(path) for path in files},
        "max_length": conditioner.max_length,
        "dtype": conditioner.dtype,
    }


def read_identity(path: Path) -> dict[str, Any] | None:
    """The identity a store was written with, or None when there is no readable store of this format."""
    try:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("format") != FORMAT or int(handle.attrs.get("version", 0)) != VERSION:
                return None
            return json.loads(handle.attrs["encoder_identity"])
    except (OSError, KeyError, ValueError):
        return None


def stored_keys(path: Path) -> set[str]:
    with h5py.File(path, "r") as handle:
        return {key.decode("ascii") for key in handle["keys"][()]}


def write_prompt_store(
    path: Path,
    conditioner_id: str,
    identity: dict[str, Any],
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]],
    dtype: np.dtype,
) -> None:
    """Write {text key: (tokens (L, D), mask (L,))} atomically, rows in key order."""
    keys = sorted(embeddings)
    tokens = np.stack([embeddings[key][0] for key in keys]).astype(dtype)
    mask = np.stack([embeddings[key][1] for key in keys]).astype(bool)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as handle:
        handle.create_dataset("keys", data=np.asarray(keys, dtype="S64"))
        handle.create_dataset("tokens", data=tokens, chunks=(1, *tokens.shape[1:]), fletcher32=True)
        handle.create_dataset("mask", data=mask, fletcher32=True)
        handle.attrs.update(
            {
                "format": FORMAT,
                "version": VERSION,
                "conditioner_id": conditioner_id,
                "encoder_identity": json.dumps(identity, sort_keys=True),
                "width": int(tokens.shape[-1]),
                "max_length": int(tokens.shape[1]),
                "count": len(keys),
                "package_version": __version__,
                "h5py_version": h5py.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )


def read_all(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every row of a store by text key (to extend it with new prompts)."""
    with h5py.File(path, "r") as handle:
        keys = [key.decode("ascii") for key in handle["keys"][()]]
        tokens, mask = handle["tokens"][()], handle["mask"][()]
    return {key: (tokens[row], mask[row]) for row, key in enumerate(keys)}


class PromptLookup:
    """Rows of a prompt store by text, for DataLoader workers: picklable, opens the file on first use
    (in the worker, never before the fork). A None prompt gives zeros with an all-False mask (the null)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle: h5py.File | None = None
        self._rows: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_handle": None, "_rows": {}}

    def _open(self) -> h5py.File:
        if self._handle is None:
            self._handle = h5py.File(self.path, "r")
            self._rows = {key.decode("ascii"): row for row, key in enumerate(self._handle["keys"][()])}
        return self._handle

    def __call__(self, texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (B, L, D) float32, mask (B, L) bool) of `texts`."""
        handle = self._open()
        length, width = handle["tokens"].shape[1:]
        tokens = np.zeros((len(texts), length, width), dtype=np.float32)
        mask = np.zeros((len(texts), length), dtype=bool)
        for number, text in enumerate(texts):
            if text is None:
                continue
            row = self._rows.get(text_key(text))
            if row is None:
                raise UserFacingError(
                    f"{self.path}: no embedding of the prompt {text[:60]!r}; the store is older than the index "
                    "(start the training again to extend it)"
                )
            tokens[number] = handle["tokens"][row]
            mask[number] = handle["mask"][row]
        return tokens, mask

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
