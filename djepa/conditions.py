"""The condition seam: a sample's raw condition (a class id, or a caption) -> what DJEPA.condition reads.

Training, sampling, the evaluator, the sweep and MLflow pass raw conditions through here and never look inside:
- class: raw conditions are int class ids; the model reads a (B,) long tensor.
- text: raw conditions are caption strings; the text encoder (djepa/text/encoders.py) turns them into
  {"text": (B, L, D) float32, "mask": (B, L) bool}. The encode job stores those embeddings in the shards
  (text.precompute), and `stored` rebuilds the same dict from them.

Which conditions an evaluation samples: sample i gets class i % num_classes, or prompt i % P of the evaluation's
prompts (eval.prompts, or the held-out captions of an embedded text source), so any prefix is balanced and
the set does not depend on the number of workers.
"""
from __future__ import annotations

import hashlib
from functools import cached_property

import numpy as np
import torch

from djepa.config import Config
from djepa.data.sources import TEXT_SOURCES  # embedded captioned data (djepa/text/pairs.py)



def is_text(cfg: Config) -> bool:
    return cfg.model.condition == "text"


class Conditioner:
    """Raw conditions -> the model's condition on `device`; the text encoder is built on first use."""

    def __init__(self, cfg: Config, device: torch.device | str = "cpu"):
        self.cfg, self.device, self.text = cfg, torch.device(device), is_text(cfg)

    @cached_property
    def encoder(self):
        from djepa.text.encoders import build_text_encoder, check_dims

        enc = build_text_encoder(self.cfg.text, self.device)
        check_dims(enc, self.cfg.model.text_dim)
        return enc

    def __call__(self, raw) -> torch.Tensor | dict:
        if not self.text:
            return torch.as_tensor(np.asarray(raw), dtype=torch.long, device=self.device)
        emb, mask = self.encoder([str(c) for c in raw])
        return {"text": emb.to(self.device), "mask": mask.to(self.device)}

    def stored(self, emb: torch.Tensor, length: torch.Tensor) -> dict:
        """Embeddings kept at encode time (B, L, D) and each caption's token count (B,) -> the model's condition."""
        mask = torch.arange(emb.shape[1], device=length.device)[None] < length[:, None]
        return {"text": emb.to(self.device, torch.float32), "mask": mask.to(self.device)}


def select(cond, idx) -> torch.Tensor | dict:
    """Rows `idx` of a condition (labels, or the text dict)."""
    return {k: v[idx] for k, v in cond.items()} if isinstance(cond, dict) else cond[idx]


# ----------------------------------------------------------------------------- what an evaluation samples
def eval_prompts(cfg: Config) -> list[str]:
    """The captions an evaluation of a text model cycles through: eval.prompts, else the held-out captions of the
    embedded text source (the set its real-data floor is measured on)."""
    if cfg.eval.prompts:
        from djepa.text.prompts import read_prompts

        return read_prompts(cfg.eval.prompts)
    if cfg.data.source in TEXT_SOURCES:
        from djepa.text.pairs import pairs

        return list(pairs(cfg.data.source, "held").captions)
    from djepa.config import ConfigError

    raise ConfigError(f"a text model's evaluation needs eval.prompts (a file of captions, one a line, or a CSV / "
                      f"JSONL with a caption column); data.source={cfg.data.source} has no embedded captions")


def prompts_digest(prompts: list[str]) -> str:
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]


def conditions_of(cfg: Config, start: int, stop: int, prompts: list[str] | None = None) -> np.ndarray:
    """Raw conditions of samples [start, stop): class ids i % num_classes, or prompts[i % P]."""
    i = np.arange(start, stop)
    if not is_text(cfg):
        return i % cfg.model.num_classes
    prompts = eval_prompts(cfg) if prompts is None else prompts
    return np.asarray(prompts, dtype=object)[i % len(prompts)]


def labels_for(cfg: Config, raw: np.ndarray) -> np.ndarray:
    """int64 labels stored beside samples (ADM's arr_1): the class, or for the embedded pairs the ordered pair
    10 * left + right that their domain classifier scores; -1 where a caption has no label."""
    if not is_text(cfg):
        return np.asarray(raw, dtype=np.int64)
    if cfg.data.source in TEXT_SOURCES:
        from djepa.text.pairs import caption_digits, pair_code

        return np.asarray([pair_code(*caption_digits(c)) for c in raw], dtype=np.int64)
    return np.full(len(raw), -1, dtype=np.int64)


def preview_conditions(cfg: Config) -> tuple[np.ndarray, int]:
    """The preview grid's conditions and its columns: sample.num_per_class rows of every class, or of up to 10
    prompts (for the pairs: five captions and their swapped twins side by side, so order is visible)."""
    rows = cfg.sample.num_per_class
    if not is_text(cfg):
        c = cfg.model.num_classes
        return np.arange(rows * c) % c, c
    if cfg.data.source in TEXT_SOURCES:
        from djepa.text.pairs import caption_of

        cols = [caption_of(a, b, (p // 2) % 4) for p, (a, b) in enumerate([(3, 8), (8, 3), (1, 7), (7, 1), (0, 6),
                                                                     (6, 0), (2, 5), (5, 2), (4, 9), (9, 4)])]
    else:
        cols = eval_prompts(cfg)[:10]
    return np.asarray(cols * rows, dtype=object), len(cols)
