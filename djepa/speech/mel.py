"""Log-mel spectrograms exactly as HiFi-GAN computes them, and the per-bin statistics that normalise them.

The paper (appendix G.1) gives FFT 1024, hop 256, window 1024 and 80 mel bins at 22,050 Hz; the rest follows
HiFi-GAN V1's LJSpeech config and its `meldataset.mel_spectrogram`, because HiFi-GAN V1 is the paper's vocoder and
a vocoder only inverts the spectrogram it was trained on: fmin 0 Hz, fmax 8,000 Hz, librosa's Slaney-normalised
mel filters, a periodic Hann window, the signal reflect-padded by (n_fft - hop) / 2 on each side and framed
without centring (so frame k is centred on sample 256 k + 128 and a clip of n samples gives n // 256 frames),
magnitude sqrt(re^2 + im^2 + 1e-9) (not power), then log(max(mel, 1e-5)).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_RATE = 22050
N_FFT, HOP, WIN = 1024, 256, 1024
N_MELS = 80
FMIN, FMAX = 0.0, 8000.0
CLAMP = 1e-5  # log floor: log(1e-5) = -11.51 is the value of digital silence
PAD = (N_FFT - HOP) // 2  # 384 samples of reflection on each side


@functools.lru_cache(maxsize=4)
def mel_basis(sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """(N_MELS, N_FFT // 2 + 1) float32: librosa's Slaney mel filters (its default, as HiFi-GAN calls it)."""
    from librosa.filters import mel

    return torch.from_numpy(mel(sr=sample_rate, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)).float()


def num_frames(num_samples: int) -> int:
    """Mel frames of a clip of `num_samples` samples (the framing above: one per full hop)."""
    return num_samples // HOP


def log_mel(wave, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Waveform(s) in [-1, 1], (T,) or (B, T) -> log-mel (N_MELS, T // HOP) or (B, N_MELS, T // HOP), float32.

    A clip must be longer than PAD samples (reflection needs them); the readers refuse shorter files."""
    y = torch.as_tensor(wave, dtype=torch.float32)
    single = y.ndim == 1
    y = y.reshape(-1, y.shape[-1])  # (B, T)
    if y.shape[-1] <= PAD:
        raise ValueError(f"a clip of {y.shape[-1]} samples is too short for a mel frame (needs more than {PAD})")
    y = F.pad(y[:, None], (PAD, PAD), mode="reflect")[:, 0]  # (B, T + 2 PAD)
    spec = torch.stft(y, N_FFT, hop_length=HOP, win_length=WIN, window=torch.hann_window(WIN), center=False,
                      return_complex=True)  # (B, N_FFT // 2 + 1, frames)
    magnitude = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    mel = torch.log(torch.clamp(mel_basis(sample_rate) @ magnitude, min=CLAMP))  # (B, N_MELS, frames)
    return mel[0] if single else mel


def mel_stats(mels) -> dict[str, list[float]]:
    """Per-bin mean and standard deviation over every frame of a data set: mels is an iterable of (N_MELS, T)
    arrays of any lengths. Summed in float64, so the order of clips does not matter."""
    count, total, squares = 0, np.zeros(N_MELS), np.zeros(N_MELS)
    for m in mels:
        m = np.asarray(m, np.float64)
        count += m.shape[1]
        total += m.sum(1)
        squares += (m ** 2).sum(1)
    if count < 2:
        raise ValueError(f"mel statistics need at least 2 frames, got {count}")
    mean = total / count
    # floored so that a bin that never changes (a data set with no energy there) cannot divide by zero
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-6))
    return {"mean": mean.tolist(), "std": std.tolist()}


def normalise(mel, stats: dict) -> torch.Tensor:
    """(.., N_MELS, T) log-mel -> zero mean, unit variance per bin (the tokens a model sees)."""
    mean, std = (torch.tensor(stats[k], dtype=torch.float32)[:, None] for k in ("mean", "std"))
    return (torch.as_tensor(mel, dtype=torch.float32) - mean) / std


def denormalise(mel, stats: dict) -> torch.Tensor:
    """The inverse of normalise: what a vocoder reads."""
    mean, std = (torch.tensor(stats[k], dtype=torch.float32)[:, None] for k in ("mean", "std"))
    return torch.as_tensor(mel, dtype=torch.float32) * std + mean
