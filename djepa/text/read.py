"""Ray Data readers of image-caption pairs: a caption folder (captions.scan_captions) or WebDataset shards
(shards.probe_shards), both giving rows {key: str, image: uint8 (H, W, C), caption: str}.

Pixels are made as class-folder images are (djepa/data/images.py: the same colour-mode conversion to L or RGB,
the same ADM centre crop when `size` is given), so `model_input` of a row equals decode_image of its file, bit
for bit. Without `size` the images keep their own sizes (a variable-shaped tensor column).

An image that cannot be decoded, or a sample that is not a pair, is recorded in `bad_dir` as one text file per
batch of "where<TAB>kind: detail" lines and left out (on_bad=skip), or recorded and then the task fails
(on_bad=fail), as the encode job's image decode tasks do: the driver reads the records, which reach it intact
whatever Ray does to the exception, and raises captions.BadCaptionError.of(records).
"""
from __future__ import annotations

import functools
import io
import uuid
from pathlib import Path

import numpy as np

from djepa.data.images import center_crop, to_8bit
from djepa.text.captions import BadCaptionError, CaptionScan, record
from djepa.text.shards import BadSample, caption_of, members_of, pillow_why


Size = int | tuple[int, int] | None  # a side, (height, width) as tokenizer.image_size, or None: each image's own


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """A side, or (height, width), as tokenizer.image_size gives it -> (height, width)."""
    return (size, size) if isinstance(size, int) else tuple(size)


def decode_pixels(data: bytes, size: Size, channels: int) -> np.ndarray:
    """Encoded bytes -> uint8 (H, W, channels): images.to_8bit, then images.center_crop to (size, size) (or to
    size = (height, width)) when size is given; raises on an unreadable file."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        im = to_8bit(im, channels)
        if size:
            im = center_crop(im, size)
        return np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], channels)


def model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W, C) -> float32 (B, C, H, W) in [-1, 1], the tokenizer's input (as decode_image gives)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 127.5 - 1.0


def _columns(rows: list[dict], size: Size, channels: int) -> dict:
    """Rows -> a batch; a fixed size stacks into one uint8 (B, H, W, C) array, else a list of arrays."""
    if size:
        image = np.stack([r["image"] for r in rows]) if rows else np.zeros((0, *_hw(size), channels), np.uint8)
    else:
        image = [r["image"] for r in rows]
    return {"key": np.asarray([r["key"] for r in rows], dtype=object), "image": image,
            "caption": np.asarray([r["caption"] for r in rows], dtype=object)}


def _report(bad: list[str], bad_dir: str, on_bad: str) -> None:
    if bad:
        Path(bad_dir, f"{uuid.uuid4().hex}.txt").write_text("\n".join(bad) + "\n")
        if on_bad == "fail":
            raise BadCaptionError.of(bad)


def _decode_files(batch: dict, size: Size, channels: int, on_bad: str, bad_dir: str) -> dict:
    """A batch of (path, key, caption) -> rows with decoded images; unreadable files recorded (module docstring)."""
    rows, bad = [], []
    for path, key, caption in zip(batch["path"], batch["key"], batch["caption"]):
        try:
            rows.append({"key": key, "image": decode_pixels(Path(path).read_bytes(), size, channels),
                         "caption": caption})
        except Exception as err:  # Pillow raises many types for a broken file, OSError for a vanished one
            bad.append(record(str(path), "unreadable image", pillow_why(err)))
            if on_bad == "fail":
                break
    _report(bad, bad_dir, on_bad)
    return _columns(rows, size, channels)


def read_caption_folder(scan: CaptionScan, on_bad: str, bad_dir: str | Path, size: Size = None,
                        channels: int = 3, batch_size: int = 64):
    """The scan's pairs as a Ray Dataset of {key (the path under data.root), image, caption}; the images are
    read and decoded by Ray tasks (local or mounted paths). Row order is Ray's (the keys name the rows)."""
    import ray.data

    items = [{"path": p, "key": scan.key(p), "caption": c} for p, c in scan.pairs]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // batch_size, 1024)))
    kwargs = dict(size=size, channels=channels, on_bad=on_bad, bad_dir=str(bad_dir))
    return ds.map_batches(_decode_files, fn_kwargs=kwargs, batch_size=batch_size)


def decode_sample(sample: dict, size: Size, channels: int) -> dict:
    """read_webdataset's decoder: one grouped sample {__key__, __url__, suffix: bytes} -> {key, image, caption,
    bad} with key "<shard file name>/<sample key>"; a bad sample keeps a black placeholder image and says why in
    `bad` (one row shape for every sample: the next step drops it)."""
    url, key = sample["__url__"], sample["__key__"]
    row = {"key": f"{Path(url).name}/{key}", "where": f"{url}/{key}", "caption": "", "bad": ""}
    try:
        im, tx = members_of(key, [s for s in sample if not s.startswith("__")])
        row["caption"] = caption_of(tx, sample[tx])
        try:
            row["image"] = decode_pixels(sample[im], size, channels)
        except Exception as err:  # Pillow raises many types for a broken file
            raise BadSample("unreadable image", pillow_why(err)) from None
    except BadSample as err:
        row["bad"] = f"{err.kind}: {err.detail}"
        row["image"] = np.zeros((*_hw(size or 1), channels), np.uint8)
    return row


def _keep_good(batch: dict, size: Size, channels: int, on_bad: str, bad_dir: str) -> dict:
    """Drop (and record) the samples decode_sample marked bad."""
    bad = [f"{w}\t{b}" for w, b in zip(batch["where"], batch["bad"]) if b]
    _report(bad if on_bad != "fail" else bad[:1], bad_dir, on_bad)
    keep = [i for i, b in enumerate(batch["bad"]) if not b]
    rows = [{"key": batch["key"][i], "image": batch["image"][i], "caption": batch["caption"][i]} for i in keep]
    return _columns(rows, size, channels)


def read_shards(shards: list[str], on_bad: str, bad_dir: str | Path, size: Size = None, channels: int = 3,
                batch_size: int = 64):
    """WebDataset shards (shards.list_shards, after probe_shards) as a Ray Dataset of {key, image, caption}, read
    with ray.data.read_webdataset (a read task takes whole shards; row order is Ray's, the keys name the rows). Needs no
    `webdataset` package: Ray Data's reader is its own (tarfile and Pillow)."""
    import ray.data

    decoder = functools.partial(decode_sample, size=size, channels=channels)
    ds = ray.data.read_webdataset(list(shards), decoder=decoder)
    kwargs = dict(size=size, channels=channels, on_bad=on_bad, bad_dir=str(bad_dir))
    return ds.map_batches(_keep_good, fn_kwargs=kwargs, batch_size=batch_size)
