"""Reliability round 2: resumes that refuse what they cannot honour, sweeps that say when every
trial failed, one-line errors for bad storages and settings, result files never half-written."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import optuna
import pytest

from rlsweep.cli import compose_config
from rlsweep.config import ConfigError, validate
from rlsweep.files import write_json_atomic
from tests.test_sweeper import sweep

SYNTHETIC = ["hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective", "logger=none",
             "trainer.total_timesteps=200", "trainer.eval_freq=100", "hydra.sweeper.n_jobs=2"]


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file's content hash (the storage excluded: reading it may touch its WAL)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith("optuna.db")}


def one_error_line(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "sweep"
    result = sweep(path, "algo=ppo", *SYNTHETIC, "hydra.sweeper.n_trials=2",
                   "algo.n_steps=choice(128,256)")
    assert result.returncode == 0, result.stderr[-3000:]
    return path


@pytest.mark.slow
@pytest.mark.parametrize("change,words", [
    (["algo.n_steps=choice(128,512)"], ["algo.n_steps", "choice(128, 256) -> choice(128, 512)"]),
    (["algo.n_steps=choice(128,256)", "algo.vf_coef=0.4"],
     ["fixed setting algo.vf_coef: 0.5 -> 0.4"]),
    # a value fixes a searched parameter (issue 31), so the search space changes first
    (["algo.n_steps=choice(128,256)", "algo.gae_lambda=0.9"],
     ["search space algo.gae_lambda: interval(0.9, 0.99) -> not searched"]),
    (["algo.n_steps=choice(128,256)", "hydra.sweeper.metric=mean_return"],
     ["hydra.sweeper.metric: success_then_return -> mean_return"]),
    (["algo.n_steps=choice(128,256)", "hydra.sweeper.direction=minimize"],
     ["hydra.sweeper.direction: maximize -> minimize"]),
    (["algo.n_steps=choice(128,256)", "hydra.sweeper.study_name=other"],
     ["study_name", "overwritten"]),
    (["algo.n_steps=choice(128,256)", "reward=dense,sparse"], ["the grid of cells"]),
])
def test_a_resume_that_changes_the_search_is_refused_before_writing(finished_sweep, change, words):
    before = fingerprint(finished_sweep)
    trials_before = len(optuna.load_study(study_name="ppo-dense",
                                          storage=f"sqlite:///{finished_sweep}/optuna.db").trials)
    line = one_error_line(sweep(finished_sweep, "algo=ppo", *SYNTHETIC,
                                "hydra.sweeper.n_trials=4", *change))
    assert all(w in line for w in words) and "nothing was written" in line, line
    assert fingerprint(finished_sweep) == before
    assert len(optuna.load_study(study_name="ppo-dense",
                                 storage=f"sqlite:///{finished_sweep}/optuna.db").trials) == trials_before


@pytest.mark.slow
def test_the_same_command_with_a_larger_budget_resumes(finished_sweep, tmp_path):
    result = sweep(finished_sweep, "algo=ppo", *SYNTHETIC, "hydra.sweeper.n_trials=3",
                   "algo.n_steps=choice(128,256)")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(finished_sweep.rglob("trial.json"))) == 3


@pytest.mark.slow
def test_a_study_of_another_direction_in_a_shared_storage_is_refused_before_writing(tmp_path):
    storage = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(storage=storage, study_name="ppo-sparse", direction="minimize")
    sweep_dir = tmp_path / "sweep"
    line = one_error_line(sweep(sweep_dir, "algo=ppo", "reward=dense,sparse", *SYNTHETIC,
                                f"hydra.sweeper.storage={storage}"))
    assert "study ppo-sparse in this storage was created with direction=minimize" in line
    assert not (sweep_dir / "sweep_plan.json").exists()
    assert optuna.get_all_study_names(storage) == ["ppo-sparse"]  # ppo-dense was not created


@pytest.mark.slow
def test_a_sweep_where_every_trial_fails_exits_non_zero_saying_why(tmp_path):
    result = sweep(tmp_path, "algo=ppo", "reward=sparse", "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.n_jobs=1", "env.horizon=40", "trainer.total_timesteps=160",
                   "trainer.eval_freq=80", "trainer.eval_episodes=1", "logger=none",
                   "hydra.sweeper.objective=tests.faults.train_with_exploding_sparse_env")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "every trial failed" in line]
    assert len(lines) == 1 and "injected fault: simulation unstable" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("storage,words", [
    ("sqlite:///{tmp}/corrupt.db", ["hydra.sweeper.storage", "file is not a database"]),
    ("sqlite:///:memory:", ["hydra.sweeper.storage=sqlite:///:memory:", "in-memory"]),
])
def test_a_storage_that_cannot_serve_is_one_line(tmp_path, storage, words):
    (tmp_path / "corrupt.db").write_text("not a database")
    line = one_error_line(sweep(tmp_path / "sweep", "algo=ppo", *SYNTHETIC,
                                f"hydra.sweeper.storage={storage.format(tmp=tmp_path)}"))
    assert all(w in line for w in words), line


@pytest.mark.parametrize("override,words", [
    ("seed=-1", ["seed=-1", ">= 0"]),
    ("trainer.checkpoint_freq=1", ["trainer.checkpoint_freq=1", ">= 100"]),
    ("algo.ent_coef=-1", ["algo.ent_coef=-1", ">= 0"]),
    ("algo.ent_coef=auto_-0.1", ["algo.ent_coef", "auto_<initial value > 0>"]),
])
def test_settings_that_cannot_work_are_refused(override, words):
    with pytest.raises(ConfigError) as err:
        validate(compose_config([override]))
    assert all(w in str(err.value) for w in words), err.value
    validate(compose_config(["algo.ent_coef=auto_0.1"]))


def test_ppo_needs_two_steps_per_rollout():
    with pytest.raises(ConfigError, match="algo.n_steps=1 is invalid: must be an integer >= 2"):
        validate(compose_config(["algo=ppo", "algo.n_steps=1"]))


def test_concurrent_atomic_writes_leave_one_whole_file_and_no_temporaries(tmp_path):
    path = tmp_path / "trial.json"
    payloads = [{"writer": k, "data": "x" * 200_000} for k in range(8)]
    threads = [threading.Thread(target=write_json_atomic, args=(path, p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(path.read_text()) in payloads  # whole: one writer's file, not a mix
    assert [p.name for p in tmp_path.iterdir()] == ["trial.json"]
