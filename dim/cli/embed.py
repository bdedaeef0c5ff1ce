"""``dim-embed``: write the features of a dataset split to an ``.npz`` file.

Arrays (first axis = images, in dataset order): ``conv`` (N, C, H, W), ``fc`` (N, D) and ``y``
(N, y_dim) as float32, ``labels`` (N,) as int64 with -1 for unlabelled images.  ``init=random``
embeds with a freshly initialised encoder of the same architecture (the standard baseline).
``projector=<dir>`` also writes a TensorBoard embedding projector of Y (labels + image sprites).
The command writes nothing else: no run dir (Hydra's empty one is removed).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from dim.cli.common import (
    check_out,
    data_choice,
    interruptible,
    launch,
    patch_data_keys,
    run_dir,
    user_errors,
)
from dim.cli.outputs import RunDirUse, remove_unused
from dim.errors import DimError

SPLITS = {"train": "train", "test": "test", "val": "test"}


def embed(cfg: DictConfig) -> Path:
    """Run ``dim-embed`` on a composed config; returns the written ``.npz`` path."""
    for key in ("run", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise DimError(
                f"missing {key}=...; usage: dim-embed run=<run_dir> split=test out=f.npz"
            )
    if str(cfg.init) not in ("trained", "random"):
        raise DimError(f"init must be one of trained, random, got '{cfg.init}'")
    if str(cfg.split) not in SPLITS:
        raise DimError(f"split must be train or test, got '{cfg.split}'")
    out = check_out(cfg.out, bool(cfg.overwrite), ".npz")
    projector = Path(str(cfg.projector)).expanduser() if cfg.projector else None
    if projector is not None and projector.exists() and any(projector.iterdir()):
        if not cfg.overwrite:
            raise DimError(f"projector={cfg.projector} is not empty; pass overwrite=true")
    from dim.eval.embed import write_embedding  # heavy imports once the command line is good

    group, patches = data_choice(cfg)
    write_embedding(
        run=cfg.run,
        out=out,
        split=SPLITS[str(cfg.split)],
        init=str(cfg.init),
        seed=int(cfg.seed),
        data_group=group,
        data_patches=patches,
        device=str(cfg.device),
        batch_size=int(cfg.batch_size),
        limit=cfg.limit,
        num_threads=cfg.num_threads,
        projector=projector,
        projector_size=int(cfg.projector_size),
    )
    return out


@hydra.main(version_base="1.3", config_path="pkg://dim.configs", config_name="embed")
@user_errors
@interruptible("dim-embed")
def _task(cfg: DictConfig) -> None:
    try:
        embed(cfg)
    finally:
        remove_unused(run_dir())


def main() -> None:
    """Console script ``dim-embed``."""
    launch(_task, "dim.configs", "embed", _patch_data_keys, RunDirUse("dim-embed", writes=False))


def _patch_data_keys(argv: list[str]) -> list[str]:
    return [patch_data_keys(a) for a in argv]


if __name__ == "__main__":
    main()
