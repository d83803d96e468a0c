"""Dispatched-op guards (issue 20): the GPU step is bound by the CPU issuing ops, so the op count is tested."""
import sys
from pathlib import Path

import torch

from djepa.models.djepa import build_model
from djepa.models.ema import ema_update, make_ema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from op_count import OpCounter, count_step  # noqa: E402


def test_ema_update_is_two_grouped_ops_whatever_the_parameter_count(tiny):
    for depth in (1, 3):
        cfg = tiny(f"model.encoder_depth={depth}")
        torch.manual_seed(0)
        model = build_model(cfg.model, cfg.tokenizer)
        ema = make_ema(model)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        expect = [e + 0.5 * (p - e) for e, p in zip(ema.parameters(), model.parameters())]
        with OpCounter() as counter:
            ema_update(ema, model, 0.5)
        assert dict(counter.kinds) == {"aten._foreach_lerp_": 1, "aten._foreach_copy_": 1}
        for e, x in zip(ema.parameters(), expect):
            torch.testing.assert_close(e, x, rtol=0, atol=1e-7)


def test_op_count_of_a_step_by_part(tiny):
    cfg = tiny()
    res = count_step(cfg, batch=4)
    assert res["total"] == sum(res["parts"].values())
    assert set(res["parts"]) == {"forward", "forward_target", "forward_denoiser", "backward", "clip", "optimizer",
                                 "ema_update"}
    assert res["parts"]["optimizer"] <= 4  # fused AdamW: one op per parameter group, plus the step counters
    assert res["parts"]["ema_update"] <= 10  # the foreach lerp and copy, and the stack of the step's numbers
    assert res["kinds"].get("aten._scaled_dot_product_flash_attention") == 3  # encoder, predictor, EMA target
    assert count_step(cfg, batch=7)["total"] == res["total"]  # the count does not depend on the batch
