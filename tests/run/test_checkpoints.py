"""dim-export and dim.load_encoder on run dirs, checkpoints and encoder files."""

from __future__ import annotations

import pytest
import torch
from conftest import run_cli

import dim
from dim.eval.source import load_source

pytest_plugins = ["eval_helpers"]


@pytest.fixture
def run(tiny_run):
    """The shared tiny synthetic run (3-channel 32x32 images): any trained run does here, and
    the quickstart's digits run (about 25 s of CPU) was built a second time whenever these tests
    ran on another pytest-xdist worker than tests/eval."""
    return tiny_run[0]


def test_export_then_load_encoder_from_every_kind_of_path(run, tmp_path):
    out = tmp_path / "exported.pt"
    proc = run_cli("dim-export", f"run={run}", f"out={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["exported.pt"]  # no run dir litter
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ys = []
    for path in (run, run / "checkpoints/last.ckpt", run / "encoder.pt", out):
        encoder = dim.load_encoder(path)
        assert not encoder.training
        with torch.no_grad():
            ys.append(encoder(x)["y"])
    assert all(torch.allclose(ys[0], y, atol=1e-6) for y in ys[1:])
    payload = torch.load(out, weights_only=True)  # no arbitrary unpickling needed
    assert payload["config"] == {"name": "basic32", "in_channels": 3, "image_size": 32, "y_dim": 64}
    # The exported file carries the run's data config: eval / embed need no data=<name>.
    assert load_source(out).run_data["name"] == "synthetic"


def test_existing_out_is_not_overwritten(run, tmp_path, one_line_error):
    out = tmp_path / "enc.pt"
    out.write_bytes(b"keep")
    proc = run_cli("dim-export", f"run={run}", f"out={out}", cwd=tmp_path)
    assert "exists; pass overwrite=true" in one_line_error(proc)
    assert out.read_bytes() == b"keep" and [p.name for p in tmp_path.iterdir()] == ["enc.pt"]
    proc = run_cli("dim-export", f"run={tmp_path}/nothing", f"out={tmp_path}/x.pt", cwd=tmp_path)
    assert "no such file or directory" in one_line_error(proc)
    assert [p.name for p in tmp_path.iterdir()] == ["enc.pt"]
