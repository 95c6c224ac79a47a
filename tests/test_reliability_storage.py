"""A sweep and its storage under stress (issue 15): a RUNNING trial without any heartbeat, a
live trial taken over after a long pause, transient database errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hydra_plugins.rlsweep_sweeper.rlsweep_sweeper import RLSweeperConf
from rlsweep.periodic import Periodic
from rlsweep.sweep import study as study_module
from rlsweep.sweep.study import SQLITE_LOCK_TIMEOUT_S, check_settings, claim_trial, make_storage
from tests.conftest import ROOT
from tests.test_sweeper import study, summary

# The acceptance check's sweep: small, with heartbeats every second and a 3 s grace period.
SMALL_SWEEP = ["algo=ppo", "hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective",
               "trainer.total_timesteps=200", "trainer.eval_freq=100", "hydra.sweeper.n_jobs=2",
               "hydra.sweeper.n_trials=3", "hydra.sweeper.grace_period=3",
               "hydra.sweeper.heartbeat_interval=1", "logger=none"]


def run_bounded(sweep_dir: Path, *args: str, timeout: float) -> tuple[int, str]:
    """Run a sweep to its end; a sweep still running after `timeout` s hung: kill its whole
    process group (workers included) and fail the test."""
    proc = subprocess.Popen([sys.executable, "-m", "rlsweep", "-m", *args,
                             f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the sweep hung for {timeout} s; last output:\n{out[-2000:]}")
    return proc.returncode, out


def sqlite_storage(tmp_path: Path, monkeypatch, lock_timeout_s: float = 1):
    """The worker's storage on a fresh SQLite file, waiting `lock_timeout_s` for a lock (the
    real 15 s would make each test minutes long)."""
    monkeypatch.setattr(study_module, "SQLITE_LOCK_TIMEOUT_S", lock_timeout_s)
    return make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1,
                        grace_period=3)


def heartbeatless_running_trials(db: Path) -> list[int]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute(
            "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h "
            "ON h.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND h.trial_id IS NULL")]


# ---------------------------------------------------------------- 1: no hang

def test_running_trial_without_heartbeat_goes_stale_and_the_rerun_finishes(tmp_path):
    code, out = run_bounded(tmp_path, *SMALL_SWEEP, timeout=300)
    assert code == 0, out[-3000:]
    # What a worker killed between the claim's commit and its first heartbeat leaves behind.
    planted_study = study(tmp_path, "ppo-dense")
    planted_study.enqueue_trial({})
    planted = planted_study.get_trials()[-1]
    planted_study._storage.set_trial_state_values(planted._trial_id, TrialState.RUNNING)
    assert heartbeatless_running_trials(tmp_path / "optuna.db") == [planted._trial_id]

    code, out = run_bounded(tmp_path, *SMALL_SWEEP, timeout=120)
    assert code == 0, out[-3000:]
    trials = {t.number: t for t in study(tmp_path, "ppo-dense").get_trials()}
    assert trials[planted.number].state == TrialState.FAIL
    (retry,) = [t for t in trials.values()
                if t.system_attrs.get("failed_trial") == planted.number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)  # it ran (the pruner may stop it)
    s = summary(tmp_path)["ppo-dense"]
    assert (s["n_running"], s["n_waiting"]) == (0, 0)


def test_claim_and_first_heartbeat_commit_together(tmp_path, monkeypatch):
    storage = sqlite_storage(tmp_path, monkeypatch)
    cell = optuna.create_study(storage=storage, study_name="cell")
    cell.enqueue_trial({})
    db = tmp_path / "optuna.db"
    with sqlite3.connect(db) as connection:  # the first heartbeat cannot be written
        connection.execute("CREATE TRIGGER refuse_heartbeat BEFORE INSERT ON trial_heartbeats "
                           "BEGIN SELECT RAISE(ABORT, 'injected: no heartbeat'); END")
    claimed = claim_trial(cell, storage)
    # Either the trial runs with its heartbeat or it is still WAITING for the next claim;
    # never RUNNING without a heartbeat (no worker would ever fail it: the sweep would hang).
    assert heartbeatless_running_trials(db) == []
    assert claimed is None and cell.get_trials()[0].state == TrialState.WAITING
    with sqlite3.connect(db) as connection:
        connection.execute("DROP TRIGGER refuse_heartbeat")
    assert claim_trial(cell, storage) is not None
    assert heartbeatless_running_trials(db) == []


# ---------------------------------------------------------------- 4: a live trial taken over

def test_default_grace_period_outlasts_a_failed_heartbeat():
    # A beat can wait SQLITE_LOCK_TIMEOUT_S for the lock and fail; the next is due an interval
    # later. A healthy worker must survive that without being taken over.
    defaults = RLSweeperConf()
    assert defaults.grace_period > 2 * defaults.heartbeat_interval + SQLITE_LOCK_TIMEOUT_S


def test_grace_period_below_two_beats_and_the_lock_timeout_warns_naming_the_field(caplog):
    settings = {**asdict(RLSweeperConf()), "on_finish": None, "heartbeat_interval": 5,
                "grace_period": 2 * 5 + SQLITE_LOCK_TIMEOUT_S - 1,
                "objective": "rlsweep.sweep.synthetic.synthetic_objective"}
    with caplog.at_level("WARNING", logger="rlsweep.sweep"):
        check_settings(settings)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"hydra.sweeper.grace_period={settings['grace_period']} ")
    assert "heartbeat_interval=5" in warning and "taken over" in warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="rlsweep.sweep"):
        check_settings({**settings, "grace_period": 2 * 5 + SQLITE_LOCK_TIMEOUT_S + 1})
    assert not caplog.records


def test_a_slow_heartbeat_does_not_push_the_next_one_back():
    starts = []

    def slow_beat() -> None:  # the first beat waits for a lock, longer than the interval
        starts.append(time.monotonic())
        time.sleep(0.6 if len(starts) == 1 else 0)

    with Periodic(0.4, slow_beat):
        time.sleep(1.5)
    # The second beat follows the slow one at once, not an interval (0.4 s) after it ended.
    assert starts[1] - starts[0] < 0.6 + 0.2
