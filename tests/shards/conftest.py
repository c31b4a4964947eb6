"""A corpus that exercises every path of the shard stage: formats, depths, rates, layouts, odd names,
symlinks, and broken files. Each entry records what the stage must do with it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from pipeline.config import load_experiment


@dataclass(frozen=True)
class Expect:
    fate: str  # "item" | "rejected" | "ignored"
    reason: str = ""  # fragment of the reject / ignore reason


def tone(seconds: float, rate: int, channels: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    columns = [0.5 * np.sin(2 * np.pi * freq * (1 + 0.25 * c) * t) * np.exp(-t / 2) for c in range(channels)]
    return np.stack(columns, axis=1).astype(np.float32)


def _write(root: Path, relpath: str, audio: np.ndarray, rate: int, fmt: str, subtype: str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, format=fmt, subtype=subtype)
    return path


LONG_NAME = "deeply/" * 12 + "a very long file name that goes on " * 4 + "end.wav"


def build_corpus(root: Path) -> dict[str, Expect]:
    expected: dict[str, Expect] = {}

    def audio(relpath, seconds, rate, channels, fmt="WAV", subtype="PCM_16", freq=440.0):
        _write(root, relpath, tone(seconds, rate, channels, freq), rate, fmt, subtype)
        expected[relpath] = Expect("item")

    audio("wav/pcm_u8_8k_mono.wav", 1.0, 8000, 1, subtype="PCM_U8")
    audio("wav/pcm16_16k_mono.wav", 1.0, 16000, 1)
    audio("wav/pcm24_44k_stereo.wav", 1.0, 44100, 2, subtype="PCM_24")
    audio("wav/pcm32_48k_stereo.wav", 1.0, 48000, 2, subtype="PCM_32")
    audio("wav/float_96k_stereo.wav", 1.0, 96000, 2, subtype="FLOAT")
    audio("flac/stereo_22k.flac", 1.2, 22050, 2, "FLAC", "PCM_16")
    audio("flac/mono_32k_24bit.flac", 0.8, 32000, 1, "FLAC", "PCM_24")
    audio("ogg/vorbis_44k.ogg", 1.0, 44100, 2, "OGG", "VORBIS")
    audio("mp3/layer3_44k.mp3", 1.0, 44100, 2, "MP3", "MPEG_LAYER_III")
    audio("surround/six_channels_48k.wav", 1.0, 48000, 6)
    audio("long/five_seconds.flac", 5.0, 16000, 1, "FLAC", "PCM_16")  # 3 segments of <= 2 s
    audio("names/with space.wav", 0.5, 16000, 1)
    audio("names/ünïcödé ♪ 名前.flac", 0.5, 16000, 1, "FLAC", "PCM_16")
    audio("names/dots.in.the.name.v2.wav", 0.5, 16000, 1)
    audio("names/a b.wav", 0.5, 16000, 1, freq=330.0)
    audio("names/a_b.wav", 0.5, 16000, 1, freq=550.0)  # sanitises like "a b.wav"
    audio("names/UPPER.WAV", 0.5, 16000, 1)
    audio(LONG_NAME, 0.5, 16000, 1)
    audio("captioned/song.wav", 0.5, 16000, 1)
    (root / "captioned/song.json").write_text('{"caption": "a test tone", "label": "tone", "seconds": 99}')
    (root / "captioned/song.txt").write_text("a prompt from a text file\n")
    expected["captioned/song.json"] = Expect("ignored", "sidecar")
    expected["captioned/song.txt"] = Expect("ignored", "sidecar")
    audio("captioned/bad_meta.wav", 0.5, 16000, 1)
    (root / "captioned/bad_meta.json").write_text("[1, 2")
    expected["captioned/bad_meta.json"] = Expect("rejected", "metadata sidecar not used: invalid JSON")
    # Upper-case extensions on both: the caption still reaches the sample.
    audio("captioned/LOUD.WAV", 0.5, 16000, 1)
    (root / "captioned/LOUD.JSON").write_text('{"caption": "an upper-case sidecar"}')
    expected["captioned/LOUD.JSON"] = Expect("ignored", "sidecar")
    # Python's json.dump writes NaN; deep nesting breaks recursive JSON writers: metadata errors, not crashes.
    audio("captioned/nan_meta.wav", 0.5, 16000, 1)
    (root / "captioned/nan_meta.json").write_text('{"caption": "x", "loudness": NaN}')
    expected["captioned/nan_meta.json"] = Expect("rejected", "NaN")
    audio("captioned/deep_meta.wav", 0.5, 16000, 1)
    (root / "captioned/deep_meta.json").write_text('{"a": ' + "[" * 50_000 + "]" * 50_000 + "}")
    expected["captioned/deep_meta.json"] = Expect("rejected", "nested too deeply")
    # A flac file with the wrong extension: libsndfile reads the content, so it is a good item.
    _write(root, "odd/actually_flac.ogg", tone(0.5, 16000, 1), 16000, "FLAC", "PCM_16")
    expected["odd/actually_flac.ogg"] = Expect("item")

    # Broken inputs.
    (root / "broken").mkdir()
    (root / "broken/zero_bytes.wav").write_bytes(b"")
    expected["broken/zero_bytes.wav"] = Expect("rejected", "empty file (0 bytes)")
    (root / "broken/text_renamed.wav").write_text("this is not audio, just text " * 20)
    expected["broken/text_renamed.wav"] = Expect("rejected", "not an audio file: unrecognised format")
    full = _write(root, "broken/truncated.flac", tone(2.0, 44100, 2), 44100, "FLAC", "PCM_16").read_bytes()
    (root / "broken/truncated.flac").write_bytes(full[: len(full) // 2])
    expected["broken/truncated.flac"] = Expect("rejected", "decode error")
    full = _write(root, "broken/truncated.wav", tone(2.0, 16000, 1), 16000, "WAV", "PCM_16").read_bytes()
    (root / "broken/truncated.wav").write_bytes(full[: len(full) // 2])
    expected["broken/truncated.wav"] = Expect("rejected", "truncated")
    _write(root, "broken/three_samples.wav", tone(1.0, 8000, 1)[:3], 8000, "WAV", "PCM_16")
    expected["broken/three_samples.wav"] = Expect("rejected", "too short")

    # Not audio, hidden, symlinks.
    (root / "notes.md").write_text("# notes\n")
    expected["notes.md"] = Expect("ignored", "not an audio extension")
    _write(root, ".hidden.wav", tone(0.5, 16000, 1), 16000, "WAV", "PCM_16")
    expected[".hidden.wav"] = Expect("rejected", "hidden file")
    _write(root, ".cache/inside.wav", tone(0.5, 16000, 1), 16000, "WAV", "PCM_16")
    expected[".cache"] = Expect("ignored", "hidden directory")
    os.symlink("../wav/pcm16_16k_mono.wav", root / "names/link_to_pcm16.wav")
    expected["names/link_to_pcm16.wav"] = Expect("item")
    os.symlink("../does/not/exist.wav", root / "broken/dangling_link.wav")
    expected["broken/dangling_link.wav"] = Expect("rejected", "broken symbolic link")
    os.symlink("..", root / "names/loop")
    expected["names/loop"] = Expect("ignored", "symlink loop")
    os.symlink("loop_b.wav", root / "broken/loop_a.wav")
    os.symlink("loop_a.wav", root / "broken/loop_b.wav")
    expected["broken/loop_a.wav"] = Expect("rejected", "symlink loop")
    expected["broken/loop_b.wav"] = Expect("rejected", "symlink loop")
    os.mkfifo(root / "broken/fifo.wav")  # opening it would block forever
    expected["broken/fifo.wav"] = Expect("rejected", "not a regular file: a FIFO")
    _write(root, "broken/one_hertz.wav", np.zeros((3000, 1), np.float32), 1, "WAV", "PCM_16")  # 3000 s at 1 Hz
    expected["broken/one_hertz.wav"] = Expect("rejected", "unsupported sample rate: the header declares 1 Hz")
    (root / "broken/text.mp3").write_text("not an mp3 at all\n" * 40)
    expected["broken/text.mp3"] = Expect("rejected", "not an audio file: unrecognised format")
    full = _write(root, "broken/truncated.ogg", tone(3.0, 16000, 1), 16000, "OGG", "VORBIS").read_bytes()
    (root / "broken/truncated.ogg").write_bytes(full[: len(full) * 7 // 10])
    expected["broken/truncated.ogg"] = Expect("rejected", "truncated or corrupt Ogg stream")
    return expected


def experiment_file(directory: Path, audio_dir: Path, work_dir: Path, **data) -> Path:
    document = {
        "name": "shardtest",
        "paths": {"audio_dir": str(audio_dir), "work_dir": str(work_dir)},
        "data": {
            "sample_rate": 16000,
            "channels": 2,
            "min_item_seconds": 0.05,
            "max_item_seconds": 2.0,
            "shard": {"max_items": 4, "max_bytes": "10MB"},
            **data,
        },
    }
    path = directory / f"experiment-{work_dir.name}.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, Expect]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root)


@pytest.fixture
def make_experiment(tmp_path, corpus) -> Callable:
    def make(work_name: str = "work", audio_dir: Path | None = None, **data):
        path = experiment_file(tmp_path, audio_dir or corpus[0], tmp_path / work_name, **data)
        return path, load_experiment(path)

    return make
