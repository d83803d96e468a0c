"""The encode job's actor-pool callables (djepa/data/encode.py runs them in `map_batches`): the tokenizer, which
turns images or clips into posterior moments, and the frozen text encoder of a text model's captions.
"""
from __future__ import annotations

import numpy as np

from djepa.config import Config, TokenizerConfig
from djepa.models.tokenizer import moments_shape


class Tokenize:
    """Actor-pool callable: a batch of images or clips -> posterior moments of each and of its mirror."""

    def __init__(self, tokenizer: dict):
        import torch

        from djepa.models.tokenizer import build_tokenizer

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        cfg = TokenizerConfig.model_validate(tokenizer)
        self.tok, self.shape = build_tokenizer(cfg).to(self.device), tuple(moments_shape(cfg))

    def __call__(self, batch: dict) -> dict:
        x = self.torch.from_numpy(np.array(batch["image"], dtype=np.float32)).to(self.device)  # a writable copy
        with self.torch.no_grad():
            m = self.tok.encode_moments(x).float().cpu().numpy()  # (B, *moments_shape)
            # the mirror flips the last axis, the width: for a clip (B, C, T, H, W) every frame is mirrored
            mf = self.tok.encode_moments(x.flip(-1)).float().cpu().numpy()
        if m.shape[1:] != self.shape:  # the manifest (and training) trusts moments_shape: never write other shapes
            raise ValueError(f"the {self.tok.cfg.kind} tokenizer gave moments {m.shape[1:]} per sample, but "
                             f"moments_shape says {self.shape}")
        out = {"key": batch["key"], "label": batch["label"].astype(np.int64), "moments": m, "moments_flip": mf}
        for name in ("valid_frames", "caption"):  # clips: the real frames before the padding; text: the caption
            if name in batch:
                out[name] = batch[name]
        return out


class EmbedText:
    """Actor-pool callable of a text model's encode: captions -> the text encoder's embeddings (float16, (L, D)
    each, padded) and token counts, stored beside the moments so training never runs the encoder."""

    def __init__(self, config: dict):
        from djepa.conditions import Conditioner

        self.cond = Conditioner(Config.model_validate(config), "cuda" if _cuda() else "cpu")

    def __call__(self, batch: dict) -> dict:
        c = self.cond(list(batch["caption"]))
        emb, length = c["text"].float().cpu().numpy().astype(np.float16), c["mask"].sum(1).cpu().numpy()
        return batch | {"text_emb": emb, "text_len": length.astype(np.int64)}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
