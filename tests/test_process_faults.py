"""Signals to a whole sweep, as a terminal, `kill` or a service manager sends them: what the user
sees, what is left running, and what the resume finds (real processes, signals and SQLite)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from rlsweep.sweep.study import (CLAIMED_BY_ATTR, WORKER_PROCESS_ATTR, make_storage,
                                 open_cell_study, requeue_dead_sweeps_trials)
from tests.conftest import ROOT, run_cli

# Trials of ~6 s (the synthetic objective sleeps through its env steps, reporting every 100),
# so a signal meets two of them mid-way; a grace period no test waits for.
SWEEP = ["-m", "algo=ppo", "hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective",
         "logger=none", "hydra.sweeper.sampler=random", "hydra.sweeper.pruner=none",
         "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "trainer.total_timesteps=6000",
         "trainer.eval_freq=100", "hydra.sweeper.heartbeat_interval=1",
         "hydra.sweeper.grace_period=120"]
CELL = "ppo-dense"


def start_sweep(sweep_dir: Path, log: Path) -> subprocess.Popen:
    """The sweep in a session of its own (as in a terminal: its process group is the session),
    its output in `log` files (a pipe nobody reads would block it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "rlsweep", *SWEEP, f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT,
        stdout=open(f"{log}.out", "w"), stderr=open(f"{log}.err", "w"), text=True,
        start_new_session=True)


