"""FVD: I3D in the published file's exact layout (random weights, nothing downloaded), weight files refused
unless they are plain tensors in that layout, the input protocol against a computation written here, and
FVD of a set against itself ~0 and against its time-reversed copy clearly not."""
import math

import numpy as np
import pytest
import torch

from djepa.eval.features import FeatureError
from djepa.video import fvd as fvd_module
from djepa.video import i3d
from djepa.video.fvd import I3DExtractor, fvd, i3d_identity, random_i3d_weights, to_input

# Inception-v1 widths as I3D inflates them (piergiaj/pytorch-i3d, pytorch_i3d.py; DeepMind kinetics-i3d):
# block -> (1x1, 1x1 -> 3x3, 1x1 -> 3x3, pool -> 1x1); each block reads the previous block's concatenation
BLOCKS = {"Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
          "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
          "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
          "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
          "Mixed_5c": (384, 192, 384, 48, 128, 128)}


def reference_units():
    """(unit name, in, out, kernel) of every conv unit with batch norm, from the table above."""
    units = [("Conv3d_1a_7x7", 3, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3)]
    cin = 192
    for name, (w0, w1a, w1b, w2a, w2b, w3) in BLOCKS.items():
        units += [(f"{name}.b0", cin, w0, 1), (f"{name}.b1a", cin, w1a, 1), (f"{name}.b1b", w1a, w1b, 3),
                  (f"{name}.b2a", cin, w2a, 1), (f"{name}.b2b", w2a, w2b, 3), (f"{name}.b3b", cin, w3, 1)]
        cin = w0 + w1b + w2b + w3
    assert cin == 1024  # Mixed_5c's output, what the logits read
    return units


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_i3d_weights(tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt")


def test_layout_is_the_published_files(weights):
    units = reference_units()
    # the file: 230 TF-Hub variables (conv w, beta, moving mean / variance; logits w, b) + 57 bn.weight of ones
    want = {f"{u}.conv3d.weight": (co, ci, k, k, k) for u, ci, co, k in units}
    want |= {f"{u}.bn.{t}": (co,) for u, _, co, _ in units for t in ("weight", "bias", "running_mean", "running_var")}
    want |= {"logits.conv3d.weight": (400, 1024, 1, 1, 1), "logits.conv3d.bias": (400,)}
    assert len(units) == 57 and len(want) == 287
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)  # TF-Hub's w: [7, 7, 7, 3, 64]
    assert state["Mixed_5c.b1b.conv3d.weight"].shape == (384, 192, 3, 3, 3)
    # 12.7M tensor entries; the paper's "12M" parameters are these less the batch-norm statistics and scales
    total = sum(ci * co * k ** 3 + 4 * co for _, ci, co, k in units) + 1024 * 400 + 400
    assert total == sum(v.numel() for v in state.values()) == 12_711_824
    assert total - sum(3 * co for _, _, co, _ in units) == 12_689_984  # TF-Hub's trainable variables
    with torch.device("meta"):
        assert set(i3d.InceptionI3d().state_dict()) == set(want)  # no num_batches_tracked: nothing here trains
    loaded = i3d.load_network(weights)  # load_state_dict(strict=True): every tensor placed, nothing left over
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())  # round trip
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_same_padding_batch_norm_and_pools_are_tfs():
    for size in range(1, 12):
        for k in (1, 2, 3, 7):
            for s in (1, 2):
                x = torch.zeros(1, 1, size, 1, 1)
                padded, op_pad = i3d.same_padding(x, (k, 1, 1), (s, 1, 1))
                total = padded.shape[2] - size + 2 * op_pad[0]
                # piergiaj's compute_pad, written the other way round from TF's formula in the module
                assert total == (max(k - s, 0) if size % s == 0 else max(k - size % s, 0))
                assert (size + total - k) // s + 1 == math.ceil(size / s)  # TF's SAME output size
                assert op_pad[0] in (0, total // 2) and (op_pad[0] == 0 or total % 2 == 0)
    norm = i3d.Norm3d(2)
    for t in (norm.weight, norm.bias, norm.running_mean):
        t.data.uniform_(-1, 1)
    norm.running_var.uniform_(1e-3, 1e-2)  # small variances: there epsilon 1e-3 (TF-Hub's) vs 1e-5 shows
    v = torch.randn(1, 2, 1, 2, 2)
    shape = (1, 2, 1, 1, 1)
    want = ((v - norm.running_mean.view(shape)) / torch.sqrt(norm.running_var.view(shape) + 1e-3)
            * norm.weight.view(shape) + norm.bias.view(shape))
    assert torch.allclose(norm(v), want, atol=1e-5)
    x = -torch.arange(1.0, 17.0).reshape(1, 1, 1, 4, 4)  # all negative: a zero pad would win every border max
    out = i3d.MaxPoolSame((1, 3, 3), (1, 2, 2))(x)  # 4 -> 2: pad 0 before, 1 after, as TF
    g = x[0, 0, 0]
    want = torch.stack([torch.stack([g[r:r + 3, c:c + 3].max() for c in (0, 2)]) for r in (0, 2)])
    assert torch.equal(out[0, 0, 0], want)


def bilinear(a: np.ndarray, out: int, axis: int) -> np.ndarray:
    """Half-pixel bilinear resampling along one axis, no antialias: src = (i + 0.5) * n / out - 0.5."""
    n = a.shape[axis]
    src = np.clip((np.arange(out) + 0.5) * n / out - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(int)
    i1, w = np.minimum(i0 + 1, n - 1), src - i0
    shape = [1] * a.ndim
    shape[axis] = out
    return np.take(a, i0, axis) * (1 - w).reshape(shape) + np.take(a, i1, axis) * w.reshape(shape)


def test_input_protocol_against_a_computation_written_here():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (2, 20, 5, 7, 1), dtype=np.uint8)  # 20 frames: 0..15 are used
    x = to_input(torch.from_numpy(grey))
    assert x.shape == (2, 3, 16, 224, 224) and x.dtype == torch.float32
    want = bilinear(bilinear(grey[:, :16, :, :, 0].astype(np.float64), 224, 2), 224, 3) * 2 / 255 - 1
    for c in range(3):  # grey repeated to RGB
        np.testing.assert_allclose(x[:, c].numpy(), want, atol=2e-6)
    rgb = rng.integers(0, 256, (1, 16, 224, 224, 3), dtype=np.uint8)
    rgb[0, 0, 0, 0] = (0, 255, 7)
    y = to_input(torch.from_numpy(rgb))  # already 224: no resampling, channels in order, [0, 255] -> [-1, 1]
    assert torch.allclose(y, torch.from_numpy(rgb).permute(0, 4, 1, 2, 3).float() * 2 / 255 - 1, atol=1e-6)
    assert y[0, :, 0, 0, 0].tolist() == [-1.0, 1.0, pytest.approx(7 * 2 / 255 - 1)]


@pytest.mark.parametrize("t, frames", [(8, [i // 2 for i in range(16)]),
                                       (5, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4])])
def test_short_clips_are_resampled_in_time_or_refused(t, frames):
    video = np.zeros((1, t, 4, 4, 3), np.uint8) + (np.arange(t, dtype=np.uint8) * 10)[None, :, None, None, None]
    x = to_input(torch.from_numpy(video))
    assert x.shape == (1, 3, 16, 224, 224)
    seen = ((x[0, 0, :, 0, 0] + 1) * 255 / 2 / 10).round().int().tolist()  # each frame's constant / 10
    assert seen == frames and sorted(set(seen)) == list(range(t))  # every frame used, in order
    with pytest.raises(ValueError, match="short_clips='repeat'"):
        to_input(torch.from_numpy(video), short_clips="error")


class NotATensor:
    pass


def test_weight_files_other_than_tensors_in_the_layout_are_refused(tmp_path, weights, monkeypatch):
    with pytest.raises(FeatureError, match="eval.i3d_weights"):
        i3d_identity(None)
    with pytest.raises(FeatureError, match=f"not found at {tmp_path / 'no.pt'}.*{i3d.URL}"):
        i3d_identity(str(tmp_path / "no.pt"))
    pickled = tmp_path / "pickled.pt"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": torch.zeros(1), "extra": NotATensor()}, pickled)
    with pytest.raises(FeatureError, match=f"{pickled} is not a plain state dict of tensors.*eval.i3d_weights"):
        i3d_identity(str(pickled))
    state = torch.load(weights, weights_only=True)
    del state["Mixed_4c.b2b.bn.running_var"]
    partial = tmp_path / "partial.pt"
    torch.save(state, partial)
    with pytest.raises(FeatureError, match=f"{partial} is not an I3D.*Mixed_4c.b2b.bn.running_var"):
        i3d_identity(str(partial))
    # a file with the right layout and the wrong weights (DeepMind's original release) is known by its bytes
    monkeypatch.setattr(i3d, "DEEPMIND_ORIGINAL_BLOB", i3d.git_blob_sha1(weights))
    with pytest.raises(FeatureError, match="rgb_imagenet.pt.*TF-Hub"):
        i3d_identity(str(weights))


def test_identity_and_published_file_recognition(tmp_path, weights, monkeypatch):
    (tmp_path / "hello").write_bytes(b"hello\n")
    assert i3d.git_blob_sha1(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    path, identity, published = i3d_identity(str(weights))
    assert path == weights and identity.startswith("i3d-kinetics400-") and not published
    monkeypatch.setattr(fvd_module, "RELEASE_BLOB", i3d.git_blob_sha1(weights))
    assert i3d_identity(str(weights))[2]
    state = torch.load(weights, weights_only=True)
    state["logits.conv3d.bias"][0] = 1.0
    torch.save(state, tmp_path / "other.pt")
    assert i3d_identity(str(tmp_path / "other.pt"))[1] != identity  # the identity follows the bytes


@pytest.fixture(scope="module")
def features(weights):
    """Features of 2 random clips and of the same clips reversed in time: one pass, 4 clips (~2 s each here)."""
    ex = I3DExtractor(str(weights), batch_size=3)  # batches of 3 and 1: the sets share a batch
    base = np.random.default_rng(0).integers(0, 256, (2, 16, 24, 24, 3), dtype=np.uint8)
    f, logits = ex(np.concatenate([base, base[:, ::-1]]))
    return ex, f[:2], f[2:], logits


def test_fvd_of_a_set_with_itself_is_zero_and_with_its_reversal_not(features):
    ex, base, reversed_, logits = features
    assert ex.name == "i3d" and ex.dims == 400 and ex.protocol["frames"] == 16
    assert ex.protocol["weights"] == ex.identity and ex.protocol["published_weights"] is False
    assert base.shape == (2, 400) and base.dtype == torch.float32 and logits.shape == (4, 0)
    assert torch.isfinite(base).all() and (base[0] - base[1]).abs().max() > 1e-3  # features follow the clip
    # the same frames in the other order: only the time axis tells the sets apart (a per-frame bug would not)
    to_reversed = fvd(base, reversed_)
    assert to_reversed > 1e-2
    assert abs(fvd(base, base)) < 1e-6 * to_reversed
    assert abs(fvd(base.numpy(), base.double())) < 1e-6 * to_reversed  # numpy or torch, any float


def test_extractor_refuses_images_and_bad_modes(features):
    ex = features[0]
    with pytest.raises(ValueError, match=r"uint8 videos \(N, T, H, W, C\)"):
        ex(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        ex.forward(torch.zeros(1, 16, 8, 8, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="short_clips must be one of"):
        I3DExtractor(None, short_clips="loop")
