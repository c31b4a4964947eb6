"""Property tests over odd input folders: random bytes with audio extensions, truncated and damaged
real files, random sidecar JSON, odd file names, FIFOs and symlinks. Plan and shard never raise, finish
in bounded time, and every input file is accounted for exactly once with a reason."""

from __future__ import annotations

import functools
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import load_experiment
from pipeline.shards.plan import write_plan
from pipeline.shards.run import write_all_shards
from tests.shards.conftest import experiment_file, tone

AUDIO_EXTENSIONS = (".wav", ".WAV", ".flac", ".ogg", ".mp3", ".Mp3", ".aiff")
OTHER_EXTENSIONS = (".json", ".JSON", ".txt", ".md", "")
FOLDERS = ("", "sub", "Sub Dir", "a/b.c")
SECONDS_PER_EXAMPLE = 30.0


@functools.cache
def real_files() -> dict[str, bytes]:
    """Small valid files of every format the decoder reads."""
    formats = {
        "wav16": ("WAV", "PCM_16", 1),
        "wavfloat": ("WAV", "FLOAT", 2),
        "flac": ("FLAC", "PCM_16", 2),
        "ogg": ("OGG", "VORBIS", 1),
        "mp3": ("MP3", "MPEG_LAYER_III", 1),
        "aiff": ("AIFF", "PCM_24", 1),
    }
    files = {}
    for name, (fmt, subtype, channels) in formats.items():
        buffer = io.BytesIO()
        sf.write(buffer, tone(0.4, 8000, channels), 8000, format=fmt, subtype=subtype)
        files[name] = buffer.getvalue()
    return files


@st.composite
def audio_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["valid", "truncated", "damaged", "random", "empty"]))
    if kind == "random":
        return draw(st.binary(max_size=3000))
    if kind == "empty":
        return b""
    data = real_files()[draw(st.sampled_from(sorted(real_files())))]
    if kind == "valid":
        return data
    if kind == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    damaged = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        damaged[draw(st.integers(0, min(80, len(damaged) - 1)))] = draw(st.integers(0, 255))
    return bytes(damaged)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@st.composite
def sidecar_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["json", "object", "deep", "text", "random"]))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()  # NaN / Infinity as Python writes them
    if kind == "object":
        return json.dumps(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=5))).encode()
    if kind == "deep":
        depth = draw(st.sampled_from([50, 101, 2000, 200_000]))
        return ('{"a": ' + "[" * depth + "]" * depth + "}").encode()
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=500))


names = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=16)
special = st.sampled_from(["fifo", "loop", "dangling", "link_to_previous", "directory"])


@st.composite
def folders(draw) -> dict[str, object]:
    """relpath -> bytes (a file) or one of the special entries above."""
    entries: dict[str, object] = {}
    for _ in range(draw(st.integers(1, 7))):
        folder = draw(st.sampled_from(FOLDERS))
        stem = draw(names | st.sampled_from(["song", "Song", ".hidden", "x.y"]))
        is_audio = draw(st.booleans())
        extension = draw(st.sampled_from(AUDIO_EXTENSIONS if is_audio else OTHER_EXTENSIONS))
        relpath = "/".join(part for part in (folder, stem + extension) if part)
        if relpath.split("/")[-1] in (".", ".."):
            continue
        content = audio_bytes() if is_audio else sidecar_bytes()
        entries[relpath] = draw(special) if draw(st.integers(0, 9)) == 0 else draw(content)
        if is_audio and draw(st.booleans()):  # a sidecar beside it, in any case
            sidecar = relpath.rsplit(".", 1)[0] + draw(st.sampled_from([".json", ".JSON", ".txt"]))
            entries[sidecar] = draw(sidecar_bytes())
    return entries


