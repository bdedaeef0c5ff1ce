"""The type each overridden key expects, checked before any work: a value of the wrong type is
one line naming the key, the value and the type, e.g.
``trainer.max_steps='abc' is not an integer (trainer.max_steps takes an integer: Lightning's
Trainer argument)``.

The expected type of ``key`` is, for an argument of Lightning's ``Trainer`` (``trainer.*``), its
annotation in Lightning; otherwise the type of the value ``key`` has in the config composed with
the same group choices (``data=``, ``experiment=``, ...) but without the command line's key
overrides: a number stays a number (an integer where the default is one), a flag a flag, a list
a list.  A key whose default is ``null`` or a string takes any value here; what is valid for it
is checked where it is used.  ``null`` is accepted for every key (it means "not set").

Why inferred rather than a typed schema (structured configs): the config tree has a few hundred
keys over many groups and presets; the defaults already say what each key holds, and a schema
would have to be kept in step with every preset by hand.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dim.errors import DimError

#: bases composed with group choices only, by (config name, group overrides): the in-process
#: test suite composes each once
_BASES: dict[tuple[str, tuple[str, ...]], DictConfig] = {}


_PLURAL = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        item = _item(list(value)) if value else None
        return f"a list of {_PLURAL[type(item)]}" if type(item) in _PLURAL else "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _item(default: list) -> Any:
    """An item standing for every item of ``default`` (None when they differ in type)."""
    kinds = {type(v) for v in default}
    return default[0] if len(kinds) == 1 and not isinstance(default[0], list | dict) else None


def _fits_default(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, str):  # any single value: what is valid is checked where it is used
        return not isinstance(value, list | dict)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, list):  # a single item is taken where a list is (eval.knn.k=10)
        items = value if isinstance(value, list) else None if isinstance(value, dict) else [value]
        item = _item(default)
        return items is not None and all(_fits_default(v, item) for v in items)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


#: keys whose default is null, by command (config name): a value of the type they take stands
#: in for the default
NULL_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {
        "optim.grad_clip": 1.0,
        "model.score_scale": 1.0,
        "model.local_samples": 1,
        "model.tclip": 1.0,
        "model.temperature": 1.0,
        "callbacks.checkpoint.every_n_train_steps": 1,
        "callbacks.checkpoint.every_n_minutes": 1.0,
        "ckpt_path": "",
        "resume": "",
    },
    "eval": {"num_threads": 1, "max_train": 1, "max_test": 1},
    "embed": {"num_threads": 1, "limit": 1, "projector": ""},
    "mine": {
        "model.hidden": 1,
        "model.layers": 1,
        "model.embed": 1,
        "data.rho": 0.5,
        "data.path": "",
        "data.x_path": "",
        "data.y_path": "",
        "train.standardize": True,
    },
}


#: counts and sizes, by command: a value below 1 is refused (a key -> the other values it takes)
POSITIVE: dict[str, dict[str, tuple[int, ...]]] = {
    "train": {
        "trainer.max_epochs": (-1,),  # -1: until trainer.max_steps
        "trainer.log_every_n_steps": (),
        "data.batch_size": (),
        "data.num_samples": (),
        "data.val_size": (),
        "model.mi_units": (),
        "model.y_dim": (),
    },
    "eval": {"batch_size": (), "max_train": (), "max_test": ()},
    "embed": {"batch_size": (), "limit": (), "projector_size": ()},
    "mine": {
        "train.batch_size": (),
        "train.max_steps": (),
        "train.eval_every": (),
        "data.n": (),
        "data.dim": (),
        "model.hidden": (),
        "model.layers": (),
        "model.embed": (),
    },
}


def _below_one(key: str, value: Any, command: str) -> str | None:
    others = POSITIVE.get(command, {}).get(key)
    if others is None or not isinstance(value, int) or isinstance(value, bool):
        return None
    if value >= 1 or value in others:
        return None
    extra = "".join(f" or {v}" for v in others)
    return f"{key}={value} is out of range; {key} takes an integer >= 1{extra}"


# ---------------------------------------------------------------- Lightning's annotations


@cache
def trainer_arguments() -> dict[str, Any]:
    """Lightning ``Trainer.__init__``'s argument annotations."""
    import pytorch_lightning as pl

    return typing.get_type_hints(pl.Trainer.__init__)


