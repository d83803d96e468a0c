"""The offline encode job: images -> tokenizer moments (image and its flip) -> Parquet shards + manifest.json.

A Ray Data pipeline: images are read and centre-cropped by CPU tasks, the tokenizer runs
in `map_batches` on an actor pool (one GPU each on a cluster, CPU locally), and the shards
are written to a temporary directory that is renamed into place only when complete.
Re-running on a finished output with the same settings does nothing.
"""
from __future__ import annotations

import gc
import hashlib
import json
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from djepa.config import Config, ConfigError, TokenizerConfig
from djepa.console import say
from djepa.data.images import FolderScan, decode_image, scan_folder, unreadable_headers
from djepa.data.sources import load_source
from djepa.digest import files_sha256
from djepa.lock import hold
from djepa.models.tokenizer import moments_shape

FORMAT = "djepa-encoded-v1"


def encode_settings(cfg: Config) -> dict:
    """Everything that changes the encoded bytes; its hash names and guards the output."""
    if cfg.data.source == "folder" and not cfg.data.root:
        raise ConfigError("data.source=folder needs data.root (the directory holding one folder per class)")
    t = cfg.tokenizer
    tok = {"kind": t.kind, "image_size": t.image_size, "channels": t.channels}
    if t.kind == "vae":
        tok |= {"vae_weights": t.vae.weights, "vae_subfolder": t.vae.subfolder, "stride": t.vae.stride,
                "latent_channels": t.vae.latent_channels}
        if not t.vae.weights:  # a randomly initialised VAE is defined by its architecture
            tok |= {"block_out_channels": t.vae.block_out_channels, "layers_per_block": t.vae.layers_per_block}
    root = str(Path(cfg.data.root).resolve()) if cfg.data.source == "folder" else None
    return {"source": cfg.data.source, "root": root, "tokenizer": tok, "on_bad_image": cfg.data.on_bad_image}


def encode_hash(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(encode_settings(cfg), sort_keys=True).encode()).hexdigest()[:12]


def encoded_dir(cfg: Config) -> Path:
    """data.encoded_dir, or outputs/encoded/<source>-<hash> (absolute)."""
    if cfg.data.encoded_dir:
        return Path(cfg.data.encoded_dir).resolve()
    return Path("outputs/encoded", f"{cfg.data.source}-{encode_hash(cfg)}").resolve()


class BadImageError(ValueError):
    """An image that cannot be decoded, with data.on_bad_image=fail (a user error: the job exits 2 naming it)."""

    @classmethod
    def of(cls, bad: list[str]) -> "BadImageError":
        """From records "path<TAB>why" (the first one named, the others counted)."""
        path, why = bad[0].split("\t", 1)
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        return cls(f"unreadable image {path} ({why}){more}. Remove it, or set data.on_bad_image=skip to skip "
                   f"and count such files")


def _bad_records(bad_dir: Path) -> list[str]:
    """The "path<TAB>why" records the decode tasks wrote to `bad_dir`, sorted (once each: a retried task
    records its file again)."""
    return sorted({line for p in bad_dir.glob("*.txt") for line in p.read_text().splitlines()})


class Tokenize:
    """Actor-pool callable: a batch of images -> posterior moments of each image and of its mirror."""

    def __init__(self, tokenizer: dict):
        import torch

        from djepa.models.tokenizer import build_tokenizer

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tok = build_tokenizer(TokenizerConfig.model_validate(tokenizer)).to(self.device)

    def __call__(self, batch: dict) -> dict:
        x = self.torch.from_numpy(np.array(batch["image"], dtype=np.float32)).to(self.device)  # a writable copy
        with self.torch.no_grad():
            m = self.tok.encode_moments(x).float().cpu().numpy()  # (B, *moments_shape)
            mf = self.tok.encode_moments(x.flip(-1)).float().cpu().numpy()
        return {"key": batch["key"], "label": batch["label"].astype(np.int64), "moments": m, "moments_flip": mf}


