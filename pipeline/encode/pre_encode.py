"""`pipeline pre-encode EXP --shard N`: a shard tar -> `<work_dir>/latents/shard-NNNNNN.h5`.

Items are decoded in a background DataLoader worker, grouped by length into batches (padding the
shorter ones, whose last frames are then re-encoded alone so padding never leaks into stored
latents), encoded under `torch.inference_mode()` (autocast on GPU) and appended to the store in tar
order. Items longer than `window_seconds` are encoded alone, in overlapping windows. The store is
skipped when its stage hash, source tar hash and weights hash match; otherwise rebuilt atomically."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pipeline import __version__
from pipeline.autoencoder import current_weights_sha256, experiment_autoencoder
from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.config.sections import PreEncodeConfig
from pipeline.errors import UserFacingError
from pipeline.latents.store import FORMAT, VERSION, ItemRecord, StoreWriter, autoencoder_attributes, read_attributes
from pipeline.latents.verify import verify
from pipeline.layout import layout_of
from pipeline.models.autoencoder.model import Autoencoder, frames_for
from pipeline.shard_jobs import run_job
from pipeline.shards.plan import load_manifest, load_plan
from pipeline.shards.reader import ShardItem, read_items
from pipeline.shards.records import Manifest, Plan
from pipeline.utils.atomic import remove_stale_temps
from pipeline.utils.devices import pick_device

LOOKAHEAD_BATCHES = 8  # items are length-sorted within blocks of this many batches (bounded memory)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class EncodeResult:
    index: int
    items: int
    frames: int
    seconds: float
    skipped: bool
    wall_seconds: float = 0.0

    def line(self) -> str:
        state = "up to date" if self.skipped else f"written in {self.wall_seconds:.1f} s"
        return f"pre-encode shard {self.index}: {self.items} items, {self.frames} frames, {self.seconds:.1f} s of audio ({state})"


@dataclass(frozen=True)
class Encoded:
    record: ItemRecord
    values: np.ndarray  # (frames, latent_dim) float32, or (frames, n_codebooks) integer codes
    scale: np.ndarray | None = None


def expected_provenance(experiment: Experiment, index: int, manifest: Manifest | None = None) -> dict[str, str]:
    """What a store must record to count as up to date."""
    manifest = manifest or load_manifest(experiment, index)
    return {
        "stage_hash": stage_hash(experiment, "pre_encode"),
        "source_shard": manifest.tar,
        "source_shard_sha256": manifest.tar_sha256,
        "autoencoder_weights_sha256": current_weights_sha256(experiment),
    }


def is_up_to_date(store: Path, expected: dict[str, str]) -> bool:
    return _current_attributes(store, expected) is not None


def _current_attributes(store: Path, expected: dict[str, str]) -> dict[str, Any] | None:
    """The store's attributes when it is complete, matches `expected` and passes `verify`, else None."""
    if not store.is_file():
        return None
    try:
        attributes = read_attributes(store)
    except OSError:
        return None
    matches = attributes.get("format") == FORMAT and attributes.get("format_version") == VERSION
    if not (matches and all(attributes.get(key) == value for key, value in expected.items())):
        return None
    problems = verify(store, check_source=False)  # the source tar's hash is compared above, via the manifest
    if problems:
        print(f"pre-encode: {store} fails verification ({problems[0]}); rebuilding it", file=sys.stderr)
        return None
    return attributes


def pre_encode_shard(
    experiment: Experiment,
    index: int,
    force: bool = False,
    progress: bool = False,
    model: Autoencoder | Callable[[], Autoencoder] | None = None,
    plan: Plan | None = None,
) -> EncodeResult:
    """Encode shard `index` into its store unless an up-to-date store exists. `model`: the frozen
    autoencoder, or a function returning it (called only when the shard needs encoding).
    `plan`: the plan, when the caller has loaded it already (a large plan takes a while to read)."""
    (plan or load_plan(experiment)).shard(index)  # a shard the plan does not have is a user error naming its range
    manifest = load_manifest(experiment, index)
    expected = expected_provenance(experiment, index, manifest)
    layout = layout_of(experiment)
    store = layout.store(index)
    attributes = None if force else _current_attributes(store, expected)
    if attributes is not None:
        return EncodeResult(index, attributes["items"], attributes["frames"], attributes["seconds"], skipped=True)
    store.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(store.parent, store.name)
    started = time.monotonic()
    config = experiment.pre_encode
    device = pick_device(config.device)
    model = _frozen_model(experiment, model).to(device)
    attributes = _store_attributes(model, expected, config, device)
    width = model.n_codebooks if model.is_discrete else model.latent_dim
    with_scale = config.store_scale and model.config.bottleneck.type == "vae"
    compression = None if config.compression == "none" else config.compression
    with StoreWriter(store, attributes, width, model.is_discrete, with_scale, compression) as writer:
        workers = config.num_workers if config.num_workers is not None else int(device.type == "cuda")
        items = background_items(layout.shard_tar(index), workers)
        for encoded in _progress(encode_items(items, model, config, device), len(manifest.items), progress, index):
            writer.append(encoded.record, encoded.values, encoded.scale)
    return EncodeResult(
        index,
        len(writer.items),
        writer.frames,
        writer.frames / model.latent_rate,
        skipped=False,
        wall_seconds=time.monotonic() - started,
    )


