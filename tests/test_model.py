import json
import subprocess
import sys

import pytest
import torch

from djepa.engine import build_optimizer, param_groups, train_step
from djepa.models.djepa import build_model
from djepa.models.ema import ema_update, make_ema
from djepa.models.summary import main as summary_main


def _batch(cfg, b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randn(b, cfg.tokenizer.num_tokens, cfg.tokenizer.token_dim, generator=g)
    return tok, torch.randint(0, cfg.model.num_classes, (b,), generator=g)


@pytest.mark.parametrize("extra", [[], ["model.qk_norm=rms"], ["model.qk_norm=layer"], ["model.token_loss.kind=flow"]])
def test_forward_shapes_and_losses(tiny, extra):
    cfg = tiny(*extra)
    model = build_model(cfg.model, cfg.tokenizer)
    ema = make_ema(model)
    tok, lab = _batch(cfg)
    out = model(tok, lab, target=ema, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "loss_d", "loss_p"}
    assert torch.allclose(out["loss"], out["loss_d"] + out["loss_p"])
    masked, visible = model.draw_mask(8, "cpu", torch.Generator().manual_seed(0))
    enc = model.encode(tok, visible, model.class_embedding(lab))
    assert enc.shape == (8, cfg.model.buffer_size + visible.shape[1], cfg.model.width)
    assert model.predict(enc, visible).shape == (8, 16, cfg.model.width)
    assert ema.target_features(tok, lab).shape == (8, 16, cfg.model.width)


def test_mar_baseline_has_no_projector_and_no_pred_loss(tiny):
    cfg = tiny("model.pred_loss_weight=0")
    model = build_model(cfg.model, cfg.tokenizer)
    assert model.projector is None
    out = model(*_batch(cfg))
    assert set(out) == {"loss", "loss_d"}
    with pytest.raises(ValueError, match="target"):
        build_model(tiny().model, cfg.tokenizer)(*_batch(cfg))


def test_loss_uses_masked_tokens_only(tiny):
    """Changing the target of a visible token (diffusion target or JEPA target) changes nothing."""
    cfg = tiny()
    model = build_model(cfg.model, cfg.tokenizer)
    with torch.no_grad():  # the denoiser starts with a zero output; give it some weight
        for p in model.token_loss.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tok, lab = _batch(cfg)
    masked, visible = model.draw_mask(8, "cpu", torch.Generator().manual_seed(3))
    assert visible.shape[1] > 0
    z = torch.randn(8, 16, cfg.model.width)
    g = torch.randn(8, 16, cfg.model.width)
    x2, g2 = tok.clone(), g.clone()
    rows = torch.arange(8)[:, None]
    x2[rows, visible] += 100.0
    g2[rows, visible] -= 100.0
    torch.manual_seed(0)
    a = model.losses(z, tok, g, masked)
    torch.manual_seed(0)
    b = model.losses(z, x2, g2, masked)
    assert torch.equal(a["loss"], b["loss"])
    # and a masked token's target does matter
    x3 = tok.clone()
    x3[rows, masked[:, :1]] += 1.0
    torch.manual_seed(0)
    assert not torch.equal(a["loss_d"], model.losses(z, x3, g, masked)["loss_d"])


def test_no_gradient_reaches_target_encoder(tiny):
    cfg = tiny()
    model = build_model(cfg.model, cfg.tokenizer)
    ema = make_ema(model)
    out = model(*_batch(cfg), target=ema)
    out["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in ema.parameters())
    assert model.encoder_blocks[0].attn.qkv.weight.grad is not None
    assert model.projector[0].weight.grad is not None


def test_ema_formula(tiny):
    cfg = tiny()
    model = build_model(cfg.model, cfg.tokenizer)
    ema = make_ema(model)
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    ema_update(ema, model, 0.75)
    for e0, e1, p in zip(before, ema.parameters(), model.parameters()):
        assert torch.allclose(e1, 0.75 * e0 + 0.25 * p, atol=1e-6)
    assert not ema.training


def test_label_drop_rate(tiny):
    cfg = tiny()
    model = build_model(cfg.model, cfg.tokenizer)
    null = model.null_class.detach()
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (20000,), generator=g)
    drop = torch.rand(20000, generator=g) < cfg.model.label_drop
    emb = model.class_embedding(labels, drop)
    is_null = (emb == null).all(dim=1)
    assert torch.equal(is_null, drop)
    assert abs(is_null.float().mean().item() - 0.1) < 0.006


def test_weight_decay_exclusions(tiny):
    cfg = tiny()
    model = build_model(cfg.model, cfg.tokenizer)
    decay, no_decay = param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "encoder_blocks.0.attn.qkv.weight" in decayed and "predictor_blocks.0.mlp.fc2.weight" in decayed
    for n in decayed:
        assert not n.startswith(("projector", "token_loss", "class_emb", "null_class")) and not n.endswith("bias")
        assert "norm" not in n and "pos" not in n and "mask_token" not in n
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_train_step_updates_schedules_and_ema(tiny):
    cfg = tiny("train.warmup_steps=10", "train.steps=100")
    model = build_model(cfg.model, cfg.tokenizer)
    ema = make_ema(model)
    opt = build_optimizer(model, cfg.train)
    res = train_step(model, ema, opt, *_batch(cfg), step=4, cfg=cfg.train, ema_decay=0.9)
    assert res.lr == pytest.approx(cfg.train.lr * 5 / 10)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.02 + 0.18 * 4 / 99)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    moved = [not torch.equal(e, p) for e, p in zip(ema.parameters(), model.parameters())]
    assert any(moved)


PAPER_COUNTS = {"djepa-b": 212_017_440, "djepa-l": 687_421_984, "djepa-h": 1_426_730_784, "mar-b": 208_000_000}


@pytest.mark.parametrize("name", list(PAPER_COUNTS))
def test_preset_parameter_counts_match_paper(name, capsys):
    result = summary_main([f"configs/{name}.yaml"])
    expected = PAPER_COUNTS[name]
    assert abs(result["trainable_params"] - expected) / expected < 0.005
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["trainable_params"] == result["trainable_params"]


def test_summary_cli_last_line_is_json():
    out = subprocess.run([sys.executable, "-m", "djepa.models.summary", "configs/digits.yaml"],
                         capture_output=True, text=True, check=True).stdout
    table, last = out.strip().splitlines()[:-1], out.strip().splitlines()[-1]
    assert any(line.startswith("denoiser") for line in table)
    assert json.loads(last)["trainable_params"] > 0


def test_rms_qk_norm_is_the_authors_float32_rms_norm():
    """models/block.py of the authors: x * rsqrt(mean(x^2) + 1e-6) in float32, times a weight, no bias."""
    from djepa.models.attention import Attention
    from djepa.models.djepa import Fp32RMSNorm

    norm = Fp32RMSNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 8))
    x = torch.randn(3, 5, 8)
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert torch.allclose(norm(x), ref, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), ref, atol=2e-2)
    attn = Attention(16, num_heads=2, qk_norm="rms", qkv_bias=True)
    assert isinstance(attn.q_norm, Fp32RMSNorm) and not hasattr(attn.q_norm, "bias")
    assert [k for k in attn.state_dict() if "norm" in k] == ["q_norm.weight", "k_norm.weight"]
