"""Video through the modality-blind evaluator on the suite's local Ray: the same bytes for 1 and 2 workers,
samples N x T x H x W x C in samples.npz, the animated grid and the frame strip in MLflow."""
import numpy as np
import pytest
from PIL import Image

from conftest import eval_cfg, save_untrained
from djepa.config import load_config
from djepa.platform.evaluator import evaluate

N = 14  # 3 shards of 5, the last one partial


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory):
    """A tiny Moving MNIST model at initialisation (the pixel tokenizer on a 4x4x4 grid, flow loss)."""
    cfg = load_config("configs/moving-mnist.yaml", [
        "model.encoder_depth=1", "model.predictor_depth=1", "model.width=32", "model.num_heads=2",
        "model.token_loss.depth=1", "model.token_loss.width=32", "model.token_loss.flow.sample_steps=3",
        "sample.ar_steps=4", "sample.num_per_class=1"])
    return save_untrained(cfg, tmp_path_factory.mktemp("video-ckpt") / "checkpoint_0000000")


def test_video_evaluation_is_worker_count_independent_and_logs_the_gif(ray_session, video_checkpoint, tmp_path):
    from mlflow.tracking import MlflowClient

    one = evaluate(eval_cfg(video_checkpoint, tmp_path / "w1", "eval.workers=1"), video_checkpoint, N)
    two = evaluate(eval_cfg(video_checkpoint, tmp_path / "w2", "eval.workers=2", "sample.batch_size=3"),
                   video_checkpoint, N)
    assert (tmp_path / "w1" / "samples.npz").read_bytes() == (tmp_path / "w2" / "samples.npz").read_bytes()
    assert one["metrics"] == two["metrics"]
    with np.load(tmp_path / "w1" / "samples.npz") as z:
        assert z["arr_0"].shape == (N, 8, 32, 32, 1) and z["arr_0"].dtype == np.uint8
        assert z["arr_1"].tolist() == [i % 10 for i in range(N)]
    m = one["metrics"]
    assert {"fd_domain", "floor_fd_domain", "consistency_domain", "is_domain"} <= set(m)
    assert m["fd_domain"] > m["floor_fd_domain"] > 0  # an untrained model is far from real clips

    # the grid is an animated GIF of the first clips, one frame per time step; the strip a still PNG
    gif = Image.open(one["grid"])
    assert one["grid"].endswith("grid.gif") and gif.n_frames == 8
    assert (tmp_path / "w1" / "grid-strip.png").is_file() and (tmp_path / "w1" / "grid.mp4").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    arts = {a.path for a in client.list_artifacts(one["mlflow"]["run_id"], "samples")}
    assert {"samples/grid.gif", "samples/grid.mp4", "samples/grid-strip.png"} <= arts