def fits(value: Any, annotation: Any) -> bool:
    """Whether a config value (None, bool, int, float, str, list, dict) can be ``annotation``
    (classes a config cannot hold, such as Lightning's Accelerator, do not fit)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, Sequence, Iterable):
        return isinstance(value, list) and all(fits(v, args[0]) for v in value) if args else True
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return False


def describe(annotation: Any) -> str:
    """``int or float or null`` for an annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in args if describe(a)]
        return " or ".join(dict.fromkeys(parts))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (list, Sequence, Iterable):
        inner = describe(args[0]) if args else ""
        return f"a list of {inner}" if inner else "a list"
    if origin is dict or annotation is dict:
        return "a mapping"
    if annotation in _NAMES:
        return _NAMES[annotation]
    return ""  # a class no config value can be: not offered


#: Trainer arguments dim reads itself first (precision=auto is resolved by dim.run.precision)
_OWN_CHECKS = {"precision"}
_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}


# ---------------------------------------------------------------- the check


def expected(
    key: str, value: Any, default: Any, trainer: bool, stand_in: bool = False
) -> str | None:
    """Why ``value`` does not fit ``key`` (None when it does); ``stand_in``: ``default`` is a
    value of the type ``key`` takes, its real default being null."""
    if value is None:
        return None
    name = key.split(".", 1)[1] if trainer and key.startswith("trainer.") else None
    own = name in _OWN_CHECKS or (name or "").count(".")
    annotation = trainer_arguments().get(name) if name and not own else None
    if annotation is not None:
        if fits(value, annotation):
            return None
        return f"{key} takes {describe(annotation)} (Lightning's Trainer argument {name})"
    if _fits_default(value, default):
        return None
    if stand_in:
        return f"{key} takes {_kind(default)} or null"
    return f"{key} takes {_kind(default)}, like its default {_show(default)}"


def _show(value: Any) -> str:
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
    )


def check_types(cfg: DictConfig, base: DictConfig, keys: list[str], command: str) -> None:
    """Raise a one-line :class:`DimError` for the first of ``keys`` whose value in ``cfg`` does
    not fit (see the module docstring); ``command``: the config name (train, eval, ...)."""
    stand_ins = NULL_DEFAULTS.get(command, {})
    for key in keys:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False)
            default = OmegaConf.select(base, key, throw_on_missing=False)
        except Exception:  # an interpolation that does not resolve: reported where it is used
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if OmegaConf.is_config(default):
            default = OmegaConf.to_container(default, resolve=False)
        stand_in = default is None and key in stand_ins
        if stand_in:
            default = stand_ins[key]
        why = expected(key, value, default, command == "train", stand_in)
        if why is not None:
            raise DimError(f"{key}={_show(value)} is {_kind(value)}; {why}")
        low = _below_one(key, value, command)
        if low is not None:
            raise DimError(low)


def check_overrides(cfg: DictConfig) -> None:
    """Check the types of the key overrides of the running Hydra job (see the module
    docstring); for use inside a Hydra task, before any work."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from dim.cli.outputs import parse_overrides

    hydra_cfg = HydraConfig.get()
    overrides = parse_overrides(list(hydra_cfg.overrides.task))
    group = _group_test(set(hydra_cfg.runtime.choices))
    groups = tuple(str(o.input_line) for o in overrides if group(o.key_or_group))
    keys = [
        o.key_or_group
        for o in overrides
        if not group(o.key_or_group)
        and not o.is_delete()
        and not o.key_or_group.startswith("hydra")
        and o.package is None
    ]
    if not keys:
        return
    name = str(hydra_cfg.job.config_name)
    base = _BASES.get((name, groups))
    if base is None:
        try:
            base = compose(name, overrides=list(groups))
        except Exception:  # composed once already by Hydra; if not again, judge nothing here
            return
        _BASES[(name, groups)] = base
    check_types(cfg, base, keys, name)


def _group_test(choices: set[str]) -> Any:
    """Whether an override's key is a config group (``data``, ``eval``: a list of options is
    not among Hydra's runtime choices, so the config repository is asked too)."""
    from hydra.core.global_hydra import GlobalHydra

    try:
        repository = GlobalHydra.instance().config_loader().repository  # type: ignore[attr-defined]
    except Exception:
        repository = None

    def group(key: str) -> bool:
        if key in choices:
            return True
        return repository is not None and "." not in key and bool(repository.group_exists(key))

    return group
