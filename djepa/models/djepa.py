"""D-JEPA: context encoder, feature predictor, projector and per-token loss (paper sec. 3).

Training (one step):
  tokens (B, N, C) --mask--> visible tokens + a buffer of class embeddings
  context encoder phi  : buffer + visible tokens           -> (B, buf + V, D)
  feature predictor    : + mask tokens at masked positions -> z (B, N, D)
  L_d = token_loss(x_i | z_i) on masked tokens
  L_p = smooth_l1(projector(z_i), g_i) on masked tokens, g = sg(EMA encoder(all tokens))
  L   = L_d + lambda_p * L_p

The EMA copy of this whole module is both the target encoder and the sampling model.

Conditions (model.condition): a class label is an embedding added to the buffer tokens; a text is a second stream
of tokens (B, L, D_text) that every encoder and predictor block reads through SD3's joint attention (app. G).
Positions (model.positions): a learned table per grid token, or axial RoPE inside attention (no table).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from djepa.config import ModelConfig, TokenizerConfig
from djepa.models.attention import Block, Fp32RMSNorm, JointBlock  # noqa: F401  (Fp32RMSNorm: its old home)
from djepa.models.masking import mask_ratio_distribution, num_masked_tokens, random_orders
from djepa.models.rope import rope_for_sequence, rope_tables
from djepa.models.token_loss import build_token_loss

# A condition as the networks read it: class embeddings (B, D), or a text's embeddings (B, L, D_text) and mask (B, L)
Cond = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


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
        self.text, self.rope = cfg.condition == "text", cfg.positions == "rope"
        d, n, buf = cfg.width, tok.num_tokens, cfg.buffer_size
        pos_rows = buf if self.rope else buf + n  # with RoPE only the buffer tokens keep a learned position

        def blocks(depth):
            args = dict(mlp_ratio=cfg.mlp_ratio, qkv_bias=True, qk_norm=cfg.qk_norm, proj_drop=cfg.proj_dropout,
                        attn_drop=cfg.attn_dropout)
            if self.text:  # nobody reads the last block's text output: SD3's context_pre_only
                return nn.ModuleList(JointBlock(d, cfg.num_heads, context_pre_only=i == depth - 1, **args)
                                     for i in range(depth))
            return nn.ModuleList(Block(d, cfg.num_heads, **args) for _ in range(depth))

        if self.text:  # each network projects the text stream to its width (SD3's context_embedder)
            self.text_proj = nn.Linear(cfg.text_dim, d)
        else:  # class buffer: label embeddings plus a learned "null class" for classifier-free guidance
            self.class_emb = nn.Embedding(cfg.num_classes, d)
            self.null_class = nn.Parameter(torch.zeros(1, d))
        # context encoder phi
        self.token_proj = nn.Linear(self.token_dim, d)
        self.token_norm = nn.LayerNorm(d, eps=1e-6)
        self.encoder_pos = nn.Parameter(torch.zeros(1, pos_rows, d))
        self.encoder_blocks = blocks(cfg.encoder_depth)
        self.encoder_norm = nn.LayerNorm(d, eps=1e-6)
        # feature predictor gamma
        self.predictor_embed = nn.Linear(d, d)
        if self.text:
            self.predictor_text_proj = nn.Linear(cfg.text_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.predictor_pos = nn.Parameter(torch.zeros(1, pos_rows, d))
        self.predictor_blocks = blocks(cfg.predictor_depth)
        self.predictor_norm = nn.LayerNorm(d, eps=1e-6)
        if self.rope:  # (N, head_dim) tables in patchify's order; not saved: they follow from the config
            cos, sin = rope_tables(tok.grid_shape, d // cfg.num_heads, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
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
        for name in ("class_emb", "null_class", "mask_token", "encoder_pos", "predictor_pos", "token_loss_pos"):
            p = getattr(self, name, None)
            if p is not None:
                nn.init.normal_(p.weight if isinstance(p, nn.Embedding) else p, std=0.02)

    # ------------------------------------------------------------------ conditions
    def class_embedding(self, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """labels (B,) -> (B, D); rows where `drop` is True get the null class."""
        emb = self.class_emb(labels)
        if drop is not None:
            emb = torch.where(drop[:, None], self.null_class.to(emb.dtype).expand_as(emb), emb)
        return emb

    def condition(self, cond, drop: torch.Tensor | None = None) -> Cond:
        """What the caller conditions on -> what the networks read. cond: class labels (B,), or for text a dict with
        "text" (B, L, D_text) and "mask" (B, L). Dropped rows (`drop` True) get the null condition: the null class, or
        an empty text stream (every text key masked out: no parameter, and the same whether the embeddings were
        stored at encode time or computed on the fly)."""
        if not self.text:
            return self.class_embedding(cond, drop)
        text, mask = cond["text"], cond["mask"]
        return text, mask if drop is None else mask & ~drop[:, None]

    def guided(self, c: Cond) -> Cond:
        """[c; null]: the conditional rows, then as many null rows, for classifier-free guidance."""
        if not self.text:
            return torch.cat([c, self.null_class.to(c.dtype).expand(c.shape[0], -1)])
        text, mask = c
        return torch.cat([text, text]), torch.cat([mask, torch.zeros_like(mask)])

    @staticmethod
    def batch_of(cond) -> tuple[int, torch.device]:
        """The batch size and device of a condition (labels, or the text dict)."""
        t = cond["text"] if isinstance(cond, dict) else cond
        return t.shape[0], t.device

    # ------------------------------------------------------------------ the two networks
    def _run(self, blocks, x: torch.Tensor, idx: torch.Tensor, c: Cond, text_proj) -> torch.Tensor:
        """The blocks over [buffer; tokens at grid positions idx (B, K)], reading the text stream if there is one."""
        rope = rope_for_sequence(self.rope_cos, self.rope_sin, idx, self.buffer_size) if self.rope else None
        if not self.text:
            for blk in blocks:
                x = blk(x, rope)
            return x
        text, mask = c
        t = text_proj(text.to(x.dtype))  # (B, L, D)
        for blk in blocks:
            x, t = blk(x, t, rope, c_mask=mask)
        return x

    def _buffer(self, pos: torch.Tensor, c: Cond, b: int) -> torch.Tensor:
        """(B, buf, D): the class embedding on every buffer position, or for text the positions alone."""
        buf = pos[:, :self.buffer_size].expand(b, -1, -1)
        return buf if self.text else c[:, None, :] + buf

    def encode(self, tokens: torch.Tensor, keep_idx: torch.Tensor, c: Cond) -> torch.Tensor:
        """Context encoder on the buffer and the kept tokens only.
        tokens (B, N, C), keep_idx (B, K), c from `condition` -> (B, buf + K, D)."""
        b, buf = tokens.shape[0], self.buffer_size
        x = self.token_proj(gather_tokens(tokens, keep_idx))  # (B, K, D)
        pos = self.encoder_pos.expand(b, -1, -1)
        if not self.rope:
            x = x + gather_tokens(pos[:, buf:], keep_idx)
        x = self.token_norm(torch.cat([self._buffer(pos, c, b), x], dim=1))
        x = self._run(self.encoder_blocks, x, keep_idx, c, getattr(self, "text_proj", None))
        return self.encoder_norm(x)

    def predict(self, enc: torch.Tensor, keep_idx: torch.Tensor, c: Cond | None = None) -> torch.Tensor:
        """Feature predictor: mask tokens everywhere except the encoded positions.
        enc (B, buf + K, D), keep_idx (B, K), c (read only for text) -> z (B, N, D)."""
        b, buf = enc.shape[0], self.buffer_size
        x = self.predictor_embed(enc)
        full = self.mask_token.to(x.dtype).expand(b, self.num_tokens, -1)
        full = full.scatter(1, keep_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x[:, buf:])
        x = torch.cat([x[:, :buf], full], dim=1)
        if not self.rope:
            x = x + self.predictor_pos
        else:
            x = torch.cat([x[:, :buf] + self.predictor_pos, x[:, buf:]], dim=1)
        all_idx = torch.arange(self.num_tokens, device=x.device).expand(b, -1)
        x = self._run(self.predictor_blocks, x, all_idx, c, getattr(self, "predictor_text_proj", None))
        x = self.predictor_norm(x)
        return x[:, buf:] if self.rope else x[:, buf:] + self.token_loss_pos

    @torch.no_grad()
    def target_features(self, tokens: torch.Tensor, cond) -> torch.Tensor:
        """g = sg(phi(all tokens)): no condition drop, after the final norm, buffer removed -> (B, N, D)."""
        b, n = tokens.shape[:2]
        all_idx = torch.arange(n, device=tokens.device).expand(b, n)
        return self.encode(tokens, all_idx, self.condition(cond))[:, self.buffer_size:].detach()

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

    def forward(self, tokens, cond, target: "DJEPA | None" = None, generator: torch.Generator | None = None):
        """tokens (B, N, C), cond: labels (B,) or a text dict (see `condition`); `target` is the EMA copy (needed
        when lambda_p > 0). model.label_drop is the condition dropout of either kind."""
        b = tokens.shape[0]
        masked_idx, visible_idx = self.draw_mask(b, tokens.device, generator)
        drop = torch.rand(b, generator=generator).to(tokens.device) < self.cfg.label_drop
        c = self.condition(cond, drop)
        z = self.predict(self.encode(tokens, visible_idx, c), visible_idx, c)
        g = None
        if self.projector is not None:
            if target is None:
                raise ValueError("pred_loss_weight > 0 needs the EMA target encoder: call model(tokens, labels, target=ema)")
            g = target.target_features(tokens, cond)
        return self.losses(z, tokens, g, masked_idx)


def build_model(cfg: ModelConfig, tok: TokenizerConfig) -> DJEPA:
    return DJEPA(cfg, tok)
