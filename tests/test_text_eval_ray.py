"""A text model through the condition-blind evaluator on the suite's local Ray: prompts cycled by sample index,
the same bytes for 1 and 2 workers, each sample's caption in samples.npz, the pairs' order metrics."""
import numpy as np
import pytest

from conftest import eval_cfg, save_untrained
from djepa.config import load_config
from djepa.platform.evaluator import evaluate

N = 14  # 3 shards of 5, the last one partial


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    """A tiny digits-pairs text model at initialisation (words encoder, joint attention, RoPE)."""
    cfg = load_config("configs/digits-pairs.yaml", [
        "model.encoder_depth=1", "model.predictor_depth=1", "model.width=32", "model.num_heads=2",
        "model.positions=rope", "model.token_loss.depth=1", "model.token_loss.width=32",
        "model.token_loss.diffusion.sample_steps=3", "sample.ar_steps=4", "sample.num_per_class=1"])
    return save_untrained(cfg, tmp_path_factory.mktemp("text-ckpt") / "checkpoint_0000000")


def test_text_evaluation_is_worker_count_independent_and_keeps_the_captions(ray_session, text_checkpoint, tmp_path):
    from djepa.text.pairs import caption_digits, pairs

    one = evaluate(eval_cfg(text_checkpoint, tmp_path / "w1", "eval.workers=1"), text_checkpoint, N)
    two = evaluate(eval_cfg(text_checkpoint, tmp_path / "w2", "eval.workers=2", "sample.batch_size=3"),
                   text_checkpoint, N)
    assert (tmp_path / "w1" / "samples.npz").read_bytes() == (tmp_path / "w2" / "samples.npz").read_bytes()
    assert one["metrics"] == two["metrics"]
    held = pairs("digits_pairs", "held").captions
    with np.load(tmp_path / "w1" / "samples.npz", allow_pickle=False) as z:
        assert z["arr_0"].shape == (N, 8, 16, 1) and z["arr_0"].dtype == np.uint8
        assert z["captions"].tolist() == held[:N]
        assert z["arr_1"].tolist() == [10 * a + b for a, b in map(caption_digits, held[:N])]
    m = one["metrics"]
    assert {"fd_domain", "floor_fd_domain", "consistency_domain", "swapped_domain"} <= set(m)
    assert m["fd_domain"] > m["floor_fd_domain"] > 0  # an untrained model is far from real pairs
    assert "unusable" in one["verdict"]

    # other prompts are another evaluation (the prompts are part of its identity)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two captions, cycled\n3 left of 8\n8 left of 3\n")
    other = evaluate(eval_cfg(text_checkpoint, tmp_path / "p", "eval.workers=1", f"eval.prompts={prompts}"),
                     text_checkpoint, 4)
    assert other["sample_hash"] != one["sample_hash"]
    with np.load(tmp_path / "p" / "samples.npz", allow_pickle=False) as z:
        assert z["captions"].tolist() == ["3 left of 8", "8 left of 3"] * 2
