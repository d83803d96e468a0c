"""The D-JEPA authors' checkpoint layout (D-JEPA/djepa-imagenet, models/djepa.py) -> a djepa checkpoint.

Their model is ours with the buffer and position embeddings split differently, all exactly expressible:
  encoder: buffer (1, 64, D) + class embedding, and encoder_pos_embed_learned (1, N, D) on the image tokens
           -> our encoder_pos (1, 64 + N, D) = [buffer; encoder_pos_embed_learned]
  decoder: decoder_pos_embed_learned (1, N, D) on the image tokens only, none on the buffer, and no
           diffusion position embedding -> predictor_pos = [0; decoder_pos_embed_learned], token_loss_pos = 0
  blocks:  timm's names (norm1, attn.qkv, attn.q_norm/k_norm with --qk_norm, attn.proj, norm2, mlp.fc1/fc2)
Not released: models/diffloss.py and models/jepaloss.py. The denoiser is read in MAR's DiffLoss layout
(`diffloss.net.*`), which their GaussDiffLoss constructor mirrors argument for argument; `jepaloss.*`
(their projector head, whose layout is unknown) is dropped with a note: sampling never uses it, and a
training run started from the converted checkpoint starts our projector from its initialisation.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from djepa.config import ConfigError, apply_overrides, deep_merge, read_yaml, validate
from djepa.convert.files import ConvertError, load_state_file, tensors_only
from djepa.convert.mar import CONFIGS, _RENAMES, _depth, _set, check_and_load, map_state

AUTHOR_PRESETS = {"djepa_base": "djepa-b.yaml", "djepa_large": "djepa-l.yaml", "djepa_huge": "djepa-h.yaml"}
# their names that are not MAR's; the position embeddings and buffer are rebuilt in `to_ours`
_SPLIT = ("buffer", "encoder_pos_embed_learned", "decoder_pos_embed_learned")


def to_ours(state: dict[str, torch.Tensor], src) -> tuple[dict[str, torch.Tensor], list[str]]:
    """-> (our state dict, dropped keys)."""
    for k in ("buffer", "encoder_pos_embed_learned", "decoder_pos_embed_learned", "encoder_blocks.0.attn.qkv.weight"):
        if k not in state:
            raise ConvertError(f"{src}: not the D-JEPA authors' layout (no {k}); for MAR's use `convert.py mar`")
    dropped = sorted(k for k in state if k.startswith("jepaloss."))
    rest = {k: v for k, v in state.items() if k not in dropped and k not in _SPLIT}
    out = map_state(rest, src, _RENAMES)
    buffer, enc_pos, dec_pos = (state[k] for k in _SPLIT)  # (1, buf, D), (1, N, D), (1, N, D)
    out["encoder_pos"] = torch.cat([buffer, enc_pos], dim=1)
    out["predictor_pos"] = torch.cat([torch.zeros_like(buffer), dec_pos], dim=1)  # no position on the buffer
    out["token_loss_pos"] = torch.zeros_like(dec_pos)  # they add none before the denoiser
    return out, dropped


def _config_from_file(model: dict, a: dict) -> dict:
    """The config keys the weights' shapes and the saved args fix (a partial config over the preset)."""
    width = model["encoder_blocks.0.norm1.weight"].shape[0]
    n = model["encoder_pos_embed_learned"].shape[1]
    from_file: dict = {}
    for key, value in {
        "model.width": width, "model.encoder_depth": _depth(model, "encoder_blocks"),
        "model.predictor_depth": _depth(model, "decoder_blocks"), "model.num_classes": model["class_emb.weight"].shape[0],
        "model.buffer_size": model["buffer"].shape[1],
        "model.qk_norm": "rms" if "encoder_blocks.0.attn.q_norm.weight" in model else "none",
        "model.token_loss.depth": _depth(model, "diffloss.net.res_blocks"),
        "model.token_loss.width": model["diffloss.net.input_proj.weight"].shape[0],
        # their diffusion file is unreleased; MAR's DiffLoss (which it mirrors) trains with the cosine schedule
        "model.token_loss.diffusion.schedule": "cosine",
        "sample.cfg_schedule": "mar_linear",  # their sample_tokens is MAR's
    }.items():
        _set(from_file, key, value)
    for arg, key in {"img_size": "tokenizer.image_size", "vae_stride": "tokenizer.vae.stride",
                     "patch_size": "tokenizer.patch_size", "vae_embed_dim": "tokenizer.vae.latent_channels",
                     "label_drop_prob": "model.label_drop", "diffusion_batch_mul": "model.token_loss.batch_mul",
                     "ema_rate": "model.ema_decay", "temperature": "sample.temperature", "cfg_scale": "sample.cfg",
                     "num_iter": "sample.ar_steps", "adamw_eps": "train.adam_eps", "blr": "train.blr"}.items():
        if a.get(arg) is not None:
            _set(from_file, key, float(a[arg]) if arg == "adamw_eps" else a[arg])
    if from_file.get("sample", {}).get("ar_steps", 0) > n:
        _set(from_file, "sample.ar_steps", n)
    return from_file


