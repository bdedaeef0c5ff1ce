"""DIM with two augmented views per image (``method.views``): Y of one view against the other's
feature map, both directions; identical views reduce to plain DIM."""

import math

import pytest
import torch
from conftest import TINY, compose_train

from dim.methods.base import make_bound
from dim.methods.dim import DIMModule
from dim.objective.terms import global_mi, local_mi
from dim.training import train

DATA = dict(channels=1, image_size=32, num_classes=10)


def _module(**objective):
    obj = dict(alpha=0.5, beta=1.0, gamma=0.1) | objective
    model = dict(encoder="basic32", mi_units=32, prior_hidden=[32, 16])
    torch.manual_seed(0)
    return DIMModule(model, dict(name="infonce"), obj, dict(lr=1e-4), DATA)


@pytest.mark.parametrize("train", [True, False])
def test_identical_views_give_the_single_view_losses(train):
    m = _module().train(train)
    x, labels = torch.randn(6, 1, 32, 32), torch.randint(0, 10, (6,))
    one = m.compute_losses(x, labels)
    two = m.compute_losses(torch.stack([x, x], 1), labels)
    for key in ("local_loss", "global_loss", "prior_encoder_loss", "encoder_loss", "probe_loss"):
        assert two[key].item() == pytest.approx(one[key].item(), rel=1e-5, abs=1e-6), key


def test_each_views_y_is_scored_against_the_other_views_map():
    m = _module().eval()  # batch-norm from running statistics: each view encodes alone
    views = torch.randn(6, 2, 1, 32, 32)
    out = m.compute_losses(views, None)
    with torch.no_grad():
        a, b = m.encoder(views[:, 0]), m.encoder(views[:, 1])
    bound = make_bound({"name": "infonce"})
    local = [local_mi(m.local_critic, s["local"], t["y"], bound).loss for s, t in ((b, a), (a, b))]
    glob = [global_mi(m.global_critic, s["local"], t["y"], bound).loss for s, t in ((b, a), (a, b))]
    assert out["local_loss"].item() == pytest.approx(sum(local).item() / 2, rel=1e-5)
    assert out["global_loss"].item() == pytest.approx(sum(glob).item() / 2, rel=1e-5)
    # ...and not the within-view pairing, which views that differ make a different number
    same = [local_mi(m.local_critic, s["local"], s["y"], bound).loss for s in (a, b)]
    assert out["local_loss"].item() != pytest.approx(sum(same).item() / 2, rel=1e-4)


@pytest.mark.parametrize("on_device", [False, True])
def test_dim_train_feeds_view_pairs_to_dim(tmp_path, monkeypatch, on_device):
    seen = []
    compute = DIMModule.compute_losses

    def spy(self, x, labels):
        seen.append((self.training, x.dim()))
        return compute(self, x, labels)

    monkeypatch.setattr(DIMModule, "compute_losses", spy)
    cfg = compose_train(
        [*TINY, "method.views={translate: 2}", f"data_on_device={str(on_device).lower()}"]
    )
    metrics = train(cfg, tmp_path / "run", None)
    assert {d for training, d in seen if training} == {5}  # (B, 2, C, H, W) pairs
    assert {d for training, d in seen if not training} == {4}  # validation: the image itself
    assert math.isfinite(metrics["train/loss/local"])
