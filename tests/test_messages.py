"""Messages for bad input and damaged files (issue 31, items 16-19 and 22): one line that names
the field or the file and what is wrong, never a traceback, never a piece of a password; and
input that is valid (a password with `{}` or `@`, gymnasium's `module:id`) works.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bench.postgres import postgres_bindir, throwaway_postgres
from rlsweep.config import ConfigError
from rlsweep.credentials import PASSWORD_ENV
from rlsweep.sweep.study import make_storage, mask_url
from tests.clusters import free_port
from tests.conftest import ROOT, compose_cfg, require_installed, run_cli
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
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0] and "unreachable" in warnings[0], \
        output[-3000:]
    assert list((tmp_path / "wandb").glob("offline-run-*")), "the run was not logged offline"
    assert time.monotonic() - started < 70


def failing_objective(cfg, run_dir, eval_hook=None, wandb_init=None):
    """A trial objective that always raises: a sweep whose every trial failed."""
    raise RuntimeError("this trial fails on purpose")


def test_auto_mode_with_a_key_and_no_server_is_offline_warning_once(monkeypatch, tmp_path,
                                                                     capsys):
    from rlsweep.tracking import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    auto = {"name": "wandb", "mode": "auto"}
    assert [wandb_mode(auto) for _ in range(3)] == ["offline"] * 3  # e.g. a worker's trials
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: W&B logs offline: 127.0.0.1:"), lines


# ---------------------------------------------------------------- 19: damaged inputs

@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    """A finished sweep of two synthetic trials (logger=none), to copy and damage."""
    sweep_dir = tmp_path_factory.mktemp("finished") / "sweep"
    result = sweep(sweep_dir, *ONE_TRIAL, "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def damaged_copy(finished: Path, to: Path, file: str, content: str | None) -> Path:
    """A copy of the sweep with `file` cut to `content` (None: deleted); returns the file."""
    shutil.copytree(finished, to)
    path = to / file
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    return path


def cut_short(path: Path) -> str:
    return path.read_text()[:40]


DAMAGES = [  # (file, what is done to it, what the error says of it)
    ("sweep_plan.json", cut_short, "is not valid JSON"),
    ("sweep_plan.json", lambda _: '{"cells": 1}', "is malformed"),
    ("sweep_summary.json", cut_short, "is not valid JSON"),
    ("ppo-dense/trial_000/trial.json", cut_short, "is not valid JSON"),
    ("ppo-dense/trial_000/trial.json", lambda _: "[]", "is malformed"),
    ("ppo-dense/base_config.yaml", lambda _: None, "is missing"),
]


@pytest.mark.slow
@pytest.mark.parametrize("tool, file, damage, expected", [
    (tool, *damage) for tool in ("rlsweep.report.__main__", "rlsweep.confirm")
    for damage in DAMAGES
    # confirm reads a cell's base_config.yaml only with baseline=true
    if not (tool == "rlsweep.confirm" and damage[0].endswith("base_config.yaml"))])
def test_a_damaged_sweep_file_is_one_line_naming_it(finished_sweep, tmp_path, capsys, tool,
                                                     file, damage, expected):
    copy = tmp_path / "copy"
    path = damaged_copy(finished_sweep, copy, file, damage(finished_sweep / file))
    before = sorted(p.name for p in copy.rglob("*"))
    assert importlib.import_module(tool).main([str(copy), "seeds=1"][:1 if "report" in tool
                                                                    else 2]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} {expected}") and err.count("\n") == 1, err
    assert sorted(p.name for p in copy.rglob("*")) == before  # nothing written


@pytest.mark.slow
def test_a_report_on_a_read_only_sweep_dir_is_one_line_naming_it(finished_sweep):
    """Made read-only for a user who cannot write it (root writes anywhere: run as nobody)."""
    root = Path(tempfile.mkdtemp(prefix="rlsweep-ro-"))  # not under pytest's 0700 tmp dir
    try:
        root.chmod(0o755)
        (root / "home").mkdir(mode=0o777)
        (root / "home").chmod(0o777)  # that user's HOME and matplotlib's cache
        copy = root / "sweep"
        shutil.copytree(finished_sweep, copy)
        (copy / "report.html").unlink()
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        as_user = (["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
                   if os.geteuid() == 0 else [])
        result = subprocess.run([*as_user, sys.executable, "-m", "rlsweep.report", str(copy)],
                                cwd=ROOT, text=True, capture_output=True, timeout=300,
                                env={**os.environ, "HOME": str(root / "home"),
                                     "MPLCONFIGDIR": str(root / "home")})
        assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"cannot write the report in {copy}" in errors[0], \
            result.stderr
        assert not (copy / "report.html").exists()
    finally:
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(root)


@pytest.mark.slow
def test_confirm_on_a_sweep_whose_every_trial_failed_is_refused_writing_nothing(tmp_path,
                                                                                 capsys):
    from rlsweep import confirm

    result = sweep(tmp_path, *[a for a in ONE_TRIAL if not a.startswith("hydra.sweeper.obj")],
                   "hydra.sweeper.objective=tests.test_messages.failing_objective")
    assert result.returncode == 1 and "every trial failed" in result.stderr, result.stderr[-2000:]
    assert confirm.main([str(tmp_path), "seeds=2"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path} has nothing to confirm, nothing was written: "
                   "ppo-dense: no complete trial to confirm\n")
    assert not (tmp_path / "confirm.json").exists() and not (tmp_path / "confirm").exists()


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory) -> Path:
    """A finished single run on Pendulum (a few hundred env steps), to copy and damage."""
    run_dir = tmp_path_factory.mktemp("pendulum") / "run"
    result = run_cli(*PENDULUM_TINY, "logger=none", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_evaluate_on_a_truncated_model_is_one_line_naming_it(pendulum_run, tmp_path, capsys):
    from rlsweep import evaluate

    copy = tmp_path / "run"
    shutil.copytree(pendulum_run, copy)
    (copy / "model.zip").write_bytes((pendulum_run / "model.zip").read_bytes()[:3000])
    assert evaluate.main([f"run_dir={copy}", "episodes=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {copy / 'model.zip'} cannot be loaded as a "
                          "stable_baselines3.PPO model: ") and err.count("\n") == 1, err
    assert not (copy / "eval.json").exists()


@pytest.mark.slow
def test_filming_prints_no_sdl_message_as_if_it_were_ours(pendulum_run, tmp_path):
    """Pendulum draws with pygame, whose SDL looks for a display and printed "error:
    XDG_RUNTIME_DIR is invalid or not set in the environment." (no XDG_RUNTIME_DIR here)."""
    copy = tmp_path / "run"
    shutil.copytree(pendulum_run, copy)
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER")}
    result = subprocess.run([sys.executable, "-m", "rlsweep.evaluate", f"run_dir={copy}",
                             "episodes=1", "video=true"], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (copy / "video.mp4").stat().st_size > 0
    assert "error" not in result.stderr.lower(), result.stderr


def preflight_error(argv: list[str], capsys) -> str:
    """The one line `python -m rlsweep <argv>` refuses with (exit 2), checked in process."""
    from rlsweep.cli import preflight

    with pytest.raises(SystemExit) as exited:
        preflight(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


def test_a_config_dir_that_does_not_exist_is_refused(capsys):
    line = preflight_error(["--config-dir", "/nonexistent/rlsweep", "algo=ppo"], capsys)
    assert line == "error: --config-dir /nonexistent/rlsweep is invalid: no such directory"


def test_a_composed_config_as_primary_with_a_group_override_is_one_line(tmp_path, capsys):
    """A run's config.yaml has no defaults list: `logger=none` replaced its logger section by
    a string, and the check of logger.name raised AttributeError."""
    from omegaconf import OmegaConf

    OmegaConf.save(compose_cfg("algo=ppo"), tmp_path / "config.yaml")
    line = preflight_error(["--config-path", str(tmp_path), "--config-name", "config",
                            "logger=none"], capsys)
    assert line.startswith("error: logger='none' is invalid with --config-name config") \
        and "logger.name=" in line, line
    from rlsweep.cli import preflight

    preflight(["--config-path", str(tmp_path), "--config-name", "config", "logger.name=none"])


# ---------------------------------------------------------------- 22: the wandb sync command

def test_the_wandb_sync_command_covers_every_offline_run_of_a_sweep(tmp_path):
    """Where rlsweep's runs write their offline W&B runs: a one-seed trial, each seed of a
    several-seed trial (rlsweep.sweep.seeds), each confirmation seed (rlsweep.confirm) and the
    sweep's summary run. Patterns matching nothing are left out (a shell would pass them on as
    they are, and `wandb sync` fails on a path that does not exist)."""
    import glob

    from rlsweep.report.build import offline_run_globs

    runs = [tmp_path / "ppo-dense/trial_000/wandb/offline-run-1",
            tmp_path / "ppo-dense/trial_001/seed_0/wandb/offline-run-2",
            tmp_path / "ppo-dense/trial_001/seed_1/wandb/offline-run-3",
            tmp_path / "confirm/ppo-dense/seed_1000/wandb/offline-run-4",
            tmp_path / "confirm/ppo-dense.defaults/seed_1000/wandb/offline-run-5",
            tmp_path / "wandb/offline-run-6"]
    for run in runs:
        run.mkdir(parents=True)
    patterns = offline_run_globs([tmp_path])
    assert sorted(p for pattern in patterns for p in glob.glob(pattern)) == sorted(map(str, runs))
    shutil.rmtree(tmp_path / "confirm")
    assert not [p for p in offline_run_globs([tmp_path]) if "confirm" in p]


# ---------------------------------------------------------------- 22: the ray launcher's extra

@pytest.mark.slow
def test_the_ray_launcher_without_its_extra_is_one_line_before_any_job(tmp_path):
    """The venv has ray; a `ray` package first on PYTHONPATH that fails to import stands in
    for an install without the extra (`import ray` raises ModuleNotFoundError as then)."""
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")
    result = sweep(tmp_path / "sweep", *ONE_TRIAL, "hydra/launcher=ray_cluster",
                   "hydra.sweeper.single_node=true",  # SQLite with Ray: one machine
                   env={"PYTHONPATH": str(fake.parent)}, timeout=300)
    line = one_error_line(result)
    assert line == ("error: hydra/launcher=ray_cluster needs the ray extra, which is not "
                    "installed (No module named 'ray'): install the ray extra: "
                    "pip install -e '.[ray]'"), line
    assert not (tmp_path / "sweep").exists()


# ---------------------------------------------------------------- 22: Optuna's importance warning

@pytest.mark.slow
def test_a_two_objective_report_shows_importances_without_optunas_warning(tmp_path, capsys):
    """Optuna's importance evaluator takes a given target as lower-is-better and warns each
    time; the report negates a maximized first objective for it, so the warning is moot."""
    import warnings

    from rlsweep.report.__main__ import main

    result = sweep(tmp_path, *[a for a in ONE_TRIAL if "n_trials" not in a],
                   "hydra.sweeper.n_trials=5", "hydra.sweeper.sampler=random",
                   "hydra.sweeper.metric=[success_rate,wall_time_s]",
                   "hydra.sweeper.direction=[maximize,minimize]")
    assert result.returncode == 0, result.stderr[-3000:]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([str(tmp_path)]) == 0
    assert not [w for w in caught if "importances" in str(w.message)], \
        [str(w.message) for w in caught]
    page = (tmp_path / "report.html").read_text()
    assert "ppo-dense: parameter importances (first objective)" in page
    assert "parameter importances (first objective) not available" not in page


# ---------------------------------------------------------------- 22: gymnasium's module:id

USER_ENV_PACKAGE = '''import gymnasium

gymnasium.register("MyPendulum-v0", max_episode_steps=50,
                   entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv")
'''


@pytest.mark.slow
def test_an_env_registered_by_a_users_package_trains_with_gymnasiums_module_id(tmp_path):
    """`env.id=my_rl_envs:MyPendulum-v0`: the package registers the env when imported (as
    gymnasium.make imports it); it was refused as unregistered before any import."""
    package = tmp_path / "packages" / "my_rl_envs"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(USER_ENV_PACKAGE)
    run_dir = tmp_path / "run"
    result = run_cli(*[a for a in PENDULUM_TINY if not a.startswith("env.id=")], "logger=none",
                     "env.id=my_rl_envs:MyPendulum-v0", f"hydra.run.dir={run_dir}",
                     env={"PYTHONPATH": str(package.parent)})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["env_steps"] == 256
    # its registered 50-step episodes (Pendulum-v1's are 200: returns around -1000 and below)
    assert metrics["mean_return"] > -50 * 16.3


def test_an_env_module_that_cannot_be_imported_is_one_line_naming_it():
    from rlsweep.envs.gym_env import check_config

    with pytest.raises(ConfigError) as err:
        check_config({"id": "rlsweep_no_such_package:MyEnv-v0"})
    assert str(err.value) == ("env.id='rlsweep_no_such_package:MyEnv-v0' is invalid: module "
                              "'rlsweep_no_such_package' cannot be imported (ModuleNotFoundError: "
                              "No module named 'rlsweep_no_such_package')")


# ---------------------------------------------------------------- 22: a preset is a sweep

@pytest.mark.slow
def test_a_search_preset_without_dash_m_sweeps(tmp_path):
    """`+hparams_search=lift_sbx_sac` sets `hydra.mode: MULTIRUN`: without -m it sweeps
    (before: it silently trained one run with the preset's fixed values)."""
    result = run_cli("+hparams_search=lift_sbx_sac",  # its own sampler (TPE) and kwargs
                     *[a for a in SYNTHETIC if "sampler" not in a], "hydra.sweeper.n_trials=2",
                     "hydra.sweeper.n_jobs=1", "trainer.total_timesteps=400",
                     "trainer.eval_freq=100", "trainer.eval_episodes=1",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "run").exists()
    assert len(list((tmp_path / "sweep" / "sbx_sac-dense").glob("trial_*/trial.json"))) == 2
    assert json.loads((tmp_path / "sweep" / "sweep_plan.json").read_text())["n_trials"] == 2


@pytest.mark.parametrize("preset", [f"+{group}={name}" for group in ("experiment", "hparams_search")
                                    for name in sorted(p.stem for p in (ROOT / "conf" / group)
                                                       .glob("*.yaml"))])
def test_every_preset_sets_the_multirun_mode(preset):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from rlsweep.cli import compose_config

    cfg = compose_config([preset], return_hydra_config=True)
    assert OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN
