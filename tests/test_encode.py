"""The encode job (Ray Data) and reading encoded data back: equality with in-process encoding,
idempotence, bad images, and the batch -> tokens step of training."""
import json

import numpy as np
import pytest
import torch

from djepa.data.encode import BadImageError, encode
from djepa.data.encoded import batch_tokens, open_encoded, read_shard
from djepa.data.sources import load_digits_arrays
from djepa.models.tokenizer import build_tokenizer


def read_all(path, manifest):
    parts = [read_shard(path / f["name"], tuple(manifest["moments_shape"])) for f in manifest["files"]]
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(data["key"])
    return {k: v[order] for k, v in data.items()}


def test_encode_digits_matches_in_process(ray_session, tiny, tmp_path, capsys):
    out = tmp_path / "enc"
    cfg = tiny(f"data.encoded_dir={out}", "data.rows_per_file=500")
    manifest = encode(cfg)
    assert manifest["rows"] == 1797 and manifest["num_classes"] == 10 and len(manifest["files"]) >= 3
    assert manifest["moments_shape"] == [1, 8, 8] and manifest["skipped"] == 0
    assert json.loads((out / "manifest.json").read_text()) == manifest
    got = read_all(out, manifest)
    images, labels = load_digits_arrays()
    ref = build_tokenizer(cfg.tokenizer).encode_moments(torch.from_numpy(images)).numpy()
    np.testing.assert_array_equal(got["label"], labels)
    np.testing.assert_array_equal(got["moments"], ref)
    np.testing.assert_array_equal(got["moments_flip"], ref[..., ::-1])
    assert open_encoded(cfg, out)["rows"] == 1797

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    assert encode(cfg) == manifest  # a finished output is left alone
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes


def _image_folder(root, n_per_class=6):
    """A class-folder tree of 12x10 RGB PNGs from the digits (so the centre crop matters) + one broken file."""
    from PIL import Image

    images, labels = load_digits_arrays()
    for c in range(3):
        (root / f"class_{c}").mkdir(parents=True)
        for i in np.flatnonzero(labels == c)[:n_per_class]:
            g = ((images[i, 0] + 1) * 127.5).astype(np.uint8)
            rgb = np.stack([g, g[::-1], g.T], -1).repeat(2, 0).repeat(2, 1)[:, :14]  # 16 x 14
            Image.fromarray(rgb).save(root / f"class_{c}" / f"{i}.png")
    (root / "class_1" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "class_2" / "notes.txt").write_text("not an image")
    return root


VAE = ["tokenizer.kind=vae", "tokenizer.image_size=8", "tokenizer.channels=3", "tokenizer.patch_size=1",
       "tokenizer.vae.allow_random_init=true", "tokenizer.vae.stride=2", "tokenizer.vae.latent_channels=4",
       "tokenizer.vae.block_out_channels=[8,8]", "tokenizer.vae.layers_per_block=1",
       "tokenizer.vae.norm_num_groups=4", "data.source=folder", "model.num_classes=3", "data.hflip=true"]


def test_encode_stops_at_a_bad_image_by_default(ray_session, tiny, tmp_path):
    root = _image_folder(tmp_path / "imgs")
    out = tmp_path / "enc"
    with pytest.raises(BadImageError, match=r"unreadable image .*class_1/broken.png.*data.on_bad_image=skip"):
        encode(tiny(*VAE, f"data.root={root}", f"data.encoded_dir={out}"))
    assert not out.exists() and not list(tmp_path.glob(".enc.tmp*"))  # nothing half-written (.enc.lock stays)
    # (a separate test from the one below: pytest's log capture keeps the failed dataset's actors
    # alive until the end of the test, through the traceback of the error Ray Data logs)


