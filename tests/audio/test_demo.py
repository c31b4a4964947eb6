"""The demo corpus: deterministic, varied formats, learnable structure (not noise)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.demo import plan_pieces, render_piece, write_demo_data

SECONDS = 90.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("demo")
    return out, write_demo_data(out, seed=3, total_seconds=SECONDS)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mixed_formats_rates_and_channels(corpus):
    _, files = corpus
    infos = [sf.info(str(path)) for path in files]
    assert {path.suffix for path in files} == {".wav", ".flac", ".ogg"}
    assert {info.channels for info in infos} == {1, 2}
    assert len({info.samplerate for info in infos}) >= 3
    assert {info.subtype for info in infos} >= {"PCM_16", "PCM_24", "FLOAT", "VORBIS"}
    assert sum(info.duration for info in infos) >= SECONDS
    assert len({path.parent.name for path in files}) >= 2  # nested folders


def test_sibling_metadata(corpus):
    out, files = corpus
    jsons = [path.with_suffix(".json") for path in files if path.with_suffix(".json").exists()]
    prompts = [path.with_suffix(".txt") for path in files if path.with_suffix(".txt").exists()]
    assert jsons and prompts and len(jsons) + len(prompts) < len(files)  # some files have none
    metadata = json.loads(jsons[0].read_text())
    assert {"caption", "label"} <= set(metadata) and "BPM" in metadata["caption"]


def test_same_seed_same_audio(corpus, tmp_path):
    out, files = corpus
    again = write_demo_data(tmp_path, seed=3, total_seconds=SECONDS)
    assert [p.relative_to(tmp_path) for p in again] == [p.relative_to(out) for p in files]
    for first, second in zip(files, again):
        if first.suffix == ".ogg":  # libsndfile gives each Ogg stream a random serial: compare the audio
            np.testing.assert_array_equal(sf.read(first)[0], sf.read(second)[0])
        else:
            assert _digest(first) == _digest(second), first.name
    for sidecar in out.rglob("*.json"):
        assert sidecar.read_bytes() == (tmp_path / sidecar.relative_to(out)).read_bytes()


def test_other_seed_other_audio():
    assert plan_pieces(1, 60) != plan_pieces(2, 60)


def _peak_energy_share(audio: np.ndarray) -> float:
    """Share of the spectral energy in the strongest 2% of frequency bins (white noise: ~0.1)."""
    power = np.sort(np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2)[::-1]
    return float(power[: len(power) // 50].sum() / power.sum())


def test_audio_is_tonal_and_rhythmic_not_noise():
    spec = plan_pieces(0, 30)[0]
    audio = render_piece(spec, seed=0)[:, 0].astype(np.float64)
    assert np.max(np.abs(audio)) == pytest.approx(0.8, abs=1e-3)

    window = spec.sample_rate // 2
    share = np.median([_peak_energy_share(audio[i : i + window]) for i in range(0, len(audio) - window, window)])
    noise = np.random.default_rng(0).standard_normal(window)
    assert share > 0.9 > 0.2 > _peak_energy_share(noise)  # energy sits in harmonic peaks

    # Rhythm: the onset envelope repeats at the beat (two eighth notes), not off the grid.
    hop = spec.sample_rate // 200  # 5 ms frames
    energy = np.array([np.sum(audio[i : i + hop] ** 2) for i in range(0, len(audio) - hop, hop)])
    onsets = np.maximum(np.diff(energy), 0.0)
    onsets -= onsets.mean()
    autocorrelation = np.correlate(onsets, onsets, mode="full")[len(onsets) - 1 :]
    autocorrelation /= autocorrelation[0]
    eighth = 60.0 / spec.bpm / 2 * 200  # in frames

    def around(lag: float) -> float:
        return float(autocorrelation[int(round(lag)) - 2 : int(round(lag)) + 3].max())

    assert around(2 * eighth) > 0.1
    assert around(2 * eighth) > 3 * max(around(1.5 * eighth), 0.01)
