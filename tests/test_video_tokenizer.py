"""Video tokenizers: (T, H, W) grids with per-axis patches, CogVideoX's VAE in its published layout, the flow
sampler on a rank-3 grid, and the image path unchanged by the video seam."""
import hashlib

import numpy as np
import pytest
import torch

from djepa.config import ConfigError, TokenizerConfig, load_config
from djepa.models.tokenizer import build_tokenizer, moments_shape, patchify, unpatchify


def reference_patchify(x: np.ndarray, pt: int, ph: int, pw: int) -> np.ndarray:
    """(B, C, T, H, W) -> (B, N, C*pt*ph*pw) by explicit loops: token (t, h, w) in raster order, its values
    in (c, dt, dh, dw) order, the layout einops' pattern in tokenizer.py claims."""
    b, c, t, h, w = x.shape
    out = []
    for ti in range(t // pt):
        for hi in range(h // ph):
            for wi in range(w // pw):
                block = x[:, :, ti * pt:(ti + 1) * pt, hi * ph:(hi + 1) * ph, wi * pw:(wi + 1) * pw]
                out.append(block.reshape(b, -1))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("patch", [(2, 4, 4), (1, 2, 4), (4, 1, 2), 2])
def test_rank3_patchify_round_trips_and_matches_loops(patch):
    x = torch.randn(2, 3, 8, 8, 8)
    tokens = patchify(x, patch)
    pt, ph, pw = (patch,) * 3 if isinstance(patch, int) else patch
    np.testing.assert_array_equal(tokens.numpy(), reference_patchify(x.numpy(), pt, ph, pw))
    grid = (8 // pt, 8 // ph, 8 // pw)
    assert torch.equal(unpatchify(tokens, patch, grid), x)


def test_patchify_names_a_patch_that_does_not_divide():
    with pytest.raises(ValueError, match="not divisible by patch sizes"):
        patchify(torch.zeros(1, 1, 6, 8, 8), (4, 2, 2))


def test_ucf101_preset_grid_is_the_papers():
    """App. G.3: 160 frames of 240x320 -> VideoVAE latent 40x30x40 -> patch (4, 2, 2) -> 10x15x20 = 3,000 tokens."""
    cfg = load_config("configs/djepa-l-ucf101.yaml")
    t = cfg.tokenizer
    assert t.latent_shape == (16, 40, 30, 40)
    assert t.grid_shape == (10, 15, 20) and t.num_tokens == 3000
    assert t.token_dim == 16 * 4 * 2 * 2
    assert t.sample_shape == (160, 240, 320, 3)
    assert moments_shape(t) == (32, 40, 30, 40)


@pytest.mark.parametrize("bad, key", [
    ({"kind": "video_vae", "frames": 12, "vae": {"stride": 8}}, "multiple of 8"),
    ({"kind": "video_vae", "frames": 0}, "needs frames > 0"),
    ({"kind": "vae", "frames": 8}, "image VAE"),
    ({"kind": "pixel", "frames": 6, "temporal_patch": 4, "image_size": 8}, "does not divide the 6"),
    ({"kind": "pixel", "temporal_patch": 2}, "needs frames > 0"),
    ({"kind": "pixel", "frames": 8, "image_size": [16, 20], "patch_size": 8}, "width 20"),
])
def test_video_tokenizer_config_errors_name_the_setting(bad, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [f"tokenizer={bad}".replace("'", '"')])


def test_square_pair_is_the_same_config_as_a_side():
    a = TokenizerConfig(image_size=[28, 28], patch_size=7)
    assert a.image_size == 28 and a == TokenizerConfig(image_size=28, patch_size=7)


def test_pixel_video_tokenizer_round_trips_exactly():
    cfg = TokenizerConfig(kind="pixel", image_size=[16, 24], channels=1, frames=8, patch_size=8, temporal_patch=2)
    tok = build_tokenizer(cfg)
    x = torch.rand(3, *cfg.input_shape) * 2 - 1  # (B, C, T, H, W)
    tokens = tok.encode(x)
    assert tokens.shape == (3, cfg.num_tokens, cfg.token_dim) == (3, 4 * 2 * 3, 128)
    assert torch.equal(tok.decode(tokens), x)


def test_cogvideox_vae_published_layout_latent_frames_and_shapes():
    """CogVideoX-2b's VAE config (diffusers' AutoencoderKLCogVideoX defaults) with random weights: its exact
    parameter count; 8 frames -> 2 latent frames, 16 -> 4 (T -> T/4, the paper's 160 -> 40); decode restores T."""
    cfg = load_config("configs/djepa-l-ucf101.yaml", ["tokenizer.vae.weights=null", "tokenizer.vae.allow_random_init=true",
                                                      "tokenizer.frames=8", "tokenizer.image_size=[16,24]",
                                                      "tokenizer.temporal_patch=2", "tokenizer.patch_size=1",
                                                      "sample.ar_steps=4"]).tokenizer
    tok = build_tokenizer(cfg)
    assert sum(p.numel() for p in tok.vae.parameters()) == 215_583_907
    assert type(tok.vae).__name__ == "AutoencoderKLCogVideoX"
    x = torch.rand(1, *cfg.input_shape) * 2 - 1
    m = tok.encode_moments(x)
    assert m.shape == (1, *moments_shape(cfg)) == (1, 32, 2, 2, 3)
    tokens = tok.moments_to_tokens(m, torch.Generator().manual_seed(0))
    assert tokens.shape == (1, cfg.num_tokens, cfg.token_dim) == (1, 1 * 2 * 3, 16 * 2)
    assert tok.decode(tokens).shape == (1, 3, 8, 16, 24)
    # the frame count rule, and where the causal first frame would appear (1 + 4k frames -> 1 + k)
    assert tok.vae.encode(torch.zeros(1, 3, 16, 16, 16)).latent_dist.mean.shape[2] == 4
    assert tok.vae.encode(torch.zeros(1, 3, 9, 16, 16)).latent_dist.mean.shape[2] == 3


def test_video_vae_without_weights_says_what_to_set():
    cfg = TokenizerConfig(kind="video_vae", frames=8, image_size=16, channels=3, vae={"stride": 8})
    with pytest.raises(ValueError, match="tokenizer.vae.weights"):
        build_tokenizer(cfg)


def test_flow_sampler_on_a_rank3_grid_gives_clips_per_seed():
    from djepa.models.djepa import build_model
    from djepa.samples import sample_images

    cfg = load_config("configs/moving-mnist.yaml", ["model.encoder_depth=1", "model.predictor_depth=1",
                                                    "model.token_loss.flow.sample_steps=3", "sample.ar_steps=4"])
    assert cfg.model.token_loss.kind == "flow" and cfg.tokenizer.grid_shape == (4, 4, 4)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.tokenizer)
    labels = np.array([0, 1, 2, 3])
    clips = sample_images(model, cfg, labels)
    assert clips.shape == (4, 8, 32, 32, 1) and clips.dtype == np.uint8
    # per-sample seeds: sample 2 alone is sample 2 of the batch
    alone = sample_images(model, cfg, labels[2:3], indices=np.array([2]))
    np.testing.assert_array_equal(alone[0], clips[2])


def test_image_samples_are_byte_identical_to_before_the_video_seam():
    """Fixed-seed samples of the MNIST demo's model and a VAE image config, hashed on the commit before the
    video seam (e991929): the seam changed no image number."""
    from djepa.models.djepa import build_model
    from djepa.samples import sample_images

    vae = ["tokenizer.kind=vae", "tokenizer.image_size=16", "tokenizer.channels=3", "tokenizer.vae.stride=4",
           "tokenizer.vae.latent_channels=4", "tokenizer.vae.block_out_channels=[8,8,8]",
           "tokenizer.vae.norm_num_groups=4", "tokenizer.vae.allow_random_init=true", "tokenizer.patch_size=1",
           "sample.ar_steps=4"]
    for over, want in (([], "84725eacf55344e6"), (vae, "ecafbdfee41665e1")):
        cfg = load_config("configs/mnist.yaml", over + ["model.token_loss.diffusion.sample_steps=5"])
        torch.manual_seed(0)
        x = sample_images(build_model(cfg.model, cfg.tokenizer), cfg, np.arange(6) % 10)
        assert hashlib.sha256(x.tobytes()).hexdigest()[:16] == want


def test_image_sampling_identities_unchanged():
    """The evaluation shards' identity of image configs (hashed on e991929): earlier evaluations still resume."""
    from djepa.eval.shards import identity_hash, sampling_identity

    for path, want in (("configs/mnist.yaml", "2fb0a7c2abeb8c74"), ("configs/djepa-b.yaml", "d6f4c48a57dc5cf3")):
        assert identity_hash(sampling_identity(load_config(path), "x" * 64)) == want
