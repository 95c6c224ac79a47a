"""A sweep and its storage under stress (issue 15): a RUNNING trial without any heartbeat, a
live trial taken over after a long pause, transient database errors.

Each test reproduces the fault for real: a trial planted the way a worker killed mid-claim
leaves it, a worker process stopped with SIGSTOP, the SQLite file locked by another connection.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import asdict
from pathlib import Path

import optuna
import psutil
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hydra_plugins.rlsweep_sweeper.rlsweep_sweeper import RLSweeperConf
from rlsweep.periodic import Periodic
from rlsweep.sweep.worker import suggest
from rlsweep.sweep import study as study_module
from rlsweep.sweep.study import (SQLITE_LOCK_TIMEOUT_S, check_settings, claim_trial, make_storage,
                                 set_user_attrs)
from tests.conftest import ROOT
from tests.faults import hold_write_lock
from tests.test_sweeper import SYNTHETIC, study, summary, trial_files

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
    with closing(sqlite3.connect(db)) as connection:
        return [row[0] for row in connection.execute(
            "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h "
            "ON h.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND h.trial_id IS NULL")]


# ---------------------------------------------------------------- 1: no hang

@pytest.mark.slow
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
    with closing(sqlite3.connect(db)) as connection:  # the first heartbeat cannot be written
        connection.execute("CREATE TRIGGER refuse_heartbeat BEFORE INSERT ON trial_heartbeats "
                           "BEGIN SELECT RAISE(ABORT, 'injected: no heartbeat'); END")
    claimed = claim_trial(cell, storage, "host:1:0")
    # Either the trial runs with its heartbeat or it is still WAITING for the next claim;
    # never RUNNING without a heartbeat (no worker would ever fail it: the sweep would hang).
    assert heartbeatless_running_trials(db) == []
    assert claimed is None and cell.get_trials()[0].state == TrialState.WAITING
    with closing(sqlite3.connect(db)) as connection:
        connection.execute("DROP TRIGGER refuse_heartbeat")
    claimed = claim_trial(cell, storage, "host:1:0")
    assert claimed is not None and heartbeatless_running_trials(db) == []
    assert cell.get_trials()[0].user_attrs["claimed_by"] == "host:1:0"  # same transaction


def test_claims_take_the_queue_in_order_then_none(tmp_path, monkeypatch):
    storage = sqlite_storage(tmp_path, monkeypatch)
    cell = optuna.create_study(storage=storage, study_name="cell")
    for k in range(3):
        cell.enqueue_trial({"x": k}, skip_if_exists=False)
    claimed = [claim_trial(cell, storage, f"host:1:{k}") for k in range(4)]
    assert [t.number for t in claimed[:3]] == [0, 1, 2] and claimed[3] is None
    trials = cell.get_trials()
    assert [t.state for t in trials] == [TrialState.RUNNING] * 3
    assert [t.user_attrs["claimed_by"] for t in trials] == ["host:1:0", "host:1:1", "host:1:2"]
    # A claimed trial samples its parameters and ends through Optuna as usual.
    assert claimed[0].suggest_float("x", 0, 10) == 0
    cell.tell(claimed[0], 1.0)
    assert cell.get_trials()[0].state == TrialState.COMPLETE


def test_a_trials_totals_are_stored_at_once_and_never_on_a_finished_trial(tmp_path, monkeypatch):
    storage = sqlite_storage(tmp_path, monkeypatch)
    cell = optuna.create_study(storage=storage, study_name="cell")
    cell.enqueue_trial({})
    trial = claim_trial(cell, storage, "host:1:0")
    set_user_attrs(storage, trial._trial_id, {"env_steps": 100, "seeds": [0, 1],
                                               "fail_reason": None})
    set_user_attrs(storage, trial._trial_id, {"env_steps": 200})  # updates, keeps the others
    attrs = cell.get_trials()[0].user_attrs
    assert attrs == {"claimed_by": "host:1:0", "env_steps": 200, "seeds": [0, 1],
                     "fail_reason": None,
                     "worker_process": f"{socket.gethostname()}:{os.getpid()}"}
    cell.tell(trial, state=TrialState.FAIL)  # e.g. another worker failed it as stale
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_user_attrs(storage, trial._trial_id, {"env_steps": 300})
    assert cell.get_trials()[0].user_attrs["env_steps"] == 200


def reports_stored_as_optuna_stores_them(url: str) -> None:
    """SweepStorage's own report (an upsert) leaves the rows Optuna's would: the same values
    read back for each kind (finite, infinite, NaN), a repeated step overwritten, a finished
    trial refused."""
    storage = make_storage(url, heartbeat_interval=1, grace_period=3)
    plain = optuna.storages.RDBStorage(url)
    cell = optuna.create_study(storage=storage, study_name=f"reports-{time.time_ns()}")
    for _ in range(2):
        cell.enqueue_trial({}, skip_if_exists=False)
    ours, theirs = (claim_trial(cell, storage, f"host:1:{k}") for k in range(2))
    for step, value in enumerate([0.5, math.inf, -math.inf, math.nan, 2.0]):
        storage.set_trial_intermediate_value(ours._trial_id, step % 4, value)
        plain.set_trial_intermediate_value(theirs._trial_id, step % 4, value)
    read = [plain.get_trial(t._trial_id).intermediate_values for t in (ours, theirs)]
    assert str(read[0]) == str(read[1]) == str({0: 2.0, 1: math.inf, 2: -math.inf, 3: math.nan})
    cell.tell(ours, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(ours._trial_id, 9, 1.0)
    with pytest.raises(KeyError):
        storage.set_trial_intermediate_value(10**6, 0, 1.0)


def a_trial_finishing_mid_read_is_still_read(url: str) -> None:
    """A read of finished and unfinished trials takes two statements (the finished ids, then
    the unfinished trials): a trial that finishes between them must be in the read, as it
    was (one snapshot), and a study that does not exist raises KeyError as in Optuna."""
    storage = make_storage(url, heartbeat_interval=1, grace_period=3)
    other = make_storage(url, heartbeat_interval=1, grace_period=3)  # another worker
    cell = optuna.create_study(storage=storage, study_name=f"mid-read-{time.time_ns()}")
    cell.enqueue_trial({})
    trial = claim_trial(cell, storage, "host:1:0")
    load = storage._load

    def finish_then_load(session, condition):  # called for the unfinished trials only:
        # none had finished at the first statement
        other.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [1.0])
        return load(session, condition)

    storage._load = finish_then_load
    read = storage.get_all_trials(cell._study_id, states=(TrialState.COMPLETE,
                                                          TrialState.RUNNING))
    storage._load = load
    assert [(t.number, t.state) for t in read] == [(0, TrialState.RUNNING)]
    assert storage.get_all_trials(cell._study_id)[0].state == TrialState.COMPLETE
    with pytest.raises(KeyError):
        storage.get_all_trials(cell._study_id + 1000)


def test_a_trial_finishing_mid_read_is_still_read(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "SQLITE_LOCK_TIMEOUT_S", 1)
    a_trial_finishing_mid_read_is_still_read(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_reports_are_stored_as_optuna_stores_them(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "SQLITE_LOCK_TIMEOUT_S", 1)
    reports_stored_as_optuna_stores_them(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_finished_trials_are_read_once_and_unfinished_ones_always_fresh(tmp_path, monkeypatch,
                                                                        request):
    from sqlalchemy import Engine, event

    storage = sqlite_storage(tmp_path, monkeypatch)
    plain = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    cell = optuna.create_study(storage=storage, study_name="cell")
    cell._storage = storage  # as the workers use it: no Optuna cache in front
    for k in range(4):
        cell.enqueue_trial({"x": k}, skip_if_exists=False)
    claimed = [claim_trial(cell, storage, f"host:1:{k}") for k in range(3)]
    for step, trial in enumerate(claimed):
        trial.suggest_float("x", 0, 10)
        trial.report(0.5 * step, step)
    cell.tell(claimed[0], 1.0)
    cell.tell(claimed[1], state=TrialState.PRUNED)
    study_id = cell._study_id

    def same_as_optuna():
        for states in (None, (TrialState.COMPLETE,), (TrialState.COMPLETE, TrialState.PRUNED),
                       (TrialState.RUNNING, TrialState.WAITING), (TrialState.FAIL,)):
            ours = storage.get_all_trials(study_id, deepcopy=False, states=states)
            assert ours == plain.get_all_trials(study_id, states=states), states

    same_as_optuna()
    statements: list[str] = []

    def count(_connection, _cursor, sql, *_):
        statements.append(sql.split()[0])

    event.listen(Engine, "before_cursor_execute", count)  # reads have an engine of their own
    request.addfinalizer(lambda: event.remove(Engine, "before_cursor_execute", count))
    finished = storage.get_all_trials(study_id, deepcopy=False,
                                      states=(TrialState.COMPLETE, TrialState.PRUNED))
    # One query (which ids are finished) instead of the trials with their five child tables.
    assert [t.number for t in finished] == [0, 1] and statements.count("SELECT") == 1
    assert finished[0].intermediate_values == {0: 0.0} and finished[0].value == 1.0
    cell.tell(claimed[2], 2.0)  # a trial that finishes later is read fresh once
    same_as_optuna()
    assert [t.number for t in cell.get_trials(states=(TrialState.COMPLETE,))] == [0, 2]

    # While a trial samples, the study is read once and every read is answered from it;
    # a read of every state leaves out the WAITING queue, which no sampler models.
    statements.clear()
    with storage.reads_once():
        everything = storage.get_all_trials(study_id, deepcopy=False)
        reads = statements.count("SELECT")
        finished = storage.get_all_trials(study_id, deepcopy=False,
                                          states=(TrialState.COMPLETE, TrialState.PRUNED))
        assert statements.count("SELECT") == reads  # nothing more from the database
        waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
        reads = statements.count("SELECT")
        assert storage.get_all_trials(study_id, states=(TrialState.WAITING,)) == waiting
        assert statements.count("SELECT") == reads  # the queue too is read once
    assert [t.state for t in everything] == [TrialState.COMPLETE, TrialState.PRUNED,
                                             TrialState.COMPLETE]
    assert [t.number for t in finished] == [0, 1, 2]
    assert [t.number for t in waiting] == [3]
    claim_trial(cell, storage, "host:1:3")  # after the block, reads are fresh again
    assert storage.get_all_trials(study_id, states=(TrialState.WAITING,)) == []


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "qmc", "nsga2", "random"])
def test_a_sampling_without_the_waiting_queue_samples_what_optuna_would(tmp_path, monkeypatch,
                                                                         sampler):
    # reads_once answers a read of every state without the WAITING queue (the rest of the
    # budget): each sampler must sample exactly what it samples seeing the queue.
    from rlsweep.sweep.study import make_sampler, sized_sampler_kwargs
    from rlsweep.sweep.worker import prepare_trial

    space = {"x": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
             "y": optuna.distributions.FloatDistribution(0.9, 0.99),
             "z": optuna.distributions.CategoricalDistribution([64, 128, 256])}
    cell = {"name": "cell", "space": space, "overrides": [],
            "base_config": OmegaConf.create({"x": 0.0, "y": 0.0, "z": 0})}

    def sample(folder: Path, snapshot: bool) -> dict:
        folder.mkdir()
        storage = sqlite_storage(folder, monkeypatch)
        kwargs, _ = sized_sampler_kwargs(sampler, 20, 2, {"n_startup_trials": 3}
                                         if sampler == "tpe" else {})
        study = optuna.create_study(storage=storage, study_name="cell",
                                    sampler=make_sampler(sampler, 7, kwargs, space))
        study._storage = storage  # as the workers use it
        for _ in range(20):
            study.enqueue_trial({}, skip_if_exists=False)
        for k in range(12):  # finished trials for the samplers to model, one left running
            trial = claim_trial(study, storage, f"host:1:{k}")
            prepare_trial(trial, cell, folder / f"trial_{k}")
            trial.report(float(k % 5), 1)
            if k % 4 == 3:
                study.tell(trial, state=TrialState.PRUNED)
            elif k < 11:
                study.tell(trial, float(k % 5))
        trial = claim_trial(study, storage, "host:1:12")
        if snapshot:
            params, _ = prepare_trial(trial, cell, folder / "sampled")
        else:
            params = {name: suggest(trial, name, dist) for name, dist in space.items()}
        assert len(study.get_trials(states=(TrialState.WAITING,))) == 7
        return params

    assert sample(tmp_path / "snapshot", True) == sample(tmp_path / "fresh", False)


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
    second = threading.Event()

    def slow_beat() -> None:  # the first beat waits for a lock, as long as the interval
        starts.append(time.monotonic())
        time.sleep(1.0 if len(starts) == 1 else 0)
        if len(starts) == 2:
            second.set()

    with Periodic(1.0, slow_beat):
        assert second.wait(timeout=30)  # a loaded machine may delay the beats, not skip them
    # The second beat follows the slow one at once (1 s after the first started), not an
    # interval after it ended (2 s): the threshold leaves half a second either side for load.
    assert starts[1] - starts[0] < 1.5


def _workers(proc: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(proc.pid).children(recursive=True)
            if "loky" in " ".join(p.cmdline()) and "popen" in " ".join(p.cmdline())]


def _write_lock_free(db: Path) -> bool:
    connection = sqlite3.connect(db, timeout=0.2, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


@pytest.mark.slow
def test_stopped_worker_finds_its_trial_taken_over_and_the_summary_counts_it(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlsweep", "-m", "algo=ppo", *SYNTHETIC, "hydra.sweeper.n_trials=2",
         "hydra.sweeper.n_jobs=2", "hydra.sweeper.pruner=none", "trainer.total_timesteps=6000",
         "trainer.eval_freq=100", "hydra.sweeper.heartbeat_interval=1",
         "hydra.sweeper.grace_period=3", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        def both_mid_trial() -> bool:
            # The plan is written after the storage's tables: opening the database sooner
            # races the sweep creating them ("table study_directions already exists").
            if not (tmp_path / "sweep_plan.json").exists():
                return False
            try:
                trials = study(tmp_path, "ppo-dense").get_trials()
            except KeyError:  # the study is not created yet
                return False
            return sum(t.state == TrialState.RUNNING and bool(t.intermediate_values)
                       for t in trials) == 2

        deadline = time.time() + 180
        while not both_mid_trial():
            assert time.time() < deadline, "the two trials never ran at once"
            time.sleep(0.3)
        worker = _workers(proc)[0]
        # Stop it outside a storage transaction: a worker stopped holding SQLite's write lock
        # would stall every other worker too (another fault, not this test's).
        while True:
            worker.send_signal(signal.SIGSTOP)
            if _write_lock_free(tmp_path / "optuna.db"):
                break
            worker.send_signal(signal.SIGCONT)
            time.sleep(0.05)

        def retry_claimed() -> bool:  # the other worker failed the stopped trial and runs it again
            return any("failed_trial" in t.system_attrs and t.state != TrialState.WAITING
                       for t in study(tmp_path, "ppo-dense").get_trials())

        deadline = time.time() + 120
        while not retry_claimed():
            assert time.time() < deadline, "the stopped worker's trial was never retried"
            time.sleep(0.3)
        worker.send_signal(signal.SIGCONT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    records = [json.loads(text) for text in trial_files(tmp_path).values()]
    (taken,) = [r for r in records if r.get("taken_over")]
    assert taken["state"] == "FAIL"
    assert "hydra.sweeper.grace_period" in taken["taken_over_reason"]
    s = summary(tmp_path)["ppo-dense"]
    assert s["n_taken_over"] == 1 and s["n_complete"] == 2
    assert "1 taken over" in out


def test_table_and_progress_line_name_takeovers_only_when_there_are_some():
    from rlsweep.sweep.summary import format_table, progress_line

    cell = {"best_value": 0.5, "best_success_rate": 0.5, "best_mean_return": 63.2,
            "best_params": {}, "n_complete": 3, "n_pruned": 0, "n_failed": 0, "n_running": 0,
            "env_steps": 600, "wall_time_s": 5.0}
    assert "taken over" not in format_table({"ppo-dense": {**cell, "n_taken_over": 0}})
    assert "taken over" not in progress_line("ppo-dense", {**cell, "n_taken_over": 0}, 3)
    table = format_table({"ppo-dense": {**cell, "n_taken_over": 2}})
    assert table.splitlines()[-1].startswith("warning: 2 taken over in ppo-dense: ")
    assert "(3 complete, 0 pruned, 0 failed, 2 taken over)" in progress_line(
        "ppo-dense", {**cell, "n_taken_over": 2}, 3)


# ---------------------------------------------------------------- 9: transient database errors

def test_claim_waits_out_a_locked_database(tmp_path, monkeypatch, caplog):
    storage = sqlite_storage(tmp_path, monkeypatch, lock_timeout_s=1)
    cell = optuna.create_study(storage=storage, study_name="cell")
    cell.enqueue_trial({})
    hold_write_lock(tmp_path / "optuna.db", 2.5)  # longer than the 1 s lock timeout
    with caplog.at_level("WARNING"):
        claimed = claim_trial(cell, storage, "host:1:0")
    assert claimed is not None and cell.get_trials()[0].state == TrialState.RUNNING
    assert any("database is locked" in r.getMessage() for r in caplog.records)


def test_tell_waits_out_a_locked_database(tmp_path, monkeypatch):
    from rlsweep.sweep.worker import tell

    storage = sqlite_storage(tmp_path, monkeypatch, lock_timeout_s=1)
    cell = optuna.create_study(storage=storage, study_name="cell", direction="maximize")
    cell.enqueue_trial({})
    trial = claim_trial(cell, storage, "host:1:0")
    hold_write_lock(tmp_path / "optuna.db", 2.5)
    frozen = tell(cell, trial, TrialState.COMPLETE, [0.5])
    assert frozen.state == TrialState.COMPLETE and frozen.value == 0.5


@pytest.mark.slow
def test_trial_completes_through_a_storage_locked_longer_than_the_lock_timeout(tmp_path):
    # Locked across the first report and again at the trial's end: pre-fix, either made the
    # trial FAIL with "database is locked" though nothing was wrong with it.
    code, out = run_bounded(
        tmp_path, "algo=ppo", *SYNTHETIC[1:], "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.pruner=none", "hydra.sweeper.on_finish=null",
        "hydra.sweeper.objective=tests.faults.synthetic_with_storage_locked",
        "trainer.total_timesteps=300", "trainer.eval_freq=100", timeout=300)
    assert code == 0, out[-3000:]
    (trial,) = study(tmp_path, "ppo-dense").get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["fail_reason"] is None
    assert sorted(trial.intermediate_values) == [100, 200, 300]
    assert "database is locked" in out  # the lock was really hit, and waited out


def test_only_transient_database_errors_are_retried(tmp_path):
    import sqlalchemy
    from optuna.exceptions import StorageInternalError

    from rlsweep.sweep.study import is_transient

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")

    def error_of(sql: str) -> BaseException:
        with engine.connect() as connection:
            try:
                connection.exec_driver_sql(sql)
            except sqlalchemy.exc.DBAPIError as err:
                try:  # wrapped the way Optuna's storage wraps it
                    raise StorageInternalError("An exception is raised during the commit.") \
                        from err
                except StorageInternalError as wrapped:
                    return wrapped
        raise AssertionError(f"{sql} did not fail")

    hold_write_lock(tmp_path / "x.db", 1.5)
    locked = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}",
                                      connect_args={"timeout": 0.1})
    with locked.connect() as connection:
        try:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        except sqlalchemy.exc.OperationalError as err:
            assert is_transient(err)
        else:
            raise AssertionError("the lock was not hit")
    assert not is_transient(error_of("SELECT * FROM no_such_table"))  # a bug, not a blip
    assert not is_transient(ValueError("Cannot tell a FAIL trial."))



@pytest.mark.parametrize("timeout", [0, -5, "soon", True, float("inf")])
def test_a_trial_timeout_that_is_not_a_positive_number_is_one_line(timeout):
    from rlsweep.config import ConfigError

    settings = {**asdict(RLSweeperConf()), "on_finish": None, "trial_timeout_s": timeout,
                "objective": "rlsweep.sweep.synthetic.synthetic_objective"}
    with pytest.raises(ConfigError, match=r"hydra.sweeper.trial_timeout_s=.* is invalid: must be "
                                          r"a number of seconds > 0, or null"):
        check_settings(settings)
    check_settings({**settings, "trial_timeout_s": 3600})


def test_a_trial_requeued_for_free_three_times_is_left_failed(tmp_path, monkeypatch):
    """A trial whose worker is preempted every time (longer than its job's time limit) must not
    be requeued for free forever: the fourth time it stays FAIL, saying why."""
    from rlsweep.sweep.study import MAX_FREE_RETRIES, requeue_orphans

    storage = sqlite_storage(tmp_path, monkeypatch)
    cell = optuna.create_study(storage=storage, study_name="cell")
    cell.enqueue_trial({"x": 1.0})
    for attempt in range(MAX_FREE_RETRIES + 1):
        trial = claim_trial(cell, storage, "host:1:0")
        assert trial is not None, f"attempt {attempt}: nothing was requeued"
        requeue_orphans({"cell": cell}, storage, {"host:1:0"}, "preempted: SIGTERM; retried free")
    trials = cell.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * (MAX_FREE_RETRIES + 1)
    assert [t.system_attrs.get("free_retries", 0) for t in trials] == [0, 1, 2, 3]
    assert trials[-1].user_attrs["fail_reason"].startswith(
        "preempted: SIGTERM; not retried: requeued 3 times already")
    assert all("retried free" in t.user_attrs["fail_reason"] for t in trials[:-1])
