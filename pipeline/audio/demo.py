"""A deterministic corpus of music-like audio for the demo experiment and the tests.

Each file is a short piece: a melody walking a scale over a chord progression, a bass line, a kick
on the beat and a hi-hat on eighth notes, with attack/decay envelopes. That gives a small model
structure to learn (pitch, timbre, rhythm) in a few minutes of audio. Formats, sample rates and
channel counts vary on purpose, and some files carry sibling metadata the way captions are stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.audio.io import write_audio

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Relative partial amplitudes: the timbre of each instrument.
INSTRUMENTS = {
    "flute": (1.0, 0.15, 0.05),
    "organ": (1.0, 0.0, 0.5, 0.0, 0.3, 0.0, 0.15),
    "pluck": (1.0, 0.6, 0.4, 0.3, 0.2, 0.1),
    "bell": (1.0, 0.0, 0.0, 0.6, 0.0, 0.0, 0.0, 0.3),
}
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 4))  # scale degrees of the chord roots, one per bar
# (folder, format, subtype, extension): the mix of containers the demo covers.
FORMATS = (
    ("melodies", "WAV", "PCM_16", "wav"),
    ("melodies", "FLAC", "PCM_16", "flac"),
    ("loops", "OGG", "VORBIS", "ogg"),
    ("loops", "WAV", "PCM_24", "wav"),
    ("jams", "FLAC", "PCM_24", "flac"),
    ("jams", "WAV", "FLOAT", "wav"),
)
SAMPLE_RATES = (16000, 22050, 32000, 44100, 48000)


@dataclass(frozen=True)
class PieceSpec:
    index: int
    instrument: str
    scale: str
    root_midi: int
    bpm: int
    seconds: float
    sample_rate: int
    channels: int
    folder: str
    format: str
    subtype: str
    extension: str

    @property
    def stem(self) -> str:
        return f"{self.index:02d}_{self.instrument}_{NOTE_NAMES[self.root_midi % 12].replace('#', 's')}_{self.bpm}bpm"

    @property
    def caption(self) -> str:
        key = NOTE_NAMES[self.root_midi % 12]
        return f"{self.instrument} melody in {key} {self.scale} with bass and drums at {self.bpm} BPM"


def plan_pieces(seed: int, total_seconds: float) -> list[PieceSpec]:
    """The list of pieces, drawn from `seed`, until `total_seconds` of audio is reached."""
    rng = np.random.default_rng(seed)
    pieces: list[PieceSpec] = []
    covered = 0.0
    while covered < total_seconds:
        index = len(pieces)
        # Every fifth piece is long, so item segmenting has something to do.
        seconds = float(rng.uniform(25.0, 40.0) if index % 5 == 4 else rng.uniform(4.0, 12.0))
        folder, fmt, subtype, extension = FORMATS[index % len(FORMATS)]
        pieces.append(
            PieceSpec(
                index=index,
                instrument=str(rng.choice(sorted(INSTRUMENTS))),
                scale=str(rng.choice(sorted(SCALES))),
                root_midi=int(rng.integers(55, 67)),
                bpm=int(rng.integers(80, 141)),
                seconds=round(seconds, 3),
                sample_rate=int(SAMPLE_RATES[int(rng.integers(len(SAMPLE_RATES)))]),
                channels=int(rng.integers(1, 3)),
                folder=folder,
                format=fmt,
                subtype=subtype,
                extension=extension,
            )
        )
        covered += seconds
    return pieces


def _midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _tone(freq: float, seconds: float, sample_rate: int, partials: tuple[float, ...], decay: float) -> np.ndarray:
    """A harmonic tone with a 10 ms attack and exponential decay."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = np.zeros_like(t)
    nyquist = sample_rate / 2
    for harmonic, amplitude in enumerate(partials, start=1):
        if amplitude and harmonic * freq < nyquist:
            wave += amplitude * np.sin(2 * np.pi * harmonic * freq * t)
    envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t / decay)
    return wave * envelope


