"""Sharded sample generation without Ray: the plan, one shard's work, shard files, the final .npz.

Sample i has label i % num_classes (interleaved: any prefix is class-balanced, and IS splits
never see one class), or for a text model prompt i % P (djepa/conditions.py), and draws all its noise from the
seed sample_seeds(sample.seed, i), so the set
is the same for any number of workers or batch size. A shard is the samples [start, stop)
with their features; its file carries the hash of everything that made it (checkpoint bytes,
model, tokenizer, sampling config) and is written atomically.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from djepa.config import Config
from djepa.eval.metrics import FeatureStats
from djepa.conditions import conditions_of, eval_prompts, is_text, labels_for, prompts_digest
from djepa.samples import atomic_write, load_arrays, sample_images, sampling_dtype, save_arrays

FORMAT = "djepa-samples-v2"  # v2: per-sample seeds mixed (v1 ignored sample.seed on CPU)
# the only model keys an evaluation may change: how many solver steps the token sampler takes
SAMPLING_MODEL_KEYS = ("token_loss.diffusion.sample_steps", "token_loss.flow.sample_steps", "token_loss.flow.solver")
# where the VAE lives is not part of a model's identity: the same checkpoint is evaluated on machines with other paths
VAE_LOCATION_KEYS = ("tokenizer.vae.weights", "tokenizer.vae.subfolder")


class ShardError(RuntimeError):
    """A shard file that cannot be used: corrupt (regenerate it) or foreign (made by another config)."""

    def __init__(self, path: Path, kind: str, why: str):
        super().__init__(f"{path}: {why}")
        self.path, self.kind = path, kind


def file_digest(path: str | Path) -> str:
    from djepa.checkpoint import file_sha256  # cached: the checkpoint check has usually hashed it already

    return file_sha256(path)


def sampling_identity(cfg: Config, checkpoint_digest: str) -> dict:
    """Everything the pixels of sample i depend on (not the batch size, shard size or worker count)."""
    s = cfg.sample
    sample = {"seed": s.seed, "ar_steps": s.ar_steps, "cfg": s.cfg, "cfg_schedule": s.cfg_schedule,
              "temperature": s.temperature}
    if sampling_dtype(s, "cuda" if cfg.eval.use_gpu else "cpu") is not None:
        sample["dtype"] = "bf16"  # other pixels than fp32; fp32 keeps the hashes of earlier evaluations
    tokenizer = cfg.tokenizer.model_dump(mode="json", exclude={"vae": {"weights", "subfolder"}})
    if not cfg.tokenizer.is_video:  # keys added for video: image evaluations keep the hashes they had before
        tokenizer.pop("frames"), tokenizer.pop("temporal_patch"), tokenizer["vae"].pop("temporal_stride")
    identity = {"format": FORMAT, "checkpoint_sha256": checkpoint_digest, "model": cfg.model.identity(),
                "tokenizer": tokenizer, "sample": sample}
    if is_text(cfg):  # the encoder that embeds the prompts, and the prompts
        identity["text"] = cfg.text.model_dump(mode="json", exclude={"precompute"})
        identity["prompts"] = prompts_digest(eval_prompts(cfg))
    return identity


def identity_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def plan(n: int, shard_size: int) -> list[tuple[int, int]]:
    return [(a, min(a + shard_size, n)) for a in range(0, n, shard_size)]


def shard_path(out: Path, start: int, stop: int) -> Path:
    return out / "shards" / f"{start:08d}-{stop:08d}.npz"


def condition_arrays(cfg: Config, start: int, stop: int, prompts: list[str] | None = None) -> dict[str, np.ndarray]:
    """What a shard stores of its samples' conditions: labels (the class, or the pairs' code, else -1), indices, and
    for a text model each sample's caption (a unicode array: no pickle to read it back)."""
    raw = conditions_of(cfg, start, stop, prompts)
    out = {"labels": labels_for(cfg, raw), "indices": np.arange(start, stop)}
    if is_text(cfg):
        out["captions"] = np.asarray(raw, dtype=str)
    return out


