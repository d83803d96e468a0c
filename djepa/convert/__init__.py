"""Converters from published checkpoints (MAR's KL-16 VAE and MAR models, the D-JEPA authors' layout)
into what djepa loads: a diffusers AutoencoderKL directory, a djepa checkpoint directory."""
