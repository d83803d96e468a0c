"""Reference statistics in ADM's .npz format, and the embedded datasets' references with their floors.

Keys: `mu`, `sigma` for the FID Inception (exactly ADM's, so its VIRTUAL_imagenet256_labeled.npz
works unchanged), `mu_<name>`, `sigma_<name>` for another extractor, `arr_0` uint8 reference
images for precision/recall (ADM keeps 10k), `floor_fd_<name>` the FD of held-out real images
against these statistics where the data has a held-out split, and `meta` (JSON), which holds the sha256 of
all the other arrays (`arrays_sha256`), checked when the file is loaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from djepa.console import say
from djepa.digest import arrays_sha256, file_sha256
from djepa.eval.metrics import FeatureStats, frechet_distance
from djepa.samples import load_arrays, save_arrays


class ReferenceError(RuntimeError):
    """A reference file that is missing or lacks what the evaluation needs; the message says how to make it."""


def stat_keys(name: str) -> tuple[str, str]:
    return ("mu", "sigma") if name == "inception" else (f"mu_{name}", f"sigma_{name}")


def make_hint(config: str = "<your config>") -> str:
    return f"make one with `python jobs/reference.py --config {config} --out PATH` and set eval.reference=PATH"


def load_reference(path: str | Path, names: list[str], dims: dict[str, int] | None = None) -> dict:
    """-> {"stats": {name: (mu, sigma)}, "images": uint8 NHWC (NTHWC) or None, "floors": {...}, "meta": {...}}.
    dims (extractor name -> feature dimension) checks the statistics' shapes, so a reference made with another
    extractor is refused before any sampling, not after hours of it."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"reference statistics {path} (eval.reference) not found; {make_hint()}")
    try:
        data, meta = load_arrays(path)  # ADM's own file has no meta; every member is read, so the zip CRC is checked
    except Exception as err:
        raise ReferenceError(f"{path} (eval.reference) is damaged or not a .npz ({type(err).__name__}: {err}); copy "
                             f"it again from its source, or delete it and {make_hint()}") from None
    recorded = (meta or {}).get("arrays_sha256")
    if recorded and arrays_sha256(data) != recorded:
        raise ReferenceError(f"{path} (eval.reference) is damaged: its arrays do not match the sha256 recorded in it "
                             f"when jobs/reference.py made it (changed since). Copy it again from its source, or "
                             f"delete it and {make_hint()}")
    if not recorded:
        say("eval", f"{path} has no recorded sha256 (not made by jobs/reference.py, e.g. ADM's): checked by keys, "
                    f"shapes and the zip CRC; its file sha256 goes into metrics.json")
    stats = {}
    for name in names:
        mu, sigma = stat_keys(name)
        if mu not in data or sigma not in data:
            raise ReferenceError(f"{path} (eval.reference) has no {mu!r}/{sigma!r} for the {name} features "
                                 f"(keys: {sorted(data)}); {make_hint()} with eval.features including {name}")
        m, sg = data[mu].astype(np.float64), data[sigma].astype(np.float64)
        d = (dims or {}).get(name, m.shape[0] if m.ndim == 1 else -1)
        if m.shape != (d,) or sg.shape != (d, d):
            raise ReferenceError(f"{path} (eval.reference) has {mu!r} of shape {m.shape} and {sigma!r} of shape "
                                 f"{sg.shape}, but the {name} features have dimension {d} (expected ({d},) and "
                                 f"({d}, {d})): it was made with another feature extractor; {make_hint()}")
        if not (np.isfinite(m).all() and np.isfinite(sg).all()):
            raise ReferenceError(f"{path} (eval.reference): {mu!r}/{sigma!r} hold NaN or infinite values; "
                                 f"{make_hint()}")
        stats[name] = (m, sg)
    images = data.get("arr_0")  # images N x H x W x C, or clips N x T x H x W x C (a video reference)
    if images is not None and (images.dtype != np.uint8 or images.ndim not in (4, 5)
                               or images.shape[-1] not in (1, 3)):
        raise ReferenceError(f"{path} (eval.reference): 'arr_0' must be uint8 images N x H x W x C or clips "
                             f"N x T x H x W x C (C = 1 or 3), found {images.dtype} {images.shape}")
    floors = {k: float(v) for k, v in data.items() if k.startswith("floor_")}
    # the file's own digest names exactly which reference a result used (cached: hashed once per process)
    return {"stats": stats, "images": images, "floors": floors, "meta": meta or {}, "path": str(path),
            "sha256": file_sha256(path)}


def save_reference(path: str | Path, stats: dict[str, FeatureStats], images: np.ndarray | None,
                   floors: dict[str, float], meta: dict) -> Path:
    arrays = {}
    for name, st in stats.items():
        mu, sigma = st.mu_sigma()
        k_mu, k_sigma = stat_keys(name)
        arrays[k_mu], arrays[k_sigma] = mu, sigma
    if images is not None:
        arrays["arr_0"] = images
    arrays |= {k: np.float64(v) for k, v in floors.items()}
    return save_arrays(path, arrays, meta | {"arrays_sha256": arrays_sha256(arrays)})  # checked by load_reference


