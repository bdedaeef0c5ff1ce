"""Every spelling of a run dir that Hydra accepts reaches the same checks (dim.cli.outputs):
a finished run is never overwritten, a dir in use is refused, nothing is created elsewhere.

The table: spellings of ``hydra.run.dir`` and of ``resume`` x {a fresh dir, a dir holding a
finished run, a dir in use (its lock held)}.  Refusals are checked on the real console script
(they stop before Hydra runs: no training); a fresh dir is checked on the decision itself (the
path Hydra is given and the lock), and end to end for the spellings that used to go wrong.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import TINY, run_cli

import dim.run.directory as rundir
from dim.cli.outputs import RunDirUse, decide, parse_overrides
from dim.errors import DimError
from dim.run.directory import RunLock

# name -> (folder name under the working dir, how the command line writes it); {abs} is the
# absolute path, {rel} the path relative to the working dir, {home} the path under ~.
SPELLINGS = {
    "plain": ("r_plain", "hydra.run.dir={abs}"),
    "single_quoted": ("r_single", "hydra.run.dir='{abs}'"),
    "double_quoted": ("r_double", 'hydra.run.dir="{abs}"'),
    "force_add": ("r_force", "++hydra.run.dir='{abs}'"),
    "add": ("r_add", "+hydra.run.dir={abs}"),
    "relative": ("runs/r_rel", "hydra.run.dir={rel}"),
    "relative_quoted": ("runs/r_relq", "hydra.run.dir='./{rel}'"),
    "home": ("home/r_home", "hydra.run.dir='~/r_home'"),
    "spaces_accents": ("runs/été r1", "hydra.run.dir='{rel}'"),
    "quotes_inside": ('runs/l\'été "2"', "hydra.run.dir='{rel_escaped}'"),
}
RESUME_SPELLINGS = {
    "plain": ("r_plain", "resume={abs}"),
    "single_quoted": ("r_single", "resume='{abs}'"),
    "double_quoted": ("r_double", 'resume="{abs}"'),
    "force_add": ("r_force", "++resume='{rel}'"),
    "relative": ("runs/r_rel", "resume={rel}"),
    "home": ("home/r_home", "resume='~/r_home'"),
    "spaces_accents": ("runs/été r1", "resume='{rel}'"),
}
STATES = ("fresh", "finished", "in_use")


def _arg(spelling: str, folder: str) -> str:
    rel = folder
    return spelling.format(abs=Path.cwd() / folder, rel=rel, rel_escaped=rel.replace("'", "\\'"))


def digest(top: Path) -> dict[str, str]:
    """Every file (sha256) and folder below ``top``, by relative path."""
    out = {}
    for p in sorted(top.rglob("*")):
        rel = str(p.relative_to(top))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working dir with ``home/`` as ``~``."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    rundir.release_all()


def _prepare(state: str, run: Path, tiny_run, resume: bool = False) -> RunLock | None:
    """``in_use``: a live lock on a fresh dir (a run just starting: nothing else shows it) for
    ``hydra.run.dir``, on a finished run for ``resume``."""
    if state == "finished" or (state == "in_use" and resume):
        shutil.copytree(tiny_run[0], run)
    if state == "in_use":
        run.mkdir(parents=True, exist_ok=True)
        return RunLock(run, command="dim-train").acquire()  # another writer, alive
    return None


def _refused(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_train_run_dir_spellings(workdir, tiny_run, spelling, state):
    folder, form = SPELLINGS[spelling]
    run = workdir / folder
    holder = _prepare(state, run, tiny_run)
    arg = _arg(form, folder)
    before = digest(workdir)
    try:
        if state == "fresh":  # the decision: Hydra is given this path, locked by us
            argv = decide([*TINY, arg], "dim.configs", "train", RunDirUse("dim-train", True))
            pinned = parse_overrides([a for a in argv if a.startswith("hydra.run.dir=")])
            assert [o.value() for o in pinned] == [str(run)]
            assert rundir.held(run) is not None and (run / ".lock").is_file()
            rundir.release_all()
            assert digest(workdir) == before  # the lock made run/ and removed it again
            return
        proc = run_cli("dim-train", *TINY, arg, cwd=workdir)
        line = _refused(proc)
        if state == "finished":
            assert "already holds a run" in line and "nothing was overwritten" in line
            assert f"resume={run}" in line
        else:
            assert "is in use by dim-train" in line and str(run) in line
        assert digest(workdir) == before  # the run byte for byte, and no stray folder
    finally:
        if holder is not None:
            holder.release()


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("spelling", RESUME_SPELLINGS)
def test_resume_spellings(workdir, tiny_run, spelling, state):
    folder, form = RESUME_SPELLINGS[spelling]
    run = workdir / folder
    holder = _prepare(state, run, tiny_run, resume=True)
    arg = _arg(form, folder)
    before = digest(workdir)
    try:
        if state == "finished":  # the decision: the run's own dir, Hydra's files aside
            argv = decide([arg], "dim.configs", "train", RunDirUse("dim-train", True))
            pinned = parse_overrides([a for a in argv if a.startswith("hydra.")])
            assert pinned[0].key_or_group == "hydra.run.dir" and pinned[0].value() == str(run)
            assert str(pinned[1].value()).startswith(".hydra/resume_")
            assert rundir.held(run) is not None
            rundir.release_all()
            assert digest(workdir) == before
            return
        proc = run_cli("dim-train", arg, "trainer.max_epochs=2", cwd=workdir)
        line = _refused(proc)
        if state == "fresh":
            assert "is not a dim run directory" in line and str(run) in line
            assert not run.exists()
        else:
            assert "is in use by dim-train" in line and str(run) in line
        assert digest(workdir) == before
    finally:
        if holder is not None:
            holder.release()


def test_quoted_run_dir_of_a_finished_run_leaves_no_stray_folder(workdir, tiny_run):
    """The case of the report: the quotes stayed on the path, the check looked at the wrong
    place and the lock was taken on a folder named 'runs under the working dir."""
    shutil.copytree(tiny_run[0], workdir / "runs" / "r1")
    before = digest(workdir)
    proc = run_cli("dim-train", "experiment=quickstart", "hydra.run.dir='runs/r1'", cwd=workdir)
    assert "already holds a run" in _refused(proc)
    assert sorted(os.listdir(workdir)) == ["home", "runs"]
    assert digest(workdir) == before