def _decode_batch(batch: dict, size: int, channels: int, classes: list[str], root: str, on_bad: str,
                  bad_dir: str) -> dict:
    """Bytes + paths -> images, labels from the parent folder. Unreadable files are recorded in `bad_dir` as
    "path<TAB>why" and skipped, or, with on_bad=fail, recorded and then the task fails (stopping the pipeline):
    the driver reports the record, which reaches it intact whatever Ray does to the exception."""
    images, labels, keys, bad = [], [], [], []
    index = {c: i for i, c in enumerate(classes)}  # the top folder under root is the class (images may be nested)
    for data, path in zip(batch["bytes"], batch["path"]):
        try:
            images.append(decode_image(data, size, channels))
        except Exception as err:  # PIL raises many types for a broken file
            bad.append(f"{path}\t{type(err).__name__}: {err}")
            if on_bad == "fail":
                break
            continue
        rel = Path(path).relative_to(root)
        labels.append(index[rel.parts[0]])
        keys.append(str(rel))
    if bad:
        Path(bad_dir, f"{uuid.uuid4().hex}.txt").write_text("\n".join(bad) + "\n")
        if on_bad == "fail":
            raise BadImageError.of(bad)
    arr = np.stack(images) if images else np.zeros((0, channels, size, size), np.float32)
    return {"image": arr, "label": np.asarray(labels, np.int64), "key": np.asarray(keys, dtype=object)}


def _source_dataset(cfg: Config, bad_dir: Path, scan: FolderScan | None = None):
    """-> (Ray Dataset with image/label/key columns, class names). A folder is read from the files of its scan
    (made here unless given): exactly the files the scan listed, so nothing is dropped without being listed."""
    import ray.data

    t = cfg.tokenizer
    if cfg.data.source == "folder":
        root = str(Path(cfg.data.root).resolve())
        scan = scan or scan_folder(root)
        classes = scan.classes
        ds = ray.data.read_binary_files(scan.files, include_paths=True)
        fn_kwargs = dict(size=t.image_size, channels=t.channels, classes=classes, root=root,
                         on_bad=cfg.data.on_bad_image, bad_dir=str(bad_dir))
        return ds.map_batches(_decode_batch, fn_kwargs=fn_kwargs, batch_size=cfg.data.encode_batch_size), classes
    images, labels = load_source(cfg.data.source)
    if images.shape[1:] != (t.channels, t.image_size, t.image_size):
        raise ValueError(f"data.source={cfg.data.source} gives images {images.shape[1:]}, but the tokenizer expects "
                         f"(tokenizer.channels, tokenizer.image_size, tokenizer.image_size) = "
                         f"{(t.channels, t.image_size, t.image_size)}")
    keys = [f"{cfg.data.source}/{i:06d}" for i in range(len(images))]
    items = [{"image": im, "label": y, "key": k} for im, y, k in zip(images, labels, keys)]
    return ray.data.from_items(items), [str(c) for c in range(int(labels.max()) + 1)]


def _shard_files(shards: Path) -> list[dict]:
    """Each shard's rows, size and sha256 (checked by open_encoded before training reads them)."""
    import pyarrow.parquet as pq

    paths = sorted(shards.glob("*.parquet"))
    return [{"name": f"shards/{p.name}", "rows": pq.ParquetFile(p).metadata.num_rows, "bytes": p.stat().st_size,
             "sha256": digest} for p, digest in zip(paths, files_sha256(paths))]


def encode(cfg: Config, out: str | Path | None = None) -> dict:
    """Encode cfg.data's images with cfg.tokenizer into `out` (default encoded_dir(cfg)); returns the manifest."""
    out = Path(out).resolve() if out else encoded_dir(cfg)
    # the output appears only when complete, so the lock lives beside it: .<name>.lock
    with hold(out.parent, "encode", file=out.parent / f".{out.name}.lock"):
        return _encode_locked(cfg, out)


def _finished(out: Path, digest: str) -> dict | None:
    """The manifest of a finished output with these settings, None when there is no output yet."""
    if (out / "manifest.json").is_file():
        manifest = json.loads((out / "manifest.json").read_text())
        if manifest.get("encode_hash") != digest:
            raise FileExistsError(
                f"{out} already holds a dataset encoded with other settings ({manifest.get('settings')}); "
                f"choose another data.encoded_dir or delete that directory")
        return manifest
    if out.exists():
        raise FileExistsError(f"{out} exists but holds no manifest.json (an unfinished or foreign directory); "
                              f"delete it or choose another data.encoded_dir")
    return None


def _scan(cfg: Config) -> FolderScan | None:
    """A folder source's layout, checked here, in the driver, before Ray starts (None for other sources)."""
    if cfg.data.source != "folder":
        return None
    scan = scan_folder(cfg.data.root)
    say("encode", f"{cfg.data.root}: {len(scan.classes)} classes, {len(scan.files):,} image files, "
                  f"{len(scan.ignored)} other file(s) ignored" + (" (listed in ignored_files.txt)" if scan.ignored
                                                                   else ""))
    if cfg.data.on_bad_image == "fail":  # a header that Pillow cannot identify is named before Ray starts
        bad = unreadable_headers(scan.files)
        if bad:
            raise BadImageError.of(bad)
    return scan


