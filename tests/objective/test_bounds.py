"""Bounds against hand-computed cases, the InfoNCE log K ceiling and closed-form Gaussian MI."""

import math

import pytest
import torch
import torch.nn.functional as F

from dim.objective.bounds import (
    MineBound,
    dv_bound,
    get_bound,
    infonce_bound,
    jsd_bound,
    log_mean_exp,
    nwj_bound,
    smile_bound,
    tanh_clip,
)

# A 2x2 problem small enough to do by hand: diagonal = joint pairs.
S = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
EYE = torch.eye(2, dtype=torch.bool)


def test_dv_hand_computed():
    # E_J[T] = (2 + 3) / 2; negatives {0, 1}: log((e^0 + e^1) / 2)
    expected = 2.5 - math.log((1 + math.e) / 2)
    out = dv_bound(S, EYE)
    assert out.mi.item() == pytest.approx(expected, abs=1e-6)
    assert out.loss.item() == pytest.approx(-expected, abs=1e-6)


def test_nwj_hand_computed():
    expected = 2.5 - (math.exp(-1) + math.exp(0)) / 2
    assert nwj_bound(S, EYE).mi.item() == pytest.approx(expected, abs=1e-6)


def test_jsd_hand_computed_and_reports_dv():
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    expected = -(sp(-2) + sp(-3)) / 2 - (sp(0) + sp(1)) / 2
    out = jsd_bound(S, EYE)
    assert out.loss.item() == pytest.approx(-expected, abs=1e-6)
    assert out.mi.item() == pytest.approx(dv_bound(S, EYE).mi.item(), abs=1e-6)


def test_infonce_hand_computed():
    # row 0: positive 2 vs negative 0; row 1: positive 3 vs negative 1 -> K = 2
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    l1 = -math.log(math.exp(3) / (math.exp(3) + math.exp(1)))
    out = infonce_bound(S, EYE)
    assert out.loss.item() == pytest.approx((l0 + l1) / 2, abs=1e-6)
    assert out.mi.item() == pytest.approx(math.log(2) - (l0 + l1) / 2, abs=1e-6)


def test_infonce_equals_cross_entropy_for_one_positive_per_row():
    torch.manual_seed(0)
    s = torch.randn(16, 16)
    out = infonce_bound(s, torch.eye(16, dtype=torch.bool))
    assert out.loss.item() == pytest.approx(F.cross_entropy(s, torch.arange(16)).item(), abs=1e-5)


def test_infonce_many_positives_per_row_matches_explicit_softmax():
    # DIM(L): row m = global vector m; candidates = (image n, location l); positives n == m.
    torch.manual_seed(1)
    n, locs = 4, 3
    s = torch.randn(n, n * locs)
    mask = torch.zeros(n, n, locs, dtype=torch.bool)
    mask[torch.arange(n), torch.arange(n)] = True
    mask = mask.reshape(n, n * locs)
    losses = []
    for m in range(n):
        neg = s[m][~mask[m]]
        for p in s[m][mask[m]]:
            losses.append(-torch.log_softmax(torch.cat([p.view(1), neg]), 0)[0])
    out = infonce_bound(s, mask)
    assert out.loss.item() == pytest.approx(torch.stack(losses).mean().item(), abs=1e-5)
    k = 1 + (n - 1) * locs
    assert out.mi.item() <= math.log(k) + 1e-6


def test_infonce_cpu_positives_path_equals_the_fixed_shape_path_values_and_gradients():
    """On the CPU InfoNCE scores the positives only; accelerators use the full-size form.  Both
    must give the same loss, MI and gradient, with uneven positives per row, a row without any
    positive, large scores and a 3-D score tensor."""
    from dim.objective.bounds import _all_log_probs, _masked_mean

    torch.manual_seed(3)
    for shape in [(7, 40), (3, 5, 12)]:
        s = (torch.randn(shape) * 30).requires_grad_(True)
        mask = torch.rand(shape) < 0.2
        mask[..., 0, :] = False  # a row with no positive
        mask[..., 1, :3] = True
        mask[..., 1, 3:] = False  # a row with three positives
        out = infonce_bound(s, mask)
        (grad,) = torch.autograd.grad(out.loss, s)
        neg_lse = torch.logsumexp(s.masked_fill(mask, float("-inf")), -1, keepdim=True)
        dense = -_masked_mean(_all_log_probs(s, neg_lse), mask)
        (dense_grad,) = torch.autograd.grad(dense, s)
        n_neg = (~mask).sum(-1, keepdim=True).float()
        log_k = _masked_mean(torch.log1p(n_neg).expand_as(s), mask)
        torch.testing.assert_close(out.loss, dense)
        torch.testing.assert_close(grad, dense_grad)
        torch.testing.assert_close(out.mi, (log_k - dense).detach())
        assert torch.isfinite(grad).all()
        assert grad[..., 0, :].abs().sum() == 0  # a row without positives adds nothing
        assert (grad[..., 1, 3:] > 0).any()  # a row's negatives are pushed down


@pytest.mark.parametrize("scale", [1.0, 10.0, 1e3])
def test_infonce_never_exceeds_log_k(scale):
    b = 64
    s = torch.eye(b) * scale  # a perfect critic
    out = infonce_bound(s, torch.eye(b, dtype=torch.bool))
    assert out.mi.item() <= math.log(b) + 1e-5
    if scale >= 1e3:
        assert out.mi.item() == pytest.approx(math.log(b), abs=1e-4)


