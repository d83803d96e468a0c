"""Per-token losses behind one interface: `loss(x, z)` and `sample(z, temperature, cfg)`.

Both model p(x_i | z_i) with a small residual MLP conditioned through AdaLN on
z_i + a time embedding (MAR's denoiser). The encoders never see the noise schedule.

`sample` draws the noise (RNG passed in) and hands it to `sample_from_noise`, the sampler proper: a pure
function of (z, noise, temperature, cfg). Under the caller's torch.autocast the denoiser runs in the
autocast dtype, while the sampler's own arithmetic (guidance, posterior, the x_t update, temperature)
stays float32: the net's output is cast back to float32 before it is used. Speed-ups (djepa.fast) are
applied to a model from outside and leave these files as the maths.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from djepa.config import TokenLossConfig
from djepa.models.diffusion import GaussianDiffusion
from djepa.models.rng import randn


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of a (possibly fractional) step, then a 2-layer MLP (DiT)."""

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (M,) -> (M, W)
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """LN -> AdaLN modulate -> Linear -> SiLU -> Linear, gated residual."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x, y):
        shift, scale, gate = self.ada(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class Denoiser(nn.Module):
    """eps_theta / v_theta: (x_t (M, C), t (M,), z (M, D)) -> (M, out)."""

    def __init__(self, in_dim: int, out_dim: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList([ResBlock(width) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.final = nn.Linear(width, out_dim)
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        # zero AdaLN gates and output: every block starts as the identity, the output as 0 (DiT)
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for m in (self.final_ada[-1], self.final):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x, t, z):
        return self.denoise(x, t, self.cond_embed(z))

    def denoise(self, x, t, cond):
        """forward with cond = cond_embed(z) given: a sampler computes it once for all its steps."""
        y = self.time_embed(t) + cond  # (M, W)
        h = self.input_proj(x)
        for block in self.blocks:
            h = block(h, y)
        shift, scale = self.final_ada(y).chunk(2, dim=-1)
        return self.final(modulate(self.final_norm(h), shift, scale))


def guide(net_out: torch.Tensor, cfg: float, channels: int | None = None) -> torch.Tensor:
    """Rows [cond; uncond] -> cond rows with the first `channels` outputs guided:
    uncond + cfg * (cond - uncond). Further outputs (a learned variance) stay conditional."""
    cond, uncond = net_out.chunk(2, dim=0)
    c = channels or cond.shape[-1]
    guided = uncond[:, :c] + cfg * (cond[:, :c] - uncond[:, :c])
    return torch.cat([guided, cond[:, c:]], dim=-1)


class DiffusionLoss(nn.Module):
    """L_d: epsilon prediction + learned-range variance (VLB), `batch_mul` timestep draws per token."""

    def __init__(self, token_dim: int, cond_dim: int, cfg: TokenLossConfig):
        super().__init__()
        self.token_dim = token_dim
        self.batch_mul = cfg.batch_mul
        self.net = Denoiser(token_dim, 2 * token_dim, cond_dim, cfg.width, cfg.depth)
        d = cfg.diffusion
        self.train_diffusion = GaussianDiffusion.from_config(d.schedule, d.train_steps)
        self.sample_diffusion = GaussianDiffusion.from_config(d.schedule, d.train_steps, d.sample_steps)

    def loss(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x (M, C) clean tokens, z (M, D) conditions -> (M,) loss per token, mean over the draws."""
        m = x.shape[0]
        x, z = x.repeat(self.batch_mul, 1), z.repeat(self.batch_mul, 1)
        t = torch.randint(0, self.train_diffusion.num_timesteps, (x.shape[0],), device=x.device)
        per_row = self.train_diffusion.training_losses(self.net, x, t, z)
        return per_row.view(self.batch_mul, m).mean(dim=0)

    @torch.no_grad()
    def sample(self, z, temperature: float = 1.0, cfg: float = 1.0, guided: bool | None = None, generator=None):
        """z (M, D) -> x (M, C). Guided: z holds [cond; uncond] rows (2M, D) and M samples come back."""
        guided = cfg != 1.0 if guided is None else guided
        m = z.shape[0] // 2 if guided else z.shape[0]
        # x_T and every step's noise in one draw (per sample with a RowGenerator): (M, steps, C), float32 always
        noise = randn((m, self.sample_diffusion.num_timesteps, self.token_dim), generator, z.device)
        return self.sample_from_noise(z, noise, temperature, cfg)

    def sample_from_noise(self, z, noise, temperature=1.0, cfg=1.0):
        """Ancestral sampling from x_T = noise[:, 0] with step noise noise[:, 1:]: no draws of its own.
        Guided iff z holds twice the rows of noise. temperature, cfg: floats or 0-dim float32 tensors."""
        guided = z.shape[0] != noise.shape[0]
        cond = self.net.cond_embed(z)  # embedded once for all the steps (the values of net(x, t, z))

        def eps_v(x, t):  # (eps, v) in float32 whatever the caller's autocast
            if not guided:
                return self.net.denoise(x, t, cond).float()
            return guide(self.net.denoise(torch.cat([x, x]), torch.cat([t, t]), cond).float(), cfg, self.token_dim)

        return self.sample_diffusion.sample_loop(eps_v, noise[:, 0], temperature, noise[:, 1:])


