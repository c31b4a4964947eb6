"""`pipeline inspect` / `pipeline verify` on tiny stores written directly with StoreWriter (no model)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline import __version__
from pipeline.errors import UserFacingError
from pipeline.latents.inspect import describe, describe_item, plot, render
from pipeline.latents.store import FORMAT, VERSION, ItemRecord, StoreWriter
from pipeline.latents.verify import verify
from pipeline.utils.atomic import sha256_file
from tests.conftest import REPO_ROOT

LATENT_DIM = 4
LENGTHS = (7, 3, 12, 5, 9, 1, 4)  # frames per item
STAGE_HASH = "0123456789abcdef"


def write_store(
    work_dir: Path, index: int = 0, discrete: bool = False, lengths=LENGTHS, seed: int | None = None
) -> Path:
    """`<work_dir>/latents/shard-NNNNNN.h5` from random values, with a fake source tar in `<work_dir>/shards/`."""
    name = f"shard-{index:06d}"
    tar = work_dir / "shards" / f"{name}.tar"
    tar.parent.mkdir(parents=True, exist_ok=True)
    tar.write_bytes(f"fake tar {index}\n".encode() * 64)
    width = 2 if discrete else LATENT_DIM
    attributes = {
        "format": FORMAT,
        "format_version": VERSION,
        "sample_rate": 44100,
        "latent_rate": 44100 / 2048,
        "downsampling_ratio": 2048,
        "latent_dim": LATENT_DIM,
        "is_discrete": discrete,
        "n_codebooks": width if discrete else 0,
        "codebook_size": 16 if discrete else 0,
        "dtype": "int" if discrete else "float16",
        "autoencoder_config": json.dumps({"bottleneck": {"type": "rvq" if discrete else "vae"}, "latent_dim": 4}),
        "autoencoder_weights_sha256": "f" * 64,
        "stage_hash": STAGE_HASH,
        "package_version": __version__,
        "torch_version": "test",
        "h5py_version": h5py.__version__,
        "created": "2026-01-01T00:00:00Z",
        "source_shard": tar.name,
        "source_shard_sha256": sha256_file(tar),
    }
    rng = np.random.default_rng(index if seed is None else seed)
    path = work_dir / "latents" / f"{name}.h5"
    with StoreWriter(path, attributes, width, discrete, with_scale=not discrete) as writer:
        for number, frames in enumerate(lengths):
            record = ItemRecord(
                f"{name}/track-{number:02d}",
                frames,
                2.0 * number,
                60.0,
                json.dumps({"title": f"track {number}", "genre": "test"}),
            )
            values = rng.integers(0, 16, (frames, width)) if discrete else rng.normal(size=(frames, width))
            writer.append(record, values, None if discrete else np.abs(rng.normal(size=(frames, width))))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT
    )


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write_store(tmp_path)


# --- inspect ---------------------------------------------------------------------------------------
def test_describe_summarises_the_store(store: Path):
    description = describe(store)
    assert description["kind"] == "shard store"
    assert (description["items"], description["frames"]) == (len(LENGTHS), sum(LENGTHS))
    assert description["hours"] == pytest.approx(sum(LENGTHS) / (44100 / 2048) / 3600)
    assert description["latents"]["shape"] == [sum(LENGTHS), LATENT_DIM]
    assert description["latents"]["with_scale"] is True
    assert description["provenance"]["autoencoder_config"]["bottleneck"]["type"] == "vae"
    assert len(description["stats"]["mean"]) == LATENT_DIM
    assert [item["frames"] for item in description["largest"]] == [12, 9, 7, 5, 4]
    assert [item["frames"] for item in description["smallest"]] == [1, 3, 4, 5, 7]
    json.dumps(description)  # plain values only


def test_describe_item_and_unknown_key(store: Path):
    item = describe_item(store, "shard-000000/track-02")
    assert (item["row"], item["offset"], item["frames"]) == (2, 10, 12)
    assert item["metadata"]["title"] == "track 2"
    assert len(item["channels"]["max"]) == LATENT_DIM
    assert "track 2" in render(item)
    with pytest.raises(UserFacingError, match=r"'shard-000000/track-2'.*did you mean 'shard-000000/track-02'"):
        describe_item(store, "shard-000000/track-2")


def test_discrete_store_item_has_code_summary(tmp_path: Path):
    path = write_store(tmp_path, discrete=True)
    item = describe_item(path, "shard-000000/track-00")
    assert len(item["codes"]["codebooks"]) == 2 and item["codes"]["codebook_size"] == 16
    assert describe(path)["stats"] == {"frames": sum(LENGTHS)}
    assert "codebook" in render(item) and "none" in render(describe(path))
    assert verify(path) == []
    with h5py.File(path, "r+") as file:
        file["codes"][3, 1] = 16
    assert any("outside [0, 16)" in problem for problem in verify(path))


def test_not_a_store_is_a_user_facing_error(tmp_path: Path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(UserFacingError, match="notes.h5"):
        describe(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as file:
        file.attrs["format"] = "something-else"
    with pytest.raises(UserFacingError, match="other.h5.*not a latent store"):
        describe(other)
    assert verify(other) and "not a latent store" in verify(other)[0]


def test_cli_inspect_text_json_item_and_plot(store: Path, tmp_path: Path):
    png = tmp_path / "plots" / "first.png"
    text = run_cli("inspect", store, "--plot", png)  # no --item: the first item is drawn
    assert text.returncode == 0, text.stderr
    assert "items:" in text.stdout and "largest items:" in text.stdout and "shard-000000/track-02" in text.stdout
    assert "per-channel statistics" in text.stdout and "bottleneck.type:" in text.stdout
    assert str(png) in text.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    as_json = run_cli("inspect", store, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["frames"] == sum(LENGTHS)

    item = run_cli("inspect", store, "--item", "shard-000000/track-04")
    assert item.returncode == 0, item.stderr
    assert "item:" in item.stdout and "track 4" in item.stdout

    unknown = run_cli("inspect", store, "--item", "track-04", "--json")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "'track-04'" in unknown.stderr and "did you mean 'shard-000000/track-04'" in unknown.stderr


def test_plot_named_item_and_unknown_key(store: Path, tmp_path: Path):
    out = plot(store, tmp_path / "item.png", key="shard-000000/track-05")  # a one-frame item
    assert out.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(UserFacingError, match="no item 'nope'"):
        plot(store, tmp_path / "never.png", key="nope")
    assert not (tmp_path / "never.png").exists()


# --- verify ----------------------------------------------------------------------------------------
def test_verify_passes_on_a_good_store(store: Path):
    assert verify(store) == []
    result = run_cli("verify", store)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"ok: {store} ({len(LENGTHS)} items, {sum(LENGTHS)} frames)"


def test_verify_truncated_file(store: Path, tmp_path: Path):
    cut = tmp_path / "cut.h5"
    data = store.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    problems = verify(cut)
    assert len(problems) == 1 and "cut.h5" in problems[0] and "cannot be opened" in problems[0]
    result = run_cli("verify", cut)
    assert result.returncode == 1 and "cannot be opened" in result.stdout and "Traceback" not in result.stderr


def test_verify_altered_offsets(store: Path):
    with h5py.File(store, "r+") as file:
        offsets = file["index/offset"][()]
        offsets[3] += 1
        file["index/offset"][...] = offsets
    problems = verify(store)
    assert len(problems) == 2 and "not contiguous" in problems[0] and "item 3" in problems[0]
    assert "/index/offset: content differs from its recorded sha256" in problems[1]


def test_verify_nan_in_latents(store: Path):
    with h5py.File(store, "r+") as file:
        file["latents"][11, 2] = np.nan
    problems = verify(store)
    assert problems[0] == "/latents: 1 NaN/Inf value(s), first at row 11 (item 'shard-000000/track-02')"
    assert any("/latents: content differs from its recorded sha256" in problem for problem in problems[1:])
    result = run_cli("verify", store)
    assert result.returncode == 1
    assert "NaN/Inf" in result.stdout and "track-02" in result.stdout


def test_verify_missing_attribute(store: Path):
    with h5py.File(store, "r+") as file:
        del file.attrs["autoencoder_weights_sha256"]
    assert verify(store) == ["missing root attribute(s): autoencoder_weights_sha256"]


def test_verify_source_tar_changed(store: Path):
    tar = store.parent.parent / "shards" / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes() + b"one more item\n")
    problems = verify(store)
    assert len(problems) == 1 and "sha256 differs" in problems[0] and str(tar) in problems[0]
    assert verify(store, check_source=False) == []
    assert run_cli("verify", store, "--no-source").returncode == 0
    tar.unlink()
    assert "not found" in verify(store)[0]


def test_verify_and_describe_the_index(tmp_path: Path):
    from pipeline.latents.index import write_index_file

    stores = [write_store(tmp_path, 0), write_store(tmp_path, 1, lengths=(2, 6))]
    index = tmp_path / "latents" / "index.h5"
    write_index_file(index, stores, STAGE_HASH)
    assert verify(index) == []
    description = describe(index)
    assert description["kind"] == "index" and description["frames"] == sum(LENGTHS) + 8
    assert description["provenance"]["shards"] == ["shard-000000.h5", "shard-000001.h5"]
    item = describe_item(index, "shard-000001/track-01")
    assert item["shard"] == "shard-000001.h5" and item["offset"] == sum(LENGTHS) + 2
    with h5py.File(stores[1], "r") as file:
        assert item["channels"]["max"] == pytest.approx(file["latents"][2:8].astype(np.float64).max(axis=0).tolist())
    shutil.move(stores[1], tmp_path / "elsewhere.h5")
    problems = verify(index)
    assert any("shard-000001.h5" in problem and "not found" in problem for problem in problems)


def test_the_index_rebuilt_from_the_same_stores_is_the_same_bytes(tmp_path: Path):
    """No creation time anywhere (attribute or HDF5 object time): Snakemake compares an input's checksum
    before it reruns what reads it, so re-indexing unchanged stores must not retrain."""
    import time

    from pipeline.latents.index import write_index_file

    stores = [write_store(tmp_path, 0), write_store(tmp_path, 1, lengths=(2, 6))]
    first, second = tmp_path / "latents" / "index.h5", tmp_path / "latents" / "again.h5"
    write_index_file(first, stores, STAGE_HASH)
    time.sleep(1.1)  # HDF5 object times have a resolution of one second
    write_index_file(second, stores, STAGE_HASH)
    assert first.read_bytes() == second.read_bytes()
    with h5py.File(second, "r") as file:
        assert file["latents"].is_virtual and file["latents"].fillvalue == 0
        assert np.array_equal(file["latents"][sum(LENGTHS) :], h5py.File(stores[1], "r")["latents"][:])


# --- integrity: checksums, content digests, recomputed statistics --------------------------------------
LONG = (5000, 3500)  # two items spanning two 4096-frame chunks


def _chunk_byte_offset(path: Path, dataset: str, chunk: int) -> tuple[int, int]:
    with h5py.File(path, "r") as file:
        info = file[dataset].id.get_chunk_info(chunk)
        return info.byte_offset, info.size


def test_a_flipped_byte_in_the_file_fails_the_chunk_checksum(tmp_path: Path):
    path = write_store(tmp_path, lengths=LONG)
    assert verify(path) == []
    offset, size = _chunk_byte_offset(path, "latents", 1)
    data = bytearray(path.read_bytes())
    data[offset + size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    problems = verify(path)
    assert problems and "/latents: 1 chunk(s) fail to read" in problems[0]
    assert "rows 4096-8191" in problems[0] and "shard-000000/track-00" in problems[0]
    result = run_cli("verify", path)
    assert result.returncode == 1 and "fail to read" in result.stdout and "Traceback" not in result.stderr


def test_a_zeroed_chunk_on_disk_is_caught(tmp_path: Path):
    """All-zero bytes (checksum included) pass fletcher32: the content digest catches them."""
    path = write_store(tmp_path, lengths=LONG)
    offset, size = _chunk_byte_offset(path, "latents", 0)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes(size))
    problems = verify(path)
    assert any(problem.startswith("/latents: content differs from its recorded sha256") for problem in problems)
    assert any(problem.startswith("/stats/mean differs") for problem in problems)


def test_a_chunk_zeroed_through_h5py_is_caught_by_digest_and_stats(tmp_path: Path):
    """h5py recomputes the chunk checksum on write: the content digest and recomputed /stats catch it."""
    path = write_store(tmp_path, lengths=LONG)
    with h5py.File(path, "r+") as file:
        file["latents"][:4096] = 0
    problems = verify(path)
    assert any(problem.startswith("/latents: content differs from its recorded sha256") for problem in problems)
    assert any(problem.startswith("/stats/mean differs from the statistics of /latents") for problem in problems)


def test_changed_stats_are_caught(store: Path):
    with h5py.File(store, "r+") as file:
        file["stats/mean"][0] += 0.5
    problems = verify(store)
    assert (
        "/stats/mean: content differs from its recorded sha256 (the values were changed after the store was written): rebuild it"
        in problems
    )
    assert any("/stats/mean differs from the statistics of /latents (channel 0" in problem for problem in problems)


def test_a_rehashed_dataset_is_caught_by_the_root_digest(store: Path):
    from pipeline.latents.store import recompute_digest

    with h5py.File(store, "r+") as file:
        file["index/seconds_start"][0] = 1.5
        file["index/seconds_start"].attrs["sha256"] = recompute_digest(file["index/seconds_start"])
    assert verify(store) == [
        "content_sha256 does not match the datasets' digests (a dataset was added, removed or re-hashed)"
    ]


def test_the_writer_refuses_values_that_must_not_be_stored(tmp_path: Path):
    from pipeline.latents.store import StoreContentError

    attributes = {"latent_rate": 10.0, "codebook_size": 16}
    path = tmp_path / "refused.h5"
    cases = [
        (False, np.array([[0.0, np.nan]]), "item 'k' /latents: 1 NaN/Inf value"),
        (False, np.array([[0.0, 1e6]]), "overflows float16"),
        (True, np.array([[3, 16]]), r"codes in \[3, 16\], outside \[0, 16\)"),
    ]
    for discrete, values, message in cases:
        with pytest.raises(StoreContentError, match=message):
            with StoreWriter(path, attributes, 2, discrete) as writer:
                writer.append(ItemRecord("k", 1, 0.0, 1.0, "{}"), values)
        assert not path.exists() and not list(tmp_path.glob(".*tmp-*"))


def test_verify_compares_with_the_expected_identity(store: Path):
    assert verify(store, expected={"stage_hash": STAGE_HASH, "autoencoder_weights_sha256": "f" * 64}) == []
    problems = verify(store, expected={"stage_hash": STAGE_HASH, "autoencoder_weights_sha256": "e" * 64})
    assert problems == [
        f"autoencoder_weights_sha256 is {'f' * 64}, the experiment's is {'e' * 64}: re-run pre-encode and index"
    ]


def test_a_store_replaced_under_the_index_is_caught(tmp_path: Path):
    from pipeline.latents.index import write_index_file

    stores = [write_store(tmp_path, 0), write_store(tmp_path, 1, lengths=(2, 6))]
    index = tmp_path / "latents" / "index.h5"
    write_index_file(index, stores, STAGE_HASH)
    assert verify(index) == []
    replacement = write_store(tmp_path / "other", 1, lengths=(2, 6), seed=99)  # same shape, other values
    shutil.copyfile(replacement, stores[1])
    problems = verify(index)
    assert any(
        problem.startswith("shard-000001.h5 changed since the index was built (content_sha256: recorded")
        for problem in problems
    ), problems
    assert any("/stats/mean differs from the statistics of /latents" in problem for problem in problems)
    expected = {"autoencoder_weights_sha256": "e" * 64}
    assert any(
        "2 store(s) recorded with another autoencoder_weights_sha256" in problem
        for problem in verify(index, expected=expected)
    )
