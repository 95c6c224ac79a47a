"""Storage passwords (issue 15): never printed, never written to disk by Hydra or its launchers.

A literal password in `hydra.sweeper.storage` would land in the job pickles of the submitit
launchers (`.submitit/<job>/*_submitted.pkl`, `*_result.pkl`) and in a single run's
`.hydra/hydra.yaml`; it is refused there, while `${oc.env:...}` stays unresolved and safe.
An override Hydra cannot parse is echoed in the error with its password masked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_postgres import ENV_PASSWORD, PG_PASSWORD, postgres_url  # noqa: F401 (a fixture)
from tests.test_sweeper import LIFT_TINY, SYNTHETIC, sweep

# Characters Hydra's override grammar reserves, so the override cannot be parsed as typed.
GRAMMAR_PASSWORD = "pw(x{y=z#"


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under root (pickles too, read as bytes) that contains `secret`."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def assert_one_error_line(result, secret: str) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------- masking echoed overrides

@pytest.mark.parametrize("text, shown", [
    ("hydra.sweeper.storage=postgresql://u:pw(x{y=z#@127.0.0.1:1/none",
     "hydra.sweeper.storage=postgresql://u:***@127.0.0.1:1/none"),
    ("'hydra.sweeper.storage=postgresql+psycopg2://rlsweep:s3cr3t@db:5432/optuna' cannot be "
     "parsed", "'hydra.sweeper.storage=postgresql+psycopg2://rlsweep:***@db:5432/optuna' cannot "
     "be parsed"),
    # an unencoded @ or a space in the password: masked up to the host, not the first @
    ("mysql://a:p@ss w'rd@host/db", "mysql://a:***@host/db"),
    ("To append use +hydra.sweeper.storag=redis://:only-pw@h:6379",
     "To append use +hydra.sweeper.storag=redis://:***@h:6379"),
    # an interpolation names a variable, not the password: shown (a default in it is not)
    (f"postgresql://rlsweep:{ENV_PASSWORD}@db/optuna", f"postgresql://rlsweep:{ENV_PASSWORD}@db/optuna"),
    ("postgresql://rlsweep:${oc.env:PW,fallback-pw}@db/optuna", "postgresql://rlsweep:***@db/optuna"),
    # a masked URL followed by another one on the same line: each masked up to its own host
    ("postgresql://u:pw@h/d is refused; use 'postgresql://u:${oc.env:PW}@h/d'",
     "postgresql://u:***@h/d is refused; use 'postgresql://u:${oc.env:PW}@h/d'"),
    # nothing to mask: no userinfo, a user without password, a port, a file
    ("postgresql://db-host:5432/optuna", "postgresql://db-host:5432/optuna"),
    ("postgresql://rlsweep@db-host/optuna", "postgresql://rlsweep@db-host/optuna"),
    ("sqlite:////tmp/multirun/optuna.db", "sqlite:////tmp/multirun/optuna.db"),
    ("algo=ppo,sac trainer.total_timesteps=1000", "algo=ppo,sac trainer.total_timesteps=1000"),
])
def test_mask_credentials(text, shown):
    from rlsweep.credentials import mask_credentials

    assert mask_credentials(text) == shown


def test_mask_credentials_masks_every_line_and_every_url():
    from rlsweep.credentials import mask_credentials

    text = "a=postgresql://u:first-pw@h/d b=mysql://v:second-pw@h2/e\nc=redis://w:third-pw@h3"
    shown = mask_credentials(text)
    assert not any(pw in shown for pw in ("first-pw", "second-pw", "third-pw")), shown
    assert shown.count("\n") == 1 and shown.startswith("a=postgresql://u:***@")


@pytest.mark.slow
@pytest.mark.parametrize("multirun", [True, False])
def test_unparsable_password_is_one_masked_line_and_writes_nothing(tmp_path, multirun):
    run_dir = tmp_path / "run"
    result = run_cli(*(["-m"] if multirun else []), "algo=ppo",
                     f"hydra.sweeper.storage=postgresql://u:{GRAMMAR_PASSWORD}@127.0.0.1:1/none",
                     f"hydra.{'sweep' if multirun else 'run'}.dir={run_dir}")
    line = assert_one_error_line(result, GRAMMAR_PASSWORD)
    assert "hydra.sweeper.storage=postgresql://u:***@127.0.0.1:1/none" in line
    assert "RLSWEEP_DB_PASSWORD" in line  # the way out: the password from the environment
    for piece in ("(x", "x{", "{y", "y=z", "z#"):  # nor a piece of it quoted by Hydra's parser
        assert piece not in line, line
    assert not run_dir.exists()


@pytest.mark.slow
def test_unparsable_override_elsewhere_still_gets_hydra_reason():
    result = run_cli("algo=ppo", "hydra.sweeper.storage=postgresql://u:pw@127.0.0.1:1/none",
                     "trainer.total_timesteps=(1")
    line = assert_one_error_line(result, "u:pw@")
    assert "'trainer.total_timesteps=(1' cannot be parsed: " in line


@pytest.mark.slow
def test_hydra_message_echoing_an_override_is_masked(tmp_path):
    """Hydra's "To append to your config use +<override>" advice repeats the whole override
    (kept where `+` is the way: an open node such as env.kwargs; a structured one like
    hydra.sweeper gets the allowed keys instead, never the value)."""
    result = run_cli("-m", "algo=ppo", "env=gym",
                     "env.kwargs.storag=postgresql://u:hunter2pw@h:1/none",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    line = assert_one_error_line(result, "hunter2pw")
    assert "+env.kwargs.storag=postgresql://u:***@h:1/none" in line
    result = run_cli("-m", "algo=ppo", "hydra.sweeper.storag=postgresql://u:hunter2pw@h:1/none",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    line = assert_one_error_line(result, "hunter2pw")
    assert "hydra.sweeper.storag is invalid" in line and "postgresql" not in line


# ---------------------------------------------------------------- literal password on disk

@pytest.mark.parametrize("overrides, refused", [
    (["hydra/launcher=submitit_local"], True),          # .submitit/<job>/*.pkl
    (["hydra/launcher=submitit_slurm_lift"], True),
    (["hydra/launcher=ray_cluster"], True),              # Ray's object store may spill to disk
    (["hydra/launcher=joblib"], False),                  # pipes to the workers, nothing on disk
    (["hydra/launcher=basic"], False),                   # jobs run in this process
    ([], False),                                         # joblib is the default
])
def test_literal_password_refused_for_launchers_that_pickle_the_config(overrides, refused):
    from rlsweep.cli import compose_config
    from rlsweep.config import ConfigError
    from rlsweep.credentials import check_storage_password

    storage = "hydra.sweeper.storage=postgresql://rlsweep:hunter2pw@db-host:5432/optuna"
    for literal, form in ((True, storage), (False, storage.replace("hunter2pw", ENV_PASSWORD))):
        cfg = compose_config([form, *overrides], return_hydra_config=True)
        if literal and refused:
            with pytest.raises(ConfigError) as err:
                check_storage_password(cfg, multirun=True)
            message = str(err.value)
            assert "hunter2pw" not in message
            assert message.startswith("hydra.sweeper.storage=postgresql://rlsweep:***@db-host")
            assert ("postgresql://rlsweep:${oc.env:RLSWEEP_DB_PASSWORD}@db-host:5432/optuna"
                    in message)
        else:
            check_storage_password(cfg, multirun=True)


@pytest.mark.slow
def test_literal_password_refused_in_a_single_run(tmp_path):
    """A single run never uses the storage but writes its Hydra config to .hydra/hydra.yaml."""
    run_dir = tmp_path / "run"
    result = run_cli("algo=ppo", "hydra.sweeper.storage=postgresql://u:hunter2pw@h:1/optuna",
                     *LIFT_TINY, "logger=none", f"hydra.run.dir={run_dir}")
    line = assert_one_error_line(result, "hunter2pw")
    assert line.startswith("error: hydra.sweeper.storage=postgresql://u:***@h:1/optuna")
    assert not files_holding(tmp_path, "hunter2pw")
    assert not run_dir.exists()


@pytest.mark.slow
def test_submitit_literal_password_is_refused_before_any_job(postgres_url, tmp_path):  # noqa: F811
    result = sweep(tmp_path, "algo=ppo", *SYNTHETIC, "hydra/launcher=submitit_local",
                   f"hydra.sweeper.storage={postgres_url}", "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.n_jobs=1", "trainer.total_timesteps=200",
                   "trainer.eval_freq=100")
    line = assert_one_error_line(result, PG_PASSWORD)
    assert "hydra.sweeper.storage=postgresql://rlsweep:***@127.0.0.1:" in line
    assert "submitit_local" in line and "RLSWEEP_DB_PASSWORD" in line
    assert not files_holding(tmp_path, PG_PASSWORD)
    assert not (tmp_path / ".submitit").exists()


@pytest.mark.slow
def test_submitit_sweep_with_the_password_from_the_environment_leaves_it_nowhere(
        postgres_url, tmp_path):  # noqa: F811
    """The recommended form (docs/cluster.md) on the submitit path: the job pickles hold the
    interpolation, the workers resolve it from the environment they inherit."""
    storage = postgres_url.replace(PG_PASSWORD, ENV_PASSWORD)
    result = sweep(tmp_path, "algo=ppo", *SYNTHETIC, "hydra/launcher=submitit_local",
                   f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=from-env",
                   "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
                   "trainer.total_timesteps=200", "trainer.eval_freq=100",
                   env={"RLSWEEP_DB_PASSWORD": PG_PASSWORD})
    assert result.returncode == 0, result.stderr[-3000:]
    assert PG_PASSWORD not in result.stdout + result.stderr
    pickles = list((tmp_path / ".submitit").rglob("*.pkl"))
    assert any(p.name.endswith("_submitted.pkl") for p in pickles)
    assert any(p.name.endswith("_result.pkl") for p in pickles)
    assert not files_holding(tmp_path, PG_PASSWORD)
    assert len(list(tmp_path.rglob("trial.json"))) == 2
