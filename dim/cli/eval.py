"""``dim-eval``: evaluate a trained encoder (config ``configs/eval.yaml``, protocols ``eval/``).

Before Hydra composes the config, the command line is made Hydra-friendly:

- ``eval=linear,knn`` (a plain comma list, which Hydra would read as a sweep) becomes the group
  list ``eval=[linear,knn]``; ``eval=all`` selects every protocol; unknown names are refused;
- ``data.key=value`` becomes ``++data.key=value``, so a key of the *run's* data config (which is
  not part of this config tree) can be patched without choosing a whole ``data=<name>`` group;
- a ``hydra.run.dir`` that already holds a run (an ``eval.json``, a training run) is refused, in
  any spelling (:mod:`dim.cli.outputs`): nothing is overwritten.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from dim.cli.common import (
    data_choice,
    interruptible,
    launch,
    patch_data_keys,
    run_dir,
    user_errors,
)
from dim.cli.outputs import RunDirUse
from dim.errors import DimError
from dim.eval.registry import PROTOCOLS

PROTOCOL_NAMES = tuple(PROTOCOLS)


def _split_names(value: str) -> list[str]:
    return [n.strip() for n in value.strip().strip("[]").split(",") if n.strip()]


def prepare_argv(argv: list[str]) -> list[str]:
    """Rewrite ``eval=`` lists and ``data.`` patches."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key == "eval":
            names = _split_names(value)
            if names == ["all"]:
                names = list(PROTOCOL_NAMES)
            bad = [n for n in names if n not in PROTOCOL_NAMES]
            if bad or not names:
                raise DimError(
                    f"unknown eval '{bad[0] if bad else value}'; choose among "
                    f"{', '.join(PROTOCOL_NAMES)} (several: eval=linear,knn; every one: eval=all)"
                )
            arg = f"eval=[{','.join(dict.fromkeys(names))}]"
        elif sep and key.startswith("data."):
            arg = patch_data_keys(arg)
        out.append(arg)
    return out


@hydra.main(version_base="1.3", config_path="pkg://dim.configs", config_name="eval")
@user_errors
@interruptible("dim-eval")
def _task(cfg: DictConfig) -> None:
    from dim.eval.runner import evaluate

    if OmegaConf.is_missing(cfg, "run"):
        raise DimError("no encoder given: pass run=<run_dir, .ckpt or encoder.pt>")
    out = run_dir()
    if (out / "eval.json").exists():
        raise DimError(f"{out} already holds an eval.json (nothing was overwritten)")
    group, patches = data_choice(cfg)
    settings = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in cfg.items()
        if k not in ("eval", "data", "paths")
    }
    protocols = OmegaConf.to_container(cfg.eval, resolve=True) or {}
    evaluate(settings, protocols, out, group, patches)  # type: ignore[arg-type]


def main() -> None:
    """Console script ``dim-eval``."""
    launch(_task, "dim.configs", "eval", prepare_argv, RunDirUse("dim-eval"))


if __name__ == "__main__":
    main()
