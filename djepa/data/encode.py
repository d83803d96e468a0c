"""The offline encode job: images or clips -> tokenizer moments (each and its mirror) -> Parquet shards + manifest.

A Ray Data pipeline: images (or videos, djepa/video/reader.py, or captioned images, djepa/data/captioned.py) are
read and centre-cropped by CPU tasks, the tokenizer runs in `map_batches` on an actor pool (one GPU each on a
cluster, CPU locally; djepa/data/encode_actors.py), and the shards are written to a temporary directory that is
renamed into place only when complete.
Re-running on a finished output with the same settings does nothing.
"""
from __future__ import annotations

import functools
import gc
import hashlib
import json
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from djepa.conditions import is_text, labels_for
from djepa.config import CAPTION_SOURCES, Config, ConfigError
from djepa.console import say
from djepa.data import captioned
from djepa.data.format import FORMAT, BadImageError, DatasetError  # noqa: F401  (FORMAT, BadImageError: old home)
from djepa.data.encode_actors import EmbedText, Tokenize
from djepa.data.encoded import text_identity
from djepa.data.images import decode_image, scan_folder, unreadable_headers
from djepa.data.sources import check_shape, load_source
from djepa.digest import files_sha256
from djepa.lock import hold
from djepa.models.tokenizer import moments_shape
from djepa.video.reader import VideoError, VideoScan, decode_clip, probe, scan_videos

FOLDERS = ("folder", "video_folder")  # sources read from data.root


def _is_video(cfg: Config) -> bool:
    return cfg.data.source in ("moving_mnist", "video_folder") or cfg.tokenizer.frames > 0


def _check_source(cfg: Config) -> None:
    """The data and tokenizer keys that must agree before anything is read."""
    d, t = cfg.data, cfg.tokenizer
    if d.source in FOLDERS and not d.root:
        raise ConfigError(f"data.source={d.source} needs data.root (the directory holding one folder per class)")
    if d.source == "video_folder" and not t.frames:
        raise ConfigError("data.source=video_folder needs tokenizer.frames > 0 (the clip length in frames at data.fps)")
    if d.source == "video_folder" and t.channels not in (1, 3):
        raise ConfigError(f"data.source=video_folder reads grey (tokenizer.channels=1) or RGB (3) frames, not "
                          f"tokenizer.channels={t.channels}")
    if d.source == "folder" and t.frames:
        raise ConfigError(f"data.source=folder reads images, but tokenizer.frames={t.frames}; set tokenizer.frames=0, "
                          f"or data.source=video_folder for videos")
    if d.source in CAPTION_SOURCES:
        captioned.check(cfg)


def encode_settings(cfg: Config) -> dict:
    """Everything that changes the encoded bytes; its hash names and guards the output. Keys for clips (or for
    captioned files) are added only for their sources, so every other config keeps the hash (and the output
    directory) it had."""
    _check_source(cfg)
    t = cfg.tokenizer
    # [H, W] as a list, as JSON reads it back (the hash is the same: json.dumps writes a tuple as a list)
    size = list(t.image_size) if isinstance(t.image_size, tuple) else t.image_size
    tok = {"kind": t.kind, "image_size": size, "channels": t.channels}
    if t.kind != "pixel":
        tok |= {"vae_weights": t.vae.weights, "vae_subfolder": t.vae.subfolder, "stride": t.vae.stride,
                "latent_channels": t.vae.latent_channels}
        if not t.vae.weights:  # a randomly initialised VAE is defined by its architecture
            tok |= {"block_out_channels": t.vae.block_out_channels, "layers_per_block": t.vae.layers_per_block}
    if t.kind == "video_vae":
        tok["temporal_stride"] = t.vae.temporal_stride
    if _is_video(cfg):
        tok["frames"] = t.frames  # the clip size is image_size above
    root = str(Path(cfg.data.root).resolve()) if cfg.data.source in FOLDERS else None
    settings = {"source": cfg.data.source, "root": root, "tokenizer": tok, "on_bad_image": cfg.data.on_bad_image}
    if is_text(cfg) and cfg.text.precompute:  # stored text embeddings: keys added only for text models
        settings["text"] = text_identity(cfg)
    if cfg.data.source == "video_folder":
        split = str(Path(cfg.data.split_file).resolve()) if cfg.data.split_file else None
        settings |= {"fps": cfg.data.fps, "split_file": split}
    if cfg.data.source in CAPTION_SOURCES:
        settings |= captioned.settings(cfg)
    return settings


def encode_hash(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(encode_settings(cfg), sort_keys=True).encode()).hexdigest()[:12]