def wait_for(condition, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        time.sleep(0.3)


def trials(sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    if not (sweep_dir / "sweep_plan.json").exists():  # its tables may not exist yet
        return []
    study = optuna.load_study(study_name=CELL, storage=f"sqlite:///{sweep_dir}/optuna.db")
    return study.get_trials()


def mid_trial(sweep_dir: Path, retries: bool = False) -> list[optuna.trial.FrozenTrial]:
    """The trials running past their third evaluation (only retries of killed ones: `retries`)."""
    return [t for t in trials(sweep_dir) if t.state == TrialState.RUNNING
            and len(t.intermediate_values) >= 3 and (not retries or "failed_trial" in t.system_attrs)]


def session_processes(sid: int) -> list[str]:
    """The processes of session `sid` still alive (not zombies), read from /proc: '<pid> <cmd>'."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):  # field 6: the session
            alive.append(f"{entry.name} {cmdline[:120]}")
    return alive


def summary(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "sweep_summary.json").read_text())[CELL]


# ------------------------------------------------------------------ item 11: killed twice

@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_sweep_killed_twice_the_second_time_during_a_retry_loses_no_trial_and_resumes_at_once(
        tmp_path, how):
    """The whole sweep (its process group) is killed mid-trial, resumed, and killed again while
    the retry of a killed trial runs. Each resume requeues the trials the dead sweep left RUNNING
    at once (its process and its workers are gone: no wait for grace_period=120 s), with a
    reason and their one retry unspent; in the end every trial of the budget completes."""
    sweep_dir = tmp_path / "sweep"
    first = start_sweep(sweep_dir, tmp_path / "first")
    wait_for(lambda: len(mid_trial(sweep_dir)) == 2)
    os.killpg(first.pid, how)
    first.wait(timeout=120)
    killed = {t.number for t in trials(sweep_dir) if t.state == TrialState.RUNNING}
    assert killed, "nothing was running at the kill; the test proves nothing"

    started = time.monotonic()
    second = start_sweep(sweep_dir, tmp_path / "second")
    wait_for(lambda: mid_trial(sweep_dir, retries=True), timeout=100)
    assert time.monotonic() - started < 100  # not the 120 s grace period
    os.killpg(second.pid, how)
    second.wait(timeout=120)
    killed_retries = {t.number for t in trials(sweep_dir) if t.state == TrialState.RUNNING
                      and "failed_trial" in t.system_attrs}
    assert killed_retries, "no retry was running at the second kill"

    started = time.monotonic()
    result = run_cli(*SWEEP, f"hydra.sweep.dir={sweep_dir}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 100  # not the 120 s grace period
    assert "left running by a sweep process that is gone" in result.stderr
    by_number = {t.number: t for t in trials(sweep_dir)}
    for number in killed | killed_retries:
        failed = by_number[number]
        assert failed.state == TrialState.FAIL
        assert failed.user_attrs["fail_reason"].startswith(
            f"its sweep process {socket.gethostname()}:"), failed.user_attrs
        (retry,) = [t for t in by_number.values() if t.system_attrs.get("requeued_trial") == number]
        assert retry.params == failed.params and retry.system_attrs["retry_history"] == []
    assert all(t.user_attrs.get("fail_reason") for t in by_number.values()
               if t.state == TrialState.FAIL)
    s = summary(sweep_dir)
    assert (s["n_complete"], s["n_failed"], s["n_running"], s["n_waiting"]) == (4, 0, 0, 0)


def _storage(tmp_path: Path):
    storage = make_storage(f"sqlite:///{tmp_path}/optuna.db", heartbeat_interval=1,
                           grace_period=120)
    return storage, open_cell_study(storage, CELL, ["maximize"], n_trials=1)


def _claim(storage, study, sweep: str, worker: str) -> optuna.trial.FrozenTrial:
    """Claim the study's trial (RUNNING, with a heartbeat) as if the named sweep process and
    worker process ("<host>:<pid>") had."""
    from rlsweep.sweep.study import claim_trial

    trial = claim_trial(study, storage, sweep)
    _name_owners(storage, trial, sweep, worker)
    return storage.get_trial(trial._trial_id)


def _name_owners(storage, trial, sweep: str, worker: str) -> None:
    storage.set_trial_user_attr(trial._trial_id, CLAIMED_BY_ATTR, sweep)
    storage.set_trial_user_attr(trial._trial_id, WORKER_PROCESS_ATTR, worker)


def _ended_process() -> int:
    """The pid of a process of this machine that has ended (and was reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("owner", ["this process", "another host", "the pid is alive"])
def test_a_resume_leaves_trials_of_a_live_sweep_or_another_host_alone(tmp_path, owner):
    """Only a sweep whose process and worker on this machine are both gone has its trials
    requeued: a live sweep process's trial (this one's), a trial held on another machine (its
    heartbeat tells), or a dead sweep whose worker still runs (a pool process finishing its
    trial) are left RUNNING."""
    storage, study = _storage(tmp_path)
    host, me, dead = socket.gethostname(), os.getpid(), _ended_process()
    sweep, worker = {"this process": (f"{host}:{me}:0", f"{host}:{me}"),
                     "another host": (f"elsewhere:{dead}:0", f"elsewhere:{dead}"),
                     "the pid is alive": (f"{host}:{dead}:0", f"{host}:{me}")}[owner]
    trial = _claim(storage, study, sweep, worker)
    assert requeue_dead_sweeps_trials({CELL: study}, storage) == []
    assert storage.get_trial(trial._trial_id).state == TrialState.RUNNING


@pytest.mark.parametrize("pid_reused", [False, True], ids=["pid-gone", "pid-reused"])
def test_a_resume_requeues_the_trials_of_a_sweep_that_is_gone_with_a_reason(tmp_path,
                                                                            pid_reused):
    """A sweep process and worker of this machine that are gone, or whose pids now belong to
    processes started after the claim: the trial is FAIL with the reason, and its retry waits
    with the one retry unspent."""
    storage, study = _storage(tmp_path)
    host = socket.gethostname()
    trial = _claim(storage, study, f"{host}:0:0", f"{host}:0")
    later = None
    if pid_reused:  # a process started after the claim holds the pid now: not the owner
        time.sleep(3)  # past the start time's slack (/proc's boot time has whole seconds)
        later = subprocess.Popen(["sleep", "60"])
        pid = later.pid
    else:
        pid = _ended_process()
    try:
        _name_owners(storage, trial, f"{host}:{pid}:0", f"{host}:{pid}")
        assert requeue_dead_sweeps_trials({CELL: study}, storage) == [trial.number]
    finally:
        if later is not None:
            later.kill()
            later.wait()
    failed = storage.get_trial(trial._trial_id)
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"] == (
        f"its sweep process {host}:{pid} and its worker are gone (killed, or Ctrl-C); "
        "retried without spending its retry")
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["requeued_trial"] == trial.number
    assert retry.system_attrs["retry_history"] == [] and retry.system_attrs["free_retries"] == 1


# ------------------------------------------------------------------ item 14: SIGTERM

@pytest.mark.slow
@pytest.mark.parametrize("target", ["group", "sweep process"])
def test_sigterm_requeues_the_running_trials_and_leaves_no_process_behind(tmp_path, target):
    """SIGTERM to the sweep's process group (a terminal, `timeout`, a service manager) or to the
    sweep process alone: the running trials are queued again with their retry unspent, the
    summary is written, the sweep exits 143, and within seconds no process of its session is
    left (before: 2 loky workers and 2 resource trackers, ~100 MB each, lived on under init)."""
    sweep_dir = tmp_path / "sweep"
    proc = start_sweep(sweep_dir, tmp_path / "sweep")
    wait_for(lambda: len(mid_trial(sweep_dir)) == 2)
    if target == "group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_processes(proc.pid) == [], "processes outlived the sweep"
    err = (tmp_path / "sweep.err").read_text()
    assert "Traceback" not in err and "stopped by SIGTERM" in err, err[-3000:]
    preempted = [t for t in trials(sweep_dir) if t.state == TrialState.FAIL]
    assert len(preempted) == 2
    assert all(t.user_attrs["fail_reason"].startswith("preempted") for t in preempted)
    s = summary(sweep_dir)
    assert (s["n_failed"], s["n_running"], s["n_waiting"]) == (0, 0, 4 - s["n_complete"])


# ------------------------------------------------------------------ item 20: Ctrl-C

@pytest.mark.slow
def test_ctrl_c_prints_the_summary_and_exits_130_without_a_traceback(tmp_path):
    """Ctrl-C in the terminal (SIGINT to the whole process group) mid-trial: the summary table,
    one line saying how to resume, exit 130, and none of the interrupted frames (before: ~85
    lines of chained KeyboardInterrupt tracebacks from the workers and the launcher)."""
    sweep_dir = tmp_path / "sweep"
    proc = start_sweep(sweep_dir, tmp_path / "sweep")
    wait_for(lambda: len(mid_trial(sweep_dir)) == 2)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    out, err = (tmp_path / "sweep.out").read_text(), (tmp_path / "sweep.err").read_text()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "interrupted (Ctrl-C); rerun the same command to resume" in err
    assert f"rlsweep: results in {sweep_dir}" in out
    assert any(line.startswith(f"{CELL} ") for line in out.splitlines())  # the table's row
    assert (sweep_dir / "sweep_summary.json").exists()


def test_a_trial_failed_by_its_heartbeat_says_why_and_whether_it_is_retried(tmp_path):
    """A trial held on another machine is left to its heartbeat: when that stops for
    grace_period, the trial is FAIL with the reason (before: fail_reason null), and a retry that
    goes stale too says that it is not retried again."""
    from rlsweep.sweep.study import claim_trial, fail_stale_trials

    storage = make_storage(f"sqlite:///{tmp_path}/optuna.db", heartbeat_interval=1,
                           grace_period=1)
    study = open_cell_study(storage, CELL, ["maximize"], n_trials=1)
    reasons = []
    for _ in range(2):  # the trial, then its retry
        trial = claim_trial(study, storage, "elsewhere:1:0")
        assert trial is not None
        wait_for(lambda: fail_stale_trials(study, storage) or
                 storage.get_trial(trial._trial_id).state == TrialState.FAIL, timeout=30)
        reasons.append(storage.get_trial(trial._trial_id).user_attrs["fail_reason"])
    assert reasons == [
        "no heartbeat for hydra.sweeper.grace_period=1 s (its worker died, or paused); "
        "retried once",
        "no heartbeat for hydra.sweeper.grace_period=1 s (its worker died, or paused); "
        "not retried: it was a retry already"]
    assert study.get_trials(states=(TrialState.WAITING,)) == []
