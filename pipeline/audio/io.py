"""Audio file writing that is byte-for-byte reproducible."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile command; not exposed by the soundfile package


def write_audio(
    target: str | Path | BinaryIO,
    audio: np.ndarray,
    sample_rate: int,
    format: str,
    subtype: str,
    compression_level: float | None = None,
) -> None:
    """Write `audio` (frames, channels); same input, same bytes.

    libsndfile stamps float WAV/AIFF files with a PEAK chunk holding the write time; it is turned off.
    (Ogg streams still get a random serial number from libsndfile: Ogg files decode identically but
    are not byte-identical.)"""
    audio = audio if audio.ndim == 2 else audio[:, None]
    with sf.SoundFile(
        target, "w", sample_rate, audio.shape[1], subtype, format=format, compression_level=compression_level
    ) as handle:
        sf._snd.sf_command(handle._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
        handle.write(audio)
