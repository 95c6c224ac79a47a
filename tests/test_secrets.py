"""Storage passwords (issue 15): never printed.

An override Hydra cannot parse, or that Hydra's advice repeats, is echoed in the error with its
password masked.
"""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

# Characters Hydra's override grammar reserves, so the override cannot be parsed as typed.
GRAMMAR_PASSWORD = "pw(x{y=z#"
ENV_PASSWORD = "${oc.env:RLSWEEP_DB_PASSWORD}"


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


def test_unparsable_override_elsewhere_still_gets_hydra_reason():
    result = run_cli("algo=ppo", "hydra.sweeper.storage=postgresql://u:pw@127.0.0.1:1/none",
                     "trainer.total_timesteps=(1")
    line = assert_one_error_line(result, "u:pw@")
    assert "'trainer.total_timesteps=(1' cannot be parsed: " in line


def test_hydra_message_echoing_an_override_is_masked(tmp_path):
    """Hydra's "To append to your config use +<override>" advice repeats the whole override."""
    result = run_cli("-m", "algo=ppo", "hydra.sweeper.storag=postgresql://u:hunter2pw@h:1/none",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    line = assert_one_error_line(result, "hunter2pw")
    assert "+hydra.sweeper.storag=postgresql://u:***@h:1/none" in line
