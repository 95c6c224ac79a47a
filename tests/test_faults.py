"""Faults a long sweep meets: dead workers, Ctrl-C, crashing envs, full disks, heavy load."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT, run_cli
from tests.test_sweeper import LIFT_TINY, SYNTHETIC, study, summary, sweep, trial_files


def start_sweep(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlsweep", "-m", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for(condition, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting for the sweep"
        time.sleep(0.3)


def running_mid_trial(sweep_dir: Path, cell: str, finished: int) -> bool:
    if len(trial_files(sweep_dir)) < finished or not (sweep_dir / "sweep_plan.json").exists():
        return False
    return any(t.state == TrialState.RUNNING and t.intermediate_values
               for t in study(sweep_dir, cell).get_trials())


def wait_for_both_workers_mid_trial(sweep_dir: Path) -> set[int]:
    """Wait until two trials of ppo-dense run past their second evaluation; their numbers."""
    def both_mid_trial() -> bool:
        if not (sweep_dir / "sweep_plan.json").exists():  # its tables may not exist yet
            return False
        return sum(t.state == TrialState.RUNNING and len(t.intermediate_values) >= 2
                   for t in study(sweep_dir, "ppo-dense").get_trials()) == 2

    wait_for(both_mid_trial)
    return {t.number for t in study(sweep_dir, "ppo-dense").get_trials()
            if t.state == TrialState.RUNNING}


def start_two_worker_sweep(tmp_path: Path, n_trials: int, grace_period: int) -> subprocess.Popen:
    """A synthetic sweep whose 2 workers each hold a 3 s trial long enough to be hit mid-trial."""
    return start_sweep("algo=ppo", *SYNTHETIC, f"hydra.sweeper.n_trials={n_trials}",
                       "hydra.sweeper.n_jobs=2", "hydra.sweeper.pruner=none",
                       "trainer.total_timesteps=3000", "trainer.eval_freq=100",
                       "hydra.sweeper.heartbeat_interval=1",
                       f"hydra.sweeper.grace_period={grace_period}", f"hydra.sweep.dir={tmp_path}")


def pool_processes(proc: subprocess.Popen) -> list[psutil.Process]:
    """The sweep's joblib (loky) worker processes."""
    return [p for p in psutil.Process(proc.pid).children(recursive=True)
            if "loky" in " ".join(p.cmdline()) and "popen" in " ".join(p.cmdline())]


@pytest.mark.slow
def test_sigkilled_worker_aborts_its_batch_whose_trials_are_retried_without_spending_a_retry(
        tmp_path):
    """joblib kills every pool process when one dies: the sweeper relaunches, and every trial
    the batch ran (the dead worker's and the healthy one's) is retried at once, its one retry
    kept (the retry's history is the original's, not longer)."""
    proc = start_two_worker_sweep(tmp_path, n_trials=6, grace_period=60)
    in_flight = wait_for_both_workers_mid_trial(tmp_path)
    workers = pool_processes(proc)
    assert len(workers) == 2
    workers[0].send_signal(signal.SIGKILL)
    started = time.time()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "a worker died" in out and "queued again" in out
    assert time.time() - started < 60  # no wait for a 60 s grace period
    trials = {t.number: t for t in study(tmp_path, "ppo-dense").get_trials()}
    for number in in_flight:
        assert trials[number].state == TrialState.FAIL
        assert "died with the launcher's batch" in trials[number].user_attrs["fail_reason"]
        (retry,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == number]
        assert retry.state == TrialState.COMPLETE and retry.params == trials[number].params
        assert retry.system_attrs["retry_history"] == []  # its one retry still unspent
    s = summary(tmp_path)["ppo-dense"]
    assert (s["n_complete"], s["n_failed"], s["n_running"], s["n_waiting"]) == (6, 0, 0, 0)


