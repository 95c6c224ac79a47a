"""Sweeps through a real Slurm cluster: sbatch'ed worker jobs sharing a real PostgreSQL study.

tests/clusters.py starts a throwaway single-node slurmctld + slurmd + munge on 127.0.0.1 (the
packages .ci/run installs); the sweep uses the ready preset `hydra/launcher=submitit_slurm_lift`
as a user would, with the database password in the environment. There is no slurmdbd, so
`sacct` fails and submitit cannot learn that a cancelled job ended: the sweep must finish from
what the storage says.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from tests.clusters import slurm_installed, throwaway_slurm, wait_until
from tests.conftest import ROOT, require_installed
from tests.test_postgres import ENV_PASSWORD, PG_PASSWORD, postgres_url  # noqa: F401  (fixture)
from tests.test_sweeper import SYNTHETIC

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def slurm():
    require_installed(slurm_installed(), "Debian's slurm-wlm and munge (.ci/run installs them)")
    with throwaway_slurm() as cluster:
        yield cluster


def start_slurm_sweep(slurm, postgres_url, tmp_path, study_name: str, n_trials: int,  # noqa: F811
                      trial_s: float) -> subprocess.Popen:
    """A 2-job sweep through sbatch on the synthetic objective, `trial_s` seconds per trial."""
    storage = postgres_url.replace(PG_PASSWORD, ENV_PASSWORD)
    steps = int(trial_s * 1000)  # the synthetic objective "trains" 1,000 env steps/s
    return subprocess.Popen(
        [sys.executable, "-m", "rlsweep", "-m", "algo=ppo", *SYNTHETIC,
         "hydra/launcher=submitit_slurm_lift", "hydra.launcher.mem_gb=1",
         f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={study_name}",
         f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.n_jobs=2",
         "hydra.sweeper.pruner=none", f"trainer.total_timesteps={steps}",
         f"trainer.eval_freq={steps // 4}", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**slurm.env, "SLURM_PARTITION": slurm.partition, "RLSWEEP_DB_PASSWORD": PG_PASSWORD,
             "WANDB_MODE": "offline"})


def running_jobs(slurm) -> list[str]:
    return slurm.run("squeue", "-h", "-t", "RUNNING", "-o", "%i").split()


def trials_of(postgres_url, study_name: str) -> dict[int, optuna.trial.FrozenTrial]:  # noqa: F811
    study = optuna.load_study(study_name=f"{study_name}-ppo-dense", storage=postgres_url)
    return {t.number: t for t in study.get_trials(deepcopy=False)}


def test_a_slurm_sweep_survives_scancel_and_requeue_of_its_worker_jobs(
        slurm, postgres_url, tmp_path):  # noqa: F811
    """Two sbatch'ed workers share one PostgreSQL study. One is scancel'ed mid-trial, the other
    requeued (`scontrol requeue`) mid-trial: each running trial is failed as preempted and
    retried once with its retry unspent, the requeued job comes back and takes trials again,
    every other trial completes untouched, and the sweep returns although `sacct` cannot tell
    submitit that the cancelled job ended."""
    proc = start_slurm_sweep(slurm, postgres_url, tmp_path, "slurm", n_trials=6, trial_s=6)
    try:
        jobs = wait_until("both worker jobs running with a trial each", lambda: (
            (jobs := running_jobs(slurm)) and len(jobs) == 2
            and sum(t.state == TrialState.RUNNING for t in trials_of(
                postgres_url, "slurm").values()) == 2 and jobs))
        time.sleep(1.5)  # both trials well inside their 6 s
        cancelled, requeued = sorted(jobs)
        slurm.run("scancel", cancelled)
        slurm.run("scontrol", "requeue", requeued)
        # Slurm holds a requeued job for 2 min (BeginTime); once it waits, let it start now.
        wait_until("the requeued job to wait in the queue", lambda: slurm.run(
            "squeue", "-h", "-j", requeued, "-o", "%T").strip() == "PENDING", timeout_s=60)
        slurm.run("scontrol", "update", f"JobId={requeued}", "StartTime=now")
        out, _ = proc.communicate(timeout=600)
        wait_until("the requeued job to run again and end", lambda: not slurm.run("squeue", "-h"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert PG_PASSWORD not in out

    trials = trials_of(postgres_url, "slurm")
    failed = [n for n, t in trials.items() if t.state == TrialState.FAIL]
    assert len(failed) == 2, {n: (t.state, t.user_attrs) for n, t in trials.items()}
    for n in failed:
        assert trials[n].user_attrs["fail_reason"].startswith("preempted: its worker got SIGTERM")
        (retry,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == n]
        assert retry.state == TrialState.COMPLETE and retry.params == trials[n].params
        assert retry.system_attrs["retry_history"] == []  # its one retry still unspent
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and len(trials) == 8  # the budget, plus the two retries
    # The requeued job came back: a second worker ran under its job id and ended normally.
    (log,) = (tmp_path / ".submitit" / requeued).glob("*_log.out")
    text = log.read_text()
    runs = text.split("Starting with JobEnvironment")[1:]
    assert len(runs) == 2, text
    assert all("Exiting after successful completion" in run for run in runs), text


def test_a_slurm_sweep_whose_worker_jobs_all_die_unannounced_launches_new_ones(
        slurm, postgres_url, tmp_path):  # noqa: F811
    """Both worker jobs SIGKILLed mid-trial (a lost node, the OOM killer: no SIGTERM, so the
    workers neither requeue their trials nor return a result to submitit, which without
    accounting then waits forever). The sweep learns from squeue that every job it launched
    has left the queue (each worker noted its job id on the study), queues the two cut trials
    again without spending their retry, and launches two new worker jobs, which finish the
    budget. (A plain scancel is SIGTERM: the workers requeue their trials and return, and the
    launch ends by itself.)"""
    proc = start_slurm_sweep(slurm, postgres_url, tmp_path, "gone", n_trials=4, trial_s=4)
    try:
        wait_until("both worker jobs running with a trial each", lambda: (
            (jobs := running_jobs(slurm)) and len(jobs) == 2
            and sum(t.state == TrialState.RUNNING for t in trials_of(
                postgres_url, "gone").values()) == 2 and jobs))
        # Every process of both jobs at once, as a lost node would. (`scancel --signal=KILL`
        # would not do: Slurm cancels the job then, with SIGTERM first.)
        ids = set(slurm.run("squeue", "-h", "-r", "-t", "RUNNING", "-o", "%A").split())
        killed = 0
        for process in psutil.process_iter(["name"]):
            try:
                if process.info["name"] != "slurmstepd" and \
                        process.environ().get("SLURM_JOB_ID") in ids:
                    process.send_signal(signal.SIGKILL)
                    killed += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        assert killed >= 2, ids
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert "every worker job of this launch has left the cluster's queue" in out, out[-3000:]
    trials = trials_of(postgres_url, "gone")
    failed = [t for t in trials.values() if t.state == TrialState.FAIL]
    assert len(failed) == 2, {n: (t.state, t.user_attrs) for n, t in trials.items()}
    for cut in failed:
        assert "left the cluster's queue" in cut.user_attrs["fail_reason"]
        (retry,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == cut.number]
        assert retry.state == TrialState.COMPLETE and retry.params == cut.params
        assert retry.system_attrs["retry_history"] == []  # its one retry still unspent
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) == 4
    assert len(trials) == 6  # the budget, plus the two retries
    # The second launch's workers (Hydra job numbers 2 and 3) ran as new Slurm jobs.
    study = optuna.load_study(study_name="gone-ppo-dense", storage=postgres_url)
    noted = {k: v for k, v in study.user_attrs.items() if k.startswith("rlsweep_worker_job_")}
    assert sorted(int(k.rsplit(":", 1)[1]) for k in noted) == [0, 1, 2, 3], noted
    assert len(set(noted.values())) == 4
