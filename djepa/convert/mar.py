"""MAR's checkpoint-last.pth -> a djepa checkpoint directory (model.* and ema.*, config.yaml, state.json).

MAR's layout equals ours key for key (the MAR baseline is D-JEPA without the projector): only the names
differ. Depths, widths and the token grid come from the file (`args` and the tensor shapes); the head count
leaves no trace in the weights, so it comes from MAR's factory name (`args.model`) or from --preset / --set.
The converted config takes MAR's training and sampling settings from `args` and MAR's recipe choices:
cosine noise schedule, MAR's weight-decay rule, its linear cfg schedule.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from djepa.config import Config, ConfigError, apply_overrides, deep_merge, read_yaml, validate
from djepa.convert.files import ConvertError, load_state_file, tensors_only

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# MAR's factories (models/mar.py): name -> our preset
MAR_PRESETS = {"mar_base": "mar-b.yaml", "mar_large": "mar-l.yaml", "mar_huge": "mar-h.yaml"}

# MAR name -> ours; blocks keep timm's names inside (norm1, attn.qkv, attn.proj, norm2, mlp.fc1/fc2)
_RENAMES = [
    (r"fake_latent", "null_class"),
    (r"encoder_pos_embed_learned", "encoder_pos"),
    (r"decoder_pos_embed_learned", "predictor_pos"),
    (r"diffusion_pos_embed_learned", "token_loss_pos"),
    (r"mask_token", "mask_token"),
    (r"class_emb\.(weight)", r"class_emb.\1"),
    (r"z_proj\.(\w+)", r"token_proj.\1"),
    (r"z_proj_ln\.(\w+)", r"token_norm.\1"),
    (r"encoder_blocks\.(.+)", r"encoder_blocks.\1"),
    (r"encoder_norm\.(\w+)", r"encoder_norm.\1"),
    (r"decoder_embed\.(\w+)", r"predictor_embed.\1"),
    (r"decoder_blocks\.(.+)", r"predictor_blocks.\1"),
    (r"decoder_norm\.(\w+)", r"predictor_norm.\1"),
    # the denoiser (MAR's SimpleMLPAdaLN)
    (r"diffloss\.net\.time_embed\.mlp\.(\d\.\w+)", r"token_loss.net.time_embed.mlp.\1"),
    (r"diffloss\.net\.cond_embed\.(\w+)", r"token_loss.net.cond_embed.\1"),
    (r"diffloss\.net\.input_proj\.(\w+)", r"token_loss.net.input_proj.\1"),
    (r"diffloss\.net\.res_blocks\.(\d+)\.in_ln\.(\w+)", r"token_loss.net.blocks.\1.norm.\2"),
    (r"diffloss\.net\.res_blocks\.(\d+)\.mlp\.(\d\.\w+)", r"token_loss.net.blocks.\1.mlp.\2"),
    (r"diffloss\.net\.res_blocks\.(\d+)\.adaLN_modulation\.1\.(\w+)", r"token_loss.net.blocks.\1.ada.1.\2"),
    (r"diffloss\.net\.final_layer\.linear\.(\w+)", r"token_loss.net.final.\1"),
    (r"diffloss\.net\.final_layer\.adaLN_modulation\.1\.(\w+)", r"token_loss.net.final_ada.1.\1"),
]


def rename(key: str, renames=_RENAMES) -> str | None:
    for pattern, repl in renames:
        if re.fullmatch(pattern, key):
            return re.sub(f"^{pattern}$", repl, key)
    return None


def map_state(state: dict[str, torch.Tensor], src, renames=_RENAMES) -> dict[str, torch.Tensor]:
    """Every key renamed; a key no rule places is an error naming it (nothing is dropped silently)."""
    out, unknown = {}, []
    for k, v in state.items():
        name = rename(k, renames)
        (unknown.append(k) if name is None else out.__setitem__(name, v))
    if unknown:
        raise ConvertError(f"{src}: {len(unknown)} keys have no place in a djepa model: {', '.join(unknown[:8])}"
                           f"{' ...' if len(unknown) > 8 else ''}")
    return out


def _depth(state: dict, prefix: str) -> int:
    """Blocks under `prefix` (keys prefix.<i>.*)."""
    return len({k[len(prefix) + 1:].split(".")[0] for k in state if k.startswith(prefix + ".")})


def load_mar(src: str | Path) -> tuple[dict, dict, argparse.Namespace | None, dict]:
    """-> (model state, EMA state, args, other top-level entries) of a MAR checkpoint."""
    data = load_state_file(src)
    if "model" not in data or not isinstance(data["model"], dict):
        kind = "an LDM/MAR VAE (use `convert.py vae`)" if any(str(k).startswith("encoder.down") for k in
                                                               _flat_keys(data)) else f"keys {sorted(data)[:6]}"
        raise ConvertError(f"{src}: not a MAR checkpoint (no `model` state dict; found {kind})")
    model = tensors_only(data["model"], src, "model")
    if "encoder_blocks.0.attn.qkv.weight" not in model or "diffloss.net.input_proj.weight" not in model:
        hint = ("it is an LDM/MAR VAE: use `convert.py vae`" if "encoder.conv_in.weight" in model else
                "it is the D-JEPA authors' layout: use `convert.py djepa`" if "buffer" in model else
                f"first keys: {', '.join(sorted(model)[:5])}")
        raise ConvertError(f"{src}: `model` is not MAR's layout (no encoder_blocks.0.attn.qkv.weight or "
                           f"diffloss.net.input_proj.weight); {hint}")
    ema = tensors_only(data["model_ema"], src, "model_ema") if isinstance(data.get("model_ema"), dict) else None
    args = data.get("args") if isinstance(data.get("args"), argparse.Namespace) else None
    rest = {k: v for k, v in data.items() if k not in ("model", "model_ema", "args")}
    return model, ema, args, rest


def _flat_keys(data: dict):
    for k, v in data.items():
        yield from (_flat_keys(v) if isinstance(v, dict) else [k])


def mar_config(model: dict, args: argparse.Namespace | None, preset: str | Path | None, overrides: list[str],
               src, log=print) -> Config:
    """The djepa config of a MAR checkpoint: preset (given, or from args.model), then shapes and MAR's args,
    then overrides (--set)."""
    a = vars(args) if args is not None else {}
    name = a.get("model")
    if preset is None and name in MAR_PRESETS:
        preset = CONFIGS / MAR_PRESETS[name]
    base = read_yaml(preset) if preset is not None else read_yaml(CONFIGS / "mar-b.yaml")
    width = model["encoder_blocks.0.norm1.weight"].shape[0]
    n_tokens = model["diffusion_pos_embed_learned"].shape[1]
    from_file: dict = {
        "model": {"width": width, "encoder_depth": _depth(model, "encoder_blocks"),
                  "predictor_depth": _depth(model, "decoder_blocks"), "num_classes": model["class_emb.weight"].shape[0],
                  "buffer_size": model["encoder_pos_embed_learned"].shape[1] - n_tokens,
                  "token_loss": {"depth": _depth(model, "diffloss.net.res_blocks"),
                                 "width": model["diffloss.net.input_proj.weight"].shape[0]}},
        "tokenizer": {"vae": {"latent_channels": model["z_proj.weight"].shape[1] // a.get("patch_size", 1) ** 2}},
    }
    if preset is None and name not in MAR_PRESETS and not any(o.startswith("model.num_heads=") for o in overrides):
        raise ConvertError(f"{src}: args.model is {name!r}, not one of MAR's factories ({', '.join(MAR_PRESETS)}), "
                           f"and the head count cannot be read from the weights: give --preset CONFIG or "
                           f"--set model.num_heads=N")
    mapping = {  # MAR's argparse names -> ours (values as MAR trained and evaluated)
        "img_size": "tokenizer.image_size", "vae_stride": "tokenizer.vae.stride", "patch_size": "tokenizer.patch_size",
        "vae_embed_dim": "tokenizer.vae.latent_channels", "label_drop_prob": "model.label_drop",
        "mask_ratio_min": "model.mask_ratio_min", "attn_dropout": "model.attn_dropout",
        "proj_dropout": "model.proj_dropout", "diffusion_batch_mul": "model.token_loss.batch_mul",
        "num_sampling_steps": "model.token_loss.diffusion.sample_steps", "ema_rate": "model.ema_decay",
        "grad_clip": "train.grad_clip", "blr": "train.blr", "min_lr": "train.min_lr",
        "weight_decay": ["train.weight_decay_start", "train.weight_decay_end"],
        "seed": "train.seed",
    }  # not args.cfg / temperature / num_iter: those are MAR's online-eval defaults (cfg 1.0), not the published
    # settings, which the preset holds (MAR's README: cfg 2.9 / 3.0 / 3.2, 256 steps, temperature 1.0)
    for arg, keys in mapping.items():
        if arg in a and a[arg] is not None:
            for key in [keys] if isinstance(keys, str) else keys:
                value = int(a[arg]) if arg == "num_sampling_steps" else a[arg]
                _set(from_file, key, value)
    if a.get("lr_schedule") in ("constant", "cosine"):
        _set(from_file, "train.lr_schedule", a["lr_schedule"])
    if base.get("sample", {}).get("ar_steps", 0) > n_tokens:
        log(f"  the preset's sample.ar_steps exceeds the {n_tokens} tokens: sample.ar_steps={n_tokens}")
        _set(from_file, "sample.ar_steps", n_tokens)
    mar_recipe = {"model": {"pred_loss_weight": 0.0, "qk_norm": "none", "ema_warmup": False,
                            "token_loss": {"kind": "diffusion", "diffusion": {"schedule": "cosine", "train_steps": 1000}}},
                  "train": {"no_decay": "mar"}}
    data = deep_merge(deep_merge(base, from_file), mar_recipe)
    data["name"] = f"{base.get('name', 'mar')}-converted" if name in MAR_PRESETS or preset else str(name or "mar")
    try:
        return validate(apply_overrides(data, overrides))
    except ConfigError as err:
        raise ConvertError(f"{src}: the converted config is invalid:\n{err}") from None


def _set(data: dict, key: str, value) -> None:
    *path, last = key.split(".")
    for p in path:
        data = data.setdefault(p, {})
    data[last] = value


def check_and_load(cfg: Config, model_state: dict, ema_state: dict, src) -> None:
    """Build the djepa model of `cfg` and load both state dicts strictly: a shape or key mismatch names it."""
    from djepa.models.djepa import build_model

    with torch.device("meta"):
        model = build_model(cfg.model, cfg.tokenizer)
    ours = model.state_dict()
    for which, state in (("model", model_state), ("ema", ema_state)):
        missing = sorted(set(ours) - set(state))
        unexpected = sorted(set(state) - set(ours))
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(ours[k].shape)}" for k in ours
                  if k in state and state[k].shape != ours[k].shape]
        if missing or unexpected or shapes:
            raise ConvertError(f"{src}: {which} weights do not fit the config: missing {missing[:5]}, unexpected "
                               f"{unexpected[:5]}, shape mismatches {shapes[:5]}")


def convert_mar(src: str | Path, out: str | Path, preset: str | Path | None = None, vae: str | None = None,
                overrides: list[str] | None = None, log=print) -> Path:
    from djepa.checkpoint import save_checkpoint

    model, ema, args, rest = load_mar(src)
    log(f"read {src}: model {len(model)} tensors ({sum(v.numel() for v in model.values()):,} values), "
        f"model_ema {'present' if ema is not None else 'absent'}, args.model={getattr(args, 'model', None)!r}, "
        f"other entries {sorted(rest)} (not converted: training state of MAR's optimizer and AMP scaler)")
    overrides = list(overrides or []) + ([f"tokenizer.vae.weights={vae}"] if vae else [])
    cfg = mar_config(model, args, preset, overrides, src, log)
    model_state = map_state(model, src)
    if ema is None:
        log("  no model_ema in the file: the EMA copy is the model's weights")
    ema_state = map_state(ema, src) if ema is not None else dict(model_state)
    check_and_load(cfg, model_state, ema_state, src)
    state = {"step": 0, "epoch": int(rest.get("epoch", 0)) if isinstance(rest.get("epoch"), int) else 0,
             "converted_from": {"file": str(Path(src).resolve()), "format": "MAR checkpoint (LTH14/mar)",
                                "args_model": getattr(args, "model", None), "dropped": sorted(rest),
                                "args": {k: v for k, v in (vars(args) if args else {}).items()
                                         if isinstance(v, (str, int, float, bool, type(None)))}}}
    path = save_checkpoint(out, cfg, model_state, ema_state, state)
    log(f"wrote {path}: config {cfg.name} ({cfg.model.encoder_depth}+{cfg.model.predictor_depth} blocks x "
        f"{cfg.model.width}, {cfg.model.num_heads} heads, denoiser {cfg.model.token_loss.depth} x "
        f"{cfg.model.token_loss.width}, {cfg.tokenizer.num_tokens} tokens); every key placed")
    if not cfg.tokenizer.vae.weights and cfg.tokenizer.kind == "vae":
        log("  tokenizer.vae.weights is not set: pass --vae DIR here, or --set tokenizer.vae.weights=DIR when "
            "sampling or evaluating")
    return path
