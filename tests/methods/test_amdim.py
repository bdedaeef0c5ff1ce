"""AMDIM: the multiscale loss by hand, its terms and gradients, the views, the encoder taps."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from dim.data.images import ImageDataModule
from dim.data.views import ViewOptions, make_views
from dim.errors import DimError
from dim.methods.amdim import TERMS, AMDIMModule, block_infonce, view_nce
from dim.nets.amdim import whole_window_conv
from dim.nets.encoders import build_encoder
from dim.objective.bounds import get_bound
from dim.objective.terms import ScoreOptions, apply_bound

SMALL = dict(encoder="amdim", ndf=8, n_rkhs=16, y_dim=16, n_depth=1, tclip=20.0, score_reg=0.05)
DIGITS = dict(channels=1, image_size=32, num_classes=10)


def amdim_module(**model) -> AMDIMModule:
    return AMDIMModule(
        SMALL | model,
        dict(name="infonce"),
        dict(w_1t5=1.0, w_1t7=1.0, w_5t5=1.0),
        dict(lr=2e-4, betas=[0.8, 0.999]),
        DIGITS,
    )


def test_view_nce_equals_the_hand_computed_loss():
    """2 images, 1 source each, 2 target locations, D = 2; tclip 2 so that clipping matters.

    Row b: positives are image b's 2 target locations, each scored against the 2 locations of
    the other image only (the other positive is not in its denominator)."""
    src = torch.tensor([[[1.0, 2.0]], [[-1.0, 0.5]]])  # (B=2, K=1, D=2)
    trg = torch.tensor([[[0.5, 1.0], [2.0, -1.0]], [[1.5, 1.5], [-2.0, 0.0]]])  # (B, L=2, D)
    tclip, reg = 2.0, 0.05
    raw = [[sum(a * b for a, b in zip(src[i, 0], trg[j, k], strict=True)) / math.sqrt(2)
            for j in range(2) for k in range(2)] for i in range(2)]  # fmt: skip
    clip = [[tclip * math.tanh(float(s) / tclip) for s in row] for row in raw]
    terms = []
    for i in range(2):
        own = clip[i][2 * i : 2 * i + 2]
        others = [s for c, s in enumerate(clip[i]) if c // 2 != i]
        for p in own:
            terms.append(-(p - math.log(math.exp(p) + sum(math.exp(n) for n in others))))
    expected = sum(terms) / len(terms) + reg * sum(float(s) ** 2 for r in raw for s in r) / 8
    target_map = trg.transpose(1, 2).reshape(2, 2, 2, 1)  # (B, D, H=2, W=1)
    out = view_nce(src, target_map, get_bound("infonce"), opts=ScoreOptions(tclip, reg))
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    # the estimate is log(1 + negatives) - the InfoNCE loss (without the regulariser)
    nce = sum(terms) / len(terms)
    assert out.mi.item() == pytest.approx(math.log(3) - nce, abs=1e-6)


@pytest.mark.parametrize("n, per_image, locations", [(5, 1, 25), (4, 3, 9), (2, 25, 1)])
def test_block_infonce_equals_the_generic_bound(n, per_image, locations):
    """AMDIM's InfoNCE reads the positives as the diagonal blocks of the scores: the same loss,
    estimate and gradient as the generic bound, which finds them through the mask."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(n * per_image, n * locations, generator=g) * 8  # tclip 20 acts
    rows = torch.arange(n).repeat_interleave(per_image)
    mask = rows[:, None] == torch.arange(n).repeat_interleave(locations)[None, :]
    opts = ScoreOptions(20.0, 0.05)
    results = []
    for fn in (lambda s: apply_bound(s, mask, get_bound("infonce"), opts),
               lambda s: block_infonce(s, mask, n, opts)):  # fmt: skip
        leaf = scores.clone().requires_grad_()
        out = fn(leaf)
        out.loss.backward()
        results.append((out.loss.detach(), out.mi, leaf.grad))
    for generic, block in zip(*results, strict=True):
        torch.testing.assert_close(block, generic, rtol=1e-6, atol=1e-7)


