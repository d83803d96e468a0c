"""The diffusion and flow maths against closed forms and diffusers' DDPMScheduler as a reference."""
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from djepa.config import TokenLossConfig
from djepa.models.diffusion import GaussianDiffusion, make_betas, space_timesteps
from djepa.models.token_loss import FlowLoss


def test_linear_schedule_is_adm_linear():
    betas = make_betas("linear", 1000)
    assert np.allclose(betas, np.linspace(1e-4, 2e-2, 1000), rtol=1e-6)


def test_cosine_schedule_is_nichol_dhariwal():
    betas = make_betas("cosine", 1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    ref = np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(1000)])
    assert np.allclose(betas, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_q_sample_and_posterior_closed_forms(schedule):
    d = GaussianDiffusion.from_config(schedule, 1000)
    betas = make_betas(schedule, 1000)
    ac = np.cumprod(1 - betas)
    x0, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 500, 999])
    xt = d.q_sample(x0.float(), t, eps.float())
    ref = torch.tensor(np.sqrt(ac[t]))[:, None] * x0 + torch.tensor(np.sqrt(1 - ac[t]))[:, None] * eps
    assert torch.allclose(xt.double(), ref, atol=1e-5)
    # posterior variance: beta_t (1 - ac_{t-1}) / (1 - ac_t)
    for i in (1, 10, 500, 999):
        expected = betas[i] * (1 - ac[i - 1]) / (1 - ac[i])
        assert d.posterior_variance[i].item() == pytest.approx(expected, rel=1e-5)
    # posterior mean: with x0 and x_t from q, the mean interpolates them with ADM's coefficients
    mean, logvar = d.q_posterior(x0.float(), xt, t)
    c1 = betas[t] * np.sqrt(np.append(1.0, ac[:-1])[t]) / (1 - ac[t])
    c2 = (1 - np.append(1.0, ac[:-1])[t]) * np.sqrt(1 - betas[t]) / (1 - ac[t])
    assert torch.allclose(mean.double(), torch.tensor(c1)[:, None] * x0 + torch.tensor(c2)[:, None] * xt.double(), atol=1e-5)
    assert logvar[0, 0].item() == pytest.approx(math.log(d.posterior_variance[1].item()), rel=1e-5)


def test_respacing_matches_adm():
    use = space_timesteps(1000, 100)
    assert len(use) == 100 and use[0] == 0 and use[-1] == 999
    assert use[:4] == [0, 10, 20, 30] and use[50] == 505  # round(i * 999 / 99)
    d = GaussianDiffusion.from_config("cosine", 1000, 100)
    full = GaussianDiffusion.from_config("cosine", 1000)
    # the respaced chain has the same cumulative alphas at the kept steps
    assert torch.allclose(d.alphas_cumprod, full.alphas_cumprod[use], rtol=1e-5)
    assert d.timestep_map.tolist() == use


def _fake_net(x, t):
    """A deterministic stand-in for the denoiser: (eps, v) depending on x and the step."""
    tt = t.float()[:, None] / 1000
    return torch.cat([0.3 * x + 0.1 * tt, torch.tanh(x - tt)], dim=-1)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_sampling_loop_equals_diffusers_learned_range(schedule):
    """Respaced ancestral sampling with learned-range variance == diffusers' DDPMScheduler, step by step."""
    ours = GaussianDiffusion.from_config(schedule, 1000, 20)
    use = ours.timestep_map.tolist()
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule={"linear": "linear", "cosine": "squaredcos_cap_v2"}[schedule],
                        variance_type="learned_range", clip_sample=False, prediction_type="epsilon")
    ref.set_timesteps(timesteps=use[::-1])
    noise = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    x_ref = noise.clone()
    g = torch.Generator().manual_seed(7)
    for t in ref.timesteps:
        out = _fake_net(x_ref, torch.full((64,), int(t)))
        x_ref = ref.step(out, int(t), x_ref, generator=g).prev_sample
    g = torch.Generator().manual_seed(7)  # the same draws diffusers made, one (64, 4) per step with t > 0
    steps = torch.stack([torch.randn(64, 4, generator=g) for _ in range(len(use) - 1)], dim=1)
    x_ours = ours.sample_loop(_fake_net, noise.clone(), temperature=1.0, step_noise=steps)
    assert torch.allclose(x_ours, x_ref, atol=2e-4), (x_ours - x_ref).abs().max()


