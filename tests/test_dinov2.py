"""FD-DINOv2's extractor: DINOv2 ViT-L/14 in the release file's exact layout (random weights, nothing
downloaded), EDM2's preprocessing, deterministic features, and an FD of a set against itself of ~0."""
import numpy as np
import pytest
import torch

from djepa.config import Config
from djepa.eval import dinov2
from djepa.eval.features import DinoV2Extractor, FeatureError, build_extractors, extractor_identities
from djepa.eval.metrics import FeatureStats, frechet_distance


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return dinov2.random_release_weights(tmp_path_factory.mktemp("dinov2") / "dinov2_vitl14_pretrain.pth")


def test_release_layout_loads_strictly_with_dinov2s_parameter_count(weights):
    state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    # the release file: 518 px position embeddings (37 x 37 + class) and the masked-modelling token
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 1024) and state["mask_token"].shape == (1, 1024)
    assert sum(v.numel() for v in state.values()) == 304_368_640  # DINOv2 ViT-L/14's published 304M
    assert len([k for k in state if k.startswith("blocks.")]) == 24 * 14
    converted = dinov2.release_to_timm(state)
    assert converted["pos_embed"].shape == (1, 1 + 16 * 16, 1024)
    assert torch.equal(converted["pos_embed"][:, 0], state["pos_embed"][:, 0])  # the class position is kept
    # DINOv2's rule (bicubic by the scale factor (16 + 0.1) / 37, no antialias), not a resize to 16 x 16 as
    # timm's own loader does: the two differ, and only the first gives the features DINOv2's forward gives
    grid = state["pos_embed"][0, 1:].reshape(37, 37, 1024).permute(2, 0, 1)[None]
    by_scale = torch.nn.functional.interpolate(grid, scale_factor=16.1 / 37, mode="bicubic")
    by_size = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic")
    assert torch.equal(by_scale.flatten(2).transpose(1, 2)[0], converted["pos_embed"][0, 1:])
    assert not torch.allclose(by_size, by_scale)
    net = dinov2.build_network()
    assert net.load_state_dict(converted, strict=True)  # every tensor placed, nothing left over


def test_preprocessing_is_edm2s_and_grey_is_repeated():
    x = np.full((2, 28, 28, 1), 128, np.uint8)
    p = dinov2.preprocess(torch.from_numpy(x))
    assert p.shape == (2, 3, 224, 224)
    want = (128 / 255 - torch.tensor(dinov2.MEAN)) / torch.tensor(dinov2.STD)  # a constant image stays constant
    assert torch.allclose(p[0, :, 100, 100], want, atol=1e-5)
    assert torch.allclose(p.amin(dim=(2, 3)), p.amax(dim=(2, 3)), atol=1e-5)


def test_features_shape_determinism_and_self_fd(weights):
    torch.manual_seed(0)
    ex = DinoV2Extractor(str(weights), batch_size=3)
    assert ex.identity.startswith("dinov2-vitl14-") and ex.dims == 1024
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    f, logits = ex(images)
    assert f.shape == (6, 1024) and logits.shape == (6, 0) and torch.isfinite(f).all()
    again, _ = DinoV2Extractor(str(weights), batch_size=6)(images)  # another batch size, a fresh network
    assert torch.allclose(f, again, atol=1e-4)
    assert (f[0] - f[1]).abs().max() > 1e-2  # the features depend on the image
    mu, sigma = FeatureStats.of(f).mu_sigma()
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-3 * float(np.trace(sigma))


def test_config_identity_and_missing_weights_named(tmp_path, weights):
    cfg = Config.model_validate({"eval": {"features": ["domain", "dinov2"], "dinov2_weights": str(weights)}})
    ids = extractor_identities(cfg)
    assert ids["dinov2"].startswith("dinov2-vitl14-") and list(ids) == ["domain", "dinov2"]
    missing = Config.model_validate({"eval": {"features": ["dinov2"], "dinov2_weights": str(tmp_path / "no.pth")}})
    with pytest.raises(FeatureError, match="eval.dinov2_weights"):
        build_extractors(missing)
