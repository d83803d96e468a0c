"""Online evaluation during training (djepa/eval/online.py): points at the right steps, only of saved weights,
identical after a failure and a resume (no point twice, none missing), replayed into MLflow without new rows."""
import json

import numpy as np
import pytest
import torch

from djepa.engine import build_optimizer
from djepa.eval import online as online_mod
from djepa.eval.features import extractor_identities
from djepa.eval.online import OnlineEval, read_points
from djepa.eval.report import resolve_reference
from djepa.local import batches, in_memory, train_local
from djepa.models.tokenizer import build_tokenizer
from djepa.train_loop import Feed, Parts, build_for_training, new_state, train_loop

ONLINE = ("train.steps=12", "train.log_every=100", "train.checkpoint_every=100", "train.max_minutes=null",
          "train.eval_every=5", "train.eval_samples=20", "eval.features=[domain]", "eval.is_splits=2",
          "model.label_drop=0.5")


def test_local_run_has_points_at_every_eval_step_and_the_end(tiny, tmp_path):
    result = train_local(tiny(*ONLINE), tmp_path)
    steps = [p["step"] for p in result.online]
    assert steps == [5, 10, 12]  # every 5 steps and the last one
    assert read_points(tmp_path / "online.jsonl") == {p["step"]: p for p in result.online}
    for p in result.online:
        assert np.isfinite([p["fd_domain"], p["is_domain"], p["consistency_domain"]]).all()
        assert 0.0 <= p["consistency_domain"] <= 1.0
    # the weights moved between points, the samples (same seeds) did not: the FD changes
    assert result.online[0]["fd_domain"] != result.online[-1]["fd_domain"]
    # evaluation steps are saved steps (checkpoint_every=100 alone would save only the last)
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 12


def test_online_points_leave_the_training_unchanged(tiny, tmp_path):
    """Sampling draws from per-sample generators and every step reseeds: the losses are the same with or
    without online evaluation."""
    with_eval = train_local(tiny(*ONLINE, "train.log_every=2"), tmp_path / "a")
    without = train_local(tiny(*ONLINE, "train.log_every=2", "train.eval_every=null"), tmp_path / "b")
    assert [h["loss"] for h in with_eval.history] == [h["loss"] for h in without.history]
    assert without.online == []


def _loop_parts(cfg, path, ema, saved, sink=None):
    ref = resolve_reference(cfg, extractor_identities(cfg))
    online = OnlineEval(cfg, ref, "cpu", path, sink)
    evaluated = []

    def evaluate(step):
        evaluated.append(step)
        online(step, ema)

    def save(state, metrics):
        saved.append((metrics["step"], dict(state), {k: v.clone() for k, v in ema.state_dict().items()}))

    return Parts(save=save, evaluate=evaluate), online, evaluated


def test_a_failure_between_save_and_point_is_made_up_on_resume_identically(tiny, tmp_path):
    """Uninterrupted: points at 5, 10, 12. Interrupted: the process dies right after saving step 10, before
    its point; the resumed loop (weights and state from that save, RNG scrambled) makes the point of step 10
    first, from the same weights, then 12. Same points, each once."""
    cfg = tiny(*ONLINE)
    images, labels = in_memory(cfg)
    tokenizer = build_tokenizer(cfg.tokenizer)

    def fresh():
        model, ema, _ = build_for_training(cfg, "cpu")
        feed = Feed(batches(cfg, images, labels), lambda b: (tokenizer.encode(b[0]), b[1]), 3, len(images))
        return model, ema, build_optimizer(model, cfg.train), feed

    model, ema, opt, feed = fresh()
    saved = []
    parts, straight, _ = _loop_parts(cfg, tmp_path / "a.jsonl", ema, saved)
    train_loop(cfg, model, ema, opt, new_state(), feed, parts, device="cpu")
    assert sorted(straight.points) == [5, 10, 12]

    model, ema, opt, feed = fresh()
    saved = []
    parts, first, evaluated = _loop_parts(cfg, tmp_path / "b.jsonl", ema, saved)
    save = parts.save

    def save_then_die(state, metrics):
        save(state, metrics)
        if metrics["step"] == 10:
            raise KeyboardInterrupt  # the worker is lost after the checkpoint, before the point
    parts.save = save_then_die
    with pytest.raises(KeyboardInterrupt):
        train_loop(cfg, model, ema, opt, new_state(), feed, parts, device="cpu")
    assert evaluated == [5] and sorted(read_points(tmp_path / "b.jsonl")) == [5]

    step, state, ema_state = saved[-1]  # what a restarted worker restores (model, EMA and opt as saved)
    assert step == 10
    model2, ema2, opt2, _ = fresh()
    model2.load_state_dict(model.state_dict())
    ema2.load_state_dict(ema_state)
    opt2.load_state_dict(opt.state_dict())
    torch.manual_seed(999)
    parts, resumed, evaluated = _loop_parts(cfg, tmp_path / "b.jsonl", ema2, [])
    feed = Feed(batches(cfg, images, labels), lambda b: (tokenizer.encode(b[0]), b[1]), 3, len(images))
    train_loop(cfg, model2, ema2, opt2, dict(state), feed, parts, device="cpu")
    assert evaluated == [10, 12]
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [5, 10, 12]  # each once, in order

    def values(points):
        return {s: {k: v for k, v in p.items() if k not in ("seconds", "timestamp_ms")} for s, p in points.items()}
    # step 10 comes from the saved weights: exactly the uninterrupted run's point. Step 12 follows the
    # data stream, which a real resume continues from its saved position: here the feed restarts, so
    # only the step-10 point (the one remade) is compared.
    assert values(resumed.points)[10] == values(straight.points)[10]
    assert values(resumed.points)[5] == values(straight.points)[5]


def test_recorded_points_are_replayed_with_their_timestamps_not_remade(tiny, tmp_path, monkeypatch):
    cfg = tiny(*ONLINE)
    model, ema, _ = build_for_training(cfg, "cpu")
    logged = []
    ref = resolve_reference(cfg, extractor_identities(cfg))
    first = OnlineEval(cfg, ref, "cpu", tmp_path / "online.jsonl", lambda m, s, ts: logged.append((s, ts, m)))
    point = first(5, ema)
    assert logged == [(5, point["timestamp_ms"], {f"online/{k}": v for k, v in point.items()
                                                 if k not in ("step", "timestamp_ms")})]
    assert "online/fd_domain" in logged[0][2] and "online/floor_fd_domain" not in logged[0][2]

    def no_sampling(*a, **k):
        raise AssertionError("a recorded point was sampled again")
    monkeypatch.setattr(online_mod, "sample_shard", no_sampling)
    again = []
    second = OnlineEval(cfg, ref, "cpu", tmp_path / "online.jsonl", lambda m, s, ts: again.append((s, ts, m)))
    assert again == logged  # a new worker replays what is recorded: the same rows, which MLflow keeps once
    assert second(5, ema) == point and again[-1] == logged[0]
    with (tmp_path / "online.jsonl").open("a") as f:
        f.write('{"step": 10, "fd_dom')  # a line cut by a kill is ignored (and the point made again)
    assert sorted(read_points(tmp_path / "online.jsonl")) == [5]


def test_config_checks_name_the_key(tiny):
    from djepa.config import ConfigError

    with pytest.raises(ConfigError, match="eval.features"):
        tiny("train.eval_every=5", "eval.features=[]")
    with pytest.raises(ConfigError, match="train.eval_samples"):
        tiny("train.eval_every=5", "eval.features=[domain]", "train.eval_samples=4", "eval.is_splits=10")
