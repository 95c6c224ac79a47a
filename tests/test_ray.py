"""Sweeps through a real Ray cluster: `ray start --head` on 127.0.0.1 (tests/clusters.py), the
`hydra/launcher=ray_cluster` preset (rlsweep's own `ray.remote` launcher), a real PostgreSQL
study, real training. The password reaches the Ray workers as it would on a cluster: through the
environment `ray start` ran in, never through the task.
"""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from tests.clusters import ray_installed, throwaway_ray
from tests.conftest import ROOT, require_installed
from tests.test_postgres import ENV_PASSWORD, PG_PASSWORD, postgres_url  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def ray_head():
    require_installed(ray_installed(), "the [ray] extra (make test installs it)")
    with throwaway_ray(env={**os.environ, "RLSWEEP_DB_PASSWORD": PG_PASSWORD,
                            "WANDB_MODE": "offline"}) as cluster:
        yield cluster


def test_a_ray_sweep_trains_saves_and_reloads_models(ray_head, postgres_url, tmp_path):  # noqa: F811
    """Two Ray tasks (sweep workers) train SAC on Pendulum from one PostgreSQL study; the sweep
    finishes its budget, every trial's model reloads and acts, and the password appears in no
    output and no file of the sweep."""
    storage = postgres_url.replace(PG_PASSWORD, ENV_PASSWORD)
    result = subprocess.run(
        [sys.executable, "-m", "rlsweep", "-m", "algo=sac", "+experiment=sweep_quick",
         "hydra/launcher=ray_cluster", f"hydra.sweeper.storage={storage}",
         "hydra.sweeper.study_name=ray", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
         "trainer.total_timesteps=400", "trainer.eval_freq=200",
         "algo.learning_starts=100", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "RAY_ADDRESS": ray_head.address, "RLSWEEP_DB_PASSWORD": PG_PASSWORD,
             "WANDB_MODE": "offline"})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert PG_PASSWORD not in out

    study = optuna.load_study(study_name="ray-sac-dense", storage=postgres_url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [
        (t.state, t.user_attrs.get("fail_reason")) for t in trials]
    # Both Ray tasks ran workers (their folders under workers/), each in a Ray worker process.
    assert len(list((tmp_path / "workers").iterdir())) == 2

    from rlsweep.evaluate import load_policy

    for trial in trials:
        run_dir = tmp_path / "sac-dense" / f"trial_{trial.number:03d}"
        model, env, _ = load_policy(run_dir)
        action, _ = model.predict(env.reset(), deterministic=True)
        assert env.action_space.contains(action[0])
        env.close()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert PG_PASSWORD.encode() not in path.read_bytes(), path
