"""Decode a file, fit its channels to the experiment, resample: the per-item audio path of the shard stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from pipeline.audio.files import InputRejected, native_stderr_filtered, read_head, sniff_format, stat_regular_file

# ITU-R BS.775 downmix of 5.1 (L, R, C, LFE, Ls, Rs) to stereo, LFE dropped, normalised to unit gain.
_ITU_51_TO_STEREO = np.array(
    [[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071], [0.0, 0.0], [0.7071, 0.0], [0.0, 0.7071]], dtype=np.float32
) / np.float32(1.0 + 0.7071 + 0.7071)


AudioRejected = InputRejected  # this input cannot become an item; the message is the ledger's reason

# Announced 16-bit PCM bytes per file byte above which the announced length is checked by seeking to its
# end: uncompressed formats hold about 1; FLAC rarely compresses beyond 8:1 except near silence; lossy
# codecs reach ~100:1 only at the lowest bit rates.
_PLAUSIBLE_RATIO = {"WAV": 2, "WAVEX": 2, "AIFF": 2, "AU": 2, "W64": 2, "RF64": 2, "CAF": 2, "FLAC": 16}
_PLAUSIBLE_RATIO_LOSSY = 128

# Sample rates a source may declare: outside this a header is corrupt or the file is no usable audio.
MIN_SOURCE_RATE = 1000
MAX_SOURCE_RATE = 768_000


@dataclass(frozen=True)
class Header:
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def read_header(path: str | Path) -> Header:
    """Header only, no decoding; only regular files are opened. Raises AudioRejected with a specific reason."""
    size = stat_regular_file(path).st_size
    if size == 0:
        raise AudioRejected("empty file (0 bytes)")
    container = sniff_format(read_head(path))
    try:
        with native_stderr_filtered():
            info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioRejected(_open_failure(container, error)) from None
    if not MIN_SOURCE_RATE <= info.samplerate <= MAX_SOURCE_RATE:
        raise AudioRejected(
            f"unsupported sample rate: the header declares {info.samplerate} Hz "
            f"(sources must be {MIN_SOURCE_RATE}..{MAX_SOURCE_RATE} Hz)"
        )
    if info.frames <= 0:
        raise AudioRejected(_no_frames_reason(info.format))
    if info.format == "WAV":
        _check_wav_data_chunk(Path(path))
    _check_declared_length(path, info, size)
    return Header(info.format, info.subtype, int(info.samplerate), int(info.channels), int(info.frames))


def _open_failure(container: str | None, error: BaseException) -> str:
    """libsndfile's reasons mislead ("possibly a pipe?" for a text file): say what the content is."""
    if container is None:
        return "not an audio file: unrecognised format (the content matches no audio format that can be read)"
    detail = _reason(error).rsplit("': ", 1)[-1]  # drop "Error opening '<path>'"
    if "possibly a pipe" in detail or "not a regular file" in detail:
        detail = "the decoder found no valid audio data"
    return f"corrupt or truncated {container} stream: {detail}"


def _no_frames_reason(format_name: str) -> str:
    if format_name == "OGG":
        return "truncated or corrupt Ogg stream: no audio frames found (the end of the stream is missing?)"
    return "zero length: the file holds no audio frames"


def _check_declared_length(path: str | Path, info: sf._SoundFileInfo, size: int) -> None:
    """A header may announce far more audio than the file can hold (a damaged length field would turn a
    few bytes into thousands of items). When the announced audio is implausibly large for the file
    size, the last announced frame must be readable."""
    pcm_bytes = info.frames * info.channels * 2
    if pcm_bytes <= size * _PLAUSIBLE_RATIO.get(info.format, _PLAUSIBLE_RATIO_LOSSY):
        return
    try:
        with native_stderr_filtered(), sf.SoundFile(str(path)) as handle:
            handle.seek(info.frames - 1)
            last = handle.read(1, dtype="float32")
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
        last = np.empty(0)
    if len(last) == 0:
        raise AudioRejected(
            f"truncated or corrupt: the header announces {info.frames} frames "
            f"({info.frames / info.samplerate:.1f} s) but the {size}-byte file ends before"
        )


def _check_wav_data_chunk(path: Path) -> None:
    """libsndfile quietly shortens a WAV whose data chunk is cut off; a cut-off copy is data loss."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        riff = handle.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return  # RF64/other variants: leave to libsndfile
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk_id, chunk_size = handle.read(4), int.from_bytes(handle.read(4), "little")
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size > available and chunk_size != 0xFFFFFFFF:
                    raise AudioRejected(
                        f"truncated: the WAV data chunk announces {chunk_size} bytes, the file holds {available}"
                    )
                return
            offset += 8 + chunk_size + (chunk_size & 1)


def decode(path: str | Path, expected_frames: int | None = None) -> tuple[np.ndarray, int]:
    """Whole file as float32 (frames, channels) and its rate; a short read is rejected as truncated."""
    stat_regular_file(path)  # it may have been replaced by a FIFO since the plan: never block on one
    try:
        with native_stderr_filtered():
            audio, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioRejected(f"decode error: {_reason(error)}") from None
    except MemoryError:
        raise AudioRejected("decode error: too large to decode in memory (a wrong length in the header?)") from None
    if len(audio) == 0:
        raise AudioRejected("zero length: decoding gave no frames")
    if expected_frames is not None and len(audio) < expected_frames:
        raise AudioRejected(f"truncated: decoded {len(audio)} of the {expected_frames} frames the header announces")
    if not np.all(np.isfinite(audio)):
        raise AudioRejected("corrupt: decoded samples contain NaN or infinity")
    return audio, int(sample_rate)


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def check_channel_layout(source_channels: int, multichannel: str) -> None:
    """Sources of more than 2 channels are rejected when `data.multichannel` says so."""
    if source_channels > 2 and multichannel == "reject":
        raise AudioRejected(f"unsupported channel layout: {source_channels} channels (data.multichannel is 'reject')")


def convert_channels(audio: np.ndarray, channels: int, multichannel: str) -> np.ndarray:
    """Fit (frames, n) audio to 1 or 2 channels: mono is duplicated, stereo averaged, more downmixed or rejected."""
    source = audio.shape[1]
    check_channel_layout(source, multichannel)
    if source == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=1, keepdims=True, dtype=np.float32)
    if source == 1:
        return np.repeat(audio, 2, axis=1)
    if source == 6:
        return audio @ _ITU_51_TO_STEREO
    return np.repeat(audio.mean(axis=1, keepdims=True, dtype=np.float32), 2, axis=1)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """soxr high-quality resampling of (frames, channels) float32; identity when the rates match."""
    if source_rate == target_rate:
        return np.ascontiguousarray(audio, dtype=np.float32)
    return np.ascontiguousarray(soxr.resample(audio, source_rate, target_rate, quality="HQ"), dtype=np.float32)


def prepare(
    path: str | Path, sample_rate: int, channels: int, multichannel: str, expected_frames: int | None = None
) -> np.ndarray:
    """decode -> channels -> resample, clipped to [-1, 1] for integer codecs."""
    audio, source_rate = decode(path, expected_frames)
    audio = convert_channels(audio, channels, multichannel)
    return np.clip(resample(audio, source_rate, sample_rate), -1.0, 1.0)