def encoded_dir(cfg: Config) -> Path:
    """data.encoded_dir, or outputs/encoded/<source>-<hash> (absolute)."""
    if cfg.data.encoded_dir:
        return Path(cfg.data.encoded_dir).resolve()
    return Path("outputs/encoded", f"{cfg.data.source}-{encode_hash(cfg)}").resolve()


def _what(cfg: Config) -> str:
    """What a bad file is called in messages and in the list of skipped ones (bad_images.txt, bad_videos.txt,
    bad_captions.txt)."""
    return {"video_folder": "video", **dict.fromkeys(CAPTION_SOURCES, "caption")}.get(cfg.data.source, "image")


def _bad_records(bad_dir: Path) -> list[str]:
    """The "path<TAB>why" records the decode tasks wrote to `bad_dir`, sorted (once each: a retried task
    records its file again)."""
    return sorted({line for p in bad_dir.glob("*.txt") for line in p.read_text().splitlines()})


def _image_columns(data: bytes, size: int, channels: int) -> dict:
    return {"image": decode_image(data, size, channels)}


def _clip_columns(data: bytes, **clip) -> dict:
    image, valid = decode_clip(data, **clip)
    return {"image": image, "valid_frames": valid}


def _decode_batch(batch: dict, decode, empty: dict, classes: list[str], root: str, on_bad: str, bad_dir: str,
                  what: str = "image") -> dict:
    """Bytes + paths -> decode(bytes)'s columns (an image, or a clip and its valid_frames), labels from the top
    folder. Unreadable files are recorded in `bad_dir` as "path<TAB>why" and skipped, or, with on_bad=fail,
    recorded and then the task fails (stopping the pipeline): the driver reports the record, which reaches it
    intact whatever Ray does to the exception. `empty`: the columns of a batch without a readable file."""
    rows, labels, keys, bad = [], [], [], []
    index = {c: i for i, c in enumerate(classes)}  # the top folder under root is the class (files may be nested)
    for data, path in zip(batch["bytes"], batch["path"]):
        try:
            rows.append(decode(data))
        except Exception as err:  # PIL and PyAV raise many types for a broken file; VideoError is the reason itself
            bad.append(f"{path}\t{err if isinstance(err, VideoError) else f'{type(err).__name__}: {err}'}")
            if on_bad == "fail":
                break
            continue
        rel = Path(path).relative_to(root)
        labels.append(index[rel.parts[0]])
        keys.append(str(rel))
    if bad:
        Path(bad_dir, f"{uuid.uuid4().hex}.txt").write_text("\n".join(bad) + "\n")
        if on_bad == "fail":
            raise BadImageError.of(bad, what)
    columns = {k: np.stack([r[k] for r in rows]) if rows else v for k, v in empty.items()}
    return columns | {"label": np.asarray(labels, np.int64), "key": np.asarray(keys, dtype=object)}


def _decoder(cfg: Config) -> tuple:
    """-> (decode(bytes) -> columns, the columns of an empty batch) for a folder source's files."""
    t = cfg.tokenizer
    if cfg.data.source == "video_folder":
        decode = functools.partial(_clip_columns, frames=t.frames, fps=cfg.data.fps, height=t.height, width=t.width,
                                   channels=t.channels)
        return decode, {"image": np.zeros((0, *t.input_shape), np.float32), "valid_frames": np.zeros(0, np.int64)}
    decode = functools.partial(_image_columns, size=t.image_size, channels=t.channels)
    return decode, {"image": np.zeros((0, t.channels, t.image_size, t.image_size), np.float32)}


