"""train.grad_checkpointing: per-block activation checkpointing gives the plain path's losses and gradients.

torch.utils.checkpoint saves the RNG state before each block and replays it in the recompute, so the
dropout masks (attention and projection dropout are on in training) are the same; the recompute runs the
same fp32 kernels on the same inputs. So the comparison is exact: tolerance 0.
"""
import copy

import torch

from djepa.engine import build_optimizer, checkpoint_blocks, train_step
from djepa.models.djepa import build_model
from djepa.models.ema import make_ema


def _pair(cfg):
    torch.manual_seed(0)
    plain = build_model(cfg.model, cfg.tokenizer)
    with torch.no_grad():  # the denoiser starts as the identity with a zero output: give its gates weight
        for p in plain.token_loss.net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ckpt = copy.deepcopy(plain)
    ema_p, ema_c = make_ema(plain), make_ema(ckpt)
    m = cfg.model
    assert checkpoint_blocks(ckpt) == m.encoder_depth + m.predictor_depth + m.token_loss.depth
    return plain, ckpt, ema_p, ema_c


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward (a checkpointed block keeps only its input)."""
    total = []

    def pack(t):
        total.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(total)


def test_checkpointed_blocks_give_the_plain_loss_and_every_gradient_with_dropout_on(tiny):
    cfg = tiny("model.encoder_depth=2", "model.predictor_depth=2", "model.token_loss.depth=2",
               "model.attn_dropout=0.2", "model.proj_dropout=0.2")
    plain, ckpt, ema_p, ema_c = _pair(cfg)
    tokens = torch.randn(6, 16, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(6)
    calls = []
    ckpt.encoder_blocks[0].norm1.register_forward_pre_hook(lambda *a: calls.append(1))  # the recompute runs it too
    outs = {}
    for name, m, ema in (("plain", plain, ema_p), ("ckpt", ckpt, ema_c)):
        m.train()
        torch.manual_seed(5)
        out, saved = _saved_bytes(lambda: m(tokens, labels, target=ema))
        out["loss"].backward()
        outs[name] = (out, saved)
    assert len(calls) == 2  # forward + recompute: the block really was checkpointed
    assert outs["ckpt"][1] < 0.6 * outs["plain"][1]  # far fewer activations kept
    for k in ("loss", "loss_d", "loss_p"):
        assert torch.equal(outs["ckpt"][0][k], outs["plain"][0][k]), k
    # dropout was active: another seed gives another loss, so equal losses mean equal dropout masks
    torch.manual_seed(6)
    assert not torch.equal(plain(tokens, labels, target=ema_p)["loss"], outs["plain"][0]["loss"])
    for (name, a), b in zip(ckpt.named_parameters(), plain.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad), name
    assert list(ckpt.state_dict()) == list(plain.state_dict())  # checkpoints keep their keys


def test_checkpointed_training_steps_equal_plain_ones(tiny):
    cfg = tiny("train.warmup_steps=2")
    plain, ckpt, ema_p, ema_c = _pair(cfg)
    opt_p, opt_c = build_optimizer(plain, cfg.train), build_optimizer(ckpt, cfg.train)
    tokens, labels = torch.randn(8, 16, 4, generator=torch.Generator().manual_seed(3)), torch.arange(8)
    for step in range(3):
        torch.manual_seed(10 + step)
        p = train_step(plain, ema_p, opt_p, tokens, labels, step, cfg.train, 0.9).host
        torch.manual_seed(10 + step)
        c = train_step(ckpt, ema_c, opt_c, tokens, labels, step, cfg.train, 0.9).host
        assert c == p
    for x, y in zip([*ckpt.parameters(), *ema_c.parameters()], [*plain.parameters(), *ema_p.parameters()]):
        assert torch.equal(x, y)


def test_local_training_checkpoints_when_asked_and_keeps_its_losses(tiny, tmp_path, monkeypatch):
    import djepa.train_loop
    from djepa.local import train_local

    applied = []
    monkeypatch.setattr(djepa.train_loop, "checkpoint_blocks", lambda m: applied.append(checkpoint_blocks(m)))
    runs = {c: train_local(tiny(f"train.grad_checkpointing={c}", "train.steps=4", "train.log_every=2"),
                           tmp_path / str(c)) for c in (False, True)}
    assert applied == [3]  # only the run that asked for it
    assert [h["loss"] for h in runs[True].history] == [h["loss"] for h in runs[False].history]
