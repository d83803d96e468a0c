"""Inception-I3D (Carreira & Zisserman 2017), RGB, Kinetics-400: the network Frechet Video Distance reads.

FVD (Unterthiner et al. 2018, google-research/frechet_video_distance) embeds a clip with the TF-Hub module
`deepmind/i3d-kinetics-400/1` and keeps its 400 pre-softmax logits averaged over time (the graph tensor
`RGB/inception_i3d/Mean:0`). StyleGAN-V notes that the TF-Hub weights differ from the checkpoint DeepMind
released in kinetics-i3d, so the weights matter, not only the architecture:

- The file used here is `i3d_pretrained_400.pt`: VideoGPT's conversion of that TF-Hub module
  (videogpt/fvd/convert_tf_pretrained.py) into piergiaj/pytorch-i3d's state-dict layout, a plain dict of
  287 tensors, the file TATS and cd-fvd (Ge et al. 2024) load. TF-Hub's batch norm has no scale, so the
  conversion writes ones for `bn.weight`.
- piergiaj's own `models/rgb_imagenet.pt` has the same layout but DeepMind's original weights: it loads
  without error and gives other features, so it is recognised by its bytes and refused.
- Batch-norm epsilon is 1e-3, read from the TF-Hub graph (all 57 units' `batch_norm/add/y` constants),
  as piergiaj has it; VideoGPT's, TATS's and cd-fvd's PyTorch copies use 1e-5, a small deviation from TF.
- Padding is TF's "SAME" (pad total max((ceil(s/stride) - 1) * stride + k - s, 0), the smaller half
  first), computed per input size, as piergiaj's compute_pad does; max pools pad with -inf.

Our own module, written from the architecture; only its state-dict keys and shapes follow the file. The
StyleGAN-V TorchScript port (`i3d_torchscript.pt`) is not read: it is a program, and its tensor names could
not be inspected here; the plain state dict above is the same TF-Hub network without running anyone's code.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# VideoGPT's conversion of TF-Hub i3d-kinetics-400/1, as TATS serves it (cd-fvd downloads it from here)
URL = "https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt"
# git blob ids (sha1 of "blob <size>\0" + bytes): the same file in TATS (tats/fvd/) and in
# JunyaoHu/common_metrics_on_video_quality (fvd/videogpt/), and piergiaj/pytorch-i3d's models/rgb_imagenet.pt
RELEASE_BLOB = "a867b87ac3a9097d200598b1d48a1b890d8ec744"
DEEPMIND_ORIGINAL_BLOB = "73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a"
CONFIG_KEY = "eval.i3d_weights"
FIX = f"download {URL} and set {CONFIG_KEY}=PATH"
CLASSES, BN_EPS = 400, 1e-3

# (name, in channels, (branch 0 1x1, branch 1 1x1 -> 3x3, branch 2 1x1 -> 3x3, branch 3 pool -> 1x1)),
# Inception-v1's widths (Szegedy et al. 2014, table 1), the 5x5 branch made a 3x3 as in DeepMind's I3D
MIXED = [
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
]
# the max pools between stages: before block -> (name, kernel, stride), kernel and stride in (T, H, W)
POOL_BEFORE = {"Mixed_3b": ("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
               "Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
               "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2))}


def same_padding(x: torch.Tensor, kernel: tuple, stride: tuple, value: float = 0.0) -> tuple[torch.Tensor, tuple]:
    """TF's "SAME" padding of (B, C, T, H, W), so that the output is ceil(size / stride): -> (x, padding for
    the op). Where it is symmetric (e.g. stride 1, odd kernel) the op pads, which saves a copy; otherwise (stride 2
    on an even size pads one more after than before) x comes back padded with `value` and the op pads nothing."""
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    if all(before == after for before, after in pads):
        return x, tuple(before for before, _ in pads)
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad lists the last dim first
    return F.pad(x, flat, value=value), (0, 0, 0)


class Norm3d(nn.Module):
    """Batch norm with frozen statistics: the four tensors of the file, no num_batches_tracked (nothing trains)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, BN_EPS)