def _source_dataset(cfg: Config, bad_dir: Path, scan=None):
    """-> (Ray Dataset with image/label/key columns (and valid_frames for clips, caption for captioned data), class
    names). A folder or captioned files are read from its scan (made here unless given: _scan's first value):
    exactly the files (or pairs, or shards) the scan listed, so nothing is dropped without being listed."""
    import ray.data

    if cfg.data.source in CAPTION_SOURCES:
        return captioned.dataset(cfg, scan or captioned.scan(cfg), bad_dir)
    if cfg.data.source in FOLDERS:
        root = str(Path(cfg.data.root).resolve())
        if scan is None:
            scan = scan_videos(root, cfg.data.split_file) if cfg.data.source == "video_folder" else scan_folder(root)
        decode, empty = _decoder(cfg)
        # the bytes travel to the decode tasks: PyAV reads a video from memory as well as from a path
        ds = ray.data.read_binary_files(scan.files, include_paths=True)
        fn_kwargs = dict(decode=decode, empty=empty, classes=scan.classes, root=root, on_bad=cfg.data.on_bad_image,
                         bad_dir=str(bad_dir), what=_what(cfg))
        return ds.map_batches(_decode_batch, fn_kwargs=fn_kwargs, batch_size=cfg.data.encode_batch_size), scan.classes
    images, raw = load_source(cfg.data.source)
    check_shape(cfg.data.source, images, cfg.tokenizer)
    keys = [f"{cfg.data.source}/{i:06d}" for i in range(len(images))]
    labels = labels_for(cfg, raw) if raw.dtype == object else raw  # captions: their digit pair's code
    items = [{"image": im, "label": y, "key": k} for im, y, k in zip(images, labels, keys)]
    if raw.dtype == object:  # captioned: the caption travels with its image
        items = [row | {"caption": str(c)} for row, c in zip(items, raw)]
    if images.ndim == 5:  # bundled clips are whole: every frame is real
        items = [row | {"valid_frames": images.shape[2]} for row in items]
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


def _scan(cfg: Config) -> tuple:
    """A folder source's layout (or captioned files' pairs), checked here, in the driver, before Ray starts (None
    for other sources), and the records of the videos or caption entries the probe refused (with
    data.on_bad_image=skip; fail raises)."""
    if cfg.data.source == "video_folder":
        return _scan_videos(cfg)
    if cfg.data.source in CAPTION_SOURCES:
        found = captioned.scan(cfg)
        return found, found.bad
    if cfg.data.source != "folder":
        return None, []
    scan = scan_folder(cfg.data.root)
    say("encode", f"{cfg.data.root}: {len(scan.classes)} classes, {len(scan.files):,} image files, "
                  f"{len(scan.ignored)} other file(s) ignored" + (" (listed in ignored_files.txt)" if scan.ignored
                                                                   else ""))
    if cfg.data.on_bad_image == "fail":  # a header that Pillow cannot identify is named before Ray starts
        bad = unreadable_headers(scan.files)
        if bad:
            raise BadImageError.of(bad)
    return scan, []


def _scan_videos(cfg: Config) -> tuple[VideoScan, list[str]]:
    """The video tree (and split file), then every video probed (reader.probe: the whole file demuxed, its first
    frame decoded): a bad one is named here with data.on_bad_image=fail, or left out of the read and recorded."""
    d = cfg.data
    scan = scan_videos(d.root, d.split_file)
    split = f" listed in {d.split_file}" if d.split_file else ""
    say("encode", f"{d.root}: {len(scan.classes)} classes, {len(scan.files):,} video files{split}, "
                  f"{len(scan.ignored)} other file(s) ignored" + (" (listed in ignored_files.txt)" if scan.ignored
                                                                   else "") + "; probing the videos")
    start, bad = time.perf_counter(), []
    for path in scan.files:
        why = probe(path)
        if why and d.on_bad_image == "fail":
            raise BadImageError.of([f"{path}\t{why}"], "video")
        if why:
            bad.append(f"{path}\t{why}")
    say("encode", f"probed {len(scan.files):,} videos in {time.perf_counter() - start:.1f} s: {len(bad)} unreadable")
    if len(bad) == len(scan.files):
        path, why = bad[0].split("\t", 1)
        raise DatasetError(f"none of the {len(bad)} videos under data.root={d.root!r}{split} can be read (the first: "
                           f"{path}: {why}); check data.root and data.split_file")
    refused = {line.split("\t", 1)[0] for line in bad}
    scan.files = [f for f in scan.files if f not in refused]
    return scan, bad


