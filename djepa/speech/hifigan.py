"""HiFi-GAN V1's generator (Kong et al. 2020), the paper's vocoder, as a module whose parameters are laid out
exactly as the authors' `Generator` (github jik876/hifi-gan, config_v1.json) saves them, so their published
LJSpeech checkpoint `generator_v1` ({'generator': state_dict}) loads into it as a state dict with
`torch.load(weights_only=True)` and a strict key check. No weights ship with djepa: get the file and pass its path.

Config V1: 80 mel bins in; upsampling by 8, 8, 2, 2 (x256 = mel.py's hop) with transposed convolutions of kernel
16, 16, 4, 4 from 512 channels, halving the channels at each; after each, three "ResBlock1" of kernels 3, 7, 11,
each with dilations 1, 3, 5, whose outputs are averaged (multi-receptive-field fusion); leaky ReLU slope 0.1
(0.01 before the last convolution, as the authors' code has it); tanh out. 13.9M parameters.

Weight normalisation is written out here (a weight_g magnitude per output slice and a weight_v direction) rather
than taken from torch.nn.utils.weight_norm, which torch deprecates for a parametrisation whose parameter names
differ: these names are the checkpoint's format and must not move with torch.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from djepa.speech.mel import HOP, N_MELS

UPSAMPLE_RATES = (8, 8, 2, 2)
UPSAMPLE_KERNELS = (16, 16, 4, 4)
INITIAL_CHANNELS = 512
RESBLOCK_KERNELS = (3, 7, 11)
RESBLOCK_DILATIONS = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
SLOPE = 0.1
assert math.prod(UPSAMPLE_RATES) == HOP  # one mel frame -> one hop of samples


class _WeightNorm:
    """weight = weight_g * weight_v / ||weight_v||, the norm over every axis but the first (torch's dim=0)."""

    def _split_weight(self) -> None:
        w = self.weight.detach()
        del self.weight
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(w, dim=(1, 2), keepdim=True))  # (out or in, 1, 1)
        self.weight_v = nn.Parameter(w.clone())

    def normed_weight(self) -> torch.Tensor:
        return self.weight_g * self.weight_v / torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True)


class WNConv1d(_WeightNorm, nn.Conv1d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normed_weight(), self.bias)


class WNConvTranspose1d(_WeightNorm, nn.ConvTranspose1d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.normed_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


def same_padding(kernel: int, dilation: int) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs, each added back to its input."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList([WNConv1d(channels, channels, kernel, 1, dilation=d,
                                              padding=same_padding(kernel, d)) for d in dilations])
        self.convs2 = nn.ModuleList([WNConv1d(channels, channels, kernel, 1, dilation=1,
                                              padding=same_padding(kernel, 1)) for _ in dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, SLOPE)), SLOPE))
        return x


class Generator(nn.Module):
    """Log-mel (B, 80, T) (mel.py's, not normalised) -> waveform (B, 1, T * 256) in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.conv_pre = WNConv1d(N_MELS, INITIAL_CHANNELS, 7, 1, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(UPSAMPLE_RATES, UPSAMPLE_KERNELS)):
            cin, cout = INITIAL_CHANNELS // 2 ** i, INITIAL_CHANNELS // 2 ** (i + 1)
            self.ups.append(WNConvTranspose1d(cin, cout, kernel, rate, padding=(kernel - rate) // 2))
            self.resblocks.extend(ResBlock1(cout, k, d) for k, d in zip(RESBLOCK_KERNELS, RESBLOCK_DILATIONS))
        self.conv_post = WNConv1d(cout, 1, 7, 1, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        n = len(RESBLOCK_KERNELS)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, SLOPE))
            x = sum(block(x) for block in self.resblocks[i * n:(i + 1) * n]) / n  # multi-receptive-field fusion
        return torch.tanh(self.conv_post(F.leaky_relu(x)))  # default slope 0.01 here, as in the authors' code


def load_generator(path: str | Path) -> Generator:
    """The published HiFi-GAN V1 generator from its file ({'generator': state_dict}), read with
    weights_only=True (no pickled code runs) and loaded strictly; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no HiFi-GAN generator at {path}: download the authors' LJSpeech 'generator_v1' "
                                f"(jik876/hifi-gan, config V1) and pass its path")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickling refusal or a file that is not a torch checkpoint
        raise ValueError(f"{path} is not a HiFi-GAN checkpoint torch can read with weights_only=True: {e}") from e
    if not isinstance(checkpoint, dict) or "generator" not in checkpoint:
        keys = sorted(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path} has no 'generator' entry (found {keys}); HiFi-GAN's generator files hold "
                         f"{{'generator': state_dict}}")
    net = Generator()
    missing, unexpected = net.load_state_dict(checkpoint["generator"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not a HiFi-GAN V1 generator: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]} (a V2/V3 config or weight norm removed?)")
    return net.eval().requires_grad_(False)


def vocode(net: Generator, log_mel) -> torch.Tensor:
    """Log-mel (80, T) -> waveform (T * 256,) float32."""
    with torch.no_grad():
        return net(torch.as_tensor(log_mel, dtype=torch.float32)[None])[0, 0]
