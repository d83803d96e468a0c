"""Reading an encoded dataset for training: checks up front, a streaming Ray Dataset, batches -> tokens.

`open_encoded` runs in the driver before any worker starts: a missing directory, a
manifest written for another tokenizer, a truncated Parquet shard, or one whose bytes no longer
match the sha256 recorded at encode is named there, with what to do. Workers then stream their
shard; `batch_tokens` picks the image or its mirror per row and draws a fresh posterior sample,
so no two epochs see the same tokens.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from djepa.conditions import Conditioner, is_text
from djepa.config import Config
from djepa.data.format import FORMAT, DatasetError  # noqa: F401  (DatasetError: still importable from here)
from djepa.digest import files_sha256
from djepa.models.tokenizer import moments_shape, moments_to_tokens


def _reencode_hint(cfg: Config, path: Path) -> str:
    return (f"encode it with `python jobs/encode.py --config <your config> --set data.encoded_dir={path}` "
            f"(data.source={cfg.data.source})")


def open_encoded(cfg: Config, path: str | Path) -> dict:
    """Validate the encoded dataset at `path` against cfg's tokenizer and model; -> its manifest."""
    path = Path(path)
    mf = path / "manifest.json"
    if not path.is_dir():
        raise DatasetError(f"encoded dataset {path} does not exist; {_reencode_hint(cfg, path)}")
    if not mf.is_file():
        raise DatasetError(f"{mf} is missing: {path} is not a finished encoded dataset; {_reencode_hint(cfg, path)}")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{mf} is not valid JSON ({err}); re-create the dataset: {_reencode_hint(cfg, path)}")
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{mf} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    t = cfg.tokenizer
    want = {"tokenizer": t.kind, "moments_shape": list(moments_shape(t)),
            "vae": t.vae.weights if t.kind != "pixel" else None}
    got = {k: manifest.get(k) for k in want}
    if got != want:
        # scale_factor and patch_size are applied when tokens are drawn, so they may differ from the manifest
        raise DatasetError(f"{mf} was encoded with {got}, but the config's tokenizer needs {want}. Point "
                           f"data.encoded_dir at a matching dataset, or {_reencode_hint(cfg, path)}")
    _check_text(cfg, manifest, mf)
    if not is_text(cfg) and manifest["num_classes"] > cfg.model.num_classes:
        raise DatasetError(f"{mf} has {manifest['num_classes']} classes but model.num_classes="
                           f"{cfg.model.num_classes}; raise model.num_classes")
    _check_shards(path, manifest, cfg)
    return manifest


def _check_text(cfg: Config, manifest: dict, mf: Path) -> None:
    """A text model needs captions, and embeddings of its own encoder when it reads stored ones."""
    if not is_text(cfg):
        if manifest.get("captions"):
            raise DatasetError(f"{mf} holds captioned data but model.condition=class; set model.condition=text")
        return
    if not manifest.get("captions"):
        raise DatasetError(f"{mf} holds no captions (data.source={manifest.get('source')}) but model.condition=text; "
                           f"encode captioned data (data.source=mnist_pairs, caption_folder or webdataset)")
    if cfg.text.precompute and manifest.get("text") != text_identity(cfg):
        raise DatasetError(f"{mf} stores text embeddings of {manifest.get('text')}, but the config's text encoder is "
                           f"{text_identity(cfg)}; encode the data again with this text: section, or set "
                           f"text.precompute=false to encode the captions while training")


def text_identity(cfg: Config) -> dict:
    """What stored text embeddings depend on (the encoder, its length, its hidden state), for the manifest."""
    return cfg.text.model_dump(mode="json", exclude={"precompute", "dtype"})


def _check_shards(path: Path, manifest: dict, cfg: Config) -> None:
    """Read every shard's footer (cheap: metadata only) and compare row counts with the manifest."""
    import pyarrow.parquet as pq

    for f in manifest["files"]:
        shard = path / f["name"]
        try:
            rows = pq.ParquetFile(shard).metadata.num_rows
        except FileNotFoundError:
            raise DatasetError(f"shard {shard} listed in {path / 'manifest.json'} is missing; restore it, "
                               f"or delete {path} and {_reencode_hint(cfg, path)}") from None
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError for a damaged footer
            raise DatasetError(f"shard {shard} is corrupt ({type(err).__name__}: {err}); delete {path} and "
                               f"{_reencode_hint(cfg, path)}") from None
        if rows != f["rows"]:
            raise DatasetError(f"shard {shard} has {rows} rows but the manifest says {f['rows']}; delete {path} "
                               f"and {_reencode_hint(cfg, path)}")
        size = shard.stat().st_size
        if f.get("bytes") not in (None, size):
            raise DatasetError(f"shard {shard} has {size:,} bytes but the manifest says {f['bytes']:,}; restore it "
                               f"from a copy of {path}, or delete {path} and {_reencode_hint(cfg, path)}")
    _check_content(path, manifest, cfg)


