"""Critics + bounds: official all-pairs local negatives, score shapes, subsampling."""

import math

import pytest
import torch

from dim.nets.critics import ConcatLocalCritic, DotLocalCritic, GlobalCritic, local_pos_mask
from dim.nets.encoders import build_encoder
from dim.objective.bounds import infonce_bound, jsd_bound
from dim.objective.terms import ScoreOptions, global_mi, local_mi, sample_locations


def test_local_mask_positives_are_own_locations():
    mask = local_pos_mask(3, 3, 4)
    assert mask.shape == (3, 12) and mask.sum(1).tolist() == [4, 4, 4]
    assert mask[1, 4:8].all() and not mask[1, :4].any()


def test_local_term_uses_every_location_of_every_other_image_as_negative():
    torch.manual_seed(0)
    b, c, h = 6, 8, 4
    critic = DotLocalCritic(c, 5, units=16)
    seen = {}

    def spy(scores, mask):
        seen["scores"], seen["mask"] = scores, mask
        return infonce_bound(scores, mask)

    out = local_mi(critic, torch.randn(b, c, h, h), torch.randn(b, 5), spy)
    assert seen["scores"].shape == (b, b * h * h)
    assert (~seen["mask"]).sum(1).tolist() == [(b - 1) * h * h] * b  # not one rolled negative
    assert out.mi.item() <= math.log(1 + (b - 1) * h * h)


def test_location_subsampling_shrinks_candidates():
    critic = DotLocalCritic(8, 5, units=16)
    locs = sample_locations(16, 5)
    assert locs is not None and len(locs) == 5 and sample_locations(16, None) is None
    seen = {}

    def spy(scores, mask):
        seen["shape"] = scores.shape
        return jsd_bound(scores, mask)

    local_mi(critic, torch.randn(4, 8, 4, 4), torch.randn(4, 5), spy, locations=locs)
    assert seen["shape"] == (4, 20)


def test_concat_critic_scores_every_pair_like_an_explicit_concat():
    torch.manual_seed(0)
    critic = ConcatLocalCritic(3, 2, hidden=8)
    local, y = torch.randn(2, 5, 3), torch.randn(4, 2)
    scores = critic.score(critic.encode_local(local), critic.encode_y(y))
    w = torch.cat([critic.local_in.weight, critic.y_in.weight], 1)
    for m in range(4):
        for n in range(2):
            for loc in range(5):
                hcat = torch.cat([local[n, loc], y[m]]) @ w.T + critic.local_in.bias
                expected = critic.rest(hcat)
                assert scores[m, n * 5 + loc].item() == pytest.approx(expected.item(), abs=1e-5)


def test_global_critic_uses_a_fresh_copy_of_the_remaining_encoder():
    enc = build_encoder("basic32", 3, 32)
    critic = GlobalCritic(enc.make_global_head(16), 64, units=16)
    feats = enc(torch.randn(4, 3, 32, 32))
    out = global_mi(critic, feats["local"], feats["y"], infonce_bound)
    assert out.mi.item() <= math.log(4) + 1e-6
    head_params = {id(p) for p in critic.parameters()}
    assert not head_params & {id(p) for p in enc.parameters()}


def test_tanh_clip_and_score_penalty_apply():
    critic = DotLocalCritic(4, 3, units=8, scale=100.0)
    args = (critic, torch.randn(4, 4, 2, 2), torch.randn(4, 3), infonce_bound)
    plain = local_mi(*args)
    reg = local_mi(*args, opts=ScoreOptions(tclip=None, score_reg=0.1))
    assert reg.loss.item() > plain.loss.item()
    seen = {}

    def spy(scores, mask):
        seen["max"] = scores.abs().max().item()
        return infonce_bound(scores, mask)

    local_mi(critic, args[1], args[2], spy, opts=ScoreOptions(tclip=5.0))
    assert seen["max"] <= 5.0


@pytest.mark.parametrize(
    "name,size", [("basic32", 32), ("basic64", 64), ("alex64", 64), ("resnet", 32)]
)
def test_encoders_return_the_four_taps(name, size):
    enc = build_encoder(name, 3, size)
    out = enc(torch.randn(2, 3, size, size))
    assert set(out) == {"local", "conv", "fc", "y"} and out["y"].shape == (2, 64)
    assert out["local"].dim() == 4 and out["conv"].dim() == 4