def _create(root: Path, entries: dict[str, object]) -> dict[str, str]:
    """Write the entries; returns relpath -> what it is ("file" or the special kind) for those created."""
    created: dict[str, str] = {}
    previous = None
    for relpath, content in entries.items():
        path = root / relpath
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists() or path.is_symlink():
                continue
            if isinstance(content, bytes):
                path.write_bytes(content)
            elif content == "fifo":
                os.mkfifo(path)
            elif content == "loop":
                os.symlink(path.name, path)
            elif content == "dangling":
                os.symlink("does-not-exist.wav", path)
            elif content == "link_to_previous" and previous is not None:
                os.symlink(os.path.relpath(root / previous, path.parent), path)
            elif content == "directory":
                path.mkdir()  # a directory named like a file is walked, not an input
            else:
                continue
        except (OSError, ValueError):  # a name the file system refuses (too long, a folder clash)
            continue
        created[relpath] = "directory" if path.is_dir() else content if isinstance(content, str) else "file"
        previous = relpath
    return created


def _outcome(work: Path, plan: dict) -> tuple[set[str], dict[str, list[dict]], dict[str, str]]:
    shards = work / "shards"
    in_shards: set[str] = set()
    for shard in plan["shards"]:
        manifest = json.loads((shards / f"{shard['name']}.json").read_text())
        with tarfile.open(shards / f"{shard['name']}.tar") as archive:
            members = archive.getmembers()
            for member in members:
                if member.name.endswith(".json"):  # strict JSON, as every reader expects
                    json.loads(archive.extractfile(member).read(), parse_constant=_no_constants)
        assert len(manifest["items"]) * 2 == len(members)
        in_shards |= {item["relpath"] for item in manifest["items"]}
    ledger: dict[str, list[dict]] = {}
    for line in (shards / "rejected.jsonl").read_text().splitlines():
        entry = json.loads(line)
        assert isinstance(entry["reason"], str) and entry["reason"] and entry["stage"] in ("plan", "shard"), entry
        ledger.setdefault(entry["relpath"], []).append(entry)
    ignored = {entry["relpath"]: entry["reason"] for entry in plan["ignored"]}
    return in_shards, ledger, ignored


def _no_constants(name: str):
    raise AssertionError(f"{name} in a sample JSON")


def _is_audio(relpath: str) -> bool:
    return os.path.splitext(relpath)[1].lower() in {ext.lower() for ext in AUDIO_EXTENSIONS}


EXAMPLES = int(os.environ.get("PIPELINE_FUZZ_EXAMPLES", "60"))  # a deeper search: PIPELINE_FUZZ_EXAMPLES=1000


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(entries=folders())
def test_every_odd_input_is_accounted_for(entries):
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        audio, work = base / "audio", base / "work"
        audio.mkdir()
        created = _create(audio, entries)
        experiment = load_experiment(
            experiment_file(
                base,
                audio,
                work,
                sample_rate=8000,
                channels=1,
                min_item_seconds=0.01,
                max_item_seconds=0.25,
                segment_overlap_seconds=0.05,
                shard={"max_items": 3},
            )
        )
        started = time.monotonic()
        write_plan(experiment)
        plan = json.loads((work / "shards" / "plan.json").read_text())
        write_all_shards(experiment, progress=False)
        assert time.monotonic() - started < SECONDS_PER_EXAMPLE
        in_shards, ledger, ignored = _outcome(work, plan)
        for relpath, kind in created.items():
            whole_file_rejects = [e for e in ledger.get(relpath, []) if "segment" not in e]
            if kind == "directory":
                assert relpath not in in_shards and relpath not in ledger
            elif _is_audio(relpath):
                assert relpath in in_shards or relpath in ledger, (relpath, kind)
                assert not (relpath in in_shards and whole_file_rejects), (relpath, ledger[relpath])
                assert relpath not in ignored, (relpath, ignored[relpath])
            else:
                assert (relpath in ignored) != (relpath in ledger), (relpath, kind)
            if kind in ("fifo", "loop", "dangling"):
                assert relpath not in in_shards
        accounted = in_shards | set(ledger) | set(ignored)
        assert accounted <= set(created) | _parents(created), accounted - set(created)


def _parents(relpaths) -> set[str]:
    """Folders may appear as entries (a symlink loop, an unlistable folder)."""
    return {"/".join(path.split("/")[:i]) for path in relpaths for i in range(1, path.count("/") + 1)}
