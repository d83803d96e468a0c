"""Waveforms in and out: soundfile (libsndfile, shipped in its wheel) reads and writes the files, soxr resamples.

`read_audio` returns a mono float32 clip at the configured rate with what a data set's manifest counts about it
(its own rate and channel count, its peak, its clipped samples), or raises AudioError naming why the file is
unusable (empty, silent, too short for one mel frame, unreadable). What to do with a clip that is not already
at the configured rate or is stereo is decided here, once, so every reader treats files alike; the readers say
it once per file set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from djepa.speech.mel import PAD, SAMPLE_RATE

SILENCE_DBFS = -60.0  # a file whose peak stays below -60 dBFS (0.001 of full scale) has nothing to learn from
FULL_SCALE = 32767 / 32768  # the largest positive 16-bit value read as float: a sample at or past it is clipped
RESAMPLER = "soxr VHQ"  # the sample-rate converter's name in the manifest and in what the readers say


class AudioError(ValueError):
    """A file that cannot be a training clip: `kind` is unreadable, empty, silent or too_short; the message says
    more."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class Clip:
    """wave (T,) float32 in [-1, 1], mono, at the configured rate; what the source was."""

    wave: np.ndarray
    source_rate: int
    channels: int
    peak: float  # of the mono signal, before resampling, in [0, 1]
    clipped: int  # samples (over all channels) at or beyond full scale in the file

    @property
    def seconds(self) -> float:
        return len(self.wave) / SAMPLE_RATE


def resample(wave: np.ndarray, source_rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(T,) float32 at source_rate -> sample_rate with soxr's very-high-quality filter (what librosa's default
    'soxr_hq' uses, one step up); unchanged when the rates agree."""
    import soxr

    if source_rate == sample_rate:
        return wave
    return soxr.resample(wave, source_rate, sample_rate, quality="VHQ").astype(np.float32)


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> Clip:
    """A WAV (or any format libsndfile reads) -> Clip: channels averaged to mono, resampled to sample_rate."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (RuntimeError, sf.LibsndfileError) as e:  # libsndfile's "Format not recognised", truncated headers
        raise AudioError("unreadable", f"unreadable ({e})") from e
    if data.shape[0] == 0:
        raise AudioError("empty", "zero-length (no samples)")
    clipped = int((np.abs(data) >= FULL_SCALE).sum())
    mono = np.clip(data.mean(axis=1), -1.0, 1.0)  # a float WAV may hold values past full scale: counted, then cut
    peak = float(np.abs(mono).max())
    if peak < 10 ** (SILENCE_DBFS / 20):
        level = "digital silence" if peak == 0 else f"peak {20 * np.log10(peak):.1f} dBFS"
        raise AudioError("silent", f"silent ({level}, below {SILENCE_DBFS:.0f} dBFS)")
    wave = resample(mono, rate, sample_rate)
    if len(wave) <= PAD:
        raise AudioError("too_short", f"too short ({len(wave)} samples at {sample_rate} Hz; a mel frame needs more "
                                      f"than {PAD})")
    return Clip(wave, int(rate), int(data.shape[1]), peak, clipped)


def to_pcm16(wave) -> np.ndarray:
    """float [-1, 1] -> int16, rounded, values past full scale saturated (never wrapped around)."""
    return np.clip(np.round(np.asarray(wave, np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, wave, sample_rate: int = SAMPLE_RATE) -> Path:
    """A mono 16-bit PCM WAV, written to a temporary name and renamed (never half a file at `path`)."""
    import soundfile as sf

    from djepa.samples import atomic_write

    path = Path(path)
    pcm = to_pcm16(wave)
    atomic_write(path, lambda tmp: sf.write(tmp, pcm, sample_rate, subtype="PCM_16", format="WAV"))
    return path
