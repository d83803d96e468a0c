"""Gaussian diffusion for one token at a time (ADM's formulation, as MAR's diffusion loss uses it).

Epsilon prediction with a learned-range variance trained by the VLB term, 1000
training steps, sampling on 100 respaced steps with a temperature on the
per-step noise. The beta schedules and the closed forms below are computed in
float64 and stored as float32 buffers.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn


def make_betas(schedule: str, steps: int) -> np.ndarray:
    """ADM's named schedules in float64, as MAR computes them (get_named_beta_schedule). Not diffusers'
    DDPMScheduler: it rounds the betas to float32, which moves 1 - beta at the cosine's clipped last step
    (0.999) by 1.3e-5 relative, and every constant of the last steps with it."""
    if schedule == "linear":
        scale = 1000 / steps  # ADM scales the linear range so any step count keeps the same curve
        return np.linspace(scale * 1e-4, scale * 2e-2, steps, dtype=np.float64)
    if schedule == "cosine":  # Nichol & Dhariwal: alpha_bar(t) = cos^2((t + 0.008) / 1.008 * pi / 2), beta <= 0.999
        alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return np.array([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)])
    raise ValueError(f"unknown diffusion schedule {schedule!r}: use linear or cosine")


def space_timesteps(num_steps: int, count: int) -> list[int]:
    """ADM's even respacing: `count` of the original steps, first and last included."""
    if count > num_steps:
        raise ValueError(f"cannot respace {num_steps} diffusion steps into {count}")
    if count == 1:
        return [0]
    stride = (num_steps - 1) / (count - 1)
    return sorted({round(i * stride) for i in range(count)})


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _std_normal_cdf(x):
    # ADM's tanh approximation, kept so the t = 0 term equals the reference implementation.
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log p(x) of data in [-1, 1] quantised to 256 bins (ADM's decoder term at t = 0)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )


class GaussianDiffusion(nn.Module):
    """Closed forms of a discrete diffusion given its betas. `timestep_map` maps each of its
    steps to the original step index the network was trained on (identity unless respaced)."""

    def __init__(self, betas: np.ndarray, timestep_map: list[int] | None = None):
        super().__init__()
        betas = np.asarray(betas, dtype=np.float64)
        self.num_timesteps = len(betas)
        ac = np.cumprod(1.0 - betas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        consts = {
            "betas": betas,
            "log_betas": np.log(betas),
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_ac": np.sqrt(ac),
            "sqrt_one_minus_ac": np.sqrt(1.0 - ac),
            "sqrt_recip_ac": np.sqrt(1.0 / ac),
            "sqrt_recipm1_ac": np.sqrt(1.0 / ac - 1.0),
            "posterior_variance": post_var,
            # the variance at t = 0 is 0: ADM clips the log to the value at t = 1
            "posterior_log_variance_clipped": np.log(np.append(post_var[1], post_var[1:])),
            "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
        }
        for name, value in consts.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32), persistent=False)
        tmap = list(range(self.num_timesteps)) if timestep_map is None else list(timestep_map)
        self.register_buffer("timestep_map", torch.tensor(tmap, dtype=torch.long), persistent=False)
        self._tmap = [int(i) for i in tmap]  # on the host: the sampling loop builds t without a lookup

    @classmethod
    def from_config(cls, schedule: str, steps: int, respace_to: int | None = None) -> "GaussianDiffusion":
        betas = make_betas(schedule, steps)
        if respace_to is None or respace_to == steps:
            return cls(betas)
        use = space_timesteps(steps, respace_to)
        ac = np.cumprod(1.0 - betas)
        new_betas, last = [], 1.0
        for i in use:
            new_betas.append(1.0 - ac[i] / last)
            last = ac[i]
        return cls(np.array(new_betas), use)

    @staticmethod
    def _at(arr: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
        """arr at step t, broadcastable against x: per row for a (M,) tensor t (training), a 0-dim
        view for an int t (sampling: one step for all rows, no gather kernel, the same products)."""
        if isinstance(t, int):
            return arr[t].to(x.dtype)
        return arr[t].view(-1, *([1] * (x.dim() - 1))).to(x.dtype)

    def q_sample(self, x0, t, noise):
        """x_t = sqrt(ac_t) x0 + sqrt(1 - ac_t) eps."""
        return self._at(self.sqrt_ac, t, x0) * x0 + self._at(self.sqrt_one_minus_ac, t, x0) * noise

    def q_posterior(self, x0, xt, t):
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x0)."""
        mean = self._at(self.posterior_mean_coef1, t, xt) * x0 + self._at(self.posterior_mean_coef2, t, xt) * xt
        return mean, self._at(self.posterior_log_variance_clipped, t, xt)

    def p_mean_variance(self, model_out, xt, t):
        """Network output (eps, v) -> mean and log-variance of p(x_{t-1} | x_t), and the predicted x0;
        t (M,) or one int step.

        Learned range: log var = frac * log(beta_t) + (1 - frac) * log(posterior var), frac = (v + 1) / 2.
        """
        eps, v = model_out.chunk(2, dim=-1)
        min_log = self._at(self.posterior_log_variance_clipped, t, xt)
        max_log = self._at(self.log_betas, t, xt)
        frac = (v + 1) / 2
        log_var = frac * max_log + (1 - frac) * min_log
        x0 = self._at(self.sqrt_recip_ac, t, xt) * xt - self._at(self.sqrt_recipm1_ac, t, xt) * eps
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, log_var, x0

    def p_sample(self, model_out, xt, t, noise, temperature=1.0):
        """One ancestral step: mean + [t > 0] sigma * noise * temperature (temperature scales the noise
        only, as MAR). t is one int step for every row (sampling) or a (M,) tensor. -> (x_{t-1}, x0)."""
        mean, log_var, x0 = self.p_mean_variance(model_out, xt, t)
        if isinstance(t, int):
            return (mean + torch.exp(0.5 * log_var) * noise * temperature if t > 0 else mean), x0
        nonzero = (t > 0).to(xt.dtype).view(-1, *([1] * (xt.dim() - 1)))
        return mean + nonzero * torch.exp(0.5 * log_var) * noise * temperature, x0

    def training_losses(self, net: Callable, x0, t, cond, noise=None):
        """Per-row loss: MSE on eps + the VLB term (bits/dim) that trains the variance only."""
        noise = torch.randn_like(x0) if noise is None else noise
        xt = self.q_sample(x0, t, noise)
        out = net(xt, self.timestep_map[t], cond)
        eps, v = out.chunk(2, dim=-1)
        mse = ((noise - eps) ** 2).mean(dim=-1)
        # the VLB term must not move the mean: it sees a detached eps (ADM's "frozen_out")
        mean, log_var, _ = self.p_mean_variance(torch.cat([eps.detach(), v], dim=-1), xt, t)
        true_mean, true_log_var = self.q_posterior(x0, xt, t)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).mean(dim=-1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).mean(dim=-1) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        return mse + vb

    @torch.no_grad()
    def sample_loop(self, net: Callable, noise, temperature: float = 1.0, step_noise=None):
        """Ancestral sampling from x_T = noise (M, C); `net(x, t_original)` returns (eps, v).
        step_noise (M, steps - 1, C) is the noise of each step, drawn by the caller (per sample if it likes).
        temperature: a float or a 0-dim tensor."""
        x = noise
        for k, i in enumerate(reversed(range(self.num_timesteps))):
            # every row is at step i: t for the net from the host-side map, coefficients as 0-dim views
            # (the same values as a per-row gather, without its kernels); no host-device sync anywhere
            t = torch.full((x.shape[0],), self._tmap[i], device=x.device, dtype=torch.long)
            x, _ = self.p_sample(net(x, t), x, i, step_noise[:, k] if i > 0 else None, temperature)
        return x
