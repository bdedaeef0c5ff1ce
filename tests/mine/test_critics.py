"""dim.mine.critics: all-pairs scores agree with scoring pairs one by one."""

import pytest
import torch

from dim.errors import DimError
from dim.mine.critics import build_critic, chunked_pair_scores
from dim.mine.training import batch_scores
from dim.nets.critics import PriorDiscriminator
from dim.nets.mlp import mlp


@pytest.mark.parametrize("name", ["concat", "separable"])
def test_pair_and_candidate_scores_match_row_scores(name):
    torch.manual_seed(0)
    critic = build_critic(name, 3, 5, hidden=16, layers=2, embed=8)
    x, y = torch.randn(7, 3), torch.randn(6, 5)
    full = critic.pair_scores(x, y)
    assert full.shape == (7, 6)
    for i in range(7):
        expect = critic(x[i].expand(6, 3), y)
        torch.testing.assert_close(full[i], expect)
    torch.testing.assert_close(chunked_pair_scores(critic, x, y, rows=2), full)
    idx = torch.tensor([[0, 3], [5, 1], [2, 2], [0, 0], [4, 1], [1, 5], [3, 3]])
    torch.testing.assert_close(critic.candidate_scores(x, y, idx), full.gather(1, idx))


def test_shuffled_negatives_come_from_other_rows():
    critic = build_critic("concat", 2, 2, hidden=8, layers=1)
    x, y = torch.randn(10, 2), torch.randn(10, 2)
    scores, mask = batch_scores(critic, x, y, "shuffle", 4, torch.Generator().manual_seed(0))
    assert scores.shape == mask.shape == (10, 5)
    assert mask[:, 0].all() and not mask[:, 1:].any()
    full = critic.pair_scores(x, y).detach()
    torch.testing.assert_close(scores[:, 0].detach(), full.diag())
    for i in range(10):  # every negative is a score against some *other* y of the batch
        others = torch.cat([full[i, :i], full[i, i + 1 :]])
        for s in scores[i, 1:].detach():
            assert torch.isclose(others, s).any()


def test_unknown_critic_or_activation_is_a_user_error():
    with pytest.raises(DimError, match="unknown critic 'bilinear'"):
        build_critic("bilinear", 2, 2)
    with pytest.raises(DimError, match="unknown activation 'gelu'"):
        build_critic("concat", 2, 2, activation="gelu")


def test_the_shared_mlp_builder_keeps_checkpoint_key_names():
    # PriorDiscriminator checkpoints written before dim.nets.mlp existed must still load.
    keys = list(PriorDiscriminator(4, (8, 2)).state_dict())
    assert keys == [f"net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    sep = build_critic("separable", 3, 5, hidden=16, layers=2, embed=8)
    assert [k for k in sep.state_dict() if k.startswith("g.")][-1] == "g.4.bias"
    net = mlp(3, [], 2)
    assert isinstance(net[0], torch.nn.Linear) and len(net) == 1
