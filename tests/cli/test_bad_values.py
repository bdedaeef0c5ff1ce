"""Property test: a value of the wrong type (or out of range) for a commonly overridden key of any
command is one ``error:`` line, exit code 2, no traceback, and nothing written.

Hypothesis draws the values (derandomized: the same examples every run, no example database);
each example is a real in-process run of the console script.  A few examples per command run in
the fast suite; ``-m slow`` runs many more.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, run_cli
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from dim.cli.outputs import quote

# What a key takes -> strategies of values it does not take.
_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=10).filter(
    lambda s: s.strip() != ""
)
_WORD = st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True)
_INTS = st.integers(min_value=-(10**9), max_value=10**9)
_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
_LISTS = st.lists(st.one_of(_WORD, _INTS), min_size=1, max_size=3)
_DICTS = st.dictionaries(_WORD, _INTS, min_size=1, max_size=2)
_NON_INTEGRAL = _FLOATS.filter(lambda f: not (math.isfinite(f) and f == int(f)))
WRONG = {
    "int": st.one_of(_TEXT, st.booleans(), _NON_INTEGRAL, _LISTS, _DICTS),
    "size": st.one_of(_TEXT, st.booleans(), _LISTS, _DICTS, st.integers(-(10**6), 0)),
    # -1 is "until trainer.max_steps" (with max_steps=-1: without end)
    "epochs": st.one_of(
        _TEXT, st.booleans(), _LISTS, _DICTS, st.integers(-(10**6), 0).filter(lambda v: v != -1)
    ),
    "float": st.one_of(_TEXT, st.booleans(), _LISTS, _DICTS),
    "bool": st.one_of(_TEXT, _INTS, _FLOATS, _LISTS, _DICTS),
    "ints": st.one_of(_TEXT, _DICTS, st.lists(_WORD, min_size=1, max_size=3)),
    "choice": st.one_of(_WORD, _LISTS, _DICTS),  # a name among a few: any other word is wrong
}

# command -> (arguments that make a valid command line, {key: what it takes})
COMMANDS: dict[str, tuple[list[str], dict[str, str]]] = {
    "dim-train": (
        TINY,
        {
            "trainer.max_steps": "int",
            "trainer.max_epochs": "epochs",
            "trainer.log_every_n_steps": "size",
            "trainer.limit_train_batches": "float",
            "trainer.deterministic": "bool",
            "data.batch_size": "size",
            "data.num_samples": "size",
            "model.mi_units": "size",
            "model.prior_hidden": "ints",
            "model.encoder": "choice",
            "optim.lr": "float",
            "optim.scheduler": "choice",
            "objective.gamma": "float",
            "bound.name": "choice",
            "seed": "int",
        },
    ),
    "dim-eval": (
        ["run={run}", "eval=knn"],
        {
            "eval.knn.k": "ints",
            "eval.knn.temperature": "float",
            "batch_size": "size",
            "max_train": "size",
            "seed": "int",
            "device": "choice",
            "init": "choice",
        },
    ),
    "dim-embed": (
        ["run={run}", "out={work}/e.npz"],
        {"batch_size": "size", "limit": "size", "split": "choice", "overwrite": "bool"},
    ),
    "dim-mine": (
        ["data=gaussian", "data.n=300", "model.hidden=16", "train.max_steps=20"],
        {
            "train.lr": "float",
            "train.batch_size": "size",
            "train.max_steps": "size",
            "train.eval_every": "size",
            "train.transform": "choice",
            "data.dim": "size",
            "data.n": "size",
            "model.hidden": "size",
            "model.critic": "choice",
            "bound.momentum": "float",
            "seed": "int",
        },
    ),
}
CASES = [(cmd, key) for cmd, (_, keys) in COMMANDS.items() for key in keys]


def render(value: Any) -> str:
    """``value`` as Hydra's override grammar writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return "{" + ",".join(f"{k}:{render(v)}" for k, v in value.items()) + "}"


def check(cmd: str, key: str, value: Any, run: Path) -> None:
    base, _ = COMMANDS[cmd]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        args = [a.format(run=run, work=work) for a in base]
        override = f"{key}={render(value)}"
        proc = run_cli(cmd, *args, override, f"hydra.run.dir={work}/out", cwd=work)
        lines = proc.stderr.strip().splitlines()
        where = f"{cmd} {override}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        assert proc.returncode == 2, where
        assert "Traceback" not in proc.stderr, where
        assert len(lines) == 1 and lines[0].startswith("error: "), where
        assert os.listdir(work) == [], (where, os.listdir(work))  # nothing written at all


def _search(cmd: str, keys: list[str], examples: int, run: Path) -> None:
    # no shrinking: a failing example may train for seconds, and is reported as drawn
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
    )
    @given(data=st.data())
    def prop(data):
        key = data.draw(st.sampled_from(keys), label="key")
        check(cmd, key, data.draw(WRONG[COMMANDS[cmd][1][key]], label="value"), run)

    prop()


@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_wrong_values_are_one_line(tiny_run, cmd):
    """Fast: two drawn keys and values per command (hypothesis picks both)."""
    _search(cmd, sorted(COMMANDS[cmd][1]), 2, tiny_run[0])


@pytest.mark.slow
@pytest.mark.parametrize("cmd, key", CASES)
def test_wrong_values_are_one_line_for_every_key(tiny_run, cmd, key):
    _search(cmd, [key], int(os.environ.get("DIM_TEST_EXAMPLES", "25")), tiny_run[0])
