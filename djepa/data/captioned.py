"""The encode job's captioned images read from files: data.source caption_folder (data.root, in one of the layouts
of djepa/text/captions.py) and webdataset (data.shards, djepa/text/shards.py).

As for image and video folders, the driver scans (or probes) the source before Ray starts: with
data.on_bad_image=fail the first bad entry stops the job there, named; with skip it is recorded and left out. Ray
Data then reads the pairs (djepa/text/read.py) and each image becomes the tokenizer's input exactly as a class
folder's image does (the same colour modes and ADM centre crop, so the same float32 (C, H, W) in [-1, 1] as
images.decode_image). Captioned data has no classes: every row's label is -1. Bad entries found by the probe
and by the read tasks are merged (each entry once) into bad_captions.txt and counted per kind in the manifest.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from djepa.config import Config, ConfigError
from djepa.console import say
from djepa.text.captions import BadCaptionError, CaptionScan, merge, scan_captions, tally
from djepa.text.read import model_input, read_caption_folder, read_shards
from djepa.text.shards import ShardScan, list_shards, probe_shards


def check(cfg: Config) -> None:
    """Where the pairs are, and the images the tokenizer takes, checked before anything is read (as a class
    folder's data.root is: a preset may leave them to --set; the config checks model.condition and frames)."""
    d = cfg.data
    if d.source == "caption_folder" and not d.root:
        raise ConfigError("data.source=caption_folder needs data.root (the directory holding the images and their "
                          "captions)")
    if d.source == "webdataset" and not d.shards:
        raise ConfigError("data.source=webdataset needs data.shards (a brace pattern such as /data/{00000..00099}.tar, "
                          "a directory of .tar shards, or a list of them)")
    if cfg.tokenizer.channels not in (1, 3):
        raise ConfigError(f"data.source={cfg.data.source} reads grey (tokenizer.channels=1) or RGB (3) images, not "
                          f"tokenizer.channels={cfg.tokenizer.channels}")


def _shard_specs(shards: str | list[str]) -> list[str]:
    return [shards] if isinstance(shards, str) else list(shards)


def settings(cfg: Config) -> dict:
    """The encode settings of a captioned source: where its pairs are (absolute paths; a brace pattern or a
    directory as written, as a folder's root is: what it holds is not hashed)."""
    d = cfg.data
    if d.source == "webdataset":
        return {"shards": [s if "://" in s else str(Path(s).resolve()) for s in _shard_specs(d.shards)]}
    captions = None
    if d.captions:
        captions = str(Path(d.captions) if Path(d.captions).is_absolute() else Path(d.root, d.captions).resolve())
    return {"root": str(Path(d.root).resolve()), "caption_layout": d.caption_layout, "captions": captions}


def scan(cfg: Config) -> CaptionScan | ShardScan:
    """The pairs Ray will read, checked in the driver (module docstring); scan.bad: the entries left out."""
    d = cfg.data
    if d.source == "caption_folder":
        found = scan_captions(d.root, d.caption_layout, d.captions, d.on_bad_image)
        table = f" from {found.captions_file}" if found.captions_file else ""
        say("encode", f"{d.root}: {len(found.pairs):,} image-caption pairs ({found.layout} captions{table}), "
                      f"{len(found.bad)} bad entries, {len(found.ignored)} other file(s) ignored")
        return found
    shards = list_shards(d.shards)
    found = probe_shards(shards, d.on_bad_image)
    say("encode", f"data.shards: {len(found.shards)} of {len(shards)} shard(s) usable, {found.samples:,} samples, "
                  f"{len(found.bad)} bad")
    return found


def _model_rows(batch: dict) -> dict:
    """The readers' rows -> the encode pipeline's: uint8 (B, H, W, C) -> float32 (B, C, H, W) in [-1, 1], label -1."""
    return {"image": model_input(batch["image"]), "label": np.full(len(batch["key"]), -1, np.int64),
            "key": batch["key"], "caption": batch["caption"]}


def dataset(cfg: Config, found: CaptionScan | ShardScan, bad_dir: Path):
    """-> (a Ray Dataset of {image, label, key, caption} rows, the class names: none). Reads exactly the pairs (or
    the usable shards) of `found`; the read tasks record what they refuse in bad_dir."""
    t, d = cfg.tokenizer, cfg.data
    kwargs = dict(on_bad=d.on_bad_image, bad_dir=bad_dir, size=t.image_size, channels=t.channels,
                  batch_size=d.encode_batch_size)
    ds = read_caption_folder(found, **kwargs) if isinstance(found, CaptionScan) else read_shards(found.shards,
                                                                                                 **kwargs)
    return ds.map_batches(_model_rows, batch_size=d.encode_batch_size), []


def records(probe: list[str], tasks: list[str]) -> list[str]:
    """The bad entries of one encode: the probe's, in the order found, then the read tasks' (each entry once)."""
    return merge(probe, sorted(tasks))


def failure(records: list[str]) -> BadCaptionError:
    """The error of a read task that met a bad entry with data.on_bad_image=fail."""
    return BadCaptionError.of(records)


def manifest_keys(found: CaptionScan | ShardScan, bad: list[str]) -> dict:
    """What a captioned source adds to the manifest: the bad entries per kind, and what was read."""
    read = ({"caption_layout": found.layout, "captions_file": found.captions_file} if isinstance(found, CaptionScan)
            else {"tar_shards": len(found.shards)})
    return read | {"skipped_kinds": tally(bad)}
