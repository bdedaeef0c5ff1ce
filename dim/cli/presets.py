"""What ``dim-train`` offers: its presets, the paper-row names, and its config groups.

The presets (``configs/experiment/``) are one per dataset: ``dim_cifar10``, ``dim_cifar100``,
``dim_stl10``, ``dim_tiny_imagenet`` (plus ``quickstart``).  A row of the paper's tables is a
preset plus the objective and the bound, e.g. DIM(L) JSD without the prior on CIFAR-10::

    dim-train experiment=dim_cifar10 objective=local bound=jsd objective.gamma=0.0

The paper-row names of earlier versions, ``dim_<row>_<dataset>[_noprior]``, still work:
:func:`rewrite_argv` turns ``experiment=dim_local_jsd_cifar10_noprior`` into exactly that command
(plus ``task_name=dim_local_jsd_cifar10_noprior``, so the run dir keeps the row's name).
"""

from __future__ import annotations

import importlib.resources
import re

from dim.errors import DimError

# paper row -> (objective, bound). The paper names no bound for DIM(G) and DIM(L+G): JSD.
ROWS = {
    "local_nce": ("local", "infonce"),
    "local_jsd": ("local", "jsd"),
    "local_dv": ("local", "dv"),
    "global": ("global", "jsd"),
    "local_global": ("local_global", "jsd"),
}
DATASETS = ("cifar10", "cifar100", "stl10", "tiny_imagenet")
PATTERN = f"dim_{{{'|'.join(ROWS)}}}_{{{'|'.join(DATASETS)}}}[_noprior]"
_ROW_NAME = re.compile(
    rf"dim_(?P<row>[a-z_]+?)_(?P<data>{'|'.join(sorted(DATASETS, reverse=True))})"
    r"(?P<noprior>_noprior)?"
)


def _configs():
    return importlib.resources.files("dim.configs")


def presets() -> list[str]:
    """The preset files of ``configs/experiment/``."""
    return sorted(
        p.name[:-5] for p in (_configs() / "experiment").iterdir() if p.name.endswith(".yaml")
    )


def paper_row(name: str) -> list[str] | None:
    """The overrides of a paper-row name (``None`` if ``name`` is not one)."""
    m = _ROW_NAME.fullmatch(name)
    if not m or m["row"] not in ROWS:
        return None
    objective, bound = ROWS[m["row"]]
    no_prior = ["objective.gamma=0.0"] if m["noprior"] else []
    return [
        f"experiment=dim_{m['data']}",
        f"objective={objective}",
        f"bound={bound}",
        *no_prior,
        f"task_name={name}",
    ]


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def rewrite_argv(argv: list[str]) -> list[str]:
    """Replace ``experiment=<paper-row name>`` by the preset and its overrides.

    The user's own overrides win: a key the command line sets itself (``bound=dv``,
    ``task_name=x``) is not added.  A ``dim_*`` name that is neither a preset nor a paper row is
    a :class:`DimError` naming both.
    """
    out: list[str] = []
    for arg in argv:
        if "=" not in arg or arg.startswith("-") or _key(arg) != "experiment":
            out.append(arg)
            continue
        value = arg.split("=", 1)[1]
        if not value.startswith("dim_") or value in presets():
            out.append(arg)
            continue
        if "," in value:
            raise DimError(
                f"experiment={value}: sweep the objective and bound of one preset instead, e.g. "
                "-m experiment=dim_cifar10 objective=local,global"
            )
        overrides = paper_row(value)
        if overrides is None:
            raise DimError(
                f"unknown experiment '{value}'; choose one of: {', '.join(presets())}, or a paper "
                f"row {PATTERN}"
            )
        given = {_key(a) for a in argv if a is not arg and "=" in a and not a.startswith("-")}
        out += [o for o in overrides if o.startswith("experiment=") or _key(o) not in given]
    return out