def test_view_nce_with_a_temperature_scores_cosines():
    """model.temperature: the score is cos(s, t) / temperature, by hand on the same 2 x 2 case;
    it does not change when a source or a target is rescaled (only directions count)."""
    src = torch.tensor([[[1.0, 2.0]], [[-1.0, 0.5]]])
    trg = torch.tensor([[[0.5, 1.0], [2.0, -1.0]], [[1.5, 1.5], [-2.0, 0.0]]])
    temp = 0.25

    def cos(a, b):
        return float(a @ b) / float(a.norm() * b.norm())

    scores = [[cos(src[i, 0], trg[j, k]) / temp for j in range(2) for k in range(2)]
              for i in range(2)]  # fmt: skip
    terms = []
    for i in range(2):
        others = [s for c, s in enumerate(scores[i]) if c // 2 != i]
        for p in scores[i][2 * i : 2 * i + 2]:
            terms.append(-(p - math.log(math.exp(p) + sum(math.exp(n) for n in others))))
    target_map = trg.transpose(1, 2).reshape(2, 2, 2, 1)
    out = view_nce(src, target_map, get_bound("infonce"), temperature=temp)
    assert out.loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    scaled = view_nce(
        src * torch.tensor([3.0, 0.1]).view(2, 1, 1), target_map * 7.0,
        get_bound("infonce"), temperature=temp,
    )  # fmt: skip
    assert scaled.loss.item() == pytest.approx(out.loss.item(), rel=1e-6)
    assert amdim_module(temperature=0.1).temperature == 0.1
    assert amdim_module().temperature is None  # the default: AMDIM's dot / sqrt(D)
    with pytest.raises(DimError, match="model.temperature must be > 0 or null, got -1"):
        amdim_module(temperature=-1)


def test_encoder_taps_at_32_and_64_px():
    for size in (32, 64):
        enc = build_encoder("amdim", 3, size, 16, ndf=8, n_depth=2)
        feats = enc(torch.randn(2, 3, size, size))
        assert feats["local"].shape[-2:] == (7, 7) and feats["conv"].shape[-2:] == (5, 5)
        assert feats["fc"].shape[-2:] == (3, 3) and feats["y"].shape == (2, 16)
        width = 4 * 8 if size == 32 else 8 * 8
        assert enc.local_shape[0] == enc.conv_shape[0] == width
    with pytest.raises(DimError, match="has no option mi_units"):
        build_encoder("amdim", 3, 32, 16, mi_units=4)
    with pytest.raises(DimError, match="expects 32x32 or 64x64"):
        build_encoder("amdim", 3, 96, 16)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("kernel", [3, 1])
def test_whole_window_convolutions_are_the_convolution(kernel, channels_last):
    """A convolution whose kernel covers its whole input (AMDIM's last unit) is computed as one
    matrix product: the same output and gradients; other inputs go to the convolution."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, kernel)
    x = torch.randn(4, 16, kernel, kernel)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for fn in (conv, lambda t: whole_window_conv(conv, t)):
        leaf = x.clone().requires_grad_()
        out = fn(leaf)
        (out * torch.arange(32.0).view(1, 32, 1, 1)).sum().backward()
        results.append((out.detach(), leaf.grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
        conv.zero_grad()
    for plain, product in zip(*results, strict=True):
        torch.testing.assert_close(product, plain, rtol=1e-5, atol=1e-5)
    bigger = torch.randn(2, 16, kernel + 2, kernel + 2)
    assert torch.equal(whole_window_conv(conv, bigger), conv(bigger))


def _views(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 2, 1, 32, 32, generator=g)


def test_loss_is_the_weighted_sum_of_symmetric_terms():
    torch.manual_seed(0)
    module = amdim_module().eval()  # eval: 5t5 uses every location, so the loss is deterministic
    x = _views()
    out = module.compute_losses(x, None)
    total = sum(out[f"{t}_loss"] for t in TERMS)
    torch.testing.assert_close(out["encoder_loss"], total)
    swapped = module.compute_losses(x.flip(1), None)  # view 2 -> 1 is the same set of terms
    for t in TERMS:
        torch.testing.assert_close(swapped[f"{t}_loss"], out[f"{t}_loss"])
        assert -0.1 < out[f"{t}_mi"] <= math.log(6 * 49)  # below the log-candidates ceiling
    single = module.compute_losses(x[:, 0], None)  # validation: the image is both views
    assert set(single) == set(out)


def test_validation_on_single_images_equals_both_views_being_the_image(monkeypatch):
    """Validation encodes a single image once and scores one direction; the values must be those
    of the full two-view computation with the image as both views (in eval mode only)."""
    import dim.methods.amdim as amdim

    torch.manual_seed(0)
    module = amdim_module().eval()
    x = _views()[:, 0]
    fast = module.compute_losses(x, torch.arange(6))
    full = module.compute_losses(torch.stack([x, x], 1), torch.arange(6))
    assert set(fast) == set(full)
    for k in fast:
        torch.testing.assert_close(fast[k], full[k], rtol=1e-5, atol=1e-5)
    calls = []
    monkeypatch.setattr(amdim, "view_nce", lambda *a, **k: calls.append(1) or view_nce(*a, **k))
    module.train().compute_losses(x, None)  # batch statistics, random 5t5 sources: both ways
    assert len(calls) == 2 * len(TERMS)
    calls.clear()
    module.eval().compute_losses(x, None)
    assert len(calls) == len(TERMS)


def test_gradients_reach_only_the_terms_in_use():
    torch.manual_seed(0)
    module = AMDIMModule(
        SMALL, dict(name="infonce"), dict(w_1t5=1.0, w_1t7=0.0, w_5t5=0.0), dict(lr=1e-3), DIGITS
    )
    out = module.compute_losses(_views(), torch.arange(6))
    assert "1t7_loss" not in out and "5t5_loss" not in out
    out["encoder_loss"].backward()
    assert all(p.grad is None for p in module.embed["local"].parameters())  # 1t7 off
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in module.embed["conv"].parameters()
    )
    assert all(p.grad is None for p in module.probes.parameters())  # probes: their own loss
    assert all(p.grad is not None for p in module.encoder.to_y.parameters())
    with pytest.raises(DimError, match="not all zero"):
        AMDIMModule(SMALL, dict(name="infonce"), dict(w_1t5=0, w_1t7=0, w_5t5=0), {}, DIGITS)


def test_views_differ_but_share_the_flip():
    """An image bright in its left columns only: after the shared flip the bright side is the
    same in both views; jitter and translation make the views differ."""
    x = torch.full((64, 3, 32, 32), -1.0)
    x[..., :8] = 1.0
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.5)
    opts = ViewOptions(translate=2, p_translate=1.0, p_jitter=1.0)
    views = make_views(x, mean, std, opts, torch.Generator().manual_seed(0))
    assert views.shape == (64, 2, 3, 32, 32)
    left = views[..., :16].mean((2, 3, 4)) > views[..., 16:].mean((2, 3, 4))  # (64, 2)
    assert torch.equal(left[:, 0], left[:, 1])  # one flip for both views
    assert 10 < int(left[:, 0].sum()) < 54  # and it is random (p 0.5)
    assert not torch.allclose(views[:, 0], views[:, 1])
    # no augmentation but the flip: two identical views
    plain = ViewOptions(p_translate=0.0, p_jitter=0.0, p_gray=0.0)
    same = make_views(x, mean, std, plain, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same[:, 0], same[:, 1])
    resized = make_views(x, mean, std, ViewOptions(crop="resized"), torch.Generator())
    assert resized.shape == views.shape and torch.isfinite(resized).all()
    turned = make_views(x, mean, std, ViewOptions(rotate=30.0, p_jitter=0.0), torch.Generator())
    assert turned.shape == views.shape and turned.min() >= -1 - 1e-5 and turned.max() <= 1 + 1e-5
    with pytest.raises(DimError, match="crop must be translate or resized"):
        ViewOptions.from_config({"crop": "zoom"})
    with pytest.raises(DimError, match="flip must be shared, each or none"):
        ViewOptions.from_config({"flip": "both"})


def test_each_view_can_take_its_own_flip_or_none():
    """``flip: each`` mirrors the two views independently (about half the pairs disagree on the
    bright side); ``none`` never mirrors; the older boolean spelling still means shared / none."""
    x = torch.full((256, 1, 32, 32), -1.0)
    x[..., :8] = 1.0
    mean, std = torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 0.5)
    plain = {"p_translate": 0.0, "p_jitter": 0.0}

    def left_bright(flip: object) -> torch.Tensor:
        opts = ViewOptions.from_config({**plain, "flip": flip})
        views = make_views(x, mean, std, opts, torch.Generator().manual_seed(1))
        return views[..., :16].mean((2, 3, 4)) > views[..., 16:].mean((2, 3, 4))  # (256, 2)

    each = left_bright("each")
    assert 0.35 < (each[:, 0] != each[:, 1]).float().mean() < 0.65
    assert 0.35 < each.float().mean() < 0.65
    assert left_bright("none").all() and left_bright(False).all()
    shared = left_bright(True)
    assert torch.equal(shared[:, 0], shared[:, 1]) and torch.equal(shared, left_bright("shared"))
    assert 0.35 < shared.float().mean() < 0.65
    with pytest.raises(DimError, match="has no key 'blur'"):
        ViewOptions.from_config({"blur": 1})


def test_random_erasing_blanks_one_box_per_erased_view():
    """``p_erase``: about that share of views has one axis-aligned box set to 0 (the normalised
    mean) whose area is within ``erase_scale``; the rest of the view and the other views are
    untouched; off (the default) draws nothing, so earlier runs' views are unchanged."""
    x = torch.full((400, 1, 32, 32), 1.0)
    mean, std = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    plain = {"p_translate": 0.0, "p_jitter": 0.0, "flip": "none"}
    opts = ViewOptions.from_config({**plain, "p_erase": 0.5, "erase_scale": [0.1, 0.2]})
    views = make_views(x, mean, std, opts, torch.Generator().manual_seed(0)).flatten(0, 1)
    zero = views[:, 0] == 0  # (800, 32, 32)
    erased = zero.any((1, 2))
    assert 0.45 < erased.float().mean() < 0.55
    assert torch.all(views[:, 0][~zero] == 1.0)
    for box in zero[erased]:
        rows, cols = box.any(1).nonzero()[:, 0], box.any(0).nonzero()[:, 0]
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert box.sum() == h * w  # one filled rectangle
        assert 0.1 * 1024 * 0.8 <= h * w <= 0.2 * 1024 * 1.2  # rounding of the sides
    off = ViewOptions.from_config(plain)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x = torch.randn(8, 1, 32, 32)
    assert torch.equal(
        make_views(x, mean, std, off, g1),
        make_views(x, mean, std, ViewOptions.from_config({**plain, "p_erase": 0.0}), g2),
    )
    with pytest.raises(DimError, match="p_erase must be in"):
        ViewOptions.from_config({"p_erase": 1.5})
    with pytest.raises(DimError, match="erase_scale must be"):
        ViewOptions.from_config({"p_erase": 0.5, "erase_scale": [0.5, 0.2]})


def test_the_data_layer_gives_view_pairs_that_depend_only_on_the_seed():
    cfg = dict(name="digits", image_size=32, batch_size=8, val_size=297)
    views = {"translate": 4, "p_translate": 0.8}
    batches = []
    for _ in range(2):
        data = ImageDataModule(cfg, seed=3, views=views)
        batches.append(next(iter(data.train_dataloader())))
    (x, labels), (x2, labels2) = batches
    assert x.shape == (8, 2, 1, 32, 32) and labels.shape == (8,)
    assert torch.equal(x, x2) and torch.equal(labels, labels2)
    assert not torch.equal(x[:, 0], x[:, 1])
    val_x, _ = next(iter(ImageDataModule(cfg, seed=3, views=views).val_dataloader()))
    assert val_x.shape == (8, 1, 32, 32)  # validation: one image


def test_warm_up_scales_the_learning_rate_linearly(tmp_path):
    torch.manual_seed(0)
    module = AMDIMModule(
        SMALL, dict(name="infonce"), dict(w_1t5=1.0), dict(lr=1e-3, warmup_steps=4), DIGITS
    )
    data = ImageDataModule(dict(name="digits", batch_size=8), views={"p_jitter": 0.5})
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    group = trainer.optimizers[0].param_groups[0]
    assert group["lr"] == pytest.approx(1e-3 * 2 / 4)  # the 2nd of 4 warm-up updates
    assert trainer.optimizers[1].param_groups[0]["lr"] == 1e-3  # the probes: no warm-up
