"""Griffin-Lim: the vocoder that needs no weights, the embedded default (HiFi-GAN V1 in hifigan.py is the paper's).

Written on torch's STFT (librosa's `mel_to_stft` + `griffinlim` cost ~0.55 s of CPU per utterance here, this
~0.06 s, and a test inverts 60 of them):
- mel magnitude -> linear magnitude by the pseudo-inverse of the Slaney filters, negative values set to 0 (on the
  embedded data this equals librosa's non-negative least squares, `librosa.feature.inverse.mel_to_stft`, to
  within 1e-6 relative: tests/test_speech_vocoder.py);
- the phase by "fast" Griffin-Lim (Perraudin et al. 2013, librosa's default form: momentum 0.99) from a seeded
  random start.
It inverts mel.py's framing: frame k is centred on sample 256 k + 128, which is a centred STFT of the signal
shifted by half a hop, so the estimate is shifted back by 128 samples; T frames give T * HOP samples.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from djepa.speech.mel import HOP, N_FFT, SAMPLE_RATE, WIN, mel_basis

ITERATIONS = 60  # 32 (librosa's default) leave more phasiness; 60 cost ~0.05 s per second of audio
MOMENTUM = 0.99


@functools.lru_cache(maxsize=4)
def _inverse_basis(sample_rate: int) -> torch.Tensor:
    return torch.linalg.pinv(mel_basis(sample_rate).double()).float()  # (N_FFT // 2 + 1, N_MELS)


def mel_to_magnitude(log_mel, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Log-mel (N_MELS, T) -> linear STFT magnitude (N_FFT // 2 + 1, T), float32, non-negative."""
    mel = torch.exp(torch.as_tensor(log_mel, dtype=torch.float32))
    return torch.clamp(_inverse_basis(sample_rate) @ mel, min=0.0)


def griffin_lim(log_mel, iterations: int = ITERATIONS, seed: int = 0, sample_rate: int = SAMPLE_RATE
                ) -> np.ndarray:
    """Log-mel (N_MELS, T) (mel.log_mel's, not normalised) -> waveform (T * HOP,) float32 in [-1, 1]."""
    magnitude = mel_to_magnitude(log_mel, sample_rate)  # (F, T)
    frames = magnitude.shape[1]
    length = frames * HOP
    window = torch.hann_window(WIN)
    stft = functools.partial(torch.stft, n_fft=N_FFT, hop_length=HOP, win_length=WIN, window=window, center=True,
                             return_complex=True)
    istft = functools.partial(torch.istft, n_fft=N_FFT, hop_length=HOP, win_length=WIN, window=window, center=True,
                              length=length)
    g = torch.Generator().manual_seed(seed)
    angles = torch.polar(torch.ones_like(magnitude), 2 * math.pi * torch.rand(magnitude.shape, generator=g))
    rebuilt = torch.zeros_like(angles)
    for _ in range(iterations):
        previous = rebuilt
        rebuilt = stft(istft(magnitude * angles))[:, :frames]  # the nearest consistent spectrogram's phase
        angles = rebuilt - (MOMENTUM / (1 + MOMENTUM)) * previous
        angles = angles / (angles.abs() + 1e-16)
    shifted = istft(magnitude * angles)  # sample n of this is sample n + HOP // 2 of the signal
    wave = torch.cat([torch.zeros(HOP // 2), shifted[:length - HOP // 2]])
    return wave.clamp(-1.0, 1.0).numpy()