def write_shard(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Atomic: the file appears complete or not at all."""
    save_arrays(path, arrays, meta)


def load_shard(path: Path, sample_hash: str, start: int, stop: int, image_shape: tuple) -> tuple[dict, dict]:
    """-> (arrays, meta) after checking every byte (zip CRC) and shape; ShardError names what is wrong."""
    try:
        arrays, meta = load_arrays(path)
    except Exception as err:  # BadZipFile, a CRC error, a truncated member, bad JSON ... are all "corrupt"
        raise ShardError(path, "corrupt", f"unreadable ({type(err).__name__}: {err})") from None
    if meta is None:
        raise ShardError(path, "corrupt", "no metadata")
    if meta.get("sample_hash") != sample_hash:
        raise ShardError(path, "foreign", f"made by another checkpoint or sampling config (hash "
                                          f"{meta.get('sample_hash')}, this evaluation is {sample_hash})")
    n = stop - start
    images = arrays.get("images")
    if (meta.get("start"), meta.get("stop")) != (start, stop) or images is None or images.shape != (n, *image_shape) \
            or not np.array_equal(arrays.get("indices"), np.arange(start, stop)):
        raise ShardError(path, "corrupt", f"does not hold samples [{start}, {stop}) of shape {image_shape}")
    return arrays, meta


def sample_shard(model, tokenizer, cfg: Config, start: int, stop: int, device, conditioner=None,
                 prompts: list[str] | None = None) -> dict[str, np.ndarray]:
    """Samples [start, stop): class i % num_classes or prompt i % P, each sample's noise from its own seed
    (sample_seeds of sample.seed and i, handed to the sampler as a per-row generator) -> images (host uint8) and
    condition_arrays (labels, indices[, captions])."""
    arrays = condition_arrays(cfg, start, stop, prompts)
    raw = arrays["captions"] if is_text(cfg) else arrays["labels"]
    images = sample_images(model, cfg, raw, device=device, tokenizer=tokenizer, indices=arrays["indices"],
                           conditioner=conditioner)
    return {"images": images, **arrays}


def clip_scores(scorer, arrays: dict) -> dict[str, np.ndarray]:
    """CLIP score of each sample against its caption (eval.features clip; djepa/text/clip_score.py), or nothing."""
    if scorer is None:
        return {}
    from djepa.text.clip_score import shard_clip_scores

    return shard_clip_scores(scorer, arrays["images"], [str(c) for c in arrays["captions"]])


def shard_features(extractors, images: np.ndarray) -> dict[str, np.ndarray]:
    """Per extractor: features and logits (float32) and their float64 statistics (sum, sum of outer products)."""
    out = {}
    for ex in extractors:
        feats, logits = ex(images)
        stats = FeatureStats.of(feats)  # float64 on the extractor's device
        out |= {f"{ex.name}.features": feats.cpu().numpy(), f"{ex.name}.logits": logits.cpu().numpy(),
                f"{ex.name}.total": stats.total, f"{ex.name}.outer": stats.outer}
    return out


def shard_stats(arrays: dict, name: str) -> FeatureStats:
    return FeatureStats(len(arrays["indices"]), arrays[f"{name}.total"], arrays[f"{name}.outer"])


def write_adm_npz(path: Path, shards: list[Path], n: int, image_shape: tuple, captions: bool = False) -> Path:
    """Stream the shards' images and labels, in order, into one ADM-format .npz (arr_0 uint8 NHWC or, for clips,
    NTHWC; arr_1 int64; with `captions`, a text model's prompts as `captions`), holding one shard in memory at a
    time; written under a temp name, then renamed."""
    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, shape, dtype in (("images", (n, *image_shape), np.uint8), ("labels", (n,), np.int64)):
                name = "arr_0.npy" if key == "images" else "arr_1.npy"
                with zf.open(name, "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                             "shape": shape})
                    for p in shards:
                        with np.load(p, allow_pickle=False) as z:
                            f.write(np.ascontiguousarray(z[key], dtype=dtype).tobytes())
            if captions:  # small: gathered whole
                parts = []
                for p in shards:
                    with np.load(p, allow_pickle=False) as z:
                        parts.append(z["captions"])
                with zf.open("captions.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.concatenate(parts), allow_pickle=False)

    atomic_write(path, write)
    return path
