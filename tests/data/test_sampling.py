"""Training order: a function of (seed, epoch); sharded like one big batch; resumable mid-epoch."""

import torch
from dataset_fixtures import write_cifar10
from torch.utils.data import TensorDataset

from dim.data.images import ImageDataModule
from dim.data.sampling import ResumableSampler, StreamPosition, epoch_order


def _batches(sampler, batch_size):
    indices = [i for i, _ in sampler]  # full batches only, as the DataLoader's drop_last
    return [
        indices[k : k + batch_size] for k in range(0, len(indices) - batch_size + 1, batch_size)
    ]


def test_epochs_differ_and_repeat_with_the_seed():
    a, b, c = epoch_order(50, 0, 0), epoch_order(50, 0, 1), epoch_order(50, 1, 0)
    assert torch.equal(a[0], epoch_order(50, 0, 0)[0]) and torch.equal(
        a[1], epoch_order(50, 0, 0)[1]
    )
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert sorted(a[0].tolist()) == list(range(50))


def test_two_processes_see_the_global_batch_of_one():
    ds = TensorDataset(torch.arange(37))  # 37: the odd sample out is dropped under 2 processes
    one = _batches(ResumableSampler(ds, 8, StreamPosition(), seed=5), 8)
    ranks = [_batches(ResumableSampler(ds, 4, StreamPosition(), 5, r, 2), 4) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    for b in range(4):  # global batch b of 2 x 4 == batch b of 1 x 8
        assert sorted(ranks[0][b] + ranks[1][b]) == sorted(one[b])
    assert not set(sum(ranks[0], [])) & set(sum(ranks[1], []))


def test_a_resumed_epoch_continues_after_the_trained_batches():
    ds = TensorDataset(torch.arange(40))
    straight = StreamPosition()
    straight.start_epoch()  # epoch 0 (no trainer: each pass is a new epoch)
    epoch1 = list(ResumableSampler(ds, 8, straight, seed=2))
    resumed = StreamPosition()
    resumed.load_state_dict({"epoch": 1, "batches_done": 3})
    sampler = ResumableSampler(ds, 8, resumed, seed=2)
    assert list(sampler) == epoch1[24:]  # pairs (index, augmentation seed) both equal
    assert len(sampler) == 40  # Lightning counts the epoch's batches from the whole length
    assert list(sampler) == list(ResumableSampler(ds, 8, _at_epoch(2), seed=2))  # then epoch 2


def _at_epoch(epoch):
    position = StreamPosition()
    position.load_state_dict({"epoch": epoch, "batches_done": 0})
    return position


def test_augmentation_does_not_depend_on_workers_or_the_global_rng(tmp_path, monkeypatch):
    write_cifar10(tmp_path, n_per_batch=8).register(monkeypatch)
    cfg = {"name": "cifar10", "data_dir": str(tmp_path), "download": False, "batch_size": 8}
    cfg["augment"] = {"crop_padding": 4, "hflip": True}

    def first_epoch(workers):
        dm = ImageDataModule({**cfg, "num_workers": workers}, seed=1)
        return torch.cat([x for x, _ in dm.train_dataloader()])

    torch.manual_seed(0)
    before = torch.get_rng_state()
    inline = first_epoch(0)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is left as it was
    torch.manual_seed(123)  # another global state: same images
    assert torch.equal(first_epoch(2), inline)
    plain = ImageDataModule(cfg, seed=1).splits.train
    assert not all(  # the crops and flips did happen
        torch.equal(inline[k], plain[k][0]) for k in range(len(inline))
    )
