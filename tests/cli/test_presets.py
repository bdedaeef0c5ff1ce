"""The presets (`experiment=dim_<dataset>`, `quickstart`) and the paper-row names.

A paper row is a dataset preset plus `objective=` / `bound=` (`objective.gamma=0.0`: no prior);
the older names `dim_<row>_<dataset>[_noprior]` are rewritten into that on the command line
(dim/cli/presets.py).  Every name is composed and checked against the row it names; one training
step runs per distinct encoder / image size (basic32 at 32 px, alex64 at 64 px) on generated
files in the dataset's real format.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import compose_train, run_cli
from dataset_fixtures import write_cifar10, write_cifar100, write_fashion_mnist, write_stl10
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from dim.cli.presets import presets, rewrite_argv
from dim.data.images import ImageDataModule
from dim.errors import DimError
from dim.methods import build_method
from dim.methods.amdim import AMDIMModule
from dim.methods.dim import DIMModule

DOC = Path(__file__).resolve().parents[2] / "docs" / "paper_presets.md"
DATASETS = {  # dataset -> (encoder, image size, epochs)
    "cifar10": ("basic32", 32, 1000),
    "cifar100": ("basic32", 32, 1000),
    "stl10": ("alex64", 64, 200),
    "tiny_imagenet": ("alex64", 64, 200),
}
ROWS = {  # paper row -> (bound, (alpha, beta, gamma)) as the paper defines the objectives
    "local_nce": ("infonce", (0.0, 1.0, 0.1)),
    "local_jsd": ("jsd", (0.0, 1.0, 0.1)),
    "local_dv": ("dv", (0.0, 1.0, 0.1)),
    "global": ("jsd", (1.0, 0.0, 1.0)),
    "local_global": ("jsd", (0.5, 0.1, 0.1)),
}
OLD_NAMES = [f"dim_{r}_{d}{s}" for r in ROWS for d in DATASETS for s in ("", "_noprior")]


AMDIM_DATASETS = ("cifar10", "cifar100", "stl10")


def test_one_preset_per_dataset_plus_quickstart():
    dim = [f"dim_{d}" for d in DATASETS] + ["quickstart", "quickstart_prior"]
    amdim = [f"amdim_{d}" for d in AMDIM_DATASETS] + ["amdim_quickstart"]
    fashion = ["dim_fashion_mnist", "amdim_fashion_mnist"]
    assert presets() == sorted(dim + amdim + fashion)


def test_quickstart_is_offline_and_small():
    cfg = compose_train(["experiment=quickstart"])
    assert cfg.task_name == "quickstart" and cfg.data.name == "digits"
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.max_epochs == 10
    assert (cfg.objective.gamma, cfg.model.d_steps, cfg.model.gp_weight) == (0.1, 1, 1.0)
    prior = compose_train(["experiment=quickstart_prior"])  # the prior game that matches
    assert prior.data.name == "digits" and prior.trainer.max_epochs == 30
    assert (prior.objective.gamma, prior.model.d_steps, prior.model.gp_weight) == (1.0, 5, 0.3)


def _documented() -> dict[str, list[str]]:
    """older name -> the `dim-train` arguments, from the table of docs/paper_presets.md."""
    rows = re.findall(r"^\|[^|]+\|[^|]+\| `([^`]+)` \| `([^`]+)` \|", DOC.read_text(), re.M)
    return {old: args.split() for args, old in rows}


def test_every_paper_row_name_composes_to_its_row():
    documented = _documented()
    assert sorted(documented) == sorted(OLD_NAMES)  # 5 rows x 4 datasets x with/without prior
    with initialize_config_module("dim.configs", version_base="1.3"):
        configs = {
            n: compose("train", overrides=rewrite_argv([f"experiment={n}"])) for n in OLD_NAMES
        }
    for name, cfg in configs.items():
        assert rewrite_argv([f"experiment={name}"]) == [*documented[name], f"task_name={name}"]
        OmegaConf.to_container(cfg, resolve=True)
        row, dataset = next(
            (r, d)
            for r in ROWS
            for d in DATASETS
            if name.removesuffix("_noprior") == f"dim_{r}_{d}"
        )
        bound, (alpha, beta, gamma) = ROWS[row]
        encoder, size, epochs = DATASETS[dataset]
        assert cfg.task_name == name and cfg.data.name == dataset, name
        assert (cfg.model.encoder, cfg.data.image_size) == (encoder, size), name
        assert cfg.bound.name == bound, name
        gamma = 0.0 if name.endswith("_noprior") else gamma
        assert (cfg.objective.alpha, cfg.objective.beta, cfg.objective.gamma) == (
            alpha,
            beta,
            gamma,
        ), name
        assert (cfg.optim.lr, cfg.data.batch_size, cfg.model.mi_units) == (1e-4, 64, 2048), name
        assert cfg.trainer.max_epochs == epochs, name


def test_the_command_line_wins_over_a_paper_row_name():
    argv = rewrite_argv(["experiment=dim_local_jsd_cifar10_noprior", "bound=dv", "task_name=x"])
    assert argv == [
        "experiment=dim_cifar10",
        "objective=local",
        "objective.gamma=0.0",
        "bound=dv",
        "task_name=x",
    ]
    assert rewrite_argv(["experiment=dim_stl10", "seed=1"]) == ["experiment=dim_stl10", "seed=1"]
    with pytest.raises(DimError, match="sweep"):
        rewrite_argv(["-m", "experiment=dim_local_jsd_cifar10,dim_global_cifar10"])


def test_unknown_paper_row_is_one_line_with_the_pattern(tmp_path):
    proc = run_cli("dim-train", "experiment=dim_local_xxx_cifar10", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("error: unknown experiment 'dim_local_xxx_cifar10'")
    assert "dim_{local_nce|local_jsd|local_dv|global|local_global}_{cifar10|" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_paper_row_name_runs_through_dim_train(tmp_path):
    proc = run_cli("dim-train", "experiment=dim_global_stl10_noprior", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.task_name == "dim_global_stl10_noprior" and cfg.model.encoder == "alex64"
    assert cfg.bound.name == "jsd" and cfg.objective.alpha == 1.0 and cfg.objective.gamma == 0.0


@pytest.mark.parametrize(  # one per encoder / image size; with and without the prior
    "argv",
    [
        ["experiment=dim_local_nce_cifar10"],
        ["experiment=dim_local_jsd_stl10_noprior"],
    ],
)
def test_one_training_step_per_encoder_on_generated_data(argv, monkeypatch, tmp_path):
    argv = rewrite_argv(argv)
    if "dim_cifar10" in argv[0]:
        root = write_cifar10(tmp_path, n_per_batch=2).register(monkeypatch)
    else:
        root = write_stl10(tmp_path, n_train=2, n_unlabeled=4, n_test=4).register(monkeypatch)
    cfg = compose_train(
        [
            *argv,
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


def test_amdim_presets_carry_the_papers_settings():
    for dataset in AMDIM_DATASETS:
        cfg = compose_train([f"experiment=amdim_{dataset}"])
        assert cfg.method.name == "amdim" and cfg.data.name == dataset
        assert (cfg.model.encoder, cfg.model.ndf, cfg.model.n_rkhs, cfg.model.n_depth) == (
            "amdim",
            128,
            1024,
            3,
        )
        assert cfg.model.y_dim == 1024 and (cfg.model.tclip, cfg.model.score_reg) == (20.0, 0.05)
        assert (cfg.optim.lr, list(cfg.optim.betas), cfg.optim.weight_decay) == (
            2e-4,
            [0.8, 0.999],
            1e-5,
        )
        assert cfg.optim.warmup_steps == 500 and cfg.data.batch_size == 200
        assert (cfg.optim.scheduler, list(cfg.optim.milestones), cfg.optim.lr_decay) == (
            "step",
            [250, 280],
            0.2,
        )
        assert cfg.trainer.max_epochs == 300
        crop = "resized" if dataset == "stl10" else "translate"
        assert cfg.method.views.crop == crop and cfg.method.views.p_gray == 0.25
        assert not cfg.data.augment.get("hflip")  # the views flip, once for both
    quick = compose_train(["experiment=amdim_quickstart"])  # DIM quickstart's encoder
    assert quick.data.name == "digits" and quick.trainer.accelerator == "cpu"
    assert quick.method.name == "amdim" and quick.model.encoder == "basic32"
    assert (quick.model.tclip, quick.model.score_reg, quick.method.views.rotate) == (20, 0.05, 15)
    # method=amdim on its own, and with an existing encoder
    assert compose_train(["method=amdim"]).model.encoder == "amdim"
    assert compose_train(["method=amdim", "model=basic32"]).model.encoder == "basic32"
    assert compose_train([]).method.name == "dim"


@pytest.mark.parametrize("dataset", [*AMDIM_DATASETS, "quickstart"])
def test_every_amdim_preset_trains_one_step_on_generated_data(dataset, monkeypatch, tmp_path):
    writers = {
        "cifar10": lambda: write_cifar10(tmp_path, n_per_batch=2),
        "cifar100": lambda: write_cifar100(tmp_path, n_train=8, n_test=4),
        "stl10": lambda: write_stl10(tmp_path, n_train=2, n_unlabeled=4, n_test=4),
    }
    extra = []
    if dataset in writers:
        root = writers[dataset]().register(monkeypatch)
        extra = [f"data.data_dir={root}", "data.download=false", "data.num_workers=0",
                 "data.pin_memory=false"]  # fmt: skip
    small = ["model.ndf=4", "model.n_rkhs=8", "model.n_depth=1"] if dataset in writers else []
    cfg = compose_train([f"experiment=amdim_{dataset}", *extra, "data.batch_size=4", *small])
    c = OmegaConf.to_container(cfg, resolve=True)
    data = ImageDataModule(c["data"], views=c["method"]["views"])
    groups = {k: c[k] for k in ("model", "bound", "objective", "optim")}
    module = build_method(c["method"]["name"], **groups, data=data.info)
    assert isinstance(module, AMDIMModule)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, fast_dev_run=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 1
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"train/loss/1t5", "train/loss/1t7", "train/loss/5t5"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN


@pytest.mark.parametrize("preset", ["dim_fashion_mnist", "amdim_fashion_mnist"])
def test_fashion_mnist_presets_train_on_the_shipped_gz_files(preset, tmp_path):
    """The CPU presets as composed (bf16 where native, NHWC, data in memory) train through
    dim-train's code on gzipped IDX files; with trainer=gpu they keep their settings."""
    from dim.training import train

    write_fashion_mnist(tmp_path / "data", n_train=40, n_test=10)
    cfg = compose_train([f"experiment={preset}"])
    assert cfg.data.name == "fashion_mnist" and cfg.model.encoder == "basic32"
    assert cfg.trainer.precision == "auto" and cfg.data_on_device and cfg.model.channels_last
    assert cfg.method.name == preset.split("_")[0]
    assert cfg.method.views is not None  # both contrast two augmented views of each image
    gpu = compose_train([f"experiment={preset}", "trainer=gpu"])
    assert gpu.trainer.accelerator == "gpu" and gpu.data.name == "fashion_mnist"
    small = [
        f"experiment={preset}", f"data.data_dir={tmp_path / 'data'}", "data.download=false",
        "data.batch_size=8", "trainer.max_steps=2", "model.mi_units=16",
        "callbacks.knn.every_n_epochs=0", "callbacks.projector.num_images=0",
    ]  # fmt: skip
    metrics = train(compose_train(small), tmp_path / "run", None)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["global_step"] == 2 and (tmp_path / "run" / "encoder.pt").is_file()
    assert all(v == v for v in metrics.values() if isinstance(v, float))  # no NaN
