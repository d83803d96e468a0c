"""Parameter table of a config's model, built on the meta device (no memory, even for H).

    python -m djepa.models.summary configs/djepa-b.yaml [--set model.depth=...]

The last line printed is JSON with `trainable_params` (EMA copy excluded, as the paper counts). A text model's
frozen text encoder is not trainable and not counted there; its size is printed beside (`text_encoder_params`) when
its layout is known offline (Qwen2-1.5B, or a local directory's config.json).
"""
from __future__ import annotations

import argparse
import json

import torch

from djepa.config import load_config
from djepa.models.djepa import DJEPA, build_model

# module-name prefix -> part of the model
PARTS = {
    "encoder": ("token_proj", "token_norm", "encoder_pos", "encoder_blocks", "encoder_norm", "text_proj"),
    "predictor": ("predictor_embed", "mask_token", "predictor_pos", "predictor_blocks", "predictor_norm", "token_loss_pos",
                  "predictor_text_proj"),
    "projector": ("projector",),
    "denoiser": ("token_loss",),
    "embeddings": ("class_emb", "null_class"),
}


def count_parts(model: DJEPA) -> dict[str, int]:
    counts = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = next((k for k, prefixes in PARTS.items() if name.split(".")[0] in prefixes), None)
        if part is None:
            raise KeyError(f"parameter {name} belongs to no part in djepa.models.summary.PARTS")
        counts[part] += p.numel()
    return counts


def text_encoder_params(text) -> int | None:
    """Parameters of a frozen hf text encoder, built on the meta device from its config: the paper's Qwen2-1.5B is
    known offline; another needs its config.json in a local directory. The words encoder has none."""
    if text.encoder == "words":
        return 0
    from transformers import AutoConfig, AutoModel, Qwen2Config

    from djepa.text.encoders import QWEN2_1_5B

    try:
        config = Qwen2Config(**QWEN2_1_5B) if text.name == "Qwen/Qwen2-1.5B" else \
            AutoConfig.from_pretrained(text.name, subfolder=text.subfolder or "", local_files_only=True)
    except OSError:
        return None
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModel.from_config(config).parameters())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    with torch.device("meta"):
        model = build_model(cfg.model, cfg.tokenizer)
    counts = count_parts(model)
    total = sum(counts.values())
    print(f"{cfg.name}: {cfg.tokenizer.num_tokens} tokens x {cfg.tokenizer.token_dim} dims, "
          f"token loss = {cfg.model.token_loss.kind}")
    print(f"{'part':<12}{'parameters':>16}{'share':>9}")
    for part, n in counts.items():
        print(f"{part:<12}{n:>16,}{n / max(total, 1):>9.1%}")
    print(f"{'total':<12}{total:>16,}")
    result = {"config": cfg.name, "trainable_params": total, **{f"{k}_params": v for k, v in counts.items()}}
    if cfg.model.condition == "text":
        frozen = text_encoder_params(cfg.text)
        print(f"text encoder {cfg.text.encoder}{' ' + cfg.text.name if cfg.text.name else ''}: frozen, "
              + (f"{frozen:,} parameters (not trained, not counted above)" if frozen is not None else "size unknown "
                 "offline"))
        result["text_encoder_params"] = frozen
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