class Unit3D(nn.Module):
    """SAME-padded conv3d -> batch norm -> ReLU; the logits unit (head) is a conv with a bias and nothing after."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, head: bool = False):
        super().__init__()
        self.kernel, self.stride = (kernel,) * 3, (stride,) * 3
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=head)
        self.bn = None if head else Norm3d(cout)

    def forward(self, x):
        x, padding = same_padding(x, self.kernel, self.stride)
        x = F.conv3d(x, self.conv3d.weight, self.conv3d.bias, self.stride, padding)
        return x if self.bn is None else F.relu(self.bn(x), inplace=True)


class MaxPoolSame(nn.Module):
    def __init__(self, kernel: tuple, stride: tuple):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        # -inf: a padded position never wins a max, as TF's pool ignores padding
        x, padding = same_padding(x, self.kernel, self.stride, float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride, padding)


class Mixed(nn.Module):
    """An inflated Inception block: four branches concatenated on channels."""

    def __init__(self, cin: int, widths: tuple):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(cin, w0)
        self.b1a, self.b1b = Unit3D(cin, w1a), Unit3D(w1a, w1b, 3)
        self.b2a, self.b2b = Unit3D(cin, w2a), Unit3D(w2a, w2b, 3)
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, w3)

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """(B, 3, T, H, W) in [-1, 1] -> (B, 400) Kinetics logits averaged over time. At 16 x 224 x 224 the last
    block is (B, 1024, 2, 7, 7) and the (2, 7, 7) average pool leaves one position, as in the TF graph."""

    def __init__(self):
        super().__init__()
        # attribute names are the checkpoint's top-level keys; pools hold no tensors, so they add no keys
        self.Conv3d_1a_7x7 = Unit3D(3, 64, 7, stride=2)
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, 3)
        for name, cin, widths in MIXED:
            if name in POOL_BEFORE:
                pool, kernel, stride = POOL_BEFORE[name]
                self.add_module(pool, MaxPoolSame(kernel, stride))
            self.add_module(name, Mixed(cin, widths))
        self.logits = Unit3D(1024, CLASSES, head=True)  # dropout before it is the identity in eval

    def forward(self, x):
        for name, layer in self.named_children():
            if name != "logits":
                x = layer(x)  # (B, C, T', H', W'), in registration order
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # (B, 1024, T' - 1, H' - 6, W' - 6): VALID, as in TF
        x = self.logits(x)  # (B, 400, t, h, w)
        return x.mean(dim=(2, 3, 4))  # one position at 224 px; the mean over time is the graph's `Mean`


def git_blob_sha1(path: str | Path) -> str:
    """The id git gives a file's bytes: how a download is matched to a file committed in a repository."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A weight file -> its tensors, checked against InceptionI3d's keys and shapes; ValueError naming the file
    and the fix otherwise. torch.load(weights_only=True): a pickle that holds more than tensors is refused."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"I3D weights not found at {path} ({CONFIG_KEY}); {FIX}")
    if git_blob_sha1(path) == DEEPMIND_ORIGINAL_BLOB:
        raise ValueError(f"{path} is piergiaj/pytorch-i3d's rgb_imagenet.pt, DeepMind's original I3D release: FVD "
                         f"uses the TF-Hub i3d-kinetics-400 weights, which differ; {FIX}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for code in the pickle, RuntimeError for a truncated file
        raise ValueError(f"{path} is not a plain state dict of tensors ({type(err).__name__}); {FIX}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors (a {type(state).__name__}); {FIX}")
    with torch.device("meta"):  # the expected layout without allocating 12M parameters
        want = {k: tuple(v.shape) for k, v in InceptionI3d().state_dict().items()}
    missing, unexpected = sorted(want.keys() - state.keys()), sorted(state.keys() - want.keys())
    wrong = sorted(k for k in want.keys() & state.keys() if tuple(state[k].shape) != want[k])
    if missing or unexpected or wrong:
        raise ValueError(f"{path} is not an I3D Kinetics-400 state dict: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}, other shapes {wrong[:3]} ({len(missing)}, {len(unexpected)}, "
                         f"{len(wrong)} in all); {FIX}")
    return state


def load_network(path: str | Path) -> InceptionI3d:
    """The network in eval mode with the file's weights, loaded strictly (every tensor placed, nothing left)."""
    state = {k: v.to(torch.float32) for k, v in read_state_dict(path).items()}
    with torch.device("meta"):  # no random init of 12.7M numbers that the file replaces
        net = InceptionI3d()
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval().requires_grad_(False)


def random_i3d_weights(path: str | Path, seed: int = 0) -> Path:
    """Write random weights in the release file's exact layout, for tests and speed benchmarks (speed does not
    depend on the weights; the real ones are a download away). He-scaled convolutions, identity batch norms
    (scale 1 as in the file): activations keep their scale through the 57 units, so features vary with input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        layout = InceptionI3d().state_dict()
    state = {}
    for name, t in layout.items():
        if name.endswith("conv3d.weight"):
            fan_in = t[0].numel()
            gain = 1.0 if name.startswith("logits") else 2.0
            state[name] = torch.randn(t.shape, generator=gen) * math.sqrt(gain / fan_in)
        elif name.endswith(("bn.weight", "running_var")):
            state[name] = torch.ones(t.shape)
        else:  # batch-norm shifts and means, the logits' bias
            state[name] = torch.zeros(t.shape)
    torch.save(state, path)
    return Path(path)
