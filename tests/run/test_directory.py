"""One writer per run dir (dim.run.directory's lock), unusable output paths refused before any work,
and resume from the newest readable checkpoint when last.ckpt is unreadable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli
from disk_helpers import read_only_dir  # noqa: F401  (a fixture)

import dim.run.directory as rundir
from dim.cli.outputs import decide
from dim.cli.train import USE
from dim.errors import DimError
from dim.run.directory import Holder, RunDirBusy, RunLock, stale_reason
from dim.run.reliability import LockWatch

HOST = socket.gethostname()
# A process that holds a run dir's lock until killed (prints "held" once it does).
HOLD = (
    "import sys, time\n"
    "from dim.run.directory import RunLock\n"
    "RunLock(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def holder(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
    return proc


def copy_run(tiny_run, dest: Path, epoch_ckpt: bool = False) -> Path:
    """The tiny run's config and last.ckpt (and its epoch checkpoint) in a run dir of its own."""
    src = tiny_run[0]
    (dest / ".hydra").mkdir(parents=True)
    shutil.copy(src / ".hydra/config.yaml", dest / ".hydra/config.yaml")
    (dest / "checkpoints").mkdir()
    for ckpt in (src / "checkpoints").glob("*.ckpt"):
        if ckpt.name == "last.ckpt" or epoch_ckpt:
            shutil.copy(ckpt, dest / "checkpoints" / ckpt.name)
    shutil.copy(src / "metrics.json", dest / "metrics.json")
    return dest


def one_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-2000:]
    return last


