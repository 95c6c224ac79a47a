"""Scale-out on a real PostgreSQL: independent sweep processes cooperating on one study.

The fixture starts a throwaway PostgreSQL cluster on 127.0.0.1 (Debian's postgresql, which
.ci/run installs), with a password-protected role, so the password can be planted and searched for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState
import pytest

from bench.postgres import postgres_bindir, throwaway_postgres
from rlsweep.credentials import PASSWORD_ENV
from tests.conftest import ROOT, require_installed
from tests.test_sweeper import SYNTHETIC

PG_PASSWORD = "planted0pg0password0" + "7" * 8
# The password's place in a storage URL, as docs/cluster.md recommends: read from the environment.
ENV_PASSWORD = f"${{oc.env:{PASSWORD_ENV}}}"
POSTGRESQL = "Debian's postgresql (.ci/run installs it)"
SYNTHETIC_WITH_WANDB = [a for a in SYNTHETIC if a != "logger=none"]


@pytest.fixture(scope="module")
def postgres_url():
    require_installed(postgres_bindir() is not None, POSTGRESQL)
    with throwaway_postgres(PG_PASSWORD) as url:
        yield url


@pytest.mark.slow
def test_two_sweep_processes_share_one_study_without_leaking_the_password(postgres_url, tmp_path):
    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            # logger stays wandb (offline): the sweep's summary run and report must not leak
            [sys.executable, "-m", "rlsweep", "-m", "algo=ppo", *SYNTHETIC_WITH_WANDB,
             f"hydra.sweeper.storage={postgres_url}", "hydra.sweeper.study_name=shared",
             "hydra.sweeper.n_trials=10", "hydra.sweeper.n_jobs=2",
             "++hydra.sweeper.pruner_kwargs.n_startup_trials=2",
             "trainer.total_timesteps=600", "trainer.eval_freq=100",
             f"hydra.sweep.dir={tmp_path / name}"],
            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ})

    processes = {name: start(name) for name in ("machine_a", "machine_b")}
    outputs = {name: p.communicate(timeout=600)[0] for name, p in processes.items()}
    for name, p in processes.items():
        assert p.returncode == 0, outputs[name][-3000:]

    trials = optuna.load_study(study_name="shared-ppo-dense", storage=postgres_url).get_trials()
    assert sorted(t.number for t in trials) == list(range(10))  # n_trials across both, no repeat
    assert all(t.state.is_finished() for t in trials)
    ran_in = {Path(t.user_attrs["trial_dir"]).parts[-3] for t in trials}
    assert ran_in == {"machine_a", "machine_b"}, "both processes took trials"
    # the two processes' samplers do not replay each other's (seeded) streams
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 10

    for name, out in outputs.items():
        assert PG_PASSWORD not in out and "rlsweep:***@127.0.0.1" in out
    for name in processes:
        assert (tmp_path / name / "report.html").exists()
        assert list((tmp_path / name / "wandb").glob("offline-run-*"))  # the sweep's summary run
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert PG_PASSWORD.encode() not in path.read_bytes(), path


def test_workers_beyond_the_servers_connections_are_refused_and_pools_are_bounded():
    """A server with max_connections=12 (3 reserved for superusers) has room for a sweep and 2
    workers at 3 connections each, not for 8 workers: refused in one line before any job."""
    from rlsweep.config import ConfigError
    from rlsweep.sweep.study import CONNECTIONS_PER_PROCESS, check_connection_budget, make_storage

    require_installed(postgres_bindir() is not None, POSTGRESQL)
    with throwaway_postgres(PG_PASSWORD, max_connections=12) as url:
        storage = make_storage(url, heartbeat_interval=10, grace_period=60)
        pool = storage.engine.pool
        assert pool.size() + pool._max_overflow == CONNECTIONS_PER_PROCESS
        check_connection_budget(storage, n_jobs=1)
        with pytest.raises(ConfigError) as err:
            check_connection_budget(storage, n_jobs=8)
        message = str(err.value)
        assert message.startswith("hydra.sweeper.n_jobs=8 is invalid for this PostgreSQL server")
        assert "max_connections=12" in message and "use n_jobs <= " in message
        assert PG_PASSWORD not in message and "\n" not in message
        storage.engine.dispose()


def test_reports_on_postgresql_are_stored_as_optuna_stores_them(postgres_url):
    from tests.test_reliability_storage import reports_stored_as_optuna_stores_them

    reports_stored_as_optuna_stores_them(postgres_url)


def test_a_trial_finishing_mid_read_on_postgresql_is_still_read(postgres_url):
    from tests.test_reliability_storage import a_trial_finishing_mid_read_is_still_read

    a_trial_finishing_mid_read_is_still_read(postgres_url)


def test_concurrent_claims_on_postgresql_take_each_trial_once(postgres_url):
    """Four claimants with their own connections drain one queue at once: FOR UPDATE SKIP
    LOCKED hands each trial to exactly one of them, and none stops while trials wait."""
    import threading

    from rlsweep.sweep.study import claim_trial, make_storage

    optuna.create_study(storage=postgres_url, study_name="claims").enqueue_trial({})
    queue = optuna.load_study(study_name="claims", storage=postgres_url)
    for _ in range(39):
        queue.enqueue_trial({}, skip_if_exists=False)
    taken: dict[str, list[int]] = {}

    def claimant(name: str) -> None:
        storage = make_storage(postgres_url, heartbeat_interval=10, grace_period=60)
        study = optuna.load_study(study_name="claims", storage=storage)
        mine = taken.setdefault(name, [])
        while (trial := claim_trial(study, storage, name)) is not None:
            mine.append(trial.number)

    threads = [threading.Thread(target=claimant, args=(f"host:1:{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    numbers = sorted(n for mine in taken.values() for n in mine)
    assert numbers == list(range(40))  # each once, none left
    trials = queue.get_trials()
    assert all(t.state == TrialState.RUNNING for t in trials)
    assert all(t.number in taken[t.user_attrs["claimed_by"]] for t in trials)
