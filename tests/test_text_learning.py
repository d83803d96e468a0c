"""Word order is learned: a small text model trained on the 8x8 digit pairs draws "3 left of 8" and "8 left of 3"
as different images, the digits in the asked order, judged by the digit classifier on each half."""
import numpy as np
import pytest

from djepa.config import load_config

STEPS = 800  # measured: order_correct 1.0 at 1500 steps (18 min), 0.21 (swapped 0.13) at 400, 0.97 (swapped 0) at 800; train.max_minutes off: the result may not depend on the machine's speed


@pytest.mark.slow
def test_captions_and_their_swapped_twins_give_the_asked_order(tmp_path):
    from djepa.checkpoint import load_weights
    from djepa.local import train_local
    from djepa.samples import sample_images
    from djepa.text.pair_metrics import caption_scores
    from djepa.text.pairs import ORDERED_PAIRS, caption_of

    cfg = load_config("configs/digits-pairs.yaml", [f"train.out_dir={tmp_path}", f"train.steps={STEPS}",
                                                    "train.max_minutes=null", "train.log_every=500"])
    result = train_local(cfg)
    _, _, ema = load_weights(result.checkpoint, "cpu")
    # every ordered pair twice, in the two phrasings that name the left digit first
    captions = [caption_of(a, b, p) for a, b in ORDERED_PAIRS for p in (0, 2)]
    images = sample_images(ema, cfg, np.asarray(captions, dtype=object))
    scores = caption_scores(images, captions, "digits_pairs", cfg.eval.cache_dir)
    print("order test:", scores)
    # chance is 1/90 for the ordered pair; a model blind to word order would draw as many swapped as in order
    assert scores["order_correct"] > ORDER_FLOOR and scores["order_correct"] > 4 * scores["swapped"], scores


ORDER_FLOOR = 0.4