def test_a_second_writer_gets_one_line_naming_the_holder_and_writes_nothing(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    other = holder(run)
    try:
        before = sorted(p.name for p in run.rglob("*"))
        lock = (run / ".lock").read_text()
        for args in ([f"resume={run}"], [*TINY, f"hydra.run.dir={tmp_path / 'fresh'}"]):
            if "resume" not in args[0]:
                (tmp_path / "fresh").mkdir()
                RunLock(tmp_path / "fresh").acquire()  # this process holds it: in use too
            proc = run_cli("dim-train", *args)
            assert proc.returncode == 2, proc.stderr[-2000:]
            line = one_line(proc)
            assert " is in use by dim-train (pid " in line and f" on host {HOST}, started " in line
        assert f"pid {other.pid} " in one_line(run_cli("dim-train", f"resume={run}"))
        assert sorted(p.name for p in run.rglob("*")) == before  # no .hydra/resume_<time>
        assert (run / ".lock").read_text() == lock
    finally:
        other.kill()
        other.wait()


def test_resuming_a_run_still_before_its_first_checkpoint_names_the_holder(tmp_path):
    """The run's process is alive but has written no checkpoint yet: "in use", not "nothing to
    resume from" (and, once it is gone, the missing checkpoint is the one line)."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra/config.yaml").write_text("{}\n")
    other = holder(run)
    try:
        line = one_line(run_cli("dim-train", f"resume={run}"))
        assert f"is in use by dim-train (pid {other.pid} on host {HOST}" in line
    finally:
        other.kill()
        other.wait()
    line = one_line(run_cli("dim-train", f"resume={run}"))
    assert line.endswith("the run has no checkpoints/last.ckpt to resume from")
    assert not (run / ".lock").exists()


def test_a_sigkilled_holder_never_blocks_a_resume(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    other = holder(run)
    other.send_signal(signal.SIGKILL)  # no clean-up at all: the lock file stays
    other.wait()
    assert json.loads((run / ".lock").read_text())["pid"] == other.pid
    proc = run_cli("dim-train", f"resume={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"note: took over the stale lock of dim-train (pid {other.pid} on host {HOST}" in (
        proc.stderr
    )
    assert "its process is gone" in proc.stderr and "Nothing to train" in proc.stdout
    assert not (run / ".lock").exists()  # released at exit


def _foreign_lock(run: Path, host: str, age_s: float, lease_s: float = 30.0) -> None:
    run.mkdir(parents=True, exist_ok=True)
    h = Holder(pid=1, host=host, started="2026-01-01T00:00:00+00:00", token="t", lease_s=lease_s)
    (run / ".lock").write_text(json.dumps(h.__dict__))
    stamp = time.time() - age_s
    os.utime(run / ".lock", (stamp, stamp))


def test_another_hosts_lock_holds_until_its_lease_runs_out(tmp_path, capsys):
    run = tmp_path / "run"
    _foreign_lock(run, "node-b", age_s=5)
    with pytest.raises(RunDirBusy, match=r"in use by dim-train \(pid 1 on host node-b, started"):
        RunLock(run).acquire()
    _foreign_lock(run, "node-b", age_s=31)  # no heartbeat for longer than its 30 s lease
    lock = RunLock(run).acquire()
    assert "no heartbeat for 31 s (lease 30 s)" in capsys.readouterr().err
    assert json.loads((run / ".lock").read_text())["host"] == HOST
    lock.release()
    assert not (run / ".lock").exists()


def test_heartbeat_keeps_the_lease_fresh_and_notices_a_takeover(tmp_path, capsys):
    run = tmp_path / "run"
    lock = RunLock(run, lease_s=0.4).acquire()
    old = time.time() - 60
    os.utime(lock.path, (old, old))
    time.sleep(0.35)  # a heartbeat every lease / 4 = 0.1 s
    assert time.time() - lock.path.stat().st_mtime < 0.3
    _foreign_lock(run, "node-b", age_s=0)  # another host judged us stale and took over
    deadline = time.time() + 2
    while lock.lost is None and time.time() < deadline:
        time.sleep(0.05)
    assert lock.lost is not None and "host node-b" in lock.lost
    assert "this process no longer holds the run" in capsys.readouterr().err
    lock.release()
    assert json.loads((run / ".lock").read_text())["host"] == "node-b"  # theirs stays


def test_a_recycled_pid_or_a_reboot_makes_a_local_lock_stale():
    me = os.getpid()
    pid_start = rundir._pid_start(me)
    boot = rundir._boot_id()
    live = Holder(me, HOST, "t", "x", 30.0, boot_id=boot, pid_start=pid_start)
    assert stale_reason(live, age_s=1e6) is None  # local: the process decides, not the clock
    if pid_start is None or boot is None:
        pytest.skip("no /proc on this system: pid start time and boot id are unknown")
    recycled = Holder(me, HOST, "t", "x", 30.0, boot_id=boot, pid_start=pid_start + 1)
    assert "the pid now belongs to another process" in str(stale_reason(recycled, 0))
    rebooted = Holder(me, HOST, "t", "x", 30.0, boot_id="another-boot", pid_start=pid_start)
    assert stale_reason(rebooted, 0) == "the host has rebooted since"


RACE = (
    "import sys, time\n"
    "from dim.run.directory import RunLock, RunDirBusy\n"
    "time.sleep(float(sys.argv[2]) - time.time())\n"
    "try:\n"
    "    RunLock(sys.argv[1]).acquire(); print('won', flush=True); time.sleep(2)\n"
    "except RunDirBusy:\n"
    "    print('busy', flush=True)\n"
)


def test_processes_racing_for_a_stale_lock_have_exactly_one_winner(tmp_path):
    run = tmp_path / "run"
    _foreign_lock(run, "node-b", age_s=3600)
    start = str(time.time() + 1.5)  # all four try at the same moment
    procs = [
        subprocess.Popen([sys.executable, "-c", RACE, str(run), start], stdout=subprocess.PIPE)
        for _ in range(4)
    ]
    outs = sorted(p.communicate(timeout=60)[0].decode().strip() for p in procs)
    assert outs == ["busy", "busy", "busy", "won"], outs


def test_only_the_rank_zero_process_takes_the_lock(tiny_run, tmp_path, monkeypatch):
    run = copy_run(tiny_run, tmp_path / "run")
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP child started by Lightning's launcher
    decide([f"resume={run}"], "dim.configs", "train", USE)
    assert not (run / ".lock").exists()
    monkeypatch.delenv("LOCAL_RANK")
    try:
        decide([f"resume={run}"], "dim.configs", "train", USE)
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    finally:
        rundir.release_all()
    assert not (run / ".lock").exists()
    # --cfg prints the config: it writes nothing
    decide([f"resume={run}", "--cfg", "job"], "dim.configs", "train", USE)
    assert not (run / ".lock").exists()


def test_bad_input_releases_the_lock_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("dim-train", *TINY, "model.encoder=vgg", f"hydra.run.dir={out}")
    assert proc.returncode == 2 and "unknown encoder 'vgg'" in one_line(proc)
    assert not out.exists() and not rundir._HELD


# ---- unusable output paths: one line before any work ----
def test_an_output_path_through_a_file_is_one_line(tiny_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for args in (
        [*TINY, f"hydra.run.dir={blocker}/run"],  # an explicit run dir
        [*TINY, f"paths.output_dir={blocker}/outputs"],  # Hydra's timestamped default
    ):
        proc = run_cli("dim-train", *args)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"{blocker} is a file, not a directory" in one_line(proc)
    proc = run_cli("dim-embed", f"run={tiny_run[0]}", f"out={blocker}/x.npz", cwd=tmp_path)
    assert proc.returncode == 2 and f"{blocker} is a file, not a directory" in one_line(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_file_in_place_of_a_run_folder_is_one_line_before_training(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "tensorboard").write_text("a file where the event files go")
    before = (run / "checkpoints/last.ckpt").stat().st_mtime_ns
    proc = run_cli("dim-train", f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 2
    assert f"{run / 'tensorboard'} is a file, not a directory" in one_line(proc)
    assert (run / "checkpoints/last.ckpt").stat().st_mtime_ns == before
    assert not (run / ".lock").exists()


def test_a_read_only_filesystem_is_one_line_before_training(read_only_dir, tmp_path):  # noqa: F811
    for target in (read_only_dir / "run", read_only_dir / "new"):
        proc = run_cli("dim-train", *TINY, f"hydra.run.dir={target}")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"{target}: Read-only file system (EROFS)" in one_line(proc)
    proc = run_cli("dim-mine", "data=gaussian", f"hydra.run.dir={read_only_dir}/mine")
    assert proc.returncode == 2 and "Read-only file system (EROFS)" in one_line(proc)


def test_no_permission_is_one_line_before_training(tmp_path, monkeypatch):
    """Root ignores permission bits, so as root the refusal is simulated at the system call
    (``os.open`` answering EACCES under the folder); as another user chmod makes it real."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:
        real_open = os.open

        def refuse(path, *args, **kwargs):
            if Path(path).is_relative_to(folder):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(rundir.os, "open", refuse)
    else:
        folder.chmod(0o500)
    proc = run_cli("dim-train", *TINY, f"hydra.run.dir={folder}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"cannot write to run dir {folder}: Permission denied (EACCES)" in one_line(proc)


# ---- resume from the newest readable checkpoint ----
def test_an_unreadable_last_ckpt_resumes_from_the_newest_readable_one(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run", epoch_ckpt=True)
    last = run / "checkpoints/last.ckpt"
    epoch = next(p for p in (run / "checkpoints").glob("epoch*.ckpt"))
    last.write_bytes(last.read_bytes()[:1000])  # truncated (a bad copy, a failing disk)
    proc = run_cli("dim-train", f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"warning: cannot read {last} as a dim checkpoint" in proc.stderr
    assert f"resuming from {epoch} (step 4), the newest readable checkpoint" in proc.stderr
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 8
    assert torch.load(last, weights_only=True)["global_step"] == 8  # last.ckpt is good again


def test_no_readable_checkpoint_is_one_line_never_a_fresh_start(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    last = run / "checkpoints/last.ckpt"
    last.write_bytes(b"truncated")
    proc = run_cli("dim-train", f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 2
    line = one_line(proc)
    assert f"cannot read {last}" in line and "no other readable checkpoint" in line
    assert last.read_bytes() == b"truncated" and not (run / "tensorboard").exists()


def test_a_run_whose_lock_was_taken_over_stops_before_writing(tmp_path):
    lock = RunLock(tmp_path / "run", lease_s=0.2).acquire()
    watch = LockWatch(lock)
    watch.on_save_checkpoint(None, None, {})  # still ours: nothing happens
    _foreign_lock(tmp_path / "run", "node-b", age_s=0)
    deadline = time.time() + 2
    while lock.lost is None and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(DimError, match=r"was taken over by dim-train \(pid 1 on host node-b"):
        watch.on_save_checkpoint(None, None, {})
    lock.release()
