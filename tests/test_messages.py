"""Messages for bad input and damaged files (issue 31, items 16-19 and 22): one line that names
the field or the file and what is wrong, never a traceback, never a piece of a password; and
input that is valid (a password with `{}` or `@`, gymnasium's `module:id`) works.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import time

import pytest

from bench.postgres import postgres_bindir, throwaway_postgres
from rlsweep.config import ConfigError
from rlsweep.credentials import PASSWORD_ENV
from rlsweep.sweep.study import make_storage, mask_url
from tests.clusters import free_port
from tests.conftest import ROOT, require_installed
from tests.test_postgres import ENV_PASSWORD, POSTGRESQL
from tests.test_sweeper import SYNTHETIC, sweep

# Braces (Optuna formats the URL: `{ant}` is a missing key) and an `@` (URL parsers end the
# password at the first `@`, the rest would be the host); pieces long enough to search for.
ODD_PASSWORD = "braces{antpiece}and@hostpiece0"
PIECES = ("antpiece", "hostpiece0", ODD_PASSWORD)
ONE_TRIAL = ["algo=ppo", *SYNTHETIC, "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=1",
             "hydra.sweeper.n_jobs=1", "trainer.total_timesteps=200", "trainer.eval_freq=100"]


PENDULUM_TINY = ["env=gym", "env.id=Pendulum-v1", "algo=ppo", "algo.n_steps=128",
                 "trainer.total_timesteps=256", "trainer.eval_freq=128", "trainer.eval_episodes=1",
                 "trainer.progress_s=0"]


def one_error_line(result) -> str:
    """The only line of a refused command's stderr (which must start with `error:`)."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------- 16: odd storage passwords

def test_a_password_with_an_at_sign_is_masked_whole_and_the_host_is_the_host():
    shown = mask_url(f"postgresql://u:{ODD_PASSWORD}@127.0.0.1:5432/db")
    assert shown == "postgresql://u:***@127.0.0.1:5432/db"


def test_an_unreachable_storage_with_braces_in_its_password_echoes_none_of_it():
    with pytest.raises(ConfigError) as err:
        make_storage(f"postgresql://u:{ODD_PASSWORD}@127.0.0.1:9/db", heartbeat_interval=10,
                     grace_period=60)
    message = str(err.value)
    assert message.startswith("hydra.sweeper.storage=postgresql://u:***@127.0.0.1:9/db is "
                              "unreachable"), message
    assert not [piece for piece in PIECES if piece in message], message


@pytest.mark.slow
def test_a_sweep_on_postgresql_whose_password_holds_braces_and_an_at_sign(tmp_path):
    """A real server whose role has that password, read from the environment as
    docs/cluster.md recommends: the sweep runs, and prints no piece of the password."""
    require_installed(postgres_bindir() is not None, POSTGRESQL)
    with throwaway_postgres(ODD_PASSWORD) as url:
        storage = "postgresql://rlsweep:" + ENV_PASSWORD + "@" + url.rsplit("@", 1)[1]
        result = sweep(tmp_path, *ONE_TRIAL, f"hydra.sweeper.storage={storage}",
                       env={PASSWORD_ENV: ODD_PASSWORD})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        output = result.stdout + result.stderr
        assert not [piece for piece in PIECES if piece in output], output[-3000:]
        assert "storage postgresql://rlsweep:***@127.0.0.1:" in output
        stored = make_storage(url, heartbeat_interval=10, grace_period=60)
        import optuna

        trials = optuna.load_study(study_name="ppo-dense", storage=stored).get_trials()
        assert [t.state.name for t in trials] == ["COMPLETE"]
        stored.engine.dispose()


# ---------------------------------------------------------------- 17: an unset variable

@pytest.mark.slow
def test_an_unset_variable_in_the_storage_url_is_one_line_naming_it(tmp_path):
    result = sweep(tmp_path, *ONE_TRIAL,
                   "hydra.sweeper.storage=postgresql://u:${oc.env:RLSWEEP_MSG_UNSET}@127.0.0.1:9/x")
    line = one_error_line(result)
    assert re.search(r"hydra\.sweeper\.storage .*RLSWEEP_MSG_UNSET.* not set", line), line
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# ---------------------------------------------------------------- 22: --help of the tools

@pytest.mark.parametrize("module", ["rlsweep.evaluate", "rlsweep.confirm",
                                    "rlsweep.report.__main__"])
def test_help_prints_the_usage_and_exits_0(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {module.removesuffix('.__main__')} ")
    assert "=" in out.splitlines()[0]  # the key=value options, as they are written


@pytest.mark.parametrize("module, argv, expected", [
    ("rlsweep.evaluate", ["episodes=3", "runs_dir=x"], "unknown argument 'runs_dir'"),
    ("rlsweep.confirm", ["a", "b", "seeds=2"], "one sweep dir is required, got 2"),
    ("rlsweep.report.__main__", ["out=x.html"], "the following arguments are required"),
])
def test_a_bad_command_line_is_one_line_with_the_usage(module, argv, expected, capsys):
    assert importlib.import_module(module).main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1, err
    assert f"usage: python -m {module.removesuffix('.__main__')} " in err


# ---------------------------------------------------------------- 18: W&B key, no network

@pytest.mark.slow
def test_a_wandb_key_with_the_server_unreachable_logs_offline_saying_so_once(tmp_path):
    """No WANDB_MODE, a (fake) key, and a W&B server that refuses connections (a closed port
    here; a machine without network fails its DNS lookup the same way): wandb alone would
    retry for 90 s and raise. The run logs offline instead, saying so in one line."""
    fake_key = "0123456789abcdef" * 2 + "fakefake"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env.update(WANDB_API_KEY=fake_key, WANDB_BASE_URL=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "rlsweep", *PENDULUM_TINY, "logger=wandb",
         f"hydra.run.dir={tmp_path}"], cwd=ROOT, env=env, text=True, capture_output=True,
        timeout=80)  # wandb's own wait (90 s) would run past this
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output and fake_key not in output
    warnings = [line for line in output.splitlines() if "W&B logs offline" in line]
    assert len(warnings) == 1 and "unreachable" in warnings[0], output[-3000:]
    assert list((tmp_path / "wandb").glob("offline-run-*")), "the run was not logged offline"
    assert time.monotonic() - started < 70