def _manifest(cfg: Config, classes: list[str], files: list[dict], bad: list[str], scan: FolderScan | None,
              seconds: float) -> dict:
    t, shape = cfg.tokenizer, moments_shape(cfg.tokenizer)
    return {
        "format": FORMAT, "source": cfg.data.source, "root": encode_settings(cfg)["root"], "classes": classes,
        "num_classes": len(classes), "rows": sum(f["rows"] for f in files), "skipped": len(bad),
        "ignored": len(scan.ignored) if scan else 0,
        "tokenizer": t.kind, "vae": t.vae.weights if t.kind == "vae" else None,
        "scale_factor": t.vae.scale_factor if t.kind == "vae" else None,
        # moments hold (mean, log-variance) for a VAE, so twice the latent channels
        "moments_shape": list(shape), "latent_shape": [shape[0] // (2 if t.kind == "vae" else 1), *shape[1:]],
        "dtype": "float32", "columns": ["key", "label", "moments", "moments_flip"], "files": files,
        "settings": encode_settings(cfg), "encode_hash": encode_hash(cfg), "config_hash": cfg.hash(),
        "seconds": round(seconds, 1),
    }


def _encode_locked(cfg: Config, out: Path) -> dict:
    import ray

    manifest = _finished(out, encode_hash(cfg))
    if manifest:
        say("encode", f"{out} is already complete ({manifest['rows']:,} rows); nothing to do")
        return manifest
    scan = _scan(cfg)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    (tmp / "_bad").mkdir(parents=True)
    if scan and scan.ignored:
        (tmp / "ignored_files.txt").write_text("\n".join(scan.ignored) + "\n")
    start = time.perf_counter()
    try:
        if not ray.is_initialized():
            ray.init()
        ds, classes = _source_dataset(cfg, tmp / "_bad", scan)
        gpus = cfg.data.encode_gpus
        ds = ds.map_batches(Tokenize, fn_constructor_kwargs={"tokenizer": cfg.tokenizer.model_dump(mode="json")},
                            batch_size=cfg.data.encode_batch_size, num_gpus=gpus or None,
                            compute=ray.data.ActorPoolStrategy(size=cfg.data.encode_workers))
        say("encode", f"{cfg.data.source} -> {out} with the {cfg.tokenizer.kind} tokenizer, "
                      f"{cfg.data.encode_workers} tokenizer actor(s)")
        ds.write_parquet(str(tmp / "shards"), min_rows_per_file=cfg.data.rows_per_file)
        bad = _bad_records(tmp / "_bad")
        shutil.rmtree(tmp / "_bad")
        if bad:
            (tmp / "bad_images.txt").write_text("\n".join(bad) + "\n")
        manifest = _manifest(cfg, classes, _shard_files(tmp / "shards"), bad, scan, time.perf_counter() - start)
        if manifest["rows"] == 0:
            raise ValueError(f"no image of data.source={cfg.data.source} could be encoded ({len(bad)} unreadable)")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        tmp.rename(out)  # the output appears only when complete
    except BaseException:
        # a decode task that met a bad image (data.on_bad_image=fail) left its record: report that, not Ray's error
        failure = _bad_records(tmp / "_bad") if cfg.data.on_bad_image == "fail" else []
        shutil.rmtree(tmp, ignore_errors=True)
        if not failure:
            raise
    else:
        failure = None
    # Ray Data releases the tokenizer actors only when the dataset is collected, and its plan holds
    # reference cycles: collect now, or a later job in this process waits forever for their CPUs.
    ds = None
    gc.collect()
    if failure:  # a clean error: Ray's traceback would keep the dataset (and its actors) alive
        raise BadImageError.of(failure)
    skipped = f", {len(bad)} unreadable image(s) skipped (listed in {out / 'bad_images.txt'})" if bad else ""
    if manifest["ignored"]:
        skipped += f", {manifest['ignored']} other file(s) ignored (listed in {out / 'ignored_files.txt'})"
    say("encode", f"wrote {manifest['rows']:,} rows in {len(manifest['files'])} shard(s) to {out} in "
                  f"{manifest['seconds']} s{skipped}")
    return manifest
