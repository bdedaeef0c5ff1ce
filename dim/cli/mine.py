"""``dim-mine``: estimate I(X;Y) between two paired arrays (config: ``configs/mine/mine.yaml``).

Writes ``mi.json`` and TensorBoard event files (train and held-out estimate curves, the true MI
for synthetic tasks) into the run directory, and prints the estimate on the last line:
``I(X;Y) ≈ 1.234 nats (1.780 bits), 95% CI [1.190, 1.278] nats``, with one ``warning:`` line
on stderr per failure signature found (also in ``mi.json``).  Bad input stops with a one-line
error, exit code 2 and no run directory left behind.  The work itself is :mod:`dim.mine.run`.
"""

from __future__ import annotations

import re
from typing import Any

import hydra
from omegaconf import DictConfig

from dim.cli.common import interruptible, launch, run_dir, user_errors
from dim.cli.outputs import RunDirUse
from dim.errors import DimError
from dim.mine.run import CONFIG_MODULE, register_bound_configs, summary

# `critic=separable`, `critic.type=...`, `critic.hidden=...`: the critic settings moved to `model`.
_OLD_CRITIC = re.compile(r"^[+~]?critic(?:[./](?P<key>[^=]+))?(?:=(?P<value>.*))?$")


def prepare_argv(argv: list[str]) -> list[str]:
    """Reject the old ``critic`` spelling with the new one (``model.critic=...``, ``model.*``)."""
    for arg in argv:
        m = _OLD_CRITIC.match(arg)
        if m:
            key = m["key"]
            new = "model.critic" if key in (None, "type") else f"model.{key}"
            value = "" if m["value"] is None else f"={m['value']}"
            raise DimError(
                f"'{arg}' is the old spelling; the critic is set under model: {new}{value}"
            )
    return argv


def run(cfg: DictConfig) -> dict[str, Any]:
    """Load the data, estimate, write ``mi.json`` and TensorBoard files; return the record."""
    from dim.mine.run import run as run_estimate

    record, result = run_estimate(cfg, run_dir())
    print(summary(result))
    print(result, flush=True)
    return record


@hydra.main(version_base="1.3", config_path="pkg://dim.configs.mine", config_name="mine")
@user_errors
@interruptible("dim-mine")
def _task(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """Console script ``dim-mine``."""
    register_bound_configs()  # here, not at import: Hydra's ConfigStore is process-wide
    launch(_task, CONFIG_MODULE, "mine", prepare_argv, RunDirUse("dim-mine"))


if __name__ == "__main__":
    main()