class FlowLoss(nn.Module):
    """Flow matching: x_t = t x + (1 - t) eps, target velocity x - eps; Euler or Heun ODE sampler."""

    def __init__(self, token_dim: int, cond_dim: int, cfg: TokenLossConfig):
        super().__init__()
        self.token_dim = token_dim
        self.batch_mul = cfg.batch_mul
        self.steps = cfg.flow.sample_steps
        self.solver = cfg.flow.solver
        self.net = Denoiser(token_dim, token_dim, cond_dim, cfg.width, cfg.depth)

    def _v(self, x, t, z):
        return self.net(x, t * 1000.0, z)  # the time embedder's frequencies are tuned for 0..1000

    @staticmethod
    def interpolate(x, eps, t):
        """The linear path and its velocity: x_t = t x + (1 - t) eps, dx_t/dt = x - eps."""
        return t[:, None] * x + (1 - t[:, None]) * eps, x - eps

    def loss(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        m = x.shape[0]
        x, z = x.repeat(self.batch_mul, 1), z.repeat(self.batch_mul, 1)
        t = torch.rand(x.shape[0], device=x.device, dtype=x.dtype)
        xt, v_target = self.interpolate(x, torch.randn_like(x), t)
        per_row = ((self._v(xt, t, z) - v_target) ** 2).mean(dim=-1)
        return per_row.view(self.batch_mul, m).mean(dim=0)

    @torch.no_grad()
    def sample(self, z, temperature: float = 1.0, cfg: float = 1.0, guided: bool | None = None, generator=None):
        guided = cfg != 1.0 if guided is None else guided
        m = z.shape[0] // 2 if guided else z.shape[0]
        noise = randn((m, self.token_dim), generator, z.device)
        return self.sample_from_noise(z, noise, temperature, cfg)

    def sample_from_noise(self, z, noise, temperature=1.0, cfg=1.0):
        """The ODE from x_0 = noise * temperature (M, C) to t = 1. Guided iff z holds twice the rows of noise."""
        guided = z.shape[0] != noise.shape[0]
        cond = self.net.cond_embed(z)  # embedded once for all the steps (the values of net(x, t, z))

        def v(x, t):  # as _v, in float32 whatever the caller's autocast
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
            if not guided:
                return self.net.denoise(x, tt * 1000.0, cond).float()
            return guide(self.net.denoise(torch.cat([x, x]), torch.cat([tt, tt]) * 1000.0, cond).float(), cfg)

        # An ODE has no per-step noise: temperature scales the initial noise instead
        # (the flow analogue of MAR's noise temperature).
        x = noise * temperature
        dt = 1.0 / self.steps
        for i in range(self.steps):
            t = i * dt
            d = v(x, t)
            if self.solver == "heun" and i < self.steps - 1:
                d = 0.5 * (d + v(x + dt * d, t + dt))
            x = x + dt * d
        return x


def build_token_loss(token_dim: int, cond_dim: int, cfg: TokenLossConfig) -> nn.Module:
    return (DiffusionLoss if cfg.kind == "diffusion" else FlowLoss)(token_dim, cond_dim, cfg)