def _frozen_model(experiment: Experiment, model: Autoencoder | Callable[[], Autoencoder] | None) -> Autoencoder:
    if model is None:
        return experiment_autoencoder(experiment)
    return model if isinstance(model, Autoencoder) else model()


def pre_encode_all(
    experiment: Experiment, workers: int = 1, force: bool = False, progress: bool = True
) -> list[EncodeResult]:
    """Every planned shard; `workers` > 1 runs that many processes (each loads the model once)."""
    plan = load_plan(experiment)
    return pre_encode_shards(experiment, plan, plan.indices, workers=workers, force=force, progress=progress)


def pre_encode_shards(
    experiment: Experiment,
    plan: Plan,
    indices: Sequence[int],
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> list[EncodeResult]:
    """The shards `indices` of `plan`, one result each, in order; the model is loaded once per process,
    and only when a shard needs encoding."""
    if workers <= 1:
        model = functools.cache(lambda: experiment_autoencoder(experiment))  # loaded once, when first needed
        return [
            pre_encode_shard(experiment, index, force=force, progress=progress, model=model, plan=plan)
            for index in indices
        ]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_limit_threads, initargs=(workers,)) as pool:
        futures = [pool.submit(pre_encode_shard, experiment, index, force) for index in indices]
        return [future.result() for future in futures]


def pre_encode_job(
    experiment: Experiment, job: int, workers: int = 1, progress: bool = True
) -> tuple[Path, list[EncodeResult]]:
    """Job `job` of the pre_encode stage (pipeline.shard_jobs): its shards, then its record."""
    encode = functools.partial(pre_encode_shards, experiment, workers=workers, progress=progress)
    return run_job(experiment, "pre_encode", job, encode)


def _limit_threads(workers: int) -> None:
    import os

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _store_attributes(
    model: Autoencoder, provenance: dict[str, str], config: PreEncodeConfig, device: torch.device
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": VERSION,
        **autoencoder_attributes(model, provenance["autoencoder_weights_sha256"]),
        **provenance,
        "dtype": "int" if model.is_discrete else "float16",
        "encode_device": device.type,
        "encode_autocast": config.autocast if device.type == "cuda" else "none",
        "package_version": __version__,
        "torch_version": torch.__version__,
        "h5py_version": h5py.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _progress(encoded: Iterator[Encoded], total: int, enabled: bool, index: int) -> Iterator[Encoded]:
    if not enabled:
        yield from encoded
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=f"pre-encode shard {index}", unit="item", dynamic_ncols=True) as bar:
        for item in encoded:
            bar.update(1)
            yield item


# --- reading ------------------------------------------------------------------------------------
class _TarItems(torch.utils.data.IterableDataset):
    def __init__(self, tar: Path):
        super().__init__()
        self.tar = tar

    def __iter__(self) -> Iterator[ShardItem]:
        return read_items([self.tar])


def _unbatched(item: ShardItem) -> ShardItem:
    return item


def background_items(tar: Path, num_workers: int) -> Iterator[ShardItem]:
    """The tar's items in order, decoded by a DataLoader worker process (inline with 0 workers)."""
    if not tar.is_file():
        raise UserFacingError(f"shard tar not found: {tar}")
    workers = min(num_workers, 1)  # one tar is one ordered stream
    loader = torch.utils.data.DataLoader(
        _TarItems(tar),
        batch_size=None,
        num_workers=workers,
        collate_fn=_unbatched,
        prefetch_factor=LOOKAHEAD_BATCHES * 4 if workers else None,
    )
    return iter(loader)


