"""The official AMDIM and DIM code, imported from clones and patched at import time to run here.

Nothing of that code is copied into this repository: each function reads the files of a clone
(a path given on the command line or in an environment variable), applies the replacements below
to their text and executes them as modules, so a traceback still points into the clone.  Every
replacement must match exactly once, or the import stops naming the file and the text, so a
clone at another commit never runs half-patched.

AMDIM (github.com/Philip-Bachman/amdim-public, tested at 8754ae1), the modules ``mixed_precision``,
``utils``, ``costs`` and ``model``:

- ``mixed_precision.py`` imports ``apex.fp16_utils.FP16_Optimizer`` only to compare types with
  it: a local stand-in class replaces the import (apex is not needed: mixed precision stays off,
  the code's default);
- ``costs.py`` builds its 5x5 source masks as ``uint8`` and ``model.py`` fills the embedding
  net's shortcut through a ``uint8`` mask: current torch takes only boolean masks there, so both
  become ``bool`` (the same selection);
- ``costs.py`` puts its positive mask on the GPU with ``torch.eye(n).cuda()``: it is made on the
  features' device instead, and its ``torch.cuda.device_count()`` (the number of copies of the
  targets it hands to ``nn.DataParallel``) becomes 1: the benchmark times one device, where the
  code takes its one-GPU path (on a CPU ``nn.DataParallel`` calls the module directly).

DIM (github.com/rdevon/DIM, tested at bac4765): ``cortex_DIM/functions/dim_losses.py`` and the
two modules it imports (``gan_losses``, ``misc``) run unpatched: the clone is put on
``sys.path`` and ``cortex_DIM.functions.dim_losses`` imported.
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from dim.errors import DimError
from dim.methods.amdim import view_nce
from dim.nets.critics import local_pos_mask
from dim.objective.bounds import Bound, get_bound, trusted_masks
from dim.objective.terms import ScoreOptions

LossFn = Callable[[Tensor, Tensor], Tensor]
AmdimFn = Callable[[Tensor, Tensor], Tensor]

#: module name -> [(text in the clone's file, replacement)]
AMDIM_PATCHES: dict[str, list[tuple[str, str]]] = {
    "mixed_precision": [
        (
            "from apex.fp16_utils import FP16_Optimizer",
            "class FP16_Optimizer:  # patched: stand-in for apex's class (only compared with)\n"
            "    pass",
        )
    ],
    "utils": [],
    "costs": [
        (".type(torch.uint8)", ".type(torch.bool)"),
        (
            "mask_mat = torch.eye(n_batch).cuda()",
            "mask_mat = torch.eye(n_batch, device=r1_x1.device)",
        ),
        ("n_gpus = torch.cuda.device_count()", "n_gpus = 1"),
    ],
    "model": [
        (
            "masked_fill_(torch.tensor(eye_mask), 1.)",
            "masked_fill_(torch.tensor(eye_mask).bool(), 1.)",
        )
    ],
}

_PREFIX = "official_amdim_"


def _exec_module(name: str, path: Path, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def load_amdim(clone: str | Path) -> tuple[types.ModuleType, types.ModuleType]:
    """``(model, costs)``: the official AMDIM modules of ``clone``, patched (module docstring).

    Loaded once per process; the modules are also registered under their own names
    (``model``, ``costs`` ...), because the official files import each other by those names.
    """
    root = Path(clone)
    if not (root / "model.py").is_file() or not (root / "costs.py").is_file():
        raise DimError(
            f"{root} is not a clone of amdim-public (no model.py / costs.py); "
            "git clone https://github.com/Philip-Bachman/amdim-public"
        )
    if _PREFIX + "model" in sys.modules:
        return sys.modules[_PREFIX + "model"], sys.modules[_PREFIX + "costs"]
    for name, patches in AMDIM_PATCHES.items():
        path = root / f"{name}.py"
        source = path.read_text()
        for old, new in patches:
            if source.count(old) != 1:
                raise DimError(
                    f"{path}: expected the text {old!r} once (found {source.count(old)}); "
                    "this clone differs from amdim-public 8754ae1, which the patches are for"
                )
            source = source.replace(old, new)
        module = _exec_module(name, path, source)
        sys.modules[_PREFIX + name] = module
    return sys.modules[_PREFIX + "model"], sys.modules[_PREFIX + "costs"]


def load_dim_losses(clone: str | Path) -> types.ModuleType:
    """``cortex_DIM.functions.dim_losses`` of a clone of rdevon/DIM, unpatched."""
    root = Path(clone)
    if not (root / "cortex_DIM" / "functions" / "dim_losses.py").is_file():
        raise DimError(
            f"{root} is not a clone of rdevon/DIM (no cortex_DIM/functions/dim_losses.py); "
            "git clone https://github.com/rdevon/DIM"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("cortex_DIM.functions.dim_losses")


# ---- the same computation on both sides -------------------------------------------------------
LOG2 = math.log(2.0)


def _our_local_loss(bound: Bound, local: Tensor, glob: Tensor) -> Tensor:
    """What :func:`dim.objective.terms.local_mi` does after its critic has encoded: every global
    vector ``glob`` (N, units, 1) scored against every location of ``local`` (N, units, L), the
    image's own locations positive, the bound's loss."""
    n, units, locations = local.shape
    scores = glob[:, :, 0] @ local.transpose(1, 2).reshape(-1, units).T  # (N, N * L)
    mask = local_pos_mask(n, n, locations, device=local.device)
    with trusted_masks():
        return bound(scores, mask).loss


def dim_loss_pairs(losses: types.ModuleType) -> dict[str, tuple[LossFn, LossFn]]:
    """name -> (official loss of ``(l, m)``, ours), equal up to float rounding:

    - ``infonce``: ``infonce_loss`` (it pushes the image's own locations to -10 instead of
      leaving them out of the negatives: a difference of log(1 + L e^-10 / sum(e^negatives)),
      below 1e-6 relative at these sizes) and :func:`infonce_bound`;
    - ``jsd``: ``fenchel_dual_loss(measure="JSD")`` (shifted by 2 log 2) and :func:`jsd_bound`;
    - ``gan``: ``fenchel_dual_loss(measure="GAN")`` (the unshifted JSD) and :func:`jsd_bound`;
    - ``kl``: ``fenchel_dual_loss(measure="KL")`` (the f-divergence bound of KL, a.k.a. NWJ) and
      :func:`nwj_bound`.

    Their ``donsker_varadhan_loss`` has no pair: it broadcasts its (N, N) mask against the
    (N, N, L, 1) scores, which fails for L > 1 (see :func:`official_dv_fails`)."""

    def ours(name: str, shift: float = 0.0) -> LossFn:
        bound = get_bound(name)
        return lambda lo, gl: _our_local_loss(bound, lo, gl) + shift

    return {
        "infonce": (losses.infonce_loss, ours("infonce")),
        "jsd": (lambda lo, gl: losses.fenchel_dual_loss(lo, gl, "JSD"), ours("jsd", -2 * LOG2)),
        "gan": (lambda lo, gl: losses.fenchel_dual_loss(lo, gl, "GAN"), ours("jsd")),
        "kl": (lambda lo, gl: losses.fenchel_dual_loss(lo, gl, "KL"), ours("nwj")),
    }


def official_dv_fails(losses: types.ModuleType, local: Tensor, glob: Tensor) -> str | None:
    """The error of the official ``donsker_varadhan_loss`` on these shapes, or None if it runs."""
    try:
        losses.donsker_varadhan_loss(local.clone(), glob)
    except RuntimeError as err:
        return str(err).splitlines()[0]
    return None


def amdim_term_pair(costs: types.ModuleType, tclip: float = 20.0) -> tuple[AmdimFn, AmdimFn]:
    """(official, ours) of one AMDIM term in one direction, each taking ``source`` (B, D) and
    ``target`` (B, D, H, W) and returning the loss with its score penalty (weight 0.05, which
    the official code fixes): ``NCE_MI_MULTI._loss_g2l`` and
    :func:`dim.methods.amdim.view_nce`."""
    nce = costs.NCE_MI_MULTI(tclip=tclip)
    opts = ScoreOptions(tclip, 0.05)

    def official(source: Tensor, target: Tensor) -> Tensor:
        n, dim = source.shape
        trg = target.permute(1, 0, 2, 3).reshape(dim, -1)  # as LossMultiNCE.forward
        loss, penalty = nce._loss_g2l(source, trg, torch.eye(n, device=source.device))
        return loss + penalty

    def ours(source: Tensor, target: Tensor) -> Tensor:
        with trusted_masks():
            return view_nce(source.unsqueeze(1), target, get_bound("infonce"), opts=opts).loss

    return official, ours
