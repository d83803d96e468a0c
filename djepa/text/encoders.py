"""Text encoders: captions -> (embeddings (B, L, D) float32, mask (B, L) bool, True = a real token).

- words: the embedded encoder. Captions are lower-cased and split into words of a fixed vocabulary (text.vocab);
  each word becomes its one-hot vector followed by sinusoidal features of its position (text.position_dims). No
  weights and nothing to download, and lossless: which word stands where is all in the vectors, so a model that
  reads them can learn that "3 left of 8" is not "8 left of 3". No pretrained text encoder ships in a Python wheel,
  and a randomly initialised transformer would only blur the same information.
- hf: any transformers encoder by hub id or directory, frozen, one hidden state (text.hidden_layer): Qwen2-1.5B as
  the paper (a decoder-only model, read causally), T5's encoder, CLIP's text tower. Loaded with safetensors only and
  never with remote code; bf16 on GPUs.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch

from djepa.text_config import TextConfig

_WORD = re.compile(r"[a-z0-9]+")


class TextError(ValueError):
    """A caption an encoder cannot read; the message names the caption and what to change."""


def sinusoid(positions: np.ndarray, dims: int) -> np.ndarray:
    """(L,) positions -> (L, dims) [sin, cos] features of geometrically spaced frequencies (Transformer's)."""
    half = dims // 2
    freq = np.exp(-math.log(10000.0) * np.arange(half) / max(half, 1))
    angle = positions[:, None] * freq[None]
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)


class WordsEncoder:
    """Captions -> one-hot words + position features; see the module docstring."""

    def __init__(self, cfg: TextConfig):
        if not cfg.vocab:
            raise TextError("text.encoder=words needs text.vocab, the list of words captions may use")
        self.cfg, self.index = cfg, {w: i for i, w in enumerate(cfg.vocab)}
        self.dim = cfg.words_dim
        self.positions = sinusoid(np.arange(cfg.max_length, dtype=np.float64), cfg.position_dims).astype(np.float32)

    def words(self, caption: str) -> list[str]:
        words = _WORD.findall(caption.lower())
        unknown = [w for w in words if w not in self.index]
        if unknown:
            raise TextError(f"caption {caption!r}: {', '.join(map(repr, unknown))} not in text.vocab "
                            f"({' '.join(self.cfg.vocab)})")
        if len(words) > self.cfg.max_length:
            raise TextError(f"caption {caption!r} has {len(words)} words, more than text.max_length="
                            f"{self.cfg.max_length}")
        return words

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        v, length = len(self.cfg.vocab), self.cfg.max_length
        emb = np.zeros((len(captions), length, self.dim), np.float32)
        mask = np.zeros((len(captions), length), bool)
        for b, caption in enumerate(captions):
            ids = [self.index[w] for w in self.words(caption)]
            emb[b, np.arange(len(ids)), ids] = 1.0
            emb[b, :len(ids), v:] = self.positions[:len(ids)]
            mask[b, :len(ids)] = True
        return torch.from_numpy(emb), torch.from_numpy(mask)


def _hf_dtype(cfg: TextConfig, device: torch.device) -> torch.dtype:
    return torch.bfloat16 if cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda") else torch.float32


class HFTextEncoder:
    """A frozen transformers encoder; see the module docstring. `truncated` counts captions cut at max_length."""

    def __init__(self, cfg: TextConfig, device: torch.device | str = "cpu"):
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, T5EncoderModel

        self.cfg, self.device = cfg, torch.device(device)
        kw = {"subfolder": cfg.subfolder} if cfg.subfolder else {}
        try:
            config = AutoConfig.from_pretrained(cfg.name, **kw)
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.name, **kw)
        except OSError as err:
            raise TextError(f"text.name={cfg.name!r}: no text encoder there ({err}); give a local directory holding "
                            f"config.json, the weights and the tokenizer, or a hub id on a machine with the internet"
                            ) from None
        # encoder-decoder and dual-tower configs keep only their text encoder
        cls = {"t5": T5EncoderModel, "umt5": T5EncoderModel, "mt5": T5EncoderModel, "clip": CLIPTextModel}.get(
            config.model_type, AutoModel)
        self.model = cls.from_pretrained(cfg.name, dtype=_hf_dtype(cfg, self.device), use_safetensors=True,
                                         **kw).to(self.device).eval().requires_grad_(False)
        self.dim = int(getattr(self.model.config, "hidden_size", 0) or self.model.config.d_model)
        if self.tokenizer.pad_token is None:  # decoder-only tokenizers (Qwen2's has one; LLaMA's has none)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.truncated = 0

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        length = self.cfg.max_length
        full = self.tokenizer(list(captions), padding=False, truncation=False)["input_ids"]
        self.truncated += sum(len(ids) > length for ids in full)
        enc = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=length,
                             return_tensors="pt").to(self.device)
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
        hidden = out.hidden_states[self.cfg.hidden_layer]  # (B, L, D)
        return hidden.float().cpu(), enc["attention_mask"].bool().cpu()


def build_text_encoder(cfg: TextConfig, device: torch.device | str = "cpu"):
    return WordsEncoder(cfg) if cfg.encoder == "words" else HFTextEncoder(cfg, device)


def check_dims(encoder, model_text_dim: int) -> None:
    """The model's text projection must read the encoder's width."""
    if encoder.dim != model_text_dim:
        raise TextError(f"the text encoder gives {encoder.dim}-d embeddings but model.text_dim={model_text_dim}; set "
                        f"model.text_dim={encoder.dim}")


# Qwen2-1.5B's published config.json (the paper's text encoder, app. G.2), for building its layout offline
QWEN2_1_5B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=131072, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, sliding_window=131072, max_window_layers=28,
                  use_sliding_window=False)
