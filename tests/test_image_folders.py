"""Class-folder datasets: colour modes and bit depths converted as documented, and a folder layout checked in the
driver (empty classes, stray files, nested folders, formats encode does not read), nothing dropped unlisted."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from djepa.data.encoded import DatasetError
from djepa.data.images import decode_image, scan_folder


def _png(im) -> bytes:
    b = io.BytesIO()
    im.save(b, format="PNG")
    return b.getvalue()


def test_16_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    got = decode_image(_png(Image.fromarray(ramp)), 16, 1)[0]  # [-1, 1]
    want = np.rint(ramp / 257.0) / 127.5 - 1.0
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert (got == 1.0).mean() < 0.01  # Pillow's convert("L") made 99.6% of this ramp white


def test_palette_alpha_cmyk_modes():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red under a fully transparent left half
    rgba[:, 4:, 3] = 255
    got = decode_image(_png(Image.fromarray(rgba, "RGBA")), 8, 3)
    np.testing.assert_allclose(got[:, :, :4], 1.0)  # transparent -> white
    np.testing.assert_allclose(got[0, :, 4:], 200 / 127.5 - 1, atol=1e-6)
    la = Image.fromarray(np.stack([np.full((8, 8), 50, np.uint8), np.zeros((8, 8), np.uint8)], -1), "LA")
    np.testing.assert_allclose(decode_image(_png(la), 8, 1), 1.0)
    pal = Image.fromarray(np.full((8, 8, 3), (10, 20, 30), np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    np.testing.assert_allclose(decode_image(_png(pal), 8, 3)[:, 0, 0], np.array([10, 20, 30]) / 127.5 - 1, atol=1e-6)
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    b = io.BytesIO()
    cmyk.save(b, format="JPEG", quality=100)
    red = decode_image(b.getvalue(), 8, 3)[:, 4, 4]
    assert red[0] > 0.9 and red[1] < -0.9 and red[2] < -0.9


def _tree(root):
    for rel in ("cat/a.png", "cat/deep/er/b.PNG", "dog/c.jpeg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((10, 12, 3), 100, np.uint8)).save(root / rel, format="JPEG" if "jpeg" in rel else "PNG")
    (root / "stray.png").write_bytes((root / "cat/a.png").read_bytes())
    (root / "dog/readme.txt").write_text("x")
    (root / "dog/.DS_Store").write_text("x")
    return root


def test_scan_lists_what_it_will_not_read_and_refuses_empty_classes(tmp_path):
    root = _tree(tmp_path / "imgs")
    scan = scan_folder(root)
    assert scan.classes == ["cat", "dog"]
    assert [os.path.relpath(f, root) for f in scan.files] == ["cat/a.png", "cat/deep/er/b.PNG", "dog/c.jpeg"]
    assert [scan.label(f, str(root.resolve())) for f in scan.files] == [0, 0, 1]
    assert sorted(line.split("\t")[0] for line in scan.ignored) == [str(root / "dog/readme.txt"),
                                                                    str(root / "stray.png")]
    (root / "empty").mkdir()
    with pytest.raises(DatasetError, match=rf"class folder\(s\) without images: {root / 'empty'}"):
        scan_folder(root)


def test_encode_nested_folders_and_a_bad_image_named_before_ray(ray_session, tiny, tmp_path):
    from djepa.data.encode import encode

    root = _tree(tmp_path / "imgs")
    out = tmp_path / "enc"
    cfg = tiny("data.source=folder", f"data.root={root}", f"data.encoded_dir={out}", "tokenizer.channels=3",
               "model.num_classes=2")
    manifest = encode(cfg)
    assert manifest["rows"] == 3 and manifest["ignored"] == 2 and manifest["skipped"] == 0
    assert "readme.txt" in (out / "ignored_files.txt").read_text()
    (root / "dog/broken.png").write_bytes(b"\x89PNG not really")
    job = subprocess.run([sys.executable, "jobs/encode.py", "--set", "data.source=folder", f"data.root={root}",
                          f"data.encoded_dir={tmp_path / 'enc2'}", "tokenizer.channels=3", "model.num_classes=2"],
                         capture_output=True, text=True, env=os.environ | {"PYTHONPATH": os.getcwd()}, timeout=300)
    assert job.returncode == 2
    assert f"error: unreadable image {root / 'dog/broken.png'} (UnidentifiedImageError" in job.stderr
    assert "Traceback" not in job.stderr and "Ray" not in job.stdout + job.stderr  # refused before Ray starts
    assert json.loads((out / "manifest.json").read_text()) == manifest
