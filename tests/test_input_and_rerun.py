"""A rerun never trains over what a run dir holds; a save cut off between its renames resumes;
a mistyped key is refused even with `+`; a success score needs an episode length (issue 31).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, compose_cfg, run_cli

NO_WANDB = {"WANDB_MODE": "disabled"}
# Pendulum SAC: a replay buffer in every checkpoint, a few seconds per 300 env steps.
SAC_RUN = ["env=gym", "env.id=Pendulum-v1", "algo=sac", "algo.buffer_size=2000",
           "algo.learning_starts=100", "algo.train_freq=4", "trainer.total_timesteps=900",
           "trainer.eval_freq=300", "trainer.eval_episodes=1", "trainer.checkpoint_freq=300",
           "trainer.progress_s=0", "logger=none", "seed=5"]


def _tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) -> the md5 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _state(folder: Path) -> int | None:
    try:
        return json.loads((folder / "state.json").read_text())["env_steps"]
    except (OSError, ValueError):
        return None


def _kill_after_checkpoint(run: list[str], run_dir: Path, env_steps: int) -> None:
    """Start `python -m rlsweep <run>` and SIGKILL it once its checkpoint at `env_steps` is in
    place (the next one is a few hundred env steps away)."""
    proc = subprocess.Popen([sys.executable, "-m", "rlsweep", *run, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **NO_WANDB})
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (_state(run_dir / "checkpoint") or 0) >= env_steps:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _state(run_dir / "checkpoint") == env_steps, f"no checkpoint at {env_steps}"
    assert not (run_dir / "metrics.json").exists()


@pytest.fixture(scope="module")
def cut_between_renames(tmp_path_factory) -> Path:
    """A real run left as a kill between the two renames of `checkpoint.save` leaves it: its
    run was killed after its checkpoint at 300 env steps, resumed and killed after the one at
    600; then the 600 save's state between the renames is put in place: `checkpoint.old/` (the
    300 one, renamed away) and `checkpoint.tmp/` (the whole 600 one), no `checkpoint/`."""
    run_dir = tmp_path_factory.mktemp("cut") / "run"
    resumable = [*SAC_RUN, "trainer.resume=true"]
    _kill_after_checkpoint(resumable, run_dir, 300)
    at_300 = run_dir.parent / "checkpoint_at_300"
    shutil.copytree(run_dir / "checkpoint", at_300)
    _kill_after_checkpoint(resumable, run_dir, 600)
    (run_dir / "checkpoint").replace(run_dir / "checkpoint.tmp")
    at_300.replace(run_dir / "checkpoint.old")
    return run_dir


@pytest.fixture
def copy_of_cut(cut_between_renames, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(cut_between_renames, target)
    return target


@pytest.mark.slow
def test_a_rerun_without_resume_over_a_cut_off_runs_checkpoint_is_refused_and_changes_nothing(
        copy_of_cut):
    before = _tree_digest(copy_of_cut)
    done = run_cli(*SAC_RUN, f"hydra.run.dir={copy_of_cut}", env=NO_WANDB)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "trainer.resume=true" in lines[0] and "env step 600" in lines[0], lines[0]
    assert _tree_digest(copy_of_cut) == before  # not even Hydra's .hydra/ was rewritten


@pytest.mark.slow
def test_a_save_cut_off_between_its_renames_resumes_from_the_newest_whole_checkpoint(copy_of_cut):
    done = run_cli(*SAC_RUN, "trainer.resume=true", f"hydra.run.dir={copy_of_cut}", env=NO_WANDB)
    assert done.returncode == 0, done.stderr[-2000:]
    said = [line for line in (done.stdout + done.stderr).splitlines() if "resuming from" in line]
    assert len(said) == 1 and "checkpoint.tmp/" in said[0] and "env step 600" in said[0], said
    metrics = json.loads((copy_of_cut / "metrics.json").read_text())
    # continued at 600, not from scratch: resumed twice, the evaluations of 300 and 600 kept
    assert metrics["env_steps"] == 900 and metrics["resumes"] == 2, metrics
    curve = (copy_of_cut / "learning_curve.csv").read_text().splitlines()[1:]
    assert [int(float(row.split(",")[0])) for row in curve] == [300, 600, 900], curve
    assert not any((copy_of_cut / name).exists()
                   for name in ("checkpoint", "checkpoint.tmp", "checkpoint.old"))


@pytest.mark.slow
def test_a_save_cut_off_while_writing_resumes_from_the_renamed_old_one(cut_between_renames,
                                                                      tmp_path, caplog):
    """`checkpoint.tmp/` without its state.json (cut off while written): `checkpoint.old/` is
    the newest whole one."""
    from rlsweep import checkpoint

    run_dir = tmp_path / "run"
    shutil.copytree(cut_between_renames, run_dir)
    (run_dir / "checkpoint.tmp" / "state.json").unlink()
    progress = checkpoint.resume_point(compose_cfg(*SAC_RUN, "trainer.resume=true"), run_dir)
    assert progress is not None and progress.env_steps == 300
    assert _state(run_dir / "checkpoint") == 300
    assert not (run_dir / "checkpoint.tmp").exists() and not (run_dir / "checkpoint.old").exists()
    assert "resuming from checkpoint.old/ at env step 300" in caplog.text


@pytest.mark.slow
def test_a_rerun_into_a_finished_runs_dir_is_refused_and_changes_nothing(tmp_path):
    run = ["env=gym", "env.id=Pendulum-v1", "algo=ppo", "algo.n_steps=128", "logger=none",
           "trainer.total_timesteps=256", "trainer.eval_freq=128", "trainer.eval_episodes=1",
           "trainer.progress_s=0", f"hydra.run.dir={tmp_path / 'run'}"]
    first = run_cli(*run, env=NO_WANDB)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _tree_digest(tmp_path / "run")
    for again in (["seed=7"], ["trainer.resume=true"]):
        done = run_cli(*run, *again, env=NO_WANDB)
        assert done.returncode == 2, (again, done.stderr[-2000:])
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "holds a finished run (metrics.json)" in lines[0], lines
        assert _tree_digest(tmp_path / "run") == before, again


# ---------------------------------------------------------------- keys nothing would read

def _preflight_error(capsys, *argv: str) -> str:
    """The one line `python -m rlsweep <argv>`'s preflight refuses with (exit 2)."""
    from rlsweep.cli import preflight

    with pytest.raises(SystemExit) as exited:
        preflight(list(argv))
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("override, named, nearest", [
    ("+trainer.total_timestep=10", "trainer.total_timestep", "trainer.total_timesteps"),
    ("trainer.total_timestep=10", "trainer.total_timestep", "trainer.total_timesteps"),
    ("+policy.net_ar=[8]", "policy.net_ar", "policy.net_arch"),
    ("+logger.projct=x", "logger.projct", "logger.project"),
    ("+sed=3", "sed", "seed"),
])
def test_an_unknown_key_of_a_structured_group_is_refused_even_with_plus(
        capsys, tmp_path, override, named, nearest):
    line = _preflight_error(capsys, override, f"hydra.run.dir={tmp_path / 'run'}")
    assert f"{named} is invalid" in line and f"did you mean {nearest}?" in line, line
    assert "allowed:" in line and "+" not in line, line  # no advice to add it with +
    assert not (tmp_path / "run").exists()


