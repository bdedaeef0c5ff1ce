"""``dim-export``: write the encoder alone (weights + the config to rebuild it) to a file.

The file is an ``encoder.pt`` in the ``dim-encoder/1`` format
(:func:`dim.run.checkpoints.save_encoder`) that loads with ``dim.load_encoder(path)`` or
``torch.load(path, weights_only=True)``. It also stores the training run's data config
(``extra.data``), so ``dim-eval`` / ``dim-embed`` can rebuild the dataset from the exported file
alone. The command writes nothing else (no run dir).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from dim.cli.common import (
    check_out,
    interruptible,
    launch,
    run_dir,
    user_errors,
)
from dim.cli.outputs import RunDirUse, remove_unused
from dim.errors import DimError


def export(cfg: DictConfig) -> Path:
    """Run ``dim-export`` on a composed config; returns the written file."""
    for key in ("run", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise DimError(f"missing {key}=...; usage: dim-export run=<run_dir> out=encoder.pt")
    out = check_out(cfg.out, bool(cfg.overwrite))
    from dim.eval.source import load_source
    from dim.run.checkpoints import save_encoder  # heavy imports once the command line is good

    source = load_source(cfg.run)
    if out.exists() and out.resolve() == source.path.resolve():
        raise DimError(f"out={cfg.out} is the file being exported; choose another path")
    extra: dict[str, Any] = {
        "source": str(source.path.resolve()),
        "exported": datetime.now().isoformat(timespec="seconds"),
    }
    if source.run_data is not None:
        extra["data"] = source.run_data
    save_encoder(source.encoder, out, extra)
    print(f"wrote {out}: encoder {source.config} from {source.path}")
    return out


@hydra.main(version_base="1.3", config_path="pkg://dim.configs", config_name="export")
@user_errors
@interruptible("dim-export")
def _task(cfg: DictConfig) -> None:
    try:
        export(cfg)
    finally:
        remove_unused(run_dir())


def main() -> None:
    """Console script ``dim-export``."""
    launch(_task, "dim.configs", "export", use=RunDirUse("dim-export", writes=False))


if __name__ == "__main__":
    main()