def _manifest(cfg: Config, classes: list[str], files: list[dict], bad: list[str], scan, seconds: float) -> dict:
    t = cfg.tokenizer
    manifest = {
        "format": FORMAT, "source": cfg.data.source, "root": encode_settings(cfg)["root"], "classes": classes,
        "num_classes": len(classes), "rows": sum(f["rows"] for f in files), "skipped": len(bad),
        "ignored": len(getattr(scan, "ignored", [])),
        "tokenizer": t.kind, "vae": t.vae.weights if t.kind != "pixel" else None,
        "scale_factor": t.vae.scale_factor if t.kind != "pixel" else None,
        # per axis, (C, [T,] H, W); moments hold (mean, log-variance) for a VAE, so twice the latent channels
        "moments_shape": list(moments_shape(t)), "latent_shape": list(t.latent_shape),
        "dtype": "float32", "columns": ["key", "label", "moments", "moments_flip"], "files": files,
        "settings": encode_settings(cfg), "encode_hash": encode_hash(cfg), "config_hash": cfg.hash(),
        "seconds": round(seconds, 1),
    }
    if is_text(cfg):  # class-conditional manifests keep exactly their old keys
        manifest["columns"].append("caption")
        manifest["captions"] = True
        if cfg.text.precompute:
            manifest["columns"] += ["text_emb", "text_len"]
            manifest["text"], manifest["text_shape"] = text_identity(cfg), [cfg.text.max_length, cfg.model.text_dim]
    if cfg.data.source in CAPTION_SOURCES:
        manifest |= captioned.manifest_keys(scan, bad)
    if _is_video(cfg):  # image manifests keep exactly their old keys
        manifest["columns"].append("valid_frames")  # per clip: real frames before the black zero padding
        manifest["frames"] = t.frames
        if cfg.data.source == "video_folder":
            manifest["fps"] = cfg.data.fps
    return manifest


def _encode_locked(cfg: Config, out: Path) -> dict:
    import ray

    manifest = _finished(out, encode_hash(cfg))
    if manifest:
        say("encode", f"{out} is already complete ({manifest['rows']:,} rows); nothing to do")
        return manifest
    scan, refused = _scan(cfg)
    what = _what(cfg)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    (tmp / "_bad").mkdir(parents=True)
    if getattr(scan, "ignored", None):
        (tmp / "ignored_files.txt").write_text("\n".join(scan.ignored) + "\n")
    if refused:  # the probe's records join the decode tasks' ones
        (tmp / "_bad" / "probe.txt").write_text("\n".join(refused) + "\n")
    start = time.perf_counter()
    try:
        if not ray.is_initialized():
            ray.init()
        ds, classes = _source_dataset(cfg, tmp / "_bad", scan)
        gpus, text = cfg.data.encode_gpus, is_text(cfg) and cfg.text.precompute
        # Two actor pools on CPUs share what one tokenizer pool takes (half a CPU an actor): a read task (shards,
        # image files) needs a whole CPU, and on a 2-core machine two 1-CPU actors would leave it none (a hang)
        cpus = 0.5 if text and not gpus else None
        ds = ds.map_batches(Tokenize, fn_constructor_kwargs={"tokenizer": cfg.tokenizer.model_dump(mode="json")},
                            batch_size=cfg.data.encode_batch_size, num_gpus=gpus or None, num_cpus=cpus,
                            compute=ray.data.ActorPoolStrategy(size=cfg.data.encode_workers))
        if text:  # the frozen text encoder runs once, here, not in training
            ds = ds.map_batches(EmbedText, fn_constructor_kwargs={"config": cfg.to_dict()},
                                batch_size=cfg.data.encode_batch_size, num_gpus=gpus or None, num_cpus=cpus,
                                compute=ray.data.ActorPoolStrategy(size=cfg.data.encode_workers))
        say("encode", f"{cfg.data.source} -> {out} with the {cfg.tokenizer.kind} tokenizer, "
                      f"{cfg.data.encode_workers} tokenizer actor(s)" +
                      (f" and the {cfg.text.encoder} text encoder" if text else ""))
        ds.write_parquet(str(tmp / "shards"), min_rows_per_file=cfg.data.rows_per_file)
        bad = _bad_records(tmp / "_bad")
        if cfg.data.source in CAPTION_SOURCES:  # each entry once: the probe and a read task may both refuse it
            bad = captioned.records(refused, bad)
        shutil.rmtree(tmp / "_bad")
        if bad:
            (tmp / f"bad_{what}s.txt").write_text("\n".join(bad) + "\n")
        manifest = _manifest(cfg, classes, _shard_files(tmp / "shards"), bad, scan, time.perf_counter() - start)
        if manifest["rows"] == 0:
            raise ValueError(f"no {what} of data.source={cfg.data.source} could be encoded ({len(bad)} unreadable)")
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
        raise captioned.failure(failure) if what == "caption" else BadImageError.of(failure, what)
    problem = "bad" if what == "caption" else "unreadable"
    skipped = f", {len(bad)} {problem} {what}(s) skipped (listed in {out / f'bad_{what}s.txt'})" if bad else ""
    if manifest["ignored"]:
        skipped += f", {manifest['ignored']} other file(s) ignored (listed in {out / 'ignored_files.txt'})"
    say("encode", f"wrote {manifest['rows']:,} rows in {len(manifest['files'])} shard(s) to {out} in "
                  f"{manifest['seconds']} s{skipped}")
    return manifest
