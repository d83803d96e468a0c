"""F0 with Praat (praat-parselmouth) at the mel frames, and its quantisation to the paper's 300-entry pitch table.

Extraction: Praat's autocorrelation method (`Sound.to_pitch_ac`, what Make-An-Audio's and NATSpeech's
preprocessing call) with a time step of one hop (256 / 22,050 s) and a search range of 60-800 Hz, which holds low
adult male voices and the high voices of the espeak-ng variants; Praat's other settings at their defaults (a 40 ms
analysis window at 60 Hz: three periods of the floor; voicing threshold 0.45). Praat places its frames by its own
rule, so the F0 of mel frame k is read from the Praat frame nearest to the mel frame's centre, sample
256 k + 128 (mel.py's framing); a mel frame outside Praat's analysed span, or one Praat calls unvoiced, gets 0.

Quantisation (the FastSpeech 2 / Make-An-Audio pitch token): entry 0 is "unvoiced"; entries 1-299 are 299 bins
spaced evenly in log frequency between F0_MIN and F0_MAX (equal musical intervals, ~15 cents a bin), voiced F0
outside the range going to the first or last bin. The table's embedding (256-d in the paper) is the model's.
"""
from __future__ import annotations

import numpy as np

from djepa.speech.mel import HOP, SAMPLE_RATE, num_frames

F0_MIN, F0_MAX = 60.0, 800.0  # Hz: Praat's search range and the table's span
TABLE = 300  # the paper's pitch lookup table: 0 = unvoiced, 1..299 voiced bins
_BINS = TABLE - 1
_LOG_MIN, _LOG_SPAN = np.log(F0_MIN), np.log(F0_MAX) - np.log(F0_MIN)


def f0(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(T,) float waveform -> (T // HOP,) float32 F0 in Hz per mel frame, 0 where unvoiced."""
    import parselmouth

    wave = np.asarray(wave, np.float64)
    n = num_frames(len(wave))
    pitch = parselmouth.Sound(wave, sampling_frequency=sample_rate).to_pitch_ac(
        time_step=HOP / sample_rate, pitch_floor=F0_MIN, pitch_ceiling=F0_MAX)
    hz = pitch.selected_array["frequency"]  # (praat frames,) 0 where unvoiced
    centres = (np.arange(n) * HOP + HOP / 2) / sample_rate  # seconds: the mel frames' centres
    k = np.rint((centres - pitch.x1) / pitch.dx).astype(np.int64)
    inside = (k >= 0) & (k < len(hz))
    out = np.zeros(n, np.float32)
    out[inside] = hz[k[inside]]
    return out


def quantise(hz) -> np.ndarray:
    """F0 in Hz (0 = unvoiced) -> int64 table entries: 0 unvoiced, 1..299 log-spaced bins."""
    hz = np.asarray(hz, np.float64)
    voiced = hz > 0
    pos = (np.log(np.where(voiced, hz, F0_MIN)) - _LOG_MIN) / _LOG_SPAN  # 0 at F0_MIN, 1 at F0_MAX
    entry = 1 + np.clip(np.floor(pos * _BINS), 0, _BINS - 1).astype(np.int64)
    return np.where(voiced, entry, 0)


def dequantise(entries) -> np.ndarray:
    """Table entries -> Hz at each bin's geometric centre (0 for entry 0): for plots and checks."""
    e = np.asarray(entries, np.int64)
    hz = np.exp(_LOG_MIN + (e - 0.5) / _BINS * _LOG_SPAN)
    return np.where(e > 0, hz, 0.0).astype(np.float32)


def pitch_tokens(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(T,) waveform -> (T // HOP,) int64 pitch-table entries: f0 then quantise."""
    return quantise(f0(wave, sample_rate))