def embedded_reference(source: str, extractors, keep: int, out: str | Path) -> dict:
    """The bundled digits / MNIST-5k (images) or Moving MNIST (clips): statistics of the 80% the domain classifier
    was trained on, up to `keep` of them as P/R images (or clips), and the floor: FD of the 20% held-out real
    images against those statistics."""
    from djepa.eval.classifier import real_split

    split = real_split(source)
    train, held = split["train_x"], split["held_x"]
    stats, floors = {}, {"floor_n": float(len(held))}
    for ex in extractors:
        stats[ex.name] = FeatureStats.of(ex(train)[0])
        mu, sigma = stats[ex.name].mu_sigma()
        floors[f"floor_fd_{ex.name}"] = frechet_distance(*FeatureStats.of(ex(held)[0]).mu_sigma(), mu, sigma)
    pick = np.sort(np.random.default_rng(0).permutation(len(train))[:keep])
    meta = {"source": source, "split": "train (80%)", "rows": len(train), "held_out_rows": len(held),
            "features": {ex.name: ex.identity for ex in extractors}}
    save_reference(out, stats, train[pick], floors, meta)
    return {"path": str(out), "rows": len(train), **floors}


def _stream_images(cfg, source: str):
    """Batches of (keys, uint8 NHWC images) of a folder dataset (raw, centre-cropped by Ray Data tasks) or of an
    encoded dataset (posterior means decoded by the tokenizer, on this process's device)."""
    import ray.data
    import torch

    from djepa.samples import to_uint8

    bs = cfg.eval.feature_batch_size
    if source == "raw":
        import tempfile

        from djepa.data.encode import _source_dataset

        ds, _ = _source_dataset(cfg, Path(tempfile.mkdtemp(prefix="djepa-bad-")))
        for b in ds.iter_batches(batch_size=bs, batch_format="numpy"):
            yield list(b["key"]), to_uint8(torch.from_numpy(np.array(b["image"])))
        return
    from djepa.data.encode import encoded_dir
    from djepa.data.encoded import open_encoded
    from djepa.models.tokenizer import build_tokenizer, patchify, scale_latent

    path = encoded_dir(cfg)
    manifest = open_encoded(cfg, path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = build_tokenizer(cfg.tokenizer).to(device)
    files = [str(path / f["name"]) for f in manifest["files"]]
    for b in ray.data.read_parquet(files, columns=["key", "moments"]).iter_batches(batch_size=bs,
                                                                                   batch_format="numpy"):
        m = torch.from_numpy(np.array(b["moments"])).to(device)
        if cfg.tokenizer.kind != "pixel":  # the posterior mean, scaled as training scales latents
            m = scale_latent(m.chunk(2, dim=1)[0], cfg.tokenizer.vae)
        with torch.no_grad():
            yield list(b["key"]), to_uint8(tok.decode(patchify(m, cfg.tokenizer.patch_sizes)))


def dataset_reference(cfg, extractors, out: str | Path, source: str = "raw") -> dict:
    """Statistics over a whole dataset (ADM: the full training set), streamed; `eval.reference_images` of its
    images, chosen by the hash of their key (the same set whatever the read order), kept for P/R."""
    import hashlib
    import heapq
    import time

    stats: dict[str, FeatureStats] = {}  # running float64 sums: memory O(D^2), not O(batches x D^2)
    keep, rows, t0 = [], 0, time.perf_counter()
    for keys, images in _stream_images(cfg, source):
        for ex in extractors:
            part = FeatureStats.of(ex(images)[0])
            stats[ex.name] = FeatureStats.merge([stats[ex.name], part]) if ex.name in stats else part
        for k, img in zip(keys, images):
            h = -int(hashlib.sha1(str(k).encode()).hexdigest()[:15], 16)  # max-heap of the smallest hashes
            if len(keep) < cfg.eval.reference_images:
                heapq.heappush(keep, (h, str(k), img))
            elif h > keep[0][0]:
                heapq.heapreplace(keep, (h, str(k), img))
        rows += len(keys)
        if rows // cfg.eval.feature_batch_size % 50 == 0:
            say("reference", f"{rows:,} images, {rows / (time.perf_counter() - t0):.1f} img/s")
    if rows < 2:
        raise ReferenceError(f"data.source={cfg.data.source} gave {rows} images: nothing to compute statistics on")
    images = np.stack([img for _, _, img in sorted(keep, key=lambda x: x[1])])
    meta = {"source": cfg.data.source, "root": cfg.data.root, "from": source, "rows": rows,
            "features": {ex.name: ex.identity for ex in extractors}}
    save_reference(out, stats, images, {}, meta)
    return {"path": str(out), "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
