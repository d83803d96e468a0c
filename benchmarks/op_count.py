"""Aten operations dispatched per training step: the CPU-side cost that bounds a GPU step (issue 20).

    python benchmarks/op_count.py --config configs/djepa-b.yaml          # about 10 s, no GPU, no memory

Prints ONE JSON object: the total count, the count per part of the step and the most frequent op kinds.
The step is `djepa.engine.train_step` as the loop runs it (forward with the EMA target encoder, backward,
grad-norm clip, fused AdamW, EMA update) on a model built on the `meta` device: every op is dispatched
but none computes, so the B preset counts in seconds on a laptop. A change that adds launches shows here.

What is counted is what passes torch's dispatcher below autograd (a TorchDispatchMode): each op the GPU
would be asked to run, plus views and CPU scalars (the mask draw), which cost dispatch time but no kernel.
The optimizer's second step is counted (the first one also creates AdamW's state). To dispatch as the
GPU path does, the meta device is listed as supporting foreach and fused kernels (so clipping, AdamW and
the EMA take their CUDA code paths), attention runs the flash-attention op an H100 runs in bf16 and
dropout CUDA's fused op (`--attention math`: the composite paths meta and CPU take by themselves).
Not counted: the ~1,000 `_to_copy` casts bf16 autocast adds (autocast has no meta device; a CPU bf16 step
of B dispatched 6,064 ops against 5,067 in fp32), and anything torch.compile fuses (a compiled block is
one call).
The count does not depend on the batch size or the mask ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from contextlib import ExitStack, nullcontext
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402


class OpCounter(TorchDispatchMode):
    """Counts every op by kind and by the part of the step it belongs to (`self.part`)."""

    def __init__(self):
        super().__init__()
        self.part = "forward"
        self.kinds, self.parts = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.kinds[str(func.overloadpacket)] += 1
        self.parts[self.part] += 1
        return func(*args, **(kwargs or {}))


def _flash_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """F.scaled_dot_product_attention as CUDA runs it for bf16 ViT blocks (one flash op, one backward)."""
    if attn_mask is not None or enable_gqa:
        raise ValueError("op_count's flash attention stand-in covers unmasked attention only")
    return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, scale=scale)[0]


def _fused_dropout(x, p=0.5, training=True, inplace=False):
    """F.dropout as CUDA runs it: one native_dropout op (CPU and meta build it from four)."""
    if not training or p == 0:
        return x
    return torch.ops.aten.native_dropout(x, p, True)[0]


def _gpu_code_paths() -> ExitStack:
    """Let meta tensors take the foreach / fused code paths that CUDA tensors take."""
    import torch.optim.optimizer as optimizer
    import torch.utils._foreach_utils as foreach_utils

    stack = ExitStack()
    for mod in (foreach_utils, optimizer):
        for name in ("_get_foreach_kernels_supported_devices", "_get_fused_kernels_supported_devices"):
            devices = getattr(foreach_utils, name)() + ["meta"]
            stack.enter_context(mock.patch.object(mod, name, lambda d=devices: list(d)))
    return stack


def count_step(cfg, batch: int, attention: str = "flash", grad_checkpointing: bool = False) -> dict:
    from djepa.engine import build_optimizer, checkpoint_blocks, train_step
    from djepa.models.djepa import build_model
    from djepa.models.ema import make_ema

    torch.manual_seed(0)
    with torch.device("meta"):
        model = build_model(cfg.model, cfg.tokenizer)
    ema = make_ema(model)
    if grad_checkpointing:
        checkpoint_blocks(model)
    n, c = cfg.tokenizer.num_tokens, cfg.tokenizer.token_dim
    tokens = torch.empty(batch, n, c, device="meta")
    labels = torch.zeros(batch, dtype=torch.long, device="meta")
    counter = OpCounter()

    def part(name):
        def hook(*_):
            counter.part = name
        return hook

    # the parts, marked from outside: hooks and wrappers of this benchmark only
    model.token_loss.net.register_forward_pre_hook(part("forward_denoiser"))
    model.token_loss.net.register_forward_hook(part("forward"))
    model.register_forward_hook(part("backward"))  # zero_grad (no ops) and backward follow the forward
    target_features = ema.target_features

    def counted_target(*args):
        counter.part = "forward_target"
        out = target_features(*args)
        counter.part = "forward"
        return out

    ema.target_features = counted_target
    clip = torch.nn.utils.clip_grad_norm_

    def counted_clip(*args, **kwargs):
        counter.part = "clip"
        return clip(*args, **kwargs)

    with _gpu_code_paths():
        opt = build_optimizer(model, cfg.train, fused=True)
        opt.register_step_pre_hook(part("optimizer"))
        opt.register_step_post_hook(part("ema_update"))  # and the stack of the step's four numbers
        gpu = attention == "flash"
        # train_step's autocast is disabled here (fp32), but torch.autocast refuses the meta device even then
        sdpa, dropout = (_flash_sdpa, _fused_dropout) if gpu else (F.scaled_dot_product_attention, F.dropout)
        with mock.patch.object(F, "scaled_dot_product_attention", sdpa), mock.patch.object(F, "dropout", dropout), \
                mock.patch.object(torch.nn.utils, "clip_grad_norm_", counted_clip), \
                mock.patch.object(torch, "autocast", lambda *a, **k: nullcontext()):
            for step in range(2):  # the first step also builds AdamW's state: count the second
                counter.kinds.clear(), counter.parts.clear()
                counter.part = "forward"
                torch.manual_seed(step)
                with counter:
                    train_step(model, ema, opt, tokens, labels, step, cfg.train, cfg.model.ema_decay)
    return {"total": sum(counter.kinds.values()), "parts": dict(counter.parts), "kinds": dict(counter.kinds)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/djepa-b.yaml")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE")
    ap.add_argument("--batch-size", type=int, default=4, help="does not change the count")
    ap.add_argument("--attention", choices=["flash", "math"], default="flash",
                    help="flash: attention and dropout as CUDA dispatches them; math: as CPU/meta do")
    ap.add_argument("--grad-checkpointing", action="store_true", help="count the recompute too")
    args = ap.parse_args(argv)

    from djepa.config import load_config

    cfg = load_config(args.config, args.overrides)
    result = {"bench": "op_count", "config": args.config, "overrides": args.overrides, "torch": torch.__version__,
              "batch_size": args.batch_size, "attention": args.attention,
              "grad_checkpointing": args.grad_checkpointing,
              **count_step(cfg, args.batch_size, args.attention, args.grad_checkpointing)}
    result["top"] = dict(Counter(result.pop("kinds")).most_common(15))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
