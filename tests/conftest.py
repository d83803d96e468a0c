import os
import tempfile

import pytest
import torch

from djepa.config import load_config

torch.set_num_threads(2)
# domain classifiers and reference statistics: a fresh cache per session (set before Ray starts, so its
# workers inherit it), never the user's ~/.cache/djepa
os.environ.setdefault("DJEPA_CACHE", tempfile.mkdtemp(prefix="djepa-cache-"))


def tiny_config(*overrides: str):
    """A very small digits model: builds and steps in milliseconds."""
    base = [
        "model.encoder_depth=1", "model.predictor_depth=1", "model.width=32", "model.num_heads=2",
        "model.token_loss.depth=1", "model.token_loss.width=32", "model.token_loss.diffusion.sample_steps=5",
        "model.token_loss.flow.sample_steps=5", "model.ema_decay=0.9", "sample.ar_steps=4",
    ]
    return load_config("configs/digits.yaml", base + list(overrides))


def save_untrained(cfg, path):
    """cfg's model at initialisation (seed 0), saved as a checkpoint at `path` (tests only read it)."""
    from djepa.checkpoint import save_checkpoint
    from djepa.models.djepa import build_model
    from djepa.models.ema import make_ema

    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.tokenizer)
    save_checkpoint(path, cfg, model.state_dict(), make_ema(model).state_dict(), {"step": 0})
    return path


def eval_cfg(checkpoint, out, *extra):
    """A small evaluation of `checkpoint` into `out`: shards of 5, domain features, MLflow beside it."""
    from djepa.platform.evaluator import eval_config

    return eval_config(checkpoint, [f"eval.out_dir={out}", "eval.shard_size=5", "eval.cpus_per_worker=0.5",
                                    "eval.features=[domain]", "eval.reference_images=50",
                                    f"tracking.tracking_uri=sqlite:///{out.parent}/mlflow.db", *extra])


def write_tar(path, members):
    """A tar file (a WebDataset shard) of (name, bytes) members."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole suite (starting Ray costs 5-15 s on 2 cores)."""
    import ray
    import ray.data  # noqa: F401  binds Ray Data's log handler to the session's stream, not one test's capsys

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)  # never a `ray start` cluster
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def encoded_digits(ray_session, tmp_path_factory):
    """The bundled digits encoded once for the suite (pixel tokenizer, 4 shards)."""
    from djepa.data.encode import encode

    out = tmp_path_factory.mktemp("encoded") / "digits"
    encode(tiny_config(f"data.encoded_dir={out}", "data.rows_per_file=500"))
    return out


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory):
    """A tiny digits model at initialisation, saved as a checkpoint (tests only read it)."""
    return save_untrained(tiny_config(), tmp_path_factory.mktemp("ckpt") / "checkpoint_0000000")
