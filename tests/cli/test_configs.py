"""Config composition: every group option composes, struct mode, installed-package configs."""

import importlib.resources
import re
from pathlib import Path

import pytest
from conftest import compose_train, run_cli
from omegaconf import OmegaConf

from dim.errors import DimError
from dim.methods import build_method
from dim.methods.dim import DIMModule

CONFIGS = Path(str(importlib.resources.files("dim.configs")))
GROUPS = [
    "data", "model", "bound", "objective", "optim", "trainer", "logger", "callbacks", "method"
]  # fmt: skip


def _options(group):
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def test_design_contract_options_exist():
    assert {"cifar10", "digits", "synthetic"} <= set(_options("data"))
    assert {"basic32", "basic64", "alex64", "resnet"} <= set(_options("model"))
    assert {"jsd", "infonce", "dv", "nwj", "smile"} <= set(_options("bound"))
    assert {"local", "global", "local_global"} <= set(_options("objective"))
    assert {"cpu", "gpu", "ddp", "ddp_cpu", "multinode"} <= set(_options("trainer"))
    assert {"tensorboard", "csv"} <= set(_options("logger"))
    assert "quickstart" in _options("experiment")
    assert {"dim", "amdim"} <= set(_options("method"))


@pytest.mark.parametrize("group", GROUPS + ["experiment"])
def test_every_option_composes_and_resolves(group):
    for option in _options(group):
        cfg = compose_train([f"{group}={option}"])
        OmegaConf.to_container(cfg, resolve=True)
        assert OmegaConf.is_struct(cfg)


@pytest.mark.parametrize("bound", _options("bound"))
@pytest.mark.parametrize("objective", _options("objective"))
def test_every_bound_and_objective_builds_a_module(bound, objective):
    """Each objective with its method (objective=amdim is AMDIM's, the others DIM's); an
    objective of the other method is refused in one line."""
    method = "amdim" if objective == "amdim" else "dim"
    small = ["model.mi_units=16", "model.ndf=4", "model.n_rkhs=8", "model.n_depth=1"]
    overrides = [f"method={method}", f"bound={bound}", f"objective={objective}"]
    cfg = compose_train([*overrides, *(small if method == "amdim" else small[:1])])
    c = OmegaConf.to_container(cfg, resolve=True)
    groups = {k: c[k] for k in ("model", "bound", "objective", "optim")}
    data = dict(channels=3, image_size=32, num_classes=10)
    m = build_method(method, **groups, data=data)
    if method == "dim":
        assert (m.beta > 0) == hasattr(m, "local_critic")
        assert (m.alpha > 0) == hasattr(m, "global_critic")
    else:
        assert set(m.weights) == {"1t5", "1t7", "5t5"}
    other = "dim" if method == "amdim" else "amdim"
    with pytest.raises(DimError, match="belongs to"):
        build_method(other, **groups, data=data)


@pytest.mark.parametrize("name", ["train", "eval", "embed", "export"])
def test_run_dirs_are_output_dir_task_name_time(name):
    from hydra import compose, initialize_config_module

    with initialize_config_module("dim.configs", version_base="1.3"):
        cfg = compose(name, overrides=["paths.output_dir=/o"], return_hydra_config=True)
    stamp = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"
    assert re.fullmatch(rf"/o/{cfg.task_name}/{stamp}", cfg.hydra.run.dir)
    assert re.fullmatch(rf"/o/multirun/{cfg.task_name}/{stamp}", cfg.hydra.sweep.dir)
    assert cfg.hydra.output_subdir == (".hydra" if name in ("train", "eval") else None)


def test_train_help_lists_only_the_training_groups():
    proc = run_cli("dim-train", "--help")
    assert proc.returncode == 0, proc.stderr
    groups = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    names = [line.split(":")[0] for line in groups.splitlines() if ": " in line]
    assert names == sorted(GROUPS + ["experiment", "paths"]), groups
    assert (
        "experiment: amdim_cifar10, amdim_cifar100, amdim_fashion_mnist, amdim_quickstart, "
        "amdim_stl10, dim_cifar10, dim_cifar100, dim_fashion_mnist, dim_stl10, dim_tiny_imagenet, "
        "quickstart" in groups
    )
    assert "method: amdim, dim" in groups