def test_temperature_scales_only_the_noise():
    d = GaussianDiffusion.from_config("cosine", 1000, 10)
    noise, steps = torch.randn(16, 2), torch.randn(16, 9, 2)
    cold = d.sample_loop(_fake_net, noise, temperature=0.0, step_noise=steps)
    det = d.sample_loop(_fake_net, noise, temperature=0.0, step_noise=torch.randn(16, 9, 2))
    assert torch.equal(cold, det)
    warm = d.sample_loop(_fake_net, noise, temperature=1.0, step_noise=steps)
    assert not torch.allclose(cold, warm)


def test_vlb_term_trains_variance_not_mean():
    """MSE + VLB: the eps gradient equals that of the MSE alone (the VLB sees a detached eps)."""
    d = GaussianDiffusion.from_config("cosine", 1000)
    eps_w = torch.nn.Parameter(torch.tensor(0.5))
    v_w = torch.nn.Parameter(torch.tensor(0.2))
    net = lambda x, t, c: torch.cat([eps_w * x, v_w * torch.ones_like(x)], dim=-1)
    x0, noise = torch.randn(32, 3), torch.randn(32, 3)
    t = torch.randint(0, 1000, (32,))
    t[0] = 0  # include the discretized decoder term
    d.training_losses(net, x0, t, None, noise=noise).mean().backward()
    assert v_w.grad is not None and v_w.grad.abs() > 0
    grad_total = eps_w.grad.clone()
    eps_w.grad = None
    xt = d.q_sample(x0, t, noise)
    ((noise - eps_w * xt) ** 2).mean(-1).mean().backward()
    assert torch.allclose(grad_total, eps_w.grad)


def test_flow_path_and_velocity():
    x, eps = torch.randn(10, 3), torch.randn(10, 3)
    t = torch.rand(10)
    xt, v = FlowLoss.interpolate(x, eps, t)
    assert torch.allclose(xt, t[:, None] * x + (1 - t[:, None]) * eps)
    assert torch.allclose(FlowLoss.interpolate(x, eps, torch.zeros(10))[0], eps)
    assert torch.allclose(FlowLoss.interpolate(x, eps, torch.ones(10))[0], x)
    h = 1e-3  # the velocity is the time derivative of the path
    fd = (FlowLoss.interpolate(x, eps, t + h)[0] - FlowLoss.interpolate(x, eps, t - h)[0]) / (2 * h)
    assert torch.allclose(fd, v, atol=1e-3)
    assert torch.allclose(v, x - eps)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_flow_ode_with_exact_velocity_maps_noise_to_target(solver):
    """For x ~ N(mu, s^2) the optimal velocity is known in closed form; the ODE must carry N(0, 1) to it."""
    mu, s = 2.0, 0.5
    cfg = TokenLossConfig(kind="flow", depth=1, width=8, flow={"sample_steps": 200, "solver": solver})
    flow = FlowLoss(1, 1, cfg)

    class ExactVelocity(torch.nn.Module):  # the sampler's view of a Denoiser: cond_embed(z), denoise(x, t, cond)
        def cond_embed(self, z):
            return z

        def denoise(self, x, t, cond):  # E[x1 - eps | x_t], x_t = t x1 + (1 - t) eps
            t = t[:, None] / 1000.0
            var = t**2 * s**2 + (1 - t) ** 2
            x1_hat = mu + t * s**2 * (x - t * mu) / var
            eps_hat = (1 - t) * (x - t * mu) / var
            return x1_hat - eps_hat

    flow.net = ExactVelocity()
    out = flow.sample(torch.zeros(20000, 1), generator=torch.Generator().manual_seed(0))
    assert abs(out.mean().item() - mu) < 0.02 and abs(out.std().item() - s) < 0.02
