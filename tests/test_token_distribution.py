"""The per-token loss learns p(x | z) in distribution: train it alone on a known conditional
2-D mixture of Gaussians, sample, and compare means and covariances with the truth."""
import pytest
import torch

from djepa.config import TokenLossConfig
from djepa.models.token_loss import build_token_loss

# condition 0: one correlated Gaussian; condition 1: two well separated modes
MEAN0, COV0 = torch.tensor([1.0, -0.5]), torch.tensor([[0.25, 0.10], [0.10, 0.16]])
MODES1, STD1 = torch.tensor([[-1.0, 1.0], [1.0, 1.0]]), 0.15
MEAN1 = torch.tensor([0.0, 1.0])
COV1 = torch.tensor([[1.0 + STD1**2, 0.0], [0.0, STD1**2]])
CODES = torch.eye(4)[:2]  # z for the two conditions


def draw(cond: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(cond)
    x0 = MEAN0 + torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(COV0).T
    pick = torch.randint(0, 2, (n,), generator=g)
    x1 = MODES1[pick] + STD1 * torch.randn(n, 2, generator=g)
    return torch.where(cond[:, None] == 0, x0, x1)


def stats(x):
    return x.mean(0), torch.cov(x.T)


@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_token_loss_matches_known_mixture(kind):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = TokenLossConfig(kind=kind, depth=3, width=128, batch_mul=4,
                          diffusion={"schedule": "linear", "sample_steps": 100}, flow={"sample_steps": 50})
    loss_fn = build_token_loss(2, 4, cfg)
    opt = torch.optim.AdamW(loss_fn.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 1500)  # anneal: precise mode weights
    first = last = None
    for step in range(1500):
        cond = torch.randint(0, 2, (256,), generator=g)
        loss = loss_fn.loss(draw(cond, g), CODES[cond]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        first = loss.item() if first is None else first
        last = loss.item() if step >= 1490 else last
    assert last < first

    n = 6000
    for c, (mean, cov) in enumerate([(MEAN0, COV0), (MEAN1, COV1)]):
        z = CODES[c].expand(n, 4)
        x = loss_fn.sample(z, temperature=1.0, generator=torch.Generator().manual_seed(c))
        m, s = stats(x)
        assert torch.allclose(m, mean, atol=0.08), (kind, c, m, mean)
        assert torch.allclose(s, cov, atol=0.08), (kind, c, s, cov)
    # condition 1 is bimodal: samples land near both modes, not in the gap between them
    x = loss_fn.sample(CODES[1].expand(n, 4), generator=torch.Generator().manual_seed(9))
    assert (x[:, 0].abs() < 0.4).float().mean() < 0.05
    assert 0.4 < (x[:, 0] > 0).float().mean() < 0.6