@pytest.mark.parametrize(
    "cmd, expected",
    [
        ("dim-eval", ["data", "eval", "paths"]),
        ("dim-embed", ["data", "paths"]),
        ("dim-export", ["paths"]),
    ],
)
def test_help_of_the_other_commands_lists_only_their_groups(cmd, expected):
    proc = run_cli(cmd, "--help")
    assert proc.returncode == 0, proc.stderr
    groups = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert [line.split(":")[0] for line in groups.splitlines() if ": " in line] == expected
    assert proc.stdout.startswith(cmd)


def test_misspelt_key_is_one_line_with_a_suggestion():
    proc = run_cli("dim-train", "data=digits", "data.batch_sise=4", "--cfg", "job")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("error: unknown config key 'data.batch_sise'")
    assert "did you mean data.batch_size?" in proc.stderr


def test_unknown_group_option_lists_choices():
    proc = run_cli("dim-train", "bound=infonse", "--cfg", "job")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "unknown bound 'infonse' (did you mean infonce?)" in proc.stderr
    assert "choose one of: dv, infonce, jsd, nwj, smile" in proc.stderr


@pytest.mark.parametrize(
    ("cmd", "arg", "expected"),
    [
        ("dim-train", "bound=jsd,dv", "Ambiguous value for argument 'bound=jsd,dv'"),
        ("dim-eval", "eval.k=[", "no viable alternative"),
        ("dim-mine", "bound=mnie", "unknown bound 'mnie' (did you mean mine?)"),
        ("dim-embed", "batch_sise=8", "unknown config key 'batch_sise'"),
        ("dim-export", "encoder.nam=x", "unknown config key 'encoder.nam'"),
    ],
)
def test_every_cli_reports_bad_overrides_in_one_line(cmd, arg, expected):
    proc = run_cli(cmd, arg)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("error: ") and expected in proc.stderr


def test_installed_configs_work_outside_the_checkout(tmp_path):
    proc = run_cli("dim-train", "experiment=quickstart", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert (
        cfg.data.name == "digits" and cfg.model.encoder == "basic32" and cfg.bound.name == "infonce"
    )
    assert not list(tmp_path.iterdir())  # --cfg writes nothing


def test_slurm_launcher_follows_the_trainer_settings():
    from hydra import compose, initialize_config_module

    overrides = ["trainer=multinode", "trainer.num_nodes=4", "hydra/launcher=dim_slurm"]
    with initialize_config_module("dim.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (4, 8, 8)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm


def test_multinode_settings_build_a_ddp_trainer():
    import pytorch_lightning as pl
    from pytorch_lightning.strategies import DDPStrategy

    c = OmegaConf.to_container(compose_train(["trainer=multinode"]).trainer, resolve=True)
    c["accelerator"] = "cpu"  # this machine has no GPU; everything else as configured
    c["precision"] = "bf16-mixed"
    trainer = pl.Trainer(**c, logger=False, enable_checkpointing=False)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_nodes == 2 and trainer.num_devices == 8 and trainer.world_size == 16


def test_discriminator_learns_at_the_encoders_rate_unless_set():
    """The prior's D follows optim.lr (a quickstart D at 1e-4 facing a 5e-4 encoder left sigmoid(Y)
    further from the prior than no prior term); the paper's 1e-4 for both stays the default."""
    d_lr = lambda *o: OmegaConf.to_container(compose_train(list(o)).optim, resolve=True)["d_lr"]  # noqa: E731
    assert d_lr() == 1e-4 and d_lr("experiment=quickstart") == 5e-4
    assert d_lr("experiment=quickstart", "optim.d_lr=1e-4") == 1e-4
    module = DIMModule(
        {"encoder": "basic32", "mi_units": 32, "prior_hidden": [8]}, {"name": "infonce"},
        {"alpha": 0.0, "beta": 1.0, "gamma": 1.0}, {"lr": 5e-4, "d_lr": 5e-4},
        {"channels": 3, "image_size": 32, "num_classes": None},
    )  # fmt: skip
    optimizers, _ = module.configure_optimizers()
    assert [o.param_groups[0]["lr"] for o in optimizers] == [5e-4, 5e-4]