@pytest.mark.slow
def test_a_sigtermed_worker_requeues_its_trial_unspent_and_exits_cleanly(tmp_path):
    """SIGTERM (scancel, preemption, a time limit) is not a failure: the worker stops claiming,
    its running trial is queued again at once with its one retry unspent, the worker's job ends
    normally (no launcher abort), and the other worker's trial completes untouched."""
    proc = start_two_worker_sweep(tmp_path, n_trials=4, grace_period=60)
    in_flight = wait_for_both_workers_mid_trial(tmp_path)
    workers = pool_processes(proc)
    assert len(workers) == 2
    workers[0].send_signal(signal.SIGTERM)
    started = time.time()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "a worker died" not in out  # the job ended normally: no launcher abort
    assert time.time() - started < 60  # requeued at once, no wait for the 60 s grace period
    trials = {t.number: t for t in study(tmp_path, "ppo-dense").get_trials()}
    # The signalled worker's trial: one of those in flight (or, if that one ended just before
    # the signal, the next it claimed).
    (preempted,) = [n for n, t in trials.items() if t.state == TrialState.FAIL]
    assert trials[preempted].user_attrs["fail_reason"].startswith("preempted: its worker got SIGTERM")
    (retry,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == preempted]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[preempted].params
    assert retry.system_attrs["retry_history"] == []  # its one retry still unspent
    assert retry.system_attrs["free_retries"] == 1
    assert all(trials[n].state == TrialState.COMPLETE for n in in_flight - {preempted})
    s = summary(tmp_path)["ppo-dense"]
    assert (s["n_complete"], s["n_failed"], s["n_running"], s["n_waiting"]) == (4, 0, 0, 0)


@pytest.mark.slow
def test_a_killed_training_process_fails_its_trial_alone_and_the_other_worker_goes_on(tmp_path):
    """One worker's training process dies (the OOM killer's pick: the process that trains): its
    trial fails naming the signal and is retried once; the other worker's trial, running at the
    same time, completes untouched and spends no retry; the launcher never aborts."""
    proc = start_two_worker_sweep(tmp_path, n_trials=4, grace_period=3)
    in_flight = wait_for_both_workers_mid_trial(tmp_path)
    trainers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                if "rlsweep.sweep.seeds" in " ".join(p.cmdline())]
    assert len(trainers) == 2
    trainers[0].send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "a worker died" not in out  # no launcher abort, no relaunch
    trials = {t.number: t for t in study(tmp_path, "ppo-dense").get_trials()}
    (killed,) = [n for n in in_flight if trials[n].state == TrialState.FAIL]
    assert trials[killed].user_attrs["fail_reason"].startswith(
        "its training process was killed by SIGKILL")
    (survivor,) = in_flight - {killed}
    assert trials[survivor].state == TrialState.COMPLETE
    retried = [t.system_attrs.get("failed_trial") for t in trials.values()]
    assert retried.count(killed) == 1 and survivor not in retried
    (retry,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[killed].params
    assert [n for n, t in trials.items() if t.state == TrialState.FAIL] == [killed]
    record = json.loads((tmp_path / "ppo-dense" / f"trial_{killed:03d}" / "trial.json").read_text())
    assert record["state"] == "FAIL" and "killed by SIGKILL" in record["fail_reason"]


@pytest.mark.slow
def test_pool_processes_of_a_killed_sweep_stop_claiming(tmp_path):
    """Only the sweep process is killed (its pool processes outlive it): they end their trial
    and stop, leaving the rest of the budget WAITING for the resume, instead of draining it
    unwatched."""
    log = (tmp_path.parent / f"{tmp_path.name}.log").open("w")  # not a pipe nobody reads
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlsweep", "-m", "algo=ppo", *SYNTHETIC, "hydra.sweeper.n_trials=40",
         "hydra.sweeper.n_jobs=2", "hydra.sweeper.pruner=none", "trainer.total_timesteps=1000",
         "trainer.eval_freq=100", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: running_mid_trial(tmp_path, "ppo-dense", 1))
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "popen_loky" in " ".join(p.cmdline())]
    assert len(workers) == 2
    proc.kill()  # the sweep process alone, not its group
    proc.wait()
    trainers = [c for w in workers for c in w.children()
                if "rlsweep.sweep.seeds" in " ".join(c.cmdline())]
    assert trainers
    gone, alive = psutil.wait_procs(workers + trainers, timeout=60)
    assert not alive, "pool processes or their trainers kept running after their sweep died"
    states = [t.state for t in study(tmp_path, "ppo-dense").get_trials()]
    assert states.count(TrialState.WAITING) >= 30  # the budget left for a resume


def _fingerprint(trial_dir: Path) -> dict[str, str | None]:
    """Hashes of a finished trial's files (None: absent; the synthetic objective saves no
    model). A file rewritten or deleted by the rerun changes it."""
    return {name: hashlib.sha256((trial_dir / name).read_bytes()).hexdigest()
            if (trial_dir / name).exists() else None
            for name in ("trial.json", "metrics.json", "model.zip", "config.yaml")}


