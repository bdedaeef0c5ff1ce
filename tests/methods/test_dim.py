"""The prior-matching game is adversarial: each player gets only its own gradient."""

import math

import pytest
import torch

from dim.methods.dim import DIMModule
from dim.nets.critics import PriorDiscriminator
from dim.objective.terms import prior_discriminator_loss, prior_encoder_loss

DATA = dict(channels=3, image_size=32, num_classes=10)


def _module(**objective):
    obj = dict(alpha=0.0, beta=1.0, gamma=0.1) | objective
    model = dict(encoder="basic32", mi_units=32, prior_hidden=[32, 16])
    return DIMModule(model, dict(name="infonce"), obj, dict(lr=1e-4), DATA)


def _grads(loss, params):
    return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)


def test_discriminator_gets_no_encoder_gradient_and_vice_versa():
    torch.manual_seed(0)
    m = _module()
    out = m.compute_losses(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    d_params = list(m.prior_disc.parameters())
    enc_params = list(m.encoder.parameters())
    assert all(g is None for g in _grads(out["encoder_loss"], d_params))
    assert all(g is None for g in _grads(out["prior_discriminator_loss"], enc_params))
    assert all(g is None for g in _grads(out["probe_loss"], enc_params))
    # ...and each player does get its own gradient.
    assert any(
        g is not None and g.abs().sum() > 0
        for g in _grads(out["prior_discriminator_loss"], d_params)
    )
    assert all(g is not None for g in _grads(out["prior_encoder_loss"], enc_params[-2:]))


def test_players_have_separate_optimisers():
    m = _module()
    opts, _ = m.configure_optimizers()
    owned = [{id(p) for g in o.param_groups for p in g["params"]} for o in opts]
    d_ids = {id(p) for p in m.prior_disc.parameters()}
    assert owned[1] == d_ids and not (owned[0] & d_ids)


def test_encoder_loss_is_non_saturating_and_d_loss_is_the_gan_loss():
    disc = PriorDiscriminator(4, (8,))
    torch.nn.init.zeros_(disc.net[-1].weight)
    torch.nn.init.zeros_(disc.net[-1].bias)  # D(v) = 0 for every input: logits 0, gradient 0
    y = torch.randn(16, 4, requires_grad=True)
    assert prior_encoder_loss(disc, y).item() == pytest.approx(math.log(2))
    out = prior_discriminator_loss(disc, y, gp_weight=1.0)
    assert out.loss.item() == pytest.approx(2 * math.log(2))  # -log(1/2) - log(1 - 1/2)
    assert out.gradient_penalty.item() == 0.0


def test_gradient_penalty_is_mean_squared_input_gradient():
    torch.manual_seed(0)
    disc = torch.nn.Sequential(torch.nn.Linear(3, 1))
    disc.forward_orig = disc.forward
    wrapped = lambda v: disc(v).squeeze(-1)  # noqa: E731
    out = prior_discriminator_loss(wrapped, torch.randn(5, 3), gp_weight=1.0)
    # For a linear D the input gradient is the weight vector everywhere.
    assert out.gradient_penalty.item() == pytest.approx(
        disc[0].weight.pow(2).sum().item(), rel=1e-5
    )


def test_discriminator_learns_to_separate_prior_from_a_bad_encoder():
    torch.manual_seed(0)
    disc = PriorDiscriminator(8, (64, 32))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    y = torch.full((256, 8), 3.0)  # sigmoid(Y) ~ 0.95 everywhere: far from uniform
    for _ in range(100):
        out = prior_discriminator_loss(disc, y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.accuracy.item() > 0.9


def test_all_zero_weights_rejected():
    from dim.errors import DimError

    with pytest.raises(DimError, match="not all zero"):
        _module(alpha=0.0, beta=0.0, gamma=0.0)


def test_online_probe_learns_from_the_labelled_part_of_a_mixed_batch():
    torch.manual_seed(0)
    m = _module()
    labels = torch.tensor([3, -1, 5, -1, -1, 2, -1, -1])
    out = m.compute_losses(torch.randn(8, 3, 32, 32), labels)
    assert torch.isfinite(out["probe_loss"]) and out["probe_loss"] > 0
    assert 0.0 <= out["probe_acc_y"].item() <= 1.0  # over the 3 labelled samples only
    assert (out["probe_acc_y"] * 3).item() == pytest.approx(round(out["probe_acc_y"].item() * 3))
    none = m.compute_losses(torch.randn(8, 3, 32, 32), torch.full((8,), -1))
    assert none["probe_loss"].item() == 0.0 and torch.isnan(none["probe_acc_y"])  # not logged


def test_prior_discriminator_gradients_have_their_parameters_layout():
    """The gradient penalty's double backward must not leave D's gradients in a layout DDP's
    reducer has to copy (it warns "Grad strides do not match bucket view strides")."""
    from dim.nets.critics import PriorDiscriminator
    from dim.objective.terms import prior_discriminator_loss

    disc = PriorDiscriminator(64, (32, 16))
    prior_discriminator_loss(disc, torch.randn(8, 64), gp_weight=1.0).loss.backward()
    for name, p in disc.named_parameters():
        assert p.grad.stride() == p.stride(), name


def _play_prior_game(steps: int) -> tuple[dict, dict]:
    """The prior game alone, with DIM's two losses and defaults (gradient penalty 1, equal
    learning rates), on a small MLP encoder of Gaussian inputs: sigmoid(Y) can match U(0, 1)^4
    (a logistic-distributed Y is exactly matched).  Returns the prior measures before and after."""
    from dim.eval.prior import prior_match

    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    disc = PriorDiscriminator(4, (64, 32))
    opt_e = torch.optim.Adam(enc.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    held_out = torch.randn(1000, 8, generator=g)
    with torch.no_grad():
        start = prior_match(enc(held_out).numpy())
    for _ in range(steps):
        y = enc(torch.randn(256, 8, generator=g))
        d_loss = prior_discriminator_loss(disc, y, gp_weight=1.0).loss
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        e_loss = prior_encoder_loss(disc, y)
        opt_e.zero_grad()
        e_loss.backward()
        opt_e.step()
    with torch.no_grad():
        end = prior_match(enc(held_out).numpy())
    return start, end


def test_prior_game_moves_y_to_the_prior_on_a_toy_problem():
    start, end = _play_prior_game(steps=300)
    assert start["ks"] > 0.3 and start["c2st"][0] > 0.95  # a fresh encoder: far from uniform
    assert end["ks"] < start["ks"] / 3 and end["c2st"][0] < 0.75


def test_training_steps_the_discriminator_with_its_own_gradients():
    """Through Lightning: D's parameters move on every step by its own optimiser; the test fails
    if D's loss is cut from its parameters or its optimiser is never stepped."""

    torch.manual_seed(0)
    m = _module(beta=0.0, gamma=1.0)  # the prior term alone
    before = [p.detach().clone() for p in m.prior_disc.parameters()]
    trainer = _fit_one_epoch(m, 64)
    d_opt = trainer.optimizers[m.optimizer_names.index("prior_disc")]
    assert all(float(s["step"]) == 4 for s in d_opt.state.values()) and d_opt.state
    assert all(not torch.equal(a, p) for a, p in zip(before, m.prior_disc.parameters()))


def test_d_steps_gives_the_discriminator_that_many_updates_per_encoder_step():
    """``model.d_steps=3``: D's optimiser steps three times per training step (the two extra on
    the step's detached Y), the encoder's once, and D's parameters keep moving."""

    torch.manual_seed(0)
    model = dict(encoder="basic32", mi_units=32, prior_hidden=[32, 16], d_steps=3)
    obj = dict(alpha=0.0, beta=0.0, gamma=1.0)
    m = DIMModule(model, dict(name="infonce"), obj, dict(lr=1e-4), DATA)
    enc_before = [p.detach().clone() for p in m.encoder.parameters()]
    trainer = _fit_one_epoch(m, 32)
    d_opt = trainer.optimizers[m.optimizer_names.index("prior_disc")]
    assert d_opt.state and all(float(s["step"]) == 6 for s in d_opt.state.values())
    assert all(float(s["step"]) == 2 for s in trainer.optimizers[0].state.values())
    assert trainer.global_step == 2  # extra D steps are not counted as training steps
    assert any(not torch.equal(a, p) for a, p in zip(enc_before, m.encoder.parameters()))


def test_r1_penalty_is_taken_on_prior_samples_only():
    disc = lambda v: v.pow(2).sum(1)  # noqa: E731  grad = 2v: |grad|^2 = 4|v|^2
    y = torch.full((6, 3), 2.0)
    both = prior_discriminator_loss(disc, y, 1.0, torch.Generator().manual_seed(1))
    real = prior_discriminator_loss(disc, y, 1.0, torch.Generator().manual_seed(1), gp_on="real")
    v = torch.rand(6, 3, generator=torch.Generator().manual_seed(1))
    fake_sq = 4 * torch.sigmoid(y).pow(2).sum(1)
    assert real.gradient_penalty.item() == pytest.approx(4 * v.pow(2).sum(1).mean().item())
    expected_both = (4 * v.pow(2).sum(1).sum() + fake_sq.sum()).item() / 12
    assert both.gradient_penalty.item() == pytest.approx(expected_both)
    with pytest.raises(ValueError, match="gp_on"):
        prior_discriminator_loss(disc, y, 1.0, gp_on="fake")


def test_logit_space_matches_y_to_the_logistic_prior():
    """``space="logit"``: D sees Y itself and logit(U) samples (the standard logistic)."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, v):
            seen.append(v.detach())
            return v.sum(1) * 0

    disc = Recorder()
    y = torch.randn(4000, 2)
    prior_discriminator_loss(disc, y, 0.0, space="logit")
    real, fake = seen[0][:4000], seen[0][4000:]
    assert torch.equal(fake, y) and torch.isfinite(real).all()
    assert real.std().item() == pytest.approx(math.pi / math.sqrt(3), rel=0.05)
    assert prior_encoder_loss(disc, y, "logit").item() == pytest.approx(math.log(2))
    assert torch.equal(seen[-1], y)  # the encoder's side sees Y, not sigmoid(Y)


def test_spectral_norm_bounds_each_layer_of_d():
    torch.manual_seed(0)
    disc = PriorDiscriminator(8, (32, 16), spectral_norm=True)
    for _ in range(20):  # power iterations run in training-mode forwards
        disc(torch.rand(4, 8))
    for layer in disc.net:
        if isinstance(layer, torch.nn.Linear):
            top = torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item()
            assert top == pytest.approx(1.0, rel=0.05)


def _fit_one_epoch(module, num_samples: int):
    """One epoch of ``module`` on synthetic images (batch 16) without validation or files."""
    import pytorch_lightning as pl

    from dim.data.images import ImageDataModule

    data = ImageDataModule({"name": "synthetic", "num_samples": num_samples, "batch_size": 16})
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, limit_val_batches=0, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    return trainer


def test_lazy_penalty_only_every_k_steps_with_its_weight_times_k(monkeypatch):
    """``model.gp_every=3`` (StyleGAN2's lazy R1): D's gradient penalty is taken on the steps
    with ``global_step % 3 == 0`` only, in all of that step's D updates, with weight 3 x
    ``gp_weight``; the other steps take no input gradient at all."""
    import dim.methods.dim as dim_method

    calls: list[tuple[int, float, bool]] = []  # (step, weight, penalty computed)
    original = dim_method.prior_discriminator_loss
    grads = []
    autograd_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        grads.append(1)
        return autograd_grad(*args, **kwargs)

    def spy(disc, y, gp_weight=1.0, *args, **kwargs):
        before = len(grads)
        out = original(disc, y, gp_weight, *args, **kwargs)
        if torch.is_grad_enabled():
            calls.append((m.trainer.global_step, gp_weight, len(grads) > before))
        return out

    monkeypatch.setattr(dim_method, "prior_discriminator_loss", spy)
    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    torch.manual_seed(0)
    model = dict(
        encoder="basic32", mi_units=32, prior_hidden=[32, 16], d_steps=2, gp_weight=0.5, gp_every=3
    )
    obj = dict(alpha=0, beta=0, gamma=1)  # the prior term alone
    m = DIMModule(model, dict(name="infonce"), obj, dict(lr=1e-4), DATA)
    _fit_one_epoch(m, 64)  # 4 steps
    # the main D update, then the extra one (after the encoder's step has counted the step)
    main = [(s, w, g) for i, (s, w, g) in enumerate(calls) if i % 2 == 0]
    assert [s for s, _, _ in main] == list(range(4))
    for step, weight, computed in main:
        assert (weight, computed) == ((1.5, True) if step % 3 == 0 else (0.0, False)), step
    extra = [(w, g) for i, (_, w, g) in enumerate(calls) if i % 2 == 1]
    assert extra == [(w, g) for _, w, g in main]  # the extra D step follows its step's choice


def test_gp_every_below_one_is_refused():
    from dim.errors import DimError

    model = dict(encoder="basic32", mi_units=32, prior_hidden=[32, 16], gp_every=0)
    with pytest.raises(DimError, match="model.gp_every must be >= 1"):
        DIMModule(model, dict(name="infonce"), dict(alpha=0, beta=1, gamma=1), dict(lr=1e-4), DATA)
