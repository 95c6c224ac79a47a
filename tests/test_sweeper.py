"""The sweeper for real: Hydra launchers, Optuna storage files, pruning, resume, bad input.

Speed-sensitive behaviour (pruning frees a worker, parallelism, kill/resume) runs on the
synthetic objective, whose trials sleep for known times; the same sweeps on Lift use tiny budgets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT, run_cli

SYNTHETIC = ["hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective",
             "logger=none", "hydra.sweeper.sampler=random"]
LIFT_TINY = ["env.horizon=40", "trainer.total_timesteps=160", "trainer.eval_freq=80",
             "trainer.eval_episodes=1"]


def sweep(sweep_dir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("-m", *args, f"hydra.sweep.dir={sweep_dir}", **kwargs)


def study(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir}/optuna.db")


def summary(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "sweep_summary.json").read_text())


def trial_files(sweep_dir: Path) -> dict[Path, str]:
    return {p: p.read_text() for p in sweep_dir.rglob("trial.json")}


# ---------------------------------------------------------------- synthetic objective (fast)

@pytest.mark.slow
def test_pruned_trials_free_their_worker_at_once(tmp_path):
    result = sweep(tmp_path, "algo=ppo", *SYNTHETIC, "hydra.sweeper.n_trials=12",
                   "hydra.sweeper.n_jobs=2", "trainer.total_timesteps=1000",
                   "trainer.eval_freq=100", "++hydra.sweeper.pruner_kwargs.n_startup_trials=2")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study(tmp_path, "ppo-dense").get_trials()
    assert len(trials) == 12 and sorted(t.number for t in trials) == list(range(12))
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "median pruner pruned nothing"
    assert all(t.user_attrs["last_step"] < 1000 for t in pruned)
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    # No barrier: after a pruned trial its worker starts the next trial while the other
    # worker's trial is still running.
    overlaps = 0
    for p in pruned:
        mine = sorted((t for t in trials if t.user_attrs["worker"] == p.user_attrs["worker"]
                       and t.datetime_start > p.datetime_complete), key=lambda t: t.datetime_start)
        others = [t for t in trials if t.user_attrs["worker"] != p.user_attrs["worker"]]
        if mine and any(o.datetime_start < mine[0].datetime_start < o.datetime_complete
                        for o in others):
            overlaps += 1
    assert overlaps >= 1
    s = summary(tmp_path)["ppo-dense"]
    assert s["n_complete"] + s["n_pruned"] + s["n_failed"] == 12 and s["n_pruned"] == len(pruned)
    assert "[ppo-dense] 12/12 done" in result.stdout


@pytest.mark.slow
def test_grid_of_studies_with_exact_budget_per_cell(tmp_path):
    result = sweep(tmp_path, "algo=ppo,a2c", "reward=dense,sparse", *SYNTHETIC,
                   "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
                   "trainer.total_timesteps=200", "trainer.eval_freq=100",
                   "algo.learning_rate=tag(log,interval(1e-4,1e-2))")
    assert result.returncode == 0, result.stderr[-3000:]
    names = {s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/optuna.db")}
    assert names == {"ppo-dense", "ppo-sparse", "a2c-dense", "a2c-sparse"}
    for name in names:
        trials = study(tmp_path, name).get_trials()
        assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
        # the command-line range replaced the declared one
        assert all(1e-4 <= t.params["algo.learning_rate"] <= 1e-2 for t in trials)
        assert "algo.gamma" in trials[0].params  # the declared space is still sampled
    files = trial_files(tmp_path)
    assert len(files) == 12
    one = json.loads(next(iter(files.values())))
    assert {"number", "state", "params", "value", "last_step"} <= set(one)
    assert set(summary(tmp_path)) == names


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_workers(tmp_path):
    result = sweep(tmp_path, "algo=ppo", *SYNTHETIC, "hydra/launcher=submitit_local",
                   "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                   "trainer.total_timesteps=200", "trainer.eval_freq=100")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study(tmp_path, "ppo-dense").get_trials()
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    assert {t.user_attrs["worker"] for t in trials} <= {0, 1}
    assert (tmp_path / ".submitit").is_dir()


@pytest.mark.slow
def test_sigkilled_sweep_resumes_retries_the_running_trial_and_loses_nothing(tmp_path):
    args = ["-m", "algo=ppo", *SYNTHETIC, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.pruner=none", "trainer.total_timesteps=3000", "trainer.eval_freq=100",
            "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3",
            f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "rlsweep", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    def mid_sweep() -> bool:  # some trials finished and another one half way
        if len(trial_files(tmp_path)) < 2:
            return False
        return any(t.state == TrialState.RUNNING and len(t.intermediate_values) >= 5
                   for t in study(tmp_path, "ppo-dense").get_trials())

    deadline = time.time() + 120
    while not mid_sweep() and time.time() < deadline:
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep: main process and both workers
    proc.wait()
    finished = trial_files(tmp_path)
    assert len(finished) >= 2
    killed_running = [t for t in study(tmp_path, "ppo-dense").get_trials()
                      if t.state == TrialState.RUNNING]
    assert killed_running, "nothing was running at the kill; the test proves nothing"

    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study(tmp_path, "ppo-dense").get_trials()
    retried = [t for t in trials if "failed_trial" in t.system_attrs]
    assert {t.system_attrs["failed_trial"] for t in retried} == {t.number for t in killed_running}
    assert all(t.state == TrialState.FAIL for t in trials if t.number in
               {k.number for k in killed_running})
    for path, text in finished.items():  # finished trials kept, never re-run
        assert path.read_text() == text
    s = summary(tmp_path)["ppo-dense"]
    assert s["n_complete"] == 6 and s["n_failed"] == 0 and s["n_running"] == 0


@pytest.mark.slow
def test_grid_sampler_runs_grid_points_once_each(tmp_path):
    result = sweep(tmp_path, "algo=a2c", *SYNTHETIC[:2], "hydra.sweeper.sampler=grid",
                   "algo.learning_rate=choice(1e-4,1e-3)", "algo.gae_lambda=choice(0.95)",
                   "algo.n_steps=choice(8,16)", "algo.gamma=choice(0.99)",
                   "hydra.sweeper.n_trials=10", "hydra.sweeper.n_jobs=2",
                   "trainer.total_timesteps=200", "trainer.eval_freq=100")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study(tmp_path, "a2c-dense").get_trials()
    points = {(t.params["algo.learning_rate"], t.params["algo.n_steps"]) for t in trials}
    assert len(trials) == 4 and points == {(1e-4, 8), (1e-4, 16), (1e-3, 8), (1e-3, 16)}


# ---------------------------------------------------------------- bad input, before any job

@pytest.mark.parametrize("args,words", [
    (["hydra.sweeper.sampler=nosuch"], ["hydra.sweeper.sampler", "tpe"]),
    (["hydra.sweeper.pruner=nosuch"], ["hydra.sweeper.pruner", "median"]),
    (["hydra.sweeper.n_jobs=0"], ["hydra.sweeper.n_jobs", ">= 1"]),
    (["hydra.sweeper.n_trials=-1"], ["hydra.sweeper.n_trials", ">= 1"]),
    (["algo.learning_rate=interval(1e-3,1e-5)"], ["algo.learning_rate", "inverted"]),
    (["algo.learning_rate=interval(-1.0,1.0)"], ["algo.learning_rate", "> 0"]),
    (["algo.nosuch=interval(0.1,0.2)"], ["algo.nosuch", "does not exist"]),
    (["hydra.sweeper.sampler=grid"], ["grid", "choice()"]),
    (["++hydra.sweeper.pruner_kwargs.n_startup_trials=-1"], ["pruner_kwargs", "median"]),
    (["algo.learning_rate=interval(1e-5"], ["algo.learning_rate"]),
    (["reward=dense,nope"], ["reward", "sparse"]),
])
@pytest.mark.slow
def test_bad_sweep_input_is_one_line_before_any_job(tmp_path, args, words):
    result = sweep(tmp_path, "algo=ppo", *args)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("trial.json")) and "Launching" not in result.stdout


@pytest.mark.slow
def test_unreachable_storage_is_named_without_its_password(tmp_path):
    result = sweep(tmp_path, "algo=ppo",
                   "hydra.sweeper.storage=postgresql://user:hunter2pw@127.0.0.1:1/none")
    assert result.returncode == 2
    assert "hydra.sweeper.storage=postgresql://user:***@127.0.0.1:1/none is unreachable" \
        in result.stderr
    assert "hunter2pw" not in result.stdout + result.stderr
    assert not any("hunter2pw" in p.read_text(errors="ignore")
                   for p in tmp_path.rglob("*") if p.is_file())


# ---------------------------------------------------------------- real Lift, tiny budgets

@pytest.mark.slow
def test_lift_grid_sweep_then_resume_reruns_nothing(tmp_path):
    # Two algorithms on real Lift (the algo x reward grid itself: test_grid_of_studies_…)
    args = ["algo=ppo,sac", "reward=sparse", "hydra.sweeper.n_trials=1",
            "hydra.sweeper.n_jobs=2", *LIFT_TINY]
    first = sweep(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    s = summary(tmp_path)
    assert set(s) == {"ppo-sparse", "sac-sparse"}
    for cell in s.values():
        assert cell["n_complete"] == 1 and cell["env_steps"] == 160 and cell["best_params"]
    files = trial_files(tmp_path)
    assert len(files) == 2
    for path in files:
        trial_dir = path.parent
        for artifact in ("config.yaml", "overrides.yaml", "metrics.json", "model.zip"):
            assert (trial_dir / artifact).exists(), trial_dir / artifact
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("model.zip")}

    again = sweep(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert trial_files(tmp_path) == files
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("model.zip")} == mtimes
    assert summary(tmp_path) == s


@pytest.mark.slow
def test_lift_trial_pruned_at_its_first_evaluation(tmp_path):
    result = sweep(tmp_path, "algo=a2c", "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1",
                   "hydra.sweeper.pruner=threshold", "++hydra.sweeper.pruner_kwargs.lower=2.0",
                   *LIFT_TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = study(tmp_path, "a2c-dense").get_trials()
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [80]
    record = json.loads(next(iter(trial_files(tmp_path).values())))
    assert record["state"] == "PRUNED" and record["last_step"] == 80
    assert record["status"] == "pruned at env step 80"