# --- encoding -----------------------------------------------------------------------------------
def encode_items(
    items: Iterator[ShardItem], model: Autoencoder, config: PreEncodeConfig, device: torch.device
) -> Iterator[Encoded]:
    """Encode `items`, yielding results in input order."""
    block: list[ShardItem] = []
    for item in items:
        block.append(item)
        if len(block) >= config.batch_size * LOOKAHEAD_BATCHES:
            yield from _encode_block(block, model, config, device)
            block = []
    if block:
        yield from _encode_block(block, model, config, device)


def _encode_block(
    block: Sequence[ShardItem], model: Autoencoder, config: PreEncodeConfig, device: torch.device
) -> Iterator[Encoded]:
    window_samples = round(config.window_seconds * model.sample_rate)
    results: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    short = sorted(
        (i for i, item in enumerate(block) if item.audio.shape[1] <= window_samples),
        key=lambda i: block[i].audio.shape[1],
    )
    for start in range(0, len(short), config.batch_size):
        batch = short[start : start + config.batch_size]
        results.update(zip(batch, _encode_batch([block[i].audio for i in batch], model, config, device)))
    for i, item in enumerate(block):
        if i not in results:  # long: alone, in windows
            window_frames = max(1, window_samples // model.downsampling_ratio)
            results[i] = _encode_batch([item.audio], model, config, device, chunk_frames=window_frames)[0]
    for i, item in enumerate(block):
        values, scale = results[i]
        yield Encoded(_record(item, len(values)), values, scale)


def _record(item: ShardItem, frames: int) -> ItemRecord:
    return ItemRecord(
        key=item.key,
        length=frames,
        seconds_start=float(item.metadata.get("seconds_start", 0.0)),
        seconds_total=float(item.metadata.get("seconds_total", 0.0)),
        metadata_json=json.dumps(item.metadata, sort_keys=True, ensure_ascii=False),
    )


def _encode_batch(
    audios: Sequence[np.ndarray],
    model: Autoencoder,
    config: PreEncodeConfig,
    device: torch.device,
    chunk_frames: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Encode (channels, samples) arrays together, zero-padded to the longest; each result is cut to
    its own frames, and the last frames of padded items are re-encoded without the padding."""
    ratio = model.downsampling_ratio
    frames = [frames_for(audio.shape[1], ratio) for audio in audios]
    longest = max(frames) * ratio
    batch = torch.zeros(len(audios), audios[0].shape[0], longest)
    for row, audio in enumerate(audios):
        batch[row, :, : audio.shape[1]] = torch.from_numpy(audio)
    values, scale = _encode(model, batch, config, device, chunk_frames)
    results = []
    for row, (audio, count) in enumerate(zip(audios, frames)):
        item_values, item_scale = values[row, :count], (scale[row, :count] if scale is not None else None)
        if count * ratio < longest:
            item_values, item_scale = _reencode_tail(audio, count, item_values, item_scale, model, config, device)
        results.append((item_values, item_scale))
    return results


def _reencode_tail(
    audio: np.ndarray,
    count: int,
    values: np.ndarray,
    scale: np.ndarray | None,
    model: Autoencoder,
    config: PreEncodeConfig,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Frames near the end of a padded item saw the padding: recompute the last `overlap_frames`
    from the item's own tail (with `overlap_frames` of context before them)."""
    context = config.overlap_frames
    if context == 0:
        return values, scale
    first = max(0, count - 2 * context)
    tail = torch.from_numpy(audio[None, :, first * model.downsampling_ratio :])
    tail_values, tail_scale = _encode(model, tail, config, device, None)
    keep = min(count, max(context, 1)) if first > 0 else count
    values = values.copy()
    values[count - keep :] = tail_values[0, -keep:]
    if scale is not None and tail_scale is not None:
        scale = scale.copy()
        scale[count - keep :] = tail_scale[0, -keep:]
    return values, scale


def _encode(
    model: Autoencoder, audio: torch.Tensor, config: PreEncodeConfig, device: torch.device, chunk_frames: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (batch, frames, width) values (float32 latents or int64 codes) and the optional scale."""
    want_scale = config.store_scale and model.config.bottleneck.type == "vae"
    autocast = (
        torch.autocast("cuda", dtype=AUTOCAST_DTYPES[config.autocast])
        if device.type == "cuda" and config.autocast != "none"
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        encoded = model.encode(
            audio.to(device), return_scale=want_scale, chunk_frames=chunk_frames, overlap_frames=config.overlap_frames
        )
    latents, scale = encoded if want_scale else (encoded, None)

    def to_numpy(tensor: torch.Tensor) -> np.ndarray:
        tensor = tensor.transpose(1, 2)
        return (tensor if model.is_discrete else tensor.float()).cpu().numpy()

    return to_numpy(latents), (to_numpy(scale) if scale is not None else None)
