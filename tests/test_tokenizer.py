import pytest
import torch

from djepa.config import load_config
from djepa.models.tokenizer import VAETokenizer, build_tokenizer, patchify, unpatchify


@pytest.mark.parametrize("shape, patch, n, dim", [
    ((2, 3, 12), 4, 3, 12),                # audio-like rank 1
    ((2, 3, 8, 6), 2, 12, 12),             # image rank 2
    ((2, 2, 4, 6, 8), 2, 2 * 3 * 4, 16),   # video rank 3
])
def test_patchify_round_trip(shape, patch, n, dim):
    x = torch.randn(shape)
    tokens = patchify(x, patch)
    assert tokens.shape == (shape[0], n, dim)
    grid = tuple(s // patch for s in shape[2:])
    assert torch.equal(unpatchify(tokens, patch, grid), x)


def test_patchify_layout_matches_mar_channel_order():
    # token (h, w) holds channels-major patch values: index c * p * p + i * p + j
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    t = patchify(x, 2)
    assert torch.equal(t[0, 1], torch.stack([x[0, c, i, 2 + j] for c in range(2) for i in range(2) for j in range(2)]))


def test_patchify_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.zeros(1, 1, 5, 4), 2)
    with pytest.raises(ValueError, match="rank"):
        patchify(torch.zeros(1, 1, 2, 2, 2, 2), 1)


def test_pixel_tokenizer_round_trip():
    cfg = load_config("configs/digits.yaml").tokenizer
    tok = build_tokenizer(cfg)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    tokens = tok.encode(x)
    assert tokens.shape == (3, cfg.num_tokens, cfg.token_dim) == (3, 16, 4)
    assert torch.equal(tok.decode(tokens), x)


def test_vae_tokenizer_random_init_from_config():
    cfg = load_config(None, [
        "tokenizer.kind=vae", "tokenizer.image_size=16", "tokenizer.channels=3", "tokenizer.vae.stride=4",
        "tokenizer.vae.latent_channels=4", "tokenizer.vae.block_out_channels=[8,8,16]",
        "tokenizer.vae.layers_per_block=1", "tokenizer.vae.norm_num_groups=4", "tokenizer.vae.allow_random_init=true",
        "tokenizer.vae.scale_factor=0.5", "sample.ar_steps=4",
    ]).tokenizer
    tok = VAETokenizer(cfg)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    moments = tok.encode_moments(x)
    assert moments.shape == (2, 8, 4, 4)  # mean and log-variance
    g = torch.Generator().manual_seed(0)
    a = tok.moments_to_tokens(moments, g)
    assert a.shape == (2, 16, 4)
    # the scale factor applies to the posterior sample; two draws differ, their mean is the scaled mean
    b = tok.moments_to_tokens(moments, g)
    assert not torch.equal(a, b)
    mean = patchify(moments[:, :4] * 0.5, 1)
    draws = torch.stack([tok.moments_to_tokens(moments, g) for _ in range(400)]).mean(0)
    assert torch.allclose(draws, mean, atol=0.15)
    assert tok.decode(a).shape == (2, 3, 16, 16)


def test_vae_without_weights_names_the_setting():
    cfg = load_config("configs/djepa-b.yaml").tokenizer
    with pytest.raises(ValueError, match="tokenizer.vae.weights"):
        VAETokenizer(cfg)


def test_latent_shift_and_scale_round_trip():
    from djepa.config import VAEConfig
    from djepa.models.tokenizer import moments_to_tokens, scale_latent, unscale_latent

    vae = VAEConfig(scale_factor=0.5, shift_factor=0.25)
    latent = torch.randn(2, 4, 3, 3)
    assert torch.allclose(scale_latent(latent, vae), (latent - 0.25) * 0.5)
    assert torch.allclose(unscale_latent(scale_latent(latent, vae), vae), latent, atol=1e-6)
    from djepa.config import TokenizerConfig

    tok = TokenizerConfig(kind="vae", image_size=48, channels=3, vae={"scale_factor": 0.5, "shift_factor": 0.25,
                                                                       "latent_channels": 4})
    moments = torch.cat([latent, torch.full_like(latent, -30.0)], dim=1)  # ~zero variance: the mean itself
    tokens = moments_to_tokens(moments, tok, torch.Generator().manual_seed(0))
    assert torch.allclose(tokens, ((latent - 0.25) * 0.5).flatten(2).transpose(1, 2), atol=1e-5)
