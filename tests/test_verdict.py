"""The plain verdict at the end of the demo, the evaluator and the sweep: unusable samples are called so,
with the likely cause and the fix; usable ones are left alone."""
from djepa.config import load_config
from djepa.eval.verdict import checkpoint_verdict, likely_cause, problems, verdict

NOISE = {"consistency_domain": 0.104, "fd_domain": 1572.8, "floor_fd_domain": 3.8}  # the demo
GOOD = {"consistency_domain": 0.93, "fd_domain": 14.0, "floor_fd_domain": 3.8}


def mnist(*overrides):
    return load_config("configs/mnist.yaml", list(overrides))


def test_noise_is_called_unusable_with_both_signs():
    found = problems(NOISE, 10)
    assert len(found) == 2
    assert "near chance" in found[0] and "0.104" in found[0]
    assert "1572.8" in found[1] and "414x" in found[1]
    text = verdict(NOISE, mnist(), 600)
    assert text.startswith("VERDICT: these samples are unusable.") and "likely cause:" in text and "fix:" in text


def test_usable_or_unmeasured_samples_get_no_verdict():
    assert verdict(GOOD, mnist(), 600) is None
    assert verdict({"fid": 250.0, "inception_score": 3.0}, mnist(), 600) is None  # no domain numbers: no claim
    assert problems({"consistency_domain": 0.26}, 10) == [] and len(problems({"consistency_domain": 0.24}, 10)) == 1
    assert problems({"fd_domain": 94.0, "floor_fd_domain": 3.8}, 10) == []  # 24.7x the floor: poor, not noise


def test_cause_a_time_budget_that_stopped_training_early():
    cause, fix = likely_cause(mnist("train.steps=600", "train.max_minutes=6"), 289)
    assert "step 289 of train.steps=600" in cause and "train.max_minutes=6" in cause
    assert "--resume" in fix and "train.max_minutes" in fix


def test_cause_an_ema_still_mostly_initialisation():
    cause, fix = likely_cause(mnist("model.ema_warmup=false", "train.steps=289"), 289)
    assert "23% the random initialisation" in cause and "model.ema_decay=0.995" in cause
    assert "model.ema_warmup=true" in fix
    # with the warm-up the same run is only short: train longer
    cause, fix = likely_cause(mnist("train.steps=289"), 289)
    assert "undertrained (289 steps)" in cause and "train.steps=1000" in fix


def test_cause_sampling_settings_after_a_long_run():
    cause, fix = likely_cause(mnist("train.steps=20000"), 20000)
    assert "sample.cfg" in cause and "jobs/sweep.py" in fix


def test_checkpoint_verdict_reads_the_step(untrained_checkpoint):
    from djepa.checkpoint import load_weights

    cfg = load_weights(untrained_checkpoint)[0]
    text = checkpoint_verdict(NOISE, cfg, untrained_checkpoint)
    assert "training stopped at step 0 of train.steps=3000" in text  # digits.yaml: 3000 steps, 3 min