def _gaussian_pairs(n, dim, rho, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, dim, generator=g, dtype=torch.float64)
    return x, y


def _optimal_critic(x, y, rho):
    """log p(y|x) - log p(y) for all pairs: the density-ratio critic, scores[i, j] = T(x_i, y_j)."""
    var = 1 - rho**2
    diff = y[None, :, :] - rho * x[:, None, :]
    log_cond = -0.5 * (diff**2).sum(-1) / var - 0.5 * x.shape[1] * math.log(var)
    log_marg = -0.5 * (y**2).sum(-1)[None, :]
    return log_cond - log_marg


@pytest.mark.parametrize("bound", ["dv", "nwj", "smile_inf"])
def test_bounds_recover_closed_form_gaussian_mi_with_optimal_critic(bound):
    dim, rho = 2, 0.8
    truth = -dim / 2 * math.log(1 - rho**2)  # 1.0217 nats
    x, y = _gaussian_pairs(1500, dim, rho)
    scores = _optimal_critic(x, y, rho)
    mask = torch.eye(len(x), dtype=torch.bool)
    # With the optimal critic T* = log p(x,y)/p(x)p(y) (NWJ wants T* + 1), all three are tight.
    if bound == "dv":
        est = dv_bound(scores, mask).mi.item()
    elif bound == "nwj":
        est = nwj_bound(scores + 1, mask).mi.item()
    else:
        est = smile_bound(scores, mask, tau=1e9).mi.item()
    assert est == pytest.approx(truth, abs=0.1)


def test_infonce_with_optimal_critic_is_min_of_truth_and_log_k():
    dim, rho = 20, math.sqrt(1 - math.exp(-2 * 8 / 20))  # true MI = 8 nats > log 64
    x, y = _gaussian_pairs(64, dim, rho)
    out = infonce_bound(_optimal_critic(x, y, rho), torch.eye(64, dtype=torch.bool))
    assert math.log(64) - 0.5 < out.mi.item() <= math.log(64) + 1e-6


def test_log_mean_exp_is_stable():
    x = torch.tensor([1000.0, 1000.0])
    assert log_mean_exp(x).item() == pytest.approx(1000.0)
    mask = torch.tensor([True, False])
    assert log_mean_exp(torch.tensor([1.0, 1e4]), mask).item() == pytest.approx(1.0)


def test_mine_value_is_dv_and_gradient_uses_moving_average():
    torch.manual_seed(0)
    mine = MineBound(momentum=0.5)
    s1 = torch.randn(8, 8)
    mask = torch.eye(8, dtype=torch.bool)
    out1 = mine(s1, mask)
    assert out1.mi.item() == pytest.approx(dv_bound(s1, mask).mi.item(), abs=1e-6)
    # First batch initialises the average; the second mixes it 50/50 in linear space.
    lme1 = log_mean_exp(s1, ~mask)
    s2 = (torch.randn(8, 8) * 2).requires_grad_()
    out2 = mine(s2, mask)
    lme2 = log_mean_exp(s2.detach(), ~mask)
    ema = torch.log(0.5 * torch.exp(lme1) + 0.5 * torch.exp(lme2))
    assert mine.log_ema.item() == pytest.approx(ema.item(), abs=1e-5)
    out2.loss.backward()
    # Gradient on a negative entry: (e^T / sum_neg e^T) * (E_B[e^T] / ema) = e^T / (n_neg * ema).
    i, j = 0, 1
    expected = math.exp(s2[i, j].item()) / (56 * math.exp(ema.item()))
    assert s2.grad[i, j].item() == pytest.approx(expected, rel=1e-4)
    assert s2.grad[0, 0].item() == pytest.approx(-1 / 8, rel=1e-5)


def test_mine_ema_is_checkpointed_state():
    mine = MineBound()
    mine(torch.randn(4, 4), torch.eye(4, dtype=torch.bool))
    state = mine.state_dict()
    assert set(state) == {"log_ema", "initialized"} and bool(state["initialized"])


def test_smile_value_is_clipped_dv_and_gradient_is_jsd():
    s = (torch.randn(6, 6) * 8).requires_grad_()
    mask = torch.eye(6, dtype=torch.bool)
    out = smile_bound(s, mask, tau=1.0)
    clipped = torch.where(mask, s, s.clamp(-1, 1))
    assert out.mi.item() == pytest.approx(dv_bound(clipped.detach(), mask).mi.item(), abs=1e-5)
    out.loss.backward()
    s2 = s.detach().clone().requires_grad_()
    jsd_bound(s2, mask).loss.backward()
    assert torch.allclose(s.grad, s2.grad)


def test_registry_and_errors():
    assert get_bound("infonce") is infonce_bound
    assert isinstance(get_bound("mine", momentum=0.9), MineBound)
    with pytest.raises(ValueError, match="choose one of"):
        get_bound("nope")
    with pytest.raises(ValueError, match="positive and one negative"):
        dv_bound(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="differ"):
        dv_bound(torch.zeros(2, 2), torch.eye(3, dtype=torch.bool))


def test_tanh_clip_bounds_scores():
    s = torch.tensor([-100.0, 0.0, 100.0])
    assert tanh_clip(s, 20.0).abs().max().item() <= 20.0
    assert torch.equal(tanh_clip(s, None), s)
