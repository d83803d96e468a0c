"""D-JEPA: context encoder, feature predictor, projector and per-token loss (paper sec. 3).

Training (one step):
  tokens (B, N, C) --mask--> visible tokens + a buffer of class embeddings
  context encoder phi  : buffer + visible tokens           -> (B, buf + V, D)
  feature predictor    : + mask tokens at masked positions -> z (B, N, D)
  L_d = token_loss(x_i | z_i) on masked tokens
  L_p = smooth_l1(projector(z_i), g_i) on masked tokens, g = sg(EMA encoder(all tokens))
  L   = L_d + lambda_p * L_p

The EMA copy of this whole module is both the target encoder and the sampling model.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Attention, Block

from djepa.config import ModelConfig, TokenizerConfig
from djepa.models.attention import Fp32RMSNorm  # the qk-norm lives with the attention; re-exported here
from djepa.models.masking import mask_ratio_distribution, num_masked_tokens, random_orders
from djepa.models.token_loss import build_token_loss


class RMSQKAttention(Attention):
    """timm's attention with the authors' float32 RMS qk-norm per head instead of the block's LayerNorm."""

    def __init__(self, dim: int, norm_layer=None, **kwargs):
        super().__init__(dim, norm_layer=Fp32RMSNorm, **kwargs)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), idx (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class DJEPA(nn.Module):
    def __init__(self, cfg: ModelConfig, tok: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.num_tokens = tok.num_tokens
        self.token_dim = tok.token_dim
        self.buffer_size = cfg.buffer_size
        d, n, buf = cfg.width, tok.num_tokens, cfg.buffer_size

        # nn.LayerNorm runs in float32 under autocast already (torch's autocast policy), as the authors force
        def blocks(depth):
            return nn.ModuleList(
                Block(d, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, qk_norm=cfg.qk_norm != "none",
                      proj_drop=cfg.proj_dropout, attn_drop=cfg.attn_dropout,
                      norm_layer=partial(nn.LayerNorm, eps=1e-6),
                      attn_layer=RMSQKAttention if cfg.qk_norm == "rms" else Attention)
                for _ in range(depth)
            )

        # class buffer: label embeddings plus a learned "null class" for classifier-free guidance
        self.class_emb = nn.Embedding(cfg.num_classes, d)
        self.null_class = nn.Parameter(torch.zeros(1, d))
        # context encoder phi
        self.token_proj = nn.Linear(self.token_dim, d)
        self.token_norm = nn.LayerNorm(d, eps=1e-6)
        self.encoder_pos = nn.Parameter(torch.zeros(1, buf + n, d))
        self.encoder_blocks = blocks(cfg.encoder_depth)
        self.encoder_norm = nn.LayerNorm(d, eps=1e-6)
        # feature predictor gamma
        self.predictor_embed = nn.Linear(d, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.predictor_pos = nn.Parameter(torch.zeros(1, buf + n, d))
        self.predictor_blocks = blocks(cfg.predictor_depth)
        self.predictor_norm = nn.LayerNorm(d, eps=1e-6)
        self.token_loss_pos = nn.Parameter(torch.zeros(1, n, d))
        # projector u_theta (D_pred -> 4 D_pred -> D_enc); absent for the MAR baseline (lambda_p = 0)
        self.projector = (
            nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)) if cfg.pred_loss_weight > 0 else None
        )
        self.reset_parameters()
        # built after the ViT init so the denoiser keeps its own (zero-gated) init
        self.token_loss = build_token_loss(self.token_dim, d, cfg.token_loss)

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # official JAX ViT init, as MAR
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.class_emb.weight, self.null_class, self.mask_token,
                  self.encoder_pos, self.predictor_pos, self.token_loss_pos):
            nn.init.normal_(p, std=0.02)

    # ------------------------------------------------------------------ the two networks
    def class_embedding(self, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """labels (B,) -> (B, D); rows where `drop` is True get the null class."""
        emb = self.class_emb(labels)
        if drop is not None:
            emb = torch.where(drop[:, None], self.null_class.to(emb.dtype).expand_as(emb), emb)
        return emb

    def encode(self, tokens: torch.Tensor, keep_idx: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Context encoder on the buffer and the kept tokens only.
        tokens (B, N, C), keep_idx (B, K), cls (B, D) -> (B, buf + K, D)."""
        b, buf = tokens.shape[0], self.buffer_size
        x = self.token_proj(gather_tokens(tokens, keep_idx))  # (B, K, D)
        pos = self.encoder_pos.expand(b, -1, -1)
        x = x + gather_tokens(pos[:, buf:], keep_idx)
        buffer = cls[:, None, :] + pos[:, :buf]  # (B, buf, D)
        x = self.token_norm(torch.cat([buffer, x], dim=1))
        for blk in self.encoder_blocks:
            x = blk(x)
        return self.encoder_norm(x)

    def predict(self, enc: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
        """Feature predictor: mask tokens everywhere except the encoded positions.
        enc (B, buf + K, D), keep_idx (B, K) -> z (B, N, D)."""
        b, buf = enc.shape[0], self.buffer_size
        x = self.predictor_embed(enc)
        full = self.mask_token.to(x.dtype).expand(b, self.num_tokens, -1)
        full = full.scatter(1, keep_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x[:, buf:])
        x = torch.cat([x[:, :buf], full], dim=1) + self.predictor_pos
        for blk in self.predictor_blocks:
            x = blk(x)
        x = self.predictor_norm(x)
        return x[:, buf:] + self.token_loss_pos

    @torch.no_grad()
    def target_features(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """g = sg(phi(all tokens)): no label drop, after the final norm, buffer removed -> (B, N, D)."""
        b, n = tokens.shape[:2]
        all_idx = torch.arange(n, device=tokens.device).expand(b, n)
        return self.encode(tokens, all_idx, self.class_embedding(labels))[:, self.buffer_size:].detach()

    # ------------------------------------------------------------------ training
    def draw_mask(self, batch: int, device, generator: torch.Generator | None = None):
        """One ratio per batch (truncated normal, via its inverse CDF), a random order per sample.
        Returns masked_idx (B, M) and visible_idx (B, N - M)."""
        u = torch.rand((), generator=generator).item()
        ratio = float(mask_ratio_distribution(self.cfg.mask_ratio_min, self.cfg.mask_ratio_std).ppf(u))
        m = num_masked_tokens(ratio, self.num_tokens)
        orders = random_orders(batch, self.num_tokens, generator=generator).to(device)
        return orders[:, :m], orders[:, m:]

    def losses(self, z, x, g, masked_idx) -> dict[str, torch.Tensor]:
        """Both losses on the masked positions only. z (B, N, D), x (B, N, C), g (B, N, D) or None."""
        z_m = gather_tokens(z, masked_idx)  # (B, M, D)
        x_m = gather_tokens(x, masked_idx)  # (B, M, C)
        loss_d = self.token_loss.loss(x_m.reshape(-1, x.shape[-1]), z_m.reshape(-1, z.shape[-1])).mean()
        out = {"loss_d": loss_d}
        loss = loss_d
        if self.projector is not None:
            g_m = gather_tokens(g, masked_idx)
            loss_p = F.smooth_l1_loss(self.projector(z_m).float(), g_m.float(), beta=self.cfg.smooth_l1_beta)
            out["loss_p"] = loss_p
            loss = loss + self.cfg.pred_loss_weight * loss_p
        out["loss"] = loss
        return out

    def forward(self, tokens, labels, target: "DJEPA | None" = None, generator: torch.Generator | None = None):
        """tokens (B, N, C), labels (B,); `target` is the EMA copy (needed when lambda_p > 0)."""
        b = tokens.shape[0]
        masked_idx, visible_idx = self.draw_mask(b, tokens.device, generator)
        drop = torch.rand(b, generator=generator).to(tokens.device) < self.cfg.label_drop
        z = self.predict(self.encode(tokens, visible_idx, self.class_embedding(labels, drop)), visible_idx)
        g = None
        if self.projector is not None:
            if target is None:
                raise ValueError("pred_loss_weight > 0 needs the EMA target encoder: call model(tokens, labels, target=ema)")
            g = target.target_features(tokens, labels)
        return self.losses(z, tokens, g, masked_idx)


def build_model(cfg: ModelConfig, tok: TokenizerConfig) -> DJEPA:
    return DJEPA(cfg, tok)
