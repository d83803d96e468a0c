"""The one training loop (djepa.train_loop) in process, with recording components: what it asks them at
which step, how it stops, and that nothing non-finite is ever saved. The local demo and the Ray worker
both run this function (the Ray side: tests/test_train_ray.py)."""
import json

import pytest
import torch

from djepa.engine import build_optimizer
from djepa.local import batches, in_memory, train_local
from djepa.models.tokenizer import build_tokenizer
from djepa.train_loop import Feed, Parts, build_for_training, new_state, train_loop
from train_faults import nan_at


class Recorder:
    """log / save / preview components that note the steps they were called at."""

    def __init__(self):
        self.logged, self.saved, self.drawn, self.states = [], [], [], []

    def log(self, step, epoch, means, lr, grad_norm):
        assert all(map(torch.isfinite, torch.tensor(list(means.values()))))
        self.logged.append(step)

    def save(self, state, metrics):
        self.saved.append(metrics["step"])
        self.states.append(dict(state))

    def parts(self):
        return Parts(log=self, save=self.save, preview=self.drawn.append)


def run(cfg, on_step=None, state=None, rec=None, feed=None):
    rec = rec or Recorder()
    images, labels = in_memory(cfg)
    tokenizer = build_tokenizer(cfg.tokenizer)
    model, ema, _ = build_for_training(cfg, "cpu")
    opt = build_optimizer(model, cfg.train)
    feed = feed or Feed(batches(cfg, images, labels), lambda b: (tokenizer.encode(b[0]), b[1]), 3, len(images))
    out = train_loop(cfg, model, ema, opt, state or new_state(), feed, rec.parts(), device="cpu", on_step=on_step)
    return out, rec, model


def loop_cfg(tiny, *extra):
    return tiny("train.steps=12", "train.log_every=4", "train.checkpoint_every=5", "train.preview_every=6",
                "train.max_minutes=null", *extra)


def test_components_are_asked_at_their_steps_and_the_data_position_advances(tiny):
    (stop, step), rec, _ = run(loop_cfg(tiny))
    assert (stop, step) == (None, 12)
    assert rec.logged == [4, 8, 12] and rec.saved == [5, 10, 12] and rec.drawn == [6, 12]
    # 3 batches a pass: step 5 is batch 2 of pass 1, step 12 ends pass 3; one EMA update per step
    assert [(s["step"], s["pass"], s["batch_in_pass"], s["ema_updates"]) for s in rec.states] == \
        [(5, 1, 2, 5), (10, 3, 1, 10), (12, 4, 0, 12)]


@pytest.mark.parametrize("every, saved", [(4, [4]), (9, [])])
def test_a_non_finite_step_stops_the_loop_and_is_never_saved(tiny, every, saved):
    """NaN tokens at step index 7 (step 8). Flags are read one step late; a saving step reads its own."""
    cfg = loop_cfg(tiny, f"train.checkpoint_every={every}", "train.preview_every=0", "train.log_every=100")
    (stop, step), rec, _ = run(cfg, on_step=nan_at(7))
    assert (stop, step) == ("nan", 8)
    assert rec.saved == saved and rec.logged == []


def test_a_time_stop_reads_its_own_step_before_saving_it(tiny):
    """A budget that is over at once: the stop is read one step late, at step 2, which the loop then
    saves; its own flags are read first, so a step 2 that went non-finite stops as NaN, unsaved."""
    cfg = loop_cfg(tiny, "train.max_minutes=1e-9", "train.preview_every=0")
    (stop, step), rec, _ = run(cfg)
    assert (stop, step) == ("time", 2) and rec.saved == [2] and rec.logged == [2]
    (stop, step), rec, _ = run(cfg, on_step=nan_at(1))
    assert (stop, step) == ("nan", 2) and rec.saved == [] and rec.logged == []


def test_a_resumed_loop_draws_what_an_uninterrupted_one_does(tiny):
    """Interrupted before step index 5, the global RNG scrambled (a new process), continued from the same
    state: the same weights as one run, because every step reseeds from (seed, rank, step)."""
    cfg = loop_cfg(tiny, "train.preview_every=0", "model.label_drop=0.5")
    images, labels = in_memory(cfg)
    batch = (build_tokenizer(cfg.tokenizer).encode(images[:64]), labels[:64])
    feed = Feed(lambda: [batch] * 3, lambda b: b, 3, 64)  # every batch the same: no data position to restore
    _, whole, straight = run(cfg, feed=feed)

    def stop_at_5(step, rank, world, tokens, run_dir):
        if step == 5:
            raise KeyboardInterrupt
        return tokens

    rec, state = Recorder(), new_state()
    images, labels = in_memory(cfg)
    model, ema, _ = build_for_training(cfg, "cpu")
    opt = build_optimizer(model, cfg.train)
    with pytest.raises(KeyboardInterrupt):
        train_loop(cfg, model, ema, opt, state, feed, rec.parts(), device="cpu", on_step=stop_at_5)
    assert state["step"] == 5 and rec.saved == [5]
    torch.manual_seed(12345)
    assert train_loop(cfg, model, ema, opt, state, feed, rec.parts(), device="cpu") == (None, 12)
    assert rec.saved == whole.saved and rec.logged == whole.logged
    for p, q in zip(model.parameters(), straight.parameters()):
        assert torch.equal(p, q)


def test_local_training_stops_on_nan_keeping_the_last_good_checkpoint(tiny, tmp_path):
    cfg = loop_cfg(tiny, "train.preview_every=0")
    with pytest.raises(FloatingPointError, match=r"NaN/inf at step 8; .*checkpoint \(step 5\) is intact"):
        train_local(cfg, tmp_path, on_step=nan_at(7))
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 5
    assert [h["step"] for h in json.loads((tmp_path / "history.json").read_text())] == [4]
