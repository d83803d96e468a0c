"""Image decoding for class-folder datasets: ADM's centre crop, and the class list of a root/<class>/<image> tree."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "bmp", "webp", "JPEG", "JPG", "PNG"]


def center_crop(pil_image, size: int):
    """ADM / DiT / MAR preprocessing: halve with a box filter while the short side is >= 2*size,
    bicubic-resize the short side to `size`, then crop the centre square."""
    from PIL import Image

    while min(pil_image.size) >= 2 * size:
        pil_image = pil_image.resize(tuple(s // 2 for s in pil_image.size), resample=Image.BOX)
    scale = size / min(pil_image.size)
    pil_image = pil_image.resize(tuple(round(s * scale) for s in pil_image.size), resample=Image.BICUBIC)
    w, h = pil_image.size
    left, top = (w - size) // 2, (h - size) // 2
    return pil_image.crop((left, top, left + size, top + size))


def decode_image(data: bytes, size: int, channels: int) -> np.ndarray:
    """Encoded bytes -> float32 (C, size, size) in [-1, 1]; raises on an unreadable file."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        im = im.convert("RGB" if channels == 3 else "L")
        arr = np.asarray(center_crop(im, size), dtype=np.float32)
    arr = arr.reshape(size, size, channels).transpose(2, 0, 1)
    return arr / 127.5 - 1.0


def folder_classes(root: str | Path) -> list[str]:
    """Sorted sub-directory names: label i is classes[i] (torchvision's ImageFolder order)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={str(root)!r} is not a directory; it must hold one folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"data.root={str(root)!r} has no class folders (expected root/<class>/<image>)")
    return classes
