"""The text condition's config: which encoder turns a caption into the (L, D) embeddings the model attends to.

Part of djepa.config's one tree (re-exported there) as `text:`; read only when model.condition is text.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from djepa.config_base import _Strict


class TextConfig(_Strict):
    # words: the embedded encoder (djepa/text/encoders.py): a fixed vocabulary, one-hot words plus sinusoidal position
    # features; no weights, nothing to download. hf: any transformers encoder by hub id or directory (Qwen2, T5, CLIP)
    encoder: Literal["words", "hf"] = "words"
    name: str | None = None  # hf: a hub id (Qwen/Qwen2-1.5B) or a local directory holding the model and its tokenizer
    subfolder: str | None = None  # hf: e.g. text_encoder inside a diffusers pipeline directory
    max_length: int = Field(32, ge=1)  # text tokens per caption (padded; longer hf captions are truncated, counted)
    hidden_layer: int = -1  # hf: which hidden state (-1 the last, as Qwen2 in the paper; -2 the penultimate)
    dtype: Literal["auto", "fp32", "bf16"] = "auto"  # hf: bf16 on GPUs (auto), fp32 on CPU
    # true: embeddings computed once by the encode job and stored in the shards beside the latents (as VAE moments
    # are); false: captions stored, the frozen encoder runs in every training worker
    precompute: bool = True
    vocab: list[str] = []  # words: the vocabulary (lower case); a word outside it is an error naming it
    position_dims: int = Field(16, ge=0)  # words: sinusoidal features of each word's position (even)

    @model_validator(mode="after")
    def _checks(self):
        if self.encoder == "hf" and not self.name:
            raise ValueError("encoder hf needs name: a hub id (e.g. Qwen/Qwen2-1.5B) or a local directory")
        if self.position_dims % 2:
            raise ValueError(f"position_dims {self.position_dims} must be even (sine and cosine pairs)")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab lists a word twice")
        return self

    @property
    def words_dim(self) -> int:
        """The words encoder's output width: one-hot words + position features."""
        return len(self.vocab) + self.position_dims
