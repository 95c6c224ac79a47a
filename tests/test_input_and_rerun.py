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