def test_encode_stops_at_an_image_broken_after_its_header(ray_session, tiny, tmp_path):
    """A file whose header Pillow identifies (so the driver's check passes) but whose body is cut: the Ray
    decode task finds it and records it; the job fails with the same error, naming the file."""
    from PIL import Image

    from djepa.data.images import decode_image, unreadable_headers

    root = _image_folder(tmp_path / "imgs")
    (root / "class_1" / "broken.png").unlink()
    Image.fromarray(np.full((16, 14, 3), 7, np.uint8)).save(root / "class_0" / "cut.png")
    data = (root / "class_0" / "cut.png").read_bytes()
    (root / "class_0" / "cut.png").write_bytes(data[: len(data) // 2])
    assert unreadable_headers([str(root / "class_0" / "cut.png")]) == []
    with pytest.raises(Exception):
        decode_image((root / "class_0" / "cut.png").read_bytes(), 8, 3)
    out = tmp_path / "enc"
    with pytest.raises(BadImageError, match=r"^unreadable image \S*class_0/cut.png \(\w+Error: .*\)\. Remove it, or set "
                                            r"data.on_bad_image=skip"):
        encode(tiny(*VAE, f"data.root={root}", f"data.encoded_dir={out}"))
    assert not out.exists() and not list(tmp_path.glob(".enc.tmp*"))


def test_encode_folder_with_vae_skips_bad_images(ray_session, tiny, tmp_path):
    from djepa.data.images import decode_image

    root = _image_folder(tmp_path / "imgs")
    out = tmp_path / "enc"
    cfg = tiny(*VAE, f"data.root={root}", f"data.encoded_dir={out}", "data.on_bad_image=skip")
    manifest = encode(cfg)
    assert manifest["rows"] == 18 and manifest["skipped"] == 1
    assert manifest["classes"] == ["class_0", "class_1", "class_2"] and manifest["moments_shape"] == [8, 4, 4]
    assert manifest["latent_shape"] == [4, 4, 4] and manifest["tokenizer"] == "vae"
    assert "class_1/broken.png" in (out / "bad_images.txt").read_text()
    got = read_all(out, manifest)
    np.testing.assert_array_equal(got["label"], [int(k.split("/")[0][-1]) for k in got["key"]])
    # the random VAE is seeded, so the actor's encoder and this one are the same network
    x = torch.stack([torch.from_numpy(decode_image((root / k).read_bytes(), 8, 3)) for k in got["key"]])
    tok = build_tokenizer(cfg.tokenizer)
    np.testing.assert_allclose(got["moments"], tok.encode_moments(x).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["moments_flip"], tok.encode_moments(x.flip(-1)).numpy(), rtol=1e-5, atol=1e-5)


def test_batch_tokens_flips_and_resamples(tiny):
    cfg = tiny("data.hflip=true")  # pixels, patch 2
    m = torch.randn(512, 1, 8, 8)
    batch = {"label": torch.zeros(512), "moments": m, "moments_flip": m + 100.0}
    g = torch.Generator().manual_seed(0)
    tokens, labels = batch_tokens(batch, cfg, g)
    assert tokens.shape == (512, 16, 4) and labels.dtype == torch.long
    flipped = tokens.mean(dim=(1, 2)) > 50
    assert 0.4 < flipped.float().mean() < 0.6  # each row picks its mirror with probability 1/2
    assert not torch.equal(flipped, batch_tokens(batch, cfg, g)[0].mean(dim=(1, 2)) > 50)  # a new choice per call
    no_flip = cfg.model_copy(update={"data": cfg.data.model_copy(update={"hflip": False})})
    assert (batch_tokens(batch, no_flip, g)[0].mean(dim=(1, 2)) < 50).all()

    vae = tiny(*VAE, "data.root=unused", "data.hflip=false")
    mean, logvar = torch.randn(64, 4, 4, 4), torch.full((64, 4, 4, 4), -1.0)
    batch = {"label": torch.zeros(64), "moments": torch.cat([mean, logvar], 1), "moments_flip": None}
    t1, t2 = batch_tokens(batch, vae, g)[0], batch_tokens(batch, vae, g)[0]
    assert not torch.allclose(t1, t2)  # a fresh posterior sample every time
    z = (t1 - t2) / vae.tokenizer.vae.scale_factor / (2 * torch.exp(torch.tensor(-1.0))) ** 0.5
    assert abs(z.std().item() - 1.0) < 0.05  # the difference of two samples has variance 2 * sigma^2