def _check_content(path: Path, manifest: dict, cfg: Config) -> None:
    """Every shard's sha256 against the manifest, once, in the driver (workers and epochs never re-hash): the
    whole dataset is read once, several shards at a time (ImageNet's ~85 GB: minutes; see the README)."""
    hashed = [f for f in manifest["files"] if f.get("sha256")]
    if not hashed:
        print(f"[data] {path}: encoded before shard hashes were recorded, so its shards are checked by row count "
              f"and size only; re-encode it to have their content checked too", flush=True)
        return
    t0 = time.perf_counter()
    digests = files_sha256([path / f["name"] for f in hashed])
    for f, digest in zip(hashed, digests):
        if digest != f["sha256"]:
            raise DatasetError(f"shard {path / f['name']} is damaged: its content does not match the sha256 recorded "
                               f"in {path / 'manifest.json'} when it was encoded (same size, different bytes: a bad "
                               f"disk or copy, or an edit). Copy it again from a good copy of {path}, or delete {path} "
                               f"and {_reencode_hint(cfg, path)}")
    gb = sum(f["bytes"] for f in hashed) / 1e9
    print(f"[data] {path}: sha256 of {len(hashed)} shard(s), {gb:.2f} GB, checked in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)


def epochs_per_pass(cfg: Config, rows: int) -> int:
    """Epochs in one pass of the stream: 1 for ImageNet, many for the bundled digits."""
    return max(1, -(-cfg.data.min_rows_per_pass // rows))


def _tensor(table, name: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = table[name].combine_chunks()
    arr = getattr(arr, "storage", arr)  # Ray's tensor extension type wraps a flat list array
    return np.asarray(arr.flatten(), dtype=np.float32).reshape(len(arr), *shape)


def read_shard(path: str | Path, shape: tuple[int, ...], text_shape: tuple[int, ...] | None = None
               ) -> dict[str, np.ndarray]:
    """One Parquet shard -> {key, label, moments, moments_flip[, valid_frames][, caption][, text_emb, text_len]}
    arrays (also without Ray's tensor type). text_shape (L, D): the stored text embeddings' shape, if any."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(path))
    out = {"key": table["key"].to_numpy(zero_copy_only=False), "label": table["label"].to_numpy()}
    if "valid_frames" in table.column_names:  # video rows: the real frames before the zero padding
        out["valid_frames"] = table["valid_frames"].to_numpy()
    if "caption" in table.column_names:  # text rows: the caption, and its embeddings when computed at encode time
        out["caption"] = table["caption"].to_numpy(zero_copy_only=False)
    if text_shape is not None:
        out["text_emb"], out["text_len"] = _tensor(table, "text_emb", text_shape), table["text_len"].to_numpy()
    for name in ("moments", "moments_flip"):
        out[name] = _tensor(table, name, shape)
    return out


TRAIN_COLUMNS = ("label", "moments", "moments_flip", "caption", "text_emb", "text_len")


def _read_shards(batch: dict, shape: tuple[int, ...], text_shape: tuple[int, ...] | None) -> dict[str, np.ndarray]:
    parts = [read_shard(p, shape, text_shape) for p in batch["path"]]
    return {k: np.concatenate([p[k] for p in parts]) for k in TRAIN_COLUMNS if k in parts[0]}


def training_dataset(cfg: Config, path: str | Path, manifest: dict):
    """A lazy Ray Dataset: every shard epochs_per_pass times per pass, in a new random order each pass
    (rows are further mixed in each worker's shuffle buffer). Read tasks stream one shard at a time."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # the training loop reports progress
    files = [str(Path(path) / f["name"]) for f in manifest["files"]] * epochs_per_pass(cfg, manifest["rows"])
    ds = ray.data.from_items([{"path": f} for f in files], override_num_blocks=len(files))
    text = manifest.get("text_shape") if is_text(cfg) and cfg.text.precompute else None
    return ds.randomize_block_order().map_batches(
        _read_shards, fn_kwargs={"shape": tuple(manifest["moments_shape"]), "text_shape": text and tuple(text)},
        batch_size=1)


def collate(batch: dict[str, np.ndarray]) -> dict:
    """iter_torch_batches' collate_fn: numeric columns -> tensors, captions stay a list of str (the text encoder of
    an on-the-fly text model reads them in the worker)."""
    return {k: (list(v) if v.dtype == object else torch.as_tensor(v)) for k, v in batch.items()}


def batch_tokens(batch: dict, cfg: Config, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", conditioner: Conditioner | None = None):
    """{label, moments, moments_flip[, caption | text_emb, text_len]} -> (tokens (B, N, D), the model's condition):
    per row the image or its mirror (when data.hflip), then a fresh posterior sample (VAE) or the pixels
    themselves; labels (B,), or for a text model its stored embeddings, or its captions encoded now."""
    moments = batch["moments"].to(device, torch.float32, non_blocking=True)  # (B, *moments_shape)
    if cfg.data.hflip:
        flipped = batch["moments_flip"].to(device, torch.float32, non_blocking=True)
        pick = torch.rand(len(moments), generator=generator, device=device) < 0.5
        moments = torch.where(pick.view(-1, *[1] * (moments.dim() - 1)), flipped, moments)  # images or clips
    tokens = moments_to_tokens(moments, cfg.tokenizer, generator)
    if not is_text(cfg):
        return tokens, batch["label"].to(device, torch.long, non_blocking=True)
    conditioner = conditioner or Conditioner(cfg, device)
    if "text_emb" in batch:
        return tokens, conditioner.stored(batch["text_emb"], batch["text_len"])
    return tokens, conditioner(batch["caption"])