def convert_authors(src: str | Path, out: str | Path, preset: str | Path | None = None, vae: str | None = None,
                    overrides: list[str] | None = None, log=print) -> Path:
    from djepa.checkpoint import save_checkpoint

    data = load_state_file(src)
    if not isinstance(data.get("model"), dict):  # a bare state dict (e.g. a .safetensors of the model)
        data = {"model": data}
    model = tensors_only(data["model"], src, "model")
    ema = tensors_only(data["model_ema"], src, "model_ema") if isinstance(data.get("model_ema"), dict) else None
    args = data.get("args") if isinstance(data.get("args"), argparse.Namespace) else None
    a = vars(args) if args is not None else {}
    log(f"read {src}: model {len(model)} tensors, model_ema {'present' if ema is not None else 'absent'}, "
        f"args.model={a.get('model')!r}")
    model_state, dropped = to_ours(model, src)
    ema_state = to_ours(ema, src)[0] if ema is not None else dict(model_state)
    if dropped:
        log(f"  dropped {len(dropped)} jepaloss.* tensors ({sum(model[k].numel() for k in dropped):,} values): the "
            f"authors' JEPA head layout is unreleased; sampling does not use it")
    if preset is None and a.get("model") not in AUTHOR_PRESETS and \
            not any(o.startswith("model.num_heads=") for o in overrides or []):
        raise ConvertError(f"{src}: args.model is {a.get('model')!r}, not one of the authors' factories "
                           f"({', '.join(AUTHOR_PRESETS)}), and the head count cannot be read from the weights: give "
                           f"--preset CONFIG or --set model.num_heads=N")
    if preset is None:
        preset = CONFIGS / AUTHOR_PRESETS.get(a.get("model"), "djepa-b.yaml")
    from_file = _config_from_file(model, a)
    data_cfg = deep_merge(read_yaml(preset), from_file)
    data_cfg["name"] = f"{data_cfg.get('name', 'djepa')}-authors"
    try:
        cfg = validate(apply_overrides(data_cfg, list(overrides or []) + ([f"tokenizer.vae.weights={vae}"] if vae else [])))
    except ConfigError as err:
        raise ConvertError(f"{src}: the converted config is invalid:\n{err}") from None
    if cfg.model.pred_loss_weight > 0:  # keep our (re-initialised) projector so the checkpoint loads and trains
        from djepa.models.djepa import build_model

        torch.manual_seed(cfg.train.seed)
        fresh = build_model(cfg.model, cfg.tokenizer).state_dict()
        for k in fresh:
            if k.startswith("projector."):
                model_state[k] = fresh[k]
                ema_state[k] = fresh[k].clone()
    check_and_load(cfg, model_state, ema_state, src)
    note = (f"jepaloss.* ({len(dropped)} tensors) dropped: layout unreleased; projector.* at initialisation"
            if dropped else "")
    state = {"step": 0, "converted_from": {"file": str(Path(src).resolve()), "format": "D-JEPA authors (djepa-imagenet)",
                                           "args_model": a.get("model"), "dropped": dropped, "note": note}}
    path = save_checkpoint(out, cfg, model_state, ema_state, state)
    log(f"wrote {path}: config {cfg.name}, qk_norm {cfg.model.qk_norm}, every other key placed"
        + (f"; {note}" if note else ""))
    return path
