"""dim-embed: arrays, dtypes and shapes; the random-encoder baseline; projector; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_cli
from torch.utils.data import TensorDataset

from dim.eval.features import extract_features
from dim.nets.encoders import build_encoder

pytest_plugins = ["eval_helpers"]


def test_embed_arrays_names_dtypes_shapes_and_projector(digits_run, tmp_path):
    out, proj = tmp_path / "test.npz", tmp_path / "proj"
    proc = run_cli(
        "dim-embed", f"run={digits_run}", "split=test", f"out={out}", f"projector={proj}",
        "projector_size=50", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        arrays = dict(f)
    assert set(arrays) == {"conv", "fc", "y", "labels"}
    n = 297  # the digits validation split
    assert arrays["conv"].shape == (n, 256, 4, 4) and arrays["conv"].dtype == np.float32
    assert arrays["fc"].shape == (n, 1024) and arrays["fc"].dtype == np.float32
    assert arrays["y"].shape == (n, 64) and arrays["y"].dtype == np.float32
    assert arrays["labels"].shape == (n,) and arrays["labels"].dtype == np.int64
    assert set(arrays["labels"].tolist()) == set(range(10))
    assert (proj / "projector_config.pbtxt").is_file()
    assert len(next(proj.rglob("metadata.tsv")).read_text().splitlines()) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj", "test.npz"]  # nothing else

    # init=random: same architecture, fresh weights -> same shapes, other features.
    rnd = tmp_path / "random.npz"
    proc = run_cli(
        "dim-embed", f"run={digits_run}", "split=train", "init=random", "limit=100",
        f"out={rnd}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(rnd) as f:
        assert f["y"].shape == (100, 64) and f["conv"].shape == (100, 256, 4, 4)
        assert not np.allclose(f["y"][:10], arrays["y"][:10])


def test_unlabelled_images_get_label_minus_one():
    encoder = build_encoder("basic32", in_channels=1, image_size=32)
    data = TensorDataset(torch.randn(5, 1, 32, 32), torch.full((5,), -1))
    feats = extract_features(encoder, data, batch_size=2)
    assert feats.labels.dtype == torch.int64 and feats.labels.tolist() == [-1] * 5
    assert len(feats.labelled()) == 0 and feats.flat("conv").shape == (5, 256 * 4 * 4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["split=validation", "out={tmp}/a.npz"], "split must be train or test"),
        (["out={tmp}/exists.npz"], "exists; pass overwrite=true"),
        (["out={tmp}/a.txt"], "must end in .npz"),
        (["out={tmp}/a.npz", "init=pretrained"], "init must be one of"),
    ],
)
def test_bad_input_one_line_error_nothing_written(tmp_path, args, message, one_line_error):
    (tmp_path / "exists.npz").write_bytes(b"keep")
    args = [a.format(tmp=tmp_path) for a in args]
    proc = run_cli("dim-embed", f"run={tmp_path}", *args, cwd=tmp_path)  # checked before loading
    assert message in one_line_error(proc) and proc.returncode == 2
    assert [p.name for p in tmp_path.iterdir()] == ["exists.npz"]
    assert (tmp_path / "exists.npz").read_bytes() == b"keep"
