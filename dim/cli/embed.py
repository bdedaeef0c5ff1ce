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

from dim.cli.common import launch, run_dir, user_errors
from dim.cli.eval import data_choice, patch_data_keys
from dim.errors import DimError

SPLITS = {"train": "train", "test": "test", "val": "test"}


def remove_empty_dirs(path: Path, levels: int = 3) -> None:
    """Remove ``path`` and then its parents while they are empty (``levels`` at most)."""
    for _ in range(levels):
        try:
            path.rmdir()  # only ever removes an empty directory
        except OSError:
            return
        path = path.parent


def check_out(value: object, overwrite: bool, suffix: str | None = None) -> Path:
    """Validate the ``out`` path: given, right suffix, not an existing file unless overwrite."""
    if value in (None, "", "???"):
        raise DimError("no output file given: pass out=<file>")
    out = Path(str(value)).expanduser()
    if suffix and out.suffix != suffix:
        raise DimError(f"out={value} must end in {suffix}")
    if out.is_dir():
        raise DimError(f"out={value} is a directory; give a file name")
    if out.exists() and not overwrite:
        raise DimError(f"out={value} exists; pass overwrite=true to replace it (nothing written)")
    return out


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
    import numpy as np  # heavy imports only once the command line is known to be good
    import torch

    from dim.eval.features import extract_features, resolve_device
    from dim.eval.source import build_eval_splits, data_config, load_source

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    source = load_source(cfg.run, str(cfg.init), int(cfg.seed))
    group, patches = data_choice(cfg)
    data = data_config(source.run_data, group, patches)
    splits = build_eval_splits(data, source.config)
    dataset = splits.eval_train if SPLITS[str(cfg.split)] == "train" else splits.val
    device = resolve_device(str(cfg.device))
    feats = extract_features(source.encoder, dataset, int(cfg.batch_size), device, cfg.limit)
    arrays = {
        "conv": feats.conv.numpy().astype(np.float32),
        "fc": feats.fc.numpy().astype(np.float32),
        "y": feats.y.numpy().astype(np.float32),
        "labels": feats.labels.numpy().astype(np.int64),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(out)
    print(
        f"wrote {out}: " + ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in arrays.items())
    )
    if projector is not None:
        from torch.utils.tensorboard import SummaryWriter

        from dim.eval.projector import projector_from_dataset

        with SummaryWriter(str(projector)) as writer:
            n = projector_from_dataset(
                writer, source.encoder, dataset, int(cfg.projector_size), device
            )
        print(f"projector of {n} points: tensorboard --logdir {projector}")
    return out


@hydra.main(version_base="1.3", config_path="pkg://dim.configs", config_name="embed")
@user_errors
def _task(cfg: DictConfig) -> None:
    try:
        embed(cfg)
    finally:
        remove_empty_dirs(run_dir())


def main() -> None:
    """Console script ``dim-embed``."""
    launch(_task, "dim.configs", "embed", lambda argv: [patch_data_keys(a) for a in argv])


if __name__ == "__main__":
    main()
