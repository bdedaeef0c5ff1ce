"""dim-eval's `mine` and `ndm` protocols share dim-mine's honesty (issue 14).

Both must report a value that is never negative, an interval, and the failure signatures (one
`warning:` line on stderr each, a `warnings` list and `trustworthy` in the settings); at the
digits quickstart's sample size (far fewer pairs than 10 per dimension) they must say that the
value is not trustworthy.  The contexts below are stand-ins with random data, no encoder.
"""

import numpy as np
import pytest
import torch

import dim
from dim.errors import DimError
from dim.eval import mine_eval, ndm
from dim.eval.features import Features

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeContext:
    """What the two protocols read from an EvalContext: images, Y per split, seed, curves."""

    def __init__(self, images: dict, y: dict, seed: int = 0) -> None:
        self.images, self.y, self.seed = images, y, seed
        self.device = torch.device("cpu")
        self.points: list[tuple[str, float, int]] = []

    def features(self, split: str) -> Features:
        y = self.y[split]
        n = len(y)
        return Features(torch.zeros(n, 1, 1, 1), torch.zeros(n, 1), y, torch.zeros(n).long())

    def dataset(self, split: str) -> torch.utils.data.Dataset:
        imgs = self.images[split]
        return torch.utils.data.TensorDataset(imgs, torch.zeros(len(imgs), dtype=torch.long))

    def curve(self, tag: str, value: float, step: int) -> None:
        self.points.append((tag, value, step))


MINE_CFG = {
    "max_samples": 10000,
    "critic": "gauss",
    "hidden": None,
    "layers": None,
    "train": {"batch_size": 64, "lr": 1e-3, "max_steps": 60, "eval_every": 20, "patience": 5},
}


def test_eval_mine_says_it_is_not_trustworthy_at_quickstart_size(capsys):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(300, 1, 8, 8, generator=gen)  # 64 pixels, 300 pairs: 210 train pairs
    y = images.flatten(1)[:, :16] + 0.1 * torch.randn(300, 16, generator=gen)
    ctx = FakeContext({"train": images}, {"train": y})
    res = mine_eval.run(ctx, MINE_CFG)
    s = res.settings
    value = res.values["y"].mean
    assert value >= 0 and s["ci95_nats"][0] <= value <= s["ci95_nats"][1]
    assert value == pytest.approx(max(0.0, s["raw_mi_nats"]))
    assert any("not trustworthy at this sample size" in w for w in s["warnings"]), s["warnings"]
    assert s["trustworthy"] is False and s["train"] == MINE_CFG["train"]
    err = capsys.readouterr().err.splitlines()
    assert [ln for ln in err if ln.startswith("warning: eval=mine: ")] == [
        f"warning: eval=mine: {w}" for w in s["warnings"]
    ]
    assert ctx.points and all(tag == "eval/mine/heldout_mi" for tag, _, _ in ctx.points)


def test_eval_mine_on_enough_pairs_is_quiet_and_trustworthy(capsys):
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2000, 1, 1, 2, generator=gen)  # 2 "pixels", 2000 pairs
    y = images.flatten(1) + torch.randn(2000, 2, generator=gen)  # MI = log 2 = 0.693
    ctx = FakeContext({"train": images}, {"train": y})
    cfg = {**MINE_CFG, "train": {**MINE_CFG["train"], "max_steps": 200}}
    res = mine_eval.run(ctx, cfg)
    assert res.settings["warnings"] == [] and res.settings["trustworthy"] is True
    assert res.values["y"].mean == pytest.approx(np.log(2), abs=0.1)
    assert "warning:" not in capsys.readouterr().err


def test_ndm_warnings_name_each_failure_and_stay_quiet_when_clean():
    assert ndm.ndm_warnings(0.30, 0.29, 2000, 8) == []
    few = ndm.ndm_warnings(0.3, 0.29, 297, 64)
    assert len(few) == 1 and "not trustworthy at this sample size" in few[0]
    assert "overfits" in ndm.ndm_warnings(2.0, 0.3, 2000, 8)[0]
    beyond = ndm.ndm_warnings(34.0, 34.0, 297, 8)
    assert any("exceeds log(test samples)" in w for w in beyond)
    assert any("non-finite" in w for w in ndm.ndm_warnings(0.0, float("nan"), 2000, 8))


def test_eval_ndm_is_never_negative_and_flags_too_few_test_samples(capsys):
    gen = torch.Generator().manual_seed(0)
    y = {"train": torch.randn(400, 32, generator=gen), "test": torch.randn(150, 32, generator=gen)}
    ctx = FakeContext({}, y)
    cfg = {
        "variants": ["sigmoid", "raw"],
        "steps": 30,
        "batch_size": 400,
        "lr": 1e-3,
        "hidden": [32],
        "bound": "mine",
        "eval_shuffles": 4,
    }
    res = ndm.run(ctx, cfg)
    assert res.settings["transform"] == "copula"
    err = capsys.readouterr().err.splitlines()
    for variant in ("sigmoid", "raw"):
        est = res.settings["estimates"][variant]
        value = res.values[f"{variant}/y"].mean
        assert value == max(0.0, est["raw"]) and value >= 0
        low, high = est["ci95_nats"]
        assert 0 <= low <= high
        assert any("not trustworthy at this sample size" in w for w in est["warnings"])
        assert est["trustworthy"] is False
        assert f"warning: eval=ndm {variant}: {est['warnings'][0]}" in err


def test_fifty_samples_in_twenty_dimensions_are_refused_not_estimated():
    # The constructed failure "50 samples in 20-d": below the 100-pair minimum it is a
    # one-line user error, never a number (from 100 pairs on, the sample-size warning fires:
    # tests/mine/test_robust.py::test_too_few_samples_for_the_dimension_warns).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 20))
    with pytest.raises(DimError, match="100"):
        dim.estimate_mi(x, x + rng.normal(size=(50, 20)))