def test_resume_in_a_quoted_dir_with_accents_continues_that_run(workdir, tiny_run):
    run = workdir / "runs" / "été r1"
    shutil.copytree(tiny_run[0], run)
    before = digest(workdir)
    proc = run_cli("dim-train", "resume='runs/été r1'", cwd=workdir)  # one epoch of one
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to train" in proc.stdout and str(run) in proc.stdout
    after = digest(workdir)
    assert {k: v for k, v in after.items() if k in before} == before  # every file unchanged
    new = sorted(k for k in after if k not in before)
    assert new and all(k.startswith("runs/été r1/.hydra/resume_") for k in new), new


@pytest.mark.parametrize("spelling", ["spaces_accents", "home"])
def test_a_fresh_dir_trains_where_it_was_named(workdir, spelling):
    folder, form = SPELLINGS[spelling]
    proc = run_cli("dim-train", *TINY, "trainer.max_steps=1", _arg(form, folder), cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = workdir / folder
    assert (run / "metrics.json").is_file() and (run / ".hydra" / "config.yaml").is_file()
    assert not (run / ".lock").exists()
    top = {p.name for p in workdir.iterdir()}
    assert top == {"home", folder.split("/")[0]}, top  # nothing beside it (no stray folder)


def test_a_failed_command_removes_the_folders_its_lock_made(workdir):
    proc = run_cli(
        "dim-train", *TINY, "model.encoder=vgg", "hydra.run.dir='new/deeper/r 1'", cwd=workdir
    )
    assert "unknown encoder 'vgg'" in _refused(proc)
    assert sorted(os.listdir(workdir)) == ["home"]


def test_a_sweep_dir_holding_runs_is_refused(workdir, tiny_run):
    shutil.copytree(tiny_run[0], workdir / "sweep" / "0")
    before = digest(workdir)
    proc = run_cli("dim-train", "-m", *TINY, "seed=1,2", "hydra.sweep.dir='sweep'", cwd=workdir)
    line = _refused(proc)
    assert "already holds runs" in line and "sweep/0" in line
    assert digest(workdir) == before


@pytest.mark.parametrize(
    "cmd, args, marker",
    [
        ("dim-eval", ["run={run}", "eval=knn"], "already holds a run"),
        ("dim-mine", ["data=gaussian"], "already holds a run"),
    ],
)
def test_other_commands_do_not_write_into_a_run(workdir, tiny_run, cmd, args, marker):
    run = workdir / "runs" / "r1"
    shutil.copytree(tiny_run[0], run)
    before = digest(workdir)
    args = [a.format(run=run) for a in args]
    proc = run_cli(cmd, *args, '++hydra.run.dir="runs/r1"', cwd=workdir)
    assert marker in _refused(proc)
    assert digest(workdir) == before


def test_an_unquoted_accent_asks_for_quotes(workdir):
    proc = run_cli("dim-train", *TINY, "hydra.run.dir=runs/été/r1", cwd=workdir)
    line = _refused(proc)
    assert "quote it: hydra.run.dir='runs/été/r1'" in line, line
    assert sorted(os.listdir(workdir)) == ["home"]


def test_a_path_that_is_no_path_is_one_line():
    with pytest.raises(DimError, match="is empty"):
        decide(["hydra.run.dir=''"], "dim.configs", "train", RunDirUse("dim-train"))


def test_a_command_without_a_run_dir_removes_only_the_folders_hydra_made(workdir, tiny_run):
    """dim-embed writes only out=: Hydra's empty run dir goes, a folder of the user's stays."""
    (workdir / "mine").mkdir()  # empty, the user's
    args = [f"run={tiny_run[0]}", "out=e.npz", "limit=4", "hydra.run.dir='mine/new/r 1'"]
    proc = run_cli("dim-embed", *args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(workdir)) == ["e.npz", "home", "mine"]
    assert os.listdir(workdir / "mine") == []