def test_an_unknown_sweeper_setting_without_plus_gets_no_advice_to_add_it(capsys, tmp_path):
    line = _preflight_error(capsys, "-m", "hydra.sweeper.n_trial=3",
                            f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert "hydra.sweeper.n_trial is invalid" in line, line
    assert "did you mean hydra.sweeper.n_trials?" in line and "+" not in line, line


@pytest.mark.parametrize("overrides, named", [
    (["algo=td3", "+algo.action_noise.theta=0.2"], "algo.action_noise.theta"),  # OU's, not ours
    (["env=gym", "+env.kwargs.gg=1"], "env.kwargs.gg"),  # Pendulum takes g
    (["env=gym", "env.wrappers=[{_target_:gymnasium.wrappers.ClipAction,low:0}]"],
     "env.wrappers[0].low"),
])
def test_a_key_passed_to_a_constructor_is_checked_against_its_signature(capsys, tmp_path,
                                                                        overrides, named):
    line = _preflight_error(capsys, *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert f"{named}" in line and "is invalid" in line, line


def test_a_real_constructor_argument_added_with_plus_is_accepted(tmp_path):
    from rlsweep.cli import preflight

    preflight(["env=gym", "+env.kwargs.g=9.0",
               "env.wrappers=[{_target_:gymnasium.wrappers.ClipAction}]",
               "+algo.action_noise={type:normal,sigma:0.1}", "algo=td3",
               f"hydra.run.dir={tmp_path / 'run'}"])


@pytest.mark.slow
def test_a_plus_typo_of_a_sweeper_setting_is_refused_before_any_job(tmp_path):
    done = run_cli("-m", "algo=ppo", "logger=none", "+hydra.sweeper.n_trial=3",
                   "hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective",
                   "trainer.total_timesteps=400", "trainer.eval_freq=100", "hydra.sweeper.n_jobs=1",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", env=NO_WANDB)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "hydra.sweeper.n_trial is invalid" in lines[0], lines
    assert "did you mean hydra.sweeper.n_trials?" in lines[0], lines
    assert not (tmp_path / "sweep").exists()


# ---------------------------------------------------------------- a success score's horizon

def test_success_on_an_env_whose_horizon_is_unknown_is_refused_naming_both(capsys, tmp_path):
    line = _preflight_error(capsys, "env=gym", "env.reports_success=true",
                            f"hydra.run.dir={tmp_path / 'run'}")
    assert "env.horizon" in line and "env.reports_success=true" in line, line
    assert "env.horizon=200" in line  # the time limit Pendulum-v1 registers


@pytest.mark.slow
def test_a_sweep_with_success_on_an_env_whose_horizon_is_unknown_is_refused_before_any_job(
        tmp_path):
    done = run_cli("-m", "env=gym", "env.id=Pendulum-v1", "env.reports_success=true", "algo=ppo",
                   "algo.n_steps=128", "logger=none", "trainer.total_timesteps=256",
                   "trainer.eval_freq=128", "trainer.eval_episodes=1", "hydra.sweeper.n_trials=1",
                   "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}", env=NO_WANDB)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "env.horizon" in lines[0] and "env.reports_success" in lines[0], lines
    assert not list(tmp_path.rglob("trial.json")) and not list(tmp_path.rglob("optuna.db"))
