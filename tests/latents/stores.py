"""Small real stores and indexes for the dataset and provenance tests, written with StoreWriter (no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import __version__
from pipeline.latents.index import write_index_file
from pipeline.latents.store import FORMAT, VERSION, ItemRecord, StoreWriter

LATENT_DIM = 4
LATENT_RATE = 44100 / 2048
STAGE_HASH = "0123456789abcdef"
WEIGHTS_SHA256 = "f" * 64


def store_attributes(discrete: bool = False, **changes: Any) -> dict[str, Any]:
    width = 2 if discrete else LATENT_DIM
    attributes = {
        "format": FORMAT,
        "format_version": VERSION,
        "sample_rate": 44100,
        "latent_rate": LATENT_RATE,
        "downsampling_ratio": 2048,
        "latent_dim": LATENT_DIM,
        "is_discrete": discrete,
        "n_codebooks": width if discrete else 0,
        "codebook_size": 16 if discrete else 0,
        "dtype": "int" if discrete else "float16",
        "autoencoder_config": json.dumps({"bottleneck": {"type": "rvq" if discrete else "vae"}}, sort_keys=True),
        "autoencoder_weights_sha256": WEIGHTS_SHA256,
        "stage_hash": STAGE_HASH,
        "package_version": __version__,
        "torch_version": "test",
        "h5py_version": h5py.__version__,
        "created": "2026-01-01T00:00:00Z",
        "source_shard": "shard.tar",
        "source_shard_sha256": "0" * 64,
    }
    return {**attributes, **changes}


def write_test_store(
    path: Path,
    lengths: list[int] | tuple[int, ...],
    *,
    seed: int = 0,
    discrete: bool = False,
    with_scale: bool = True,
    metadata: list[dict[str, Any]] | None = None,
    seconds_start: list[float] | None = None,
    attributes: dict[str, Any] | None = None,
    loc: float = 0.0,
) -> Path:
    """A store of random items: keys `<stem>/item-NNN`, seconds_start 1.5 * n unless given, seconds_total 100."""
    full = store_attributes(discrete, **(attributes or {}))
    width = full["n_codebooks"] if discrete else full["latent_dim"]
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with StoreWriter(path, full, width, discrete, with_scale=with_scale and not discrete) as writer:
        for number, frames in enumerate(lengths):
            record = ItemRecord(
                f"{path.stem}/item-{number:03d}",
                frames,
                1.5 * number if seconds_start is None else seconds_start[number],
                100.0,
                json.dumps(metadata[number] if metadata else {"title": f"{path.stem} {number}"}),
            )
            if discrete:
                values = rng.integers(0, full["codebook_size"], (frames, width))
                writer.append(record, values)
            else:
                values = loc + rng.normal(size=(frames, width)) * np.linspace(0.5, 2.0, width)
                scale = np.abs(rng.normal(size=(frames, width))) + 0.1 if with_scale else None
                writer.append(record, values, scale)
    return path


def write_test_index(latents_dir: Path, stores: list[Path], stage: str = STAGE_HASH) -> Path:
    """`<latents_dir>/index.h5` over `stores` (real virtual datasets), without the weights check."""
    path = latents_dir / "index.h5"
    write_index_file(path, stores, stage)
    return path
