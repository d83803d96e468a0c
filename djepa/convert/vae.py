"""An LDM / MAR KL autoencoder checkpoint -> a diffusers AutoencoderKL directory.

MAR's kl16.ckpt is `{"model": state_dict}` in the layout of LDM's `AutoencoderKL` (taming/ldm
`Encoder`/`Decoder`: `encoder.down.{level}.block.{i}`, `.attn.{i}` with 1x1-conv q/k/v, `mid.block_1`,
`decoder.up.{level}` numbered from the highest resolution). The architecture is read from the keys
(levels, widths, blocks per level, where attention is), never assumed, and the diffusers model is
built to match: level L of the decoder is diffusers' up block n-1-L, attention convs become linears.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from djepa.convert.files import ConvertError, load_state_file, tensors_only

_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_TOP = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def vae_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The autoencoder tensors of an LDM/MAR file: under `model` (MAR), `state_dict` (LDM's Lightning
    checkpoints) or at the top level (a .safetensors); other top-level entries are ignored."""
    data = load_state_file(path)
    for key in ("model", "state_dict"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    return tensors_only({k: v for k, v in data.items() if isinstance(v, torch.Tensor)}, path, "VAE")


def infer_architecture(sd: dict[str, torch.Tensor], path) -> dict:
    """diffusers AutoencoderKL kwargs read from LDM keys."""
    if "encoder.conv_in.weight" not in sd or "post_quant_conv.weight" not in sd:
        sample = ", ".join(sorted(sd)[:5]) or "none"
        hint = ("; it is a MAR / D-JEPA model checkpoint: use `convert.py mar` or `convert.py djepa`"
                if "encoder_blocks.0.attn.qkv.weight" in sd else "")
        raise ConvertError(f"{path}: not an LDM/MAR KL autoencoder (no encoder.conv_in.weight / post_quant_conv.weight;"
                           f" first keys: {sample}){hint}")
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    if levels != list(range(len(levels))) or not levels:
        raise ConvertError(f"{path}: encoder levels {levels} are not 0..n-1")
    widths = [sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in levels]
    base = sd["encoder.conv_in.weight"].shape[0]
    if widths[0] != base:
        raise ConvertError(f"{path}: the first level is {widths[0]} wide but conv_in gives {base}; diffusers' "
                           f"AutoencoderKL cannot express ch_mult[0] != 1")
    per_level = {len({k.split(".")[4] for k in sd if k.startswith(f"encoder.down.{i}.block.")}) for i in levels}
    dec_per_level = {len({k.split(".")[4] for k in sd if k.startswith(f"decoder.up.{i}.block.")}) for i in levels}
    if len(per_level) != 1 or dec_per_level != {per_level.pop() + 1}:
        raise ConvertError(f"{path}: blocks per level differ between levels, or the decoder does not have one more "
                           f"than the encoder (LDM's layout)")
    layers = next(iter(dec_per_level)) - 1
    enc_attn = [any(k.startswith(f"encoder.down.{i}.attn.") for k in sd) for i in levels]
    dec_attn = [any(k.startswith(f"decoder.up.{i}.attn.") for k in sd) for i in levels]
    mid_attn = {"encoder.mid.attn_1.q.weight" in sd, "decoder.mid.attn_1.q.weight" in sd}
    if len(mid_attn) != 1:
        raise ConvertError(f"{path}: attention in one mid block only; diffusers needs both or neither")
    z = sd["post_quant_conv.weight"].shape[0]
    return {
        "in_channels": sd["encoder.conv_in.weight"].shape[1],
        "out_channels": sd["decoder.conv_out.weight"].shape[0],
        "down_block_types": tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in enc_attn),
        # diffusers numbers the decoder from the lowest resolution: up block j is LDM level n-1-j
        "up_block_types": tuple("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(dec_attn)),
        "block_out_channels": tuple(widths),
        "layers_per_block": layers,
        "latent_channels": z,
        "norm_num_groups": 32,  # LDM's Normalize is always GroupNorm(32, eps=1e-6); groups leave no trace in keys
        "mid_block_add_attention": mid_attn.pop(),
        "use_quant_conv": "quant_conv.weight" in sd,
        "use_post_quant_conv": True,
    }


def _rename(key: str, n: int) -> str | None:
    """One LDM key -> its diffusers name, or None if the pattern is unknown."""
    rules = [
        (r"(encoder|decoder)\.(conv_in|conv_out)\.(.+)", lambda m: f"{m[1]}.{m[2]}.{m[3]}"),
        (r"(encoder|decoder)\.norm_out\.(.+)", lambda m: f"{m[1]}.conv_norm_out.{m[2]}"),
        (r"(quant_conv|post_quant_conv)\.(.+)", lambda m: f"{m[1]}.{m[2]}"),
        (r"(encoder|decoder)\.mid\.block_(\d)\.(\w+)\.(.+)",
         lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{_RESNET[m[3]]}.{m[4]}"),
        (r"(encoder|decoder)\.mid\.attn_1\.(\w+)\.(.+)", lambda m: f"{m[1]}.mid_block.attentions.0.{_ATTN[m[2]]}.{m[3]}"),
        (r"encoder\.down\.(\d+)\.block\.(\d+)\.(\w+)\.(.+)",
         lambda m: f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{_RESNET[m[3]]}.{m[4]}"),
        (r"encoder\.down\.(\d+)\.attn\.(\d+)\.(\w+)\.(.+)",
         lambda m: f"encoder.down_blocks.{m[1]}.attentions.{m[2]}.{_ATTN[m[3]]}.{m[4]}"),
        (r"encoder\.down\.(\d+)\.downsample\.conv\.(.+)", lambda m: f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"),
        (r"decoder\.up\.(\d+)\.block\.(\d+)\.(\w+)\.(.+)",
         lambda m: f"decoder.up_blocks.{n - 1 - int(m[1])}.resnets.{m[2]}.{_RESNET[m[3]]}.{m[4]}"),
        (r"decoder\.up\.(\d+)\.attn\.(\d+)\.(\w+)\.(.+)",
         lambda m: f"decoder.up_blocks.{n - 1 - int(m[1])}.attentions.{m[2]}.{_ATTN[m[3]]}.{m[4]}"),
        (r"decoder\.up\.(\d+)\.upsample\.conv\.(.+)", lambda m: f"decoder.up_blocks.{n - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}"),
    ]
    for pattern, fn in rules:
        if m := re.fullmatch(pattern, key):
            try:
                return fn(m)
            except KeyError:  # a sub-module name outside _RESNET / _ATTN
                return None
    return None


def convert_vae(src: str | Path, out: str | Path, log=print) -> Path:
    """Write a diffusers AutoencoderKL directory at `out` from an LDM/MAR KL checkpoint; -> out."""
    from diffusers import AutoencoderKL

    sd = vae_state_dict(src)
    arch = infer_architecture(sd, src)
    n = len(arch["block_out_channels"])
    log(f"read {src}: {len(sd)} tensors, {sum(v.numel() for v in sd.values()):,} values")
    log(f"  levels {list(arch['block_out_channels'])}, {arch['layers_per_block']} res blocks per level, "
        f"{arch['latent_channels']} latent channels (stride {2 ** (n - 1)}), encoder attention at levels "
        f"{[i for i, t in enumerate(arch['down_block_types']) if t.startswith('Attn')]}, decoder attention at levels "
        f"{[n - 1 - j for j, t in enumerate(arch['up_block_types']) if t.startswith('Attn')]}, "
        f"mid attention {arch['mid_block_add_attention']}")
    skipped = sorted(k for k in sd if not k.startswith(_TOP))
    if skipped:  # e.g. loss.* (LPIPS, discriminator): training-only
        log(f"  skipped {len(skipped)} tensors outside the autoencoder: {', '.join(skipped[:5])}"
            f"{' ...' if len(skipped) > 5 else ''}")
    mapped, unknown = {}, []
    for k, v in sd.items():
        if not k.startswith(_TOP):
            continue
        name = _rename(k, n)
        if name is None:
            unknown.append(k)
            continue
        # LDM attention projections are 1x1 convs; diffusers' are linears
        mapped[name] = v[:, :, 0, 0] if ".attentions." in name and v.dim() == 4 else v
    if unknown:
        raise ConvertError(f"{src}: {len(unknown)} keys of an unknown VAE layout could not be placed: "
                           f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}")
    vae = AutoencoderKL(**arch)
    missing, unexpected = vae.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise ConvertError(f"{src}: the keys do not fill a diffusers AutoencoderKL: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    out = Path(out)
    vae.save_pretrained(out)
    log(f"wrote {out} (diffusers AutoencoderKL, {sum(p.numel() for p in vae.parameters()):,} parameters); "
        f"use it with --set tokenizer.vae.weights={out}")
    return out
