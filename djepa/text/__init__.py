"""The text condition (paper app. G.1, G.2): text encoders, caption data, the embedded two-digit captions and the
metrics of text-conditioned samples (CLIP score, the pairs' order check). The model sees only (B, L, D) embeddings
and their mask."""
