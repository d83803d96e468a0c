"""Image decoding for class-folder datasets: ADM's centre crop, colour modes, and the scan of a root/<class>/... tree.

What each Pillow mode becomes (then "L" for tokenizer.channels=1, "RGB" for 3):
- L, RGB: unchanged; L -> RGB repeats the grey, RGB -> L is Pillow's ITU-R 601 luma.
- 1 (bilevel): 0 / 255.
- I;16, I;16B, I;16L, I (16-bit grey, e.g. a 16-bit PNG): scaled by 255/65535 and rounded, so the full
  range is kept (Pillow's own convert("L") clips at 255: a 16-bit gradient became 99.6% white).
  16-bit RGB(A) PNGs open as 8-bit RGB(A) in Pillow (the high byte): already scaled.
- P (palette): through its palette to RGB, or RGBA when it has a transparent colour.
- RGBA, LA, PA, RGBa, La (alpha): composited over white (transparent pixels become white, not the
  colour hidden under them, which is often black).
- CMYK: Pillow's conversion without an ICC profile (C, M, Y, K inverted and multiplied); YCbCr, LAB, HSV:
  Pillow's conversion to RGB.
- F (32-bit float) has no agreed range: refused as unreadable (counted, or fatal with on_bad_image=fail).
Animated GIF / multi-page TIFF: the first frame.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from djepa.data.format import DatasetError

# read case-insensitively; any other file under a class folder is listed as ignored, never silently dropped
IMAGE_EXTENSIONS = ["bmp", "gif", "jfif", "jpe", "jpeg", "jpg", "pbm", "pgm", "png", "pnm", "ppm", "tif", "tiff",
                    "webp"]


def to_8bit(im, channels: int):
    """A Pillow image of any mode -> mode L (channels=1) or RGB (3), converted as the module docstring says."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        raise ValueError("32-bit float images have no agreed value range; convert them to 8 or 16 bit")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB" if channels == 3 else "L")


def center_crop(pil_image, size: int | tuple[int, int]):
    """ADM / DiT / MAR preprocessing: halve with a box filter while both sides are >= 2x the target,
    bicubic-resize keeping the aspect until the image just covers the target, then crop the centre.
    size: a side (a square: the short side is resized to it, as ADM does) or (height, width) (video frames)."""
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else size
    while pil_image.size[0] >= 2 * w and pil_image.size[1] >= 2 * h:
        pil_image = pil_image.resize(tuple(s // 2 for s in pil_image.size), resample=Image.BOX)
    scale = max(w / pil_image.size[0], h / pil_image.size[1])  # a square: size / the short side
    pil_image = pil_image.resize(tuple(round(s * scale) for s in pil_image.size), resample=Image.BICUBIC)
    left, top = (pil_image.size[0] - w) // 2, (pil_image.size[1] - h) // 2
    return pil_image.crop((left, top, left + w, top + h))


def decode_image(data: bytes, size: int, channels: int) -> np.ndarray:
    """Encoded bytes -> float32 (C, size, size) in [-1, 1]; raises on an unreadable file."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        im = to_8bit(im, channels)
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


@dataclass
class FolderScan:
    """What encode will read from a class-folder tree, and everything it will not (listed, with why)."""
    classes: list[str]
    files: list[str] = field(default_factory=list)  # absolute paths, sorted; label = classes.index(top folder)
    ignored: list[str] = field(default_factory=list)  # "path<TAB>why" lines

    def label(self, path: str, root: str) -> int:
        return self.classes.index(Path(path).relative_to(root).parts[0])


def scan_folder(root: str | Path) -> FolderScan:
    """root/<class>/[sub-folders/]<image>: every class folder's images at any depth (torchvision's ImageFolder
    rule); files at the root and files that are not images are listed as ignored; a class folder without
    images is an error (it would be a class the model is told to generate but never sees). Hidden files and
    folders (.name) are skipped. Cost: one directory walk in the driver (ImageNet's 1.28M files: a few seconds
    on a local disk, longer on NFS)."""
    classes = folder_classes(root)
    root = Path(root).resolve()
    scan = FolderScan(classes)
    scan.ignored += [f"{p}\tat the root, outside any class folder" for p in sorted(root.iterdir())
                     if p.is_file() and not p.name.startswith(".")]
    empty = []
    for c in classes:
        found = 0
        for dirpath, dirnames, filenames in os.walk(root / c, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = os.path.join(dirpath, name)
                if name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS and "." in name:
                    scan.files.append(path)
                    found += 1
                else:
                    scan.ignored.append(f"{path}\tnot an image format encode reads ({', '.join(IMAGE_EXTENSIONS)})")
        if not found:
            empty.append(str(root / c))
    if empty:
        raise DatasetError(f"data.root={str(root)!r}: class folder(s) without images: {', '.join(empty)}. Each "
                           f"sub-folder of the root is a class; remove empty ones or add their images")
    return scan


def unreadable_headers(files: list[str]) -> list[str]:
    """Files whose header Pillow cannot identify ("path<TAB>why"); reads the first bytes of each file only (a
    truncated body is found later, when the image is decoded)."""
    from PIL import Image

    bad = []
    for path in files:
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018  (identified: the format and size were read)
        except Exception as err:  # PIL raises many types for a broken file
            bad.append(f"{path}\t{type(err).__name__}: {err}")
    return bad
