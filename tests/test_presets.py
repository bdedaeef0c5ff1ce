"""The paper presets (`experiment=dim_*`): every one composes to the paper's setup, and runs.

Time budget: composing is cheap, a step of the alex64 encoder (two 4096-wide fc layers, ~60M
parameters with the global critic) is not.  So every preset is composed and checked against the
paper, and one training step (on generated files in the dataset's real format) runs for each
distinct (dataset, encoder, objective) combination: the bound, the prior on/off and the targets do
not change what is built from the data.  Those steps use a tiny batch, small critics
(``model.mi_units=16``) and no checkpointing, and alternate between presets with and without the
prior so that both code paths run.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import compose_train
from dataset_fixtures import write_cifar10, write_cifar100, write_stl10, write_tiny_imagenet
from omegaconf import OmegaConf

from dim.data.images import ImageDataModule
from dim.modules.dim import DIMModule

EXPERIMENTS = Path(str(importlib.resources.files("dim.configs"))) / "experiment"
PRESETS = sorted(p.stem for p in EXPERIMENTS.glob("dim_*.yaml"))

DATASETS = {  # name -> (encoder, epochs)
    "cifar10": ("basic32", 1000),
    "cifar100": ("basic32", 1000),
    "tiny_imagenet": ("alex64", 200),
    "stl10": ("alex64", 200),
}
ROWS = {  # preset stem -> (objective, bound, (alpha, beta, gamma))
    "dim_global": ("global", "jsd", (1.0, 0.0, 1.0)),
    "dim_local_jsd": ("local", "jsd", (0.0, 1.0, 0.1)),
    "dim_local_nce": ("local", "infonce", (0.0, 1.0, 0.1)),
    "dim_local_dv": ("local", "dv", (0.0, 1.0, 0.1)),
    "dim_local_global": ("local_global", "jsd", (0.5, 0.1, 0.1)),
}
# REFERENCE.md section 6: non-linear classifier top-1 % on conv / fc / Y.
PAPER = {
    "dim_global_cifar10": (52.2, 52.84, 43.17),
    "dim_local_jsd_cifar10": (73.25, 73.62, 66.96),
    "dim_local_nce_cifar10": (75.21, 75.57, 69.13),
    "dim_global_cifar100": (27.68, 24.35, 19.98),
    "dim_local_jsd_cifar100": (48.13, 45.92, 39.60),
    "dim_local_nce_cifar100": (49.74, 47.72, 41.61),
    "dim_local_nce_tiny_imagenet": (34.21, 38.09, 33.33),
    "dim_local_jsd_tiny_imagenet": (33.54, 36.88, 31.66),
    "dim_local_jsd_stl10": (72.86, 70.85, 65.93),
    "dim_local_nce_stl10": (72.57, 70.00, 67.08),
}
NAME = re.compile(r"^(dim_[a-z_]+?)_(cifar10|cifar100|tiny_imagenet|stl10)(_noprior)?$")


def _parse(name: str) -> tuple[str, str, bool]:
    m = NAME.match(name)
    assert m and m.group(1) in ROWS, f"{name} does not follow dim_<row>_<dataset>[_noprior]"
    return m.group(1), m.group(2), bool(m.group(3))


def test_one_preset_per_paper_row_dataset_and_prior():
    expected = {
        f"{row}_{ds}{suffix}" for row in ROWS for ds in DATASETS for suffix in ("", "_noprior")
    }
    assert set(PRESETS) == expected  # 5 rows x 4 datasets x with/without prior = 40


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_to_the_paper_setup(name):
    row, dataset, noprior = _parse(name)
    cfg = compose_train([f"experiment={name}"])
    OmegaConf.to_container(cfg, resolve=True)
    encoder, epochs = DATASETS[dataset]
    objective, bound, (alpha, beta, gamma) = ROWS[row]
    assert cfg.task_name == name and cfg.data.name == dataset and cfg.model.encoder == encoder
    assert cfg.bound.name == bound
    assert (cfg.objective.alpha, cfg.objective.beta) == (alpha, beta)
    assert cfg.objective.gamma == (0.0 if noprior else gamma)
    assert cfg.optim.lr == 1e-4 and cfg.data.batch_size == 64 and cfg.model.mi_units == 2048
    assert cfg.trainer.max_epochs == epochs
    assert cfg.paper.eval == "nonlinear"
    # the header comment and paper.target state the number it targets (REFERENCE.md section 6)
    header = (EXPERIMENTS / f"{name}.yaml").read_text().split("defaults:")[0]
    target = None if noprior else PAPER.get(name)
    if target is None:
        assert cfg.paper.target is None and "Paper target: none" in header
    else:
        assert tuple(cfg.paper.target.values()) == target
        numbers = "conv {:.2f} / fc {:.2f} / Y {:.2f}".format(*target)
        assert numbers in re.sub(r"\s*\n#\s*", " ", header), header
    assert f"dim-train experiment={name}" in header and "dim-eval run=" in header


@pytest.fixture(scope="module")
def generated_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_data")
    return {
        "cifar10": write_cifar10(root, n_per_batch=2),
        "cifar100": write_cifar100(root, n_train=8, n_test=4),
        "stl10": write_stl10(root, n_train=2, n_unlabeled=4, n_test=4),
        "tiny_imagenet": write_tiny_imagenet(root, n_classes=3, n_train=2, n_val=1, n_test=1),
    }


@pytest.mark.parametrize("name", PRESETS)  # every preset, one real step (~3 s each)
def test_preset_trains_one_step_on_generated_data(name, generated_data, monkeypatch, tmp_path):
    _, dataset, _ = _parse(name)
    root = generated_data[dataset].register(monkeypatch)
    cfg = compose_train(
        [
            f"experiment={name}",
            f"data.data_dir={root}",
            "data.download=false",
            "data.batch_size=4",
            "data.num_workers=0",
            "data.pin_memory=false",
            "model.mi_units=16",
            "model.prior_hidden=[16,8]",
        ]
    )
    c = OmegaConf.to_container(cfg, resolve=True)
    data = ImageDataModule(c["data"])
    module = DIMModule(c["model"], c["bound"], c["objective"], c["optim"], data.info)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        fast_dev_run=1,  # one training step and one validation step, nothing written
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 1
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics and all(v == v for v in metrics.values())  # no NaN