@pytest.mark.slow
def test_sigint_then_rerun_resumes_with_every_finished_trial_intact(tmp_path):
    # The synthetic objective: Ctrl-C is the sweep's and the workers' business (trainer
    # processes ignore SIGINT), so real Lift training would only make this test slower.
    args = ["algo=a2c", "hydra.sweeper.n_trials=5", "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.pruner=none", "hydra.sweeper.heartbeat_interval=1",
            "hydra.sweeper.grace_period=3", *SYNTHETIC, "trainer.total_timesteps=3000",
            "trainer.eval_freq=100", f"hydra.sweep.dir={tmp_path}"]
    proc = start_sweep(*args)
    wait_for(lambda: running_mid_trial(tmp_path, "a2c-dense", 2), timeout=300)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole process group
    proc.communicate(timeout=120)
    finished = {p.parent: _fingerprint(p.parent) for p in tmp_path.rglob("trial.json")}
    assert len(finished) >= 2
    result = sweep(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    for trial_dir, prints in finished.items():
        assert _fingerprint(trial_dir) == prints, trial_dir
    s = summary(tmp_path)["a2c-dense"]
    assert (s["n_complete"], s["n_running"], s["n_waiting"]) == (5, 0, 0)


@pytest.mark.slow
def test_env_raising_in_step_fails_that_trial_with_its_error_and_the_sweep_goes_on(tmp_path):
    result = sweep(tmp_path, "algo=a2c", "reward=dense,sparse", "hydra.sweeper.n_trials=1",
                   "hydra.sweeper.n_jobs=2", "logger=none", *LIFT_TINY,
                   "hydra.sweeper.objective=tests.faults.train_with_exploding_sparse_env")
    assert result.returncode == 0, result.stderr[-3000:]
    (failed,) = study(tmp_path, "a2c-sparse").get_trials()
    assert failed.state == TrialState.FAIL
    reason = "RuntimeError: injected fault: simulation unstable at step 30"
    assert failed.user_attrs["fail_reason"] == reason
    record = json.loads((tmp_path / "a2c-sparse" / "trial_000" / "trial.json").read_text())
    assert record["state"] == "FAIL" and record["fail_reason"] == reason
    trace = (tmp_path / "a2c-sparse" / "trial_000" / "error.log").read_text()
    assert "tests/faults.py" in trace and ", in step" in trace  # the full traceback is kept
    (ok,) = study(tmp_path, "a2c-dense").get_trials()
    assert ok.state == TrialState.COMPLETE
    assert summary(tmp_path)["a2c-sparse"]["n_failed"] == 1


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs filled to the last byte: a real ENOSPC."""
    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={mount / 'fill'}", "bs=4k"],
                       capture_output=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def assert_unwritable_error(sweep_dir: Path, reason: str) -> None:
    result = sweep(sweep_dir, "algo=ppo")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert f"hydra.sweep.dir={sweep_dir} is not writable: {reason}" in errors[0]
    assert "Traceback" not in result.stderr and "Launching" not in result.stdout


@pytest.mark.slow
def test_full_disk_is_a_clear_error_before_any_job(full_disk):
    assert_unwritable_error(full_disk / "sweep", "No space left on device")
    assert not (full_disk / "sweep" / "optuna.db").exists()


@pytest.mark.slow
def test_sweep_dir_under_a_file_is_a_clear_error_before_any_job(tmp_path):
    (tmp_path / "a_file").write_text("")
    assert_unwritable_error(tmp_path / "a_file" / "sweep", "Not a directory")


@pytest.mark.slow
def test_eight_workers_hammering_the_embedded_storage_lose_and_duplicate_nothing(tmp_path):
    n_trials = 120  # `make bench` runs 1,000 (and again under faults) and reports the throughput
    result = sweep(tmp_path, "algo=ppo", "logger=none",
                   "hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective",
                   "hydra.sweeper.sampler=random", "hydra.sweeper.pruner=none",
                   f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.n_jobs=8",
                   "trainer.total_timesteps=1", "trainer.eval_freq=1", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "locked" not in result.stdout + result.stderr
    trials = study(tmp_path, "ppo-dense").get_trials()
    assert sorted(t.number for t in trials) == list(range(n_trials))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len(trial_files(tmp_path)) == n_trials
    # a trial claimed twice shows up as a second report of a step or a tell on a finished trial
    assert "already reported" not in result.stderr and "already finished" not in result.stderr
    assert len({t.user_attrs["worker"] for t in trials}) == 8