def _add(track: np.ndarray, sound: np.ndarray, start: int) -> None:
    end = min(len(track), start + len(sound))
    if start < end:
        track[start:end] += sound[: end - start]


def render_piece(spec: PieceSpec, seed: int) -> np.ndarray:
    """Float32 audio of shape (frames, channels), peak 0.8."""
    rng = np.random.default_rng([seed, spec.index])
    sr = spec.sample_rate
    frames = int(spec.seconds * sr)
    step = 60.0 / spec.bpm / 2  # eighth note
    scale = SCALES[spec.scale]
    progression = PROGRESSIONS[spec.index % len(PROGRESSIONS)]
    melody, bass, drums = (np.zeros(frames) for _ in range(3))

    degree = 7
    for n in range(int(spec.seconds / step)):
        start = int(n * step * sr)
        bar, position = divmod(n, 8)
        chord_root = progression[bar % len(progression)]
        if rng.random() > 0.15:  # a rest now and then
            degree = int(np.clip(degree + rng.choice((-2, -1, -1, 0, 1, 1, 2)), 0, 14))
            midi = spec.root_midi + scale[degree % 7] + 12 * (degree // 7) - 12
            length = step * (2 if rng.random() < 0.3 else 1)
            _add(melody, _tone(_midi_to_hz(midi), length * 1.5, sr, INSTRUMENTS[spec.instrument], length), start)
        if position % 2 == 0:  # bass on every beat
            midi = spec.root_midi - 24 + scale[chord_root]
            _add(bass, _tone(_midi_to_hz(midi), step * 2, sr, (1.0, 0.5, 0.33, 0.25), step), start)
        if position % 4 == 0:  # kick on beats 1 and 3: a falling sine
            t = np.arange(int(0.25 * sr)) / sr
            _add(drums, np.sin(2 * np.pi * (50 * t + 70 * 0.04 * (1 - np.exp(-t / 0.04)))) * np.exp(-t / 0.08), start)
        hat = rng.standard_normal(int(0.04 * sr)) * np.exp(-np.arange(int(0.04 * sr)) / (0.008 * sr))
        _add(drums, 0.15 * np.diff(hat, prepend=0.0), start)

    if spec.channels == 1:
        mix = (0.5 * melody + 0.35 * bass + 0.4 * drums)[:, None]
    else:
        pan = 0.3 + 0.4 * rng.random()
        left = 0.5 * melody * (1 - pan) * 2 + 0.35 * bass + 0.4 * drums
        right = 0.5 * melody * pan * 2 + 0.35 * bass + 0.4 * drums
        mix = np.stack([left, right], axis=1)
    return (0.8 * mix / max(float(np.max(np.abs(mix))), 1e-9)).astype(np.float32)


def write_demo_data(out_dir: str | Path, seed: int = 0, total_seconds: float = 180.0) -> list[Path]:
    """Write the demo corpus into `out_dir`; returns the audio files written (sorted).

    Same seed, same audio: WAV and FLAC files are byte-identical across runs; OGG Vorbis decodes
    identically (libsndfile gives each Ogg stream a random serial number)."""
    out_dir = Path(out_dir)
    written = []
    for spec in plan_pieces(seed, total_seconds):
        folder = out_dir / spec.folder
        folder.mkdir(parents=True, exist_ok=True)
        audio_path = folder / f"{spec.stem}.{spec.extension}"
        write_audio(audio_path, render_piece(spec, seed), spec.sample_rate, spec.format, spec.subtype)
        _write_sidecars(folder, spec)
        written.append(audio_path)
    return sorted(written)


def _write_sidecars(folder: Path, spec: PieceSpec) -> None:
    """Two of three pieces get `<stem>.json` metadata; every fourth a `<stem>.txt` prompt instead."""
    if spec.index % 4 == 3:
        (folder / f"{spec.stem}.txt").write_text(spec.caption + "\n", encoding="utf-8")
    elif spec.index % 3 != 2:
        metadata = {"caption": spec.caption, "label": spec.instrument, "bpm": spec.bpm, "key": spec.scale}
        (folder / f"{spec.stem}.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
