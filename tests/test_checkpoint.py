"""A run killed mid-way continues from its checkpoint (`trainer.resume=true`) through the CLI."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, compose_cfg, run_cli

RUN = ["algo=sac", *TINY, "algo.buffer_size=3000", "algo.learning_starts=100", "algo.train_freq=4",
       "trainer.total_timesteps=600", "trainer.eval_freq=150", "trainer.checkpoint_freq=300",
       "trainer.resume=true", "logger=none", "seed=3"]


def _curve(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "learning_curve.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _killed_after_checkpoint(run: list[str], run_dir: Path, env_steps: int) -> None:
    """Start `python -m rlsweep <run>` and SIGKILL it just after its checkpoint at `env_steps`."""
    proc = subprocess.Popen([sys.executable, "-m", "rlsweep", *run, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "WANDB_MODE": "disabled"})
    state = run_dir / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state.exists() and json.loads(state.read_text())["env_steps"] >= env_steps:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads(state.read_text())["env_steps"] == env_steps, f"no checkpoint at {env_steps}"
    assert not (run_dir / "metrics.json").exists()


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """A real run SIGKILLed just after its checkpoint at 300 env steps (of 600)."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    _killed_after_checkpoint(RUN, run_dir, 300)
    return run_dir


@pytest.fixture
def copy_of(killed_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(killed_run, target)
    return target


@pytest.mark.slow
def test_checkpoint_holds_model_replay_buffer_and_curve(killed_run):
    from stable_baselines3 import SAC

    from rlsweep import checkpoint

    progress = checkpoint.load_progress(killed_run)
    assert [p["env_steps"] for p in progress.curve] == [150, 300]
    assert progress.learn_seconds > 0 and progress.resumes == 0
    model = SAC.load(killed_run / "checkpoint" / "model.zip")
    model.load_replay_buffer(killed_run / "checkpoint" / "replay_buffer.pkl")
    assert model.num_timesteps == 300
    assert model.replay_buffer.size() == 300  # every transition so far, none lost


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped_and_is_then_never_overwritten(copy_of):
    before = json.loads((copy_of / "checkpoint" / "state.json").read_text())["curve"]
    done = run_cli(*RUN, f"hydra.run.dir={copy_of}", env={"WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-2000:]

    metrics = json.loads((copy_of / "metrics.json").read_text())
    assert metrics["env_steps"] == 600 and metrics["resumes"] == 1 and metrics["status"] == "ok"
    curve = _curve(copy_of)
    assert [int(p["env_steps"]) for p in curve] == [150, 300, 450, 600]
    assert curve[:2] == before  # the evaluations before the kill are kept (floats round-trip)
    assert curve[2]["wall_time_s"] > before[-1]["wall_time_s"]  # one clock across the resume
    # SB3's log of the first process is kept; the resume logs beside it
    assert (copy_of / "progress.csv").exists() and (copy_of / "progress_resume1.csv").exists()
    assert not (copy_of / "checkpoint").exists()  # superseded by the final model
    assert (copy_of / "model.zip").exists()

    finished = (copy_of / "metrics.json").read_text()
    again = run_cli(*RUN, f"hydra.run.dir={copy_of}", env={"WANDB_MODE": "disabled"})
    assert again.returncode == 2 and "holds a finished run" in again.stderr
    assert (copy_of / "metrics.json").read_text() == finished


@pytest.mark.slow
def test_resume_with_a_changed_config_is_refused_in_one_line(copy_of):
    done = run_cli(*RUN, "algo.learning_rate=0.001", f"hydra.run.dir={copy_of}",
                   env={"WANDB_MODE": "disabled"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "trainer.resume" in done.stderr and "algo.learning_rate" in done.stderr
    assert (copy_of / "checkpoint" / "state.json").exists()  # nothing touched


def test_resume_without_a_checkpoint_starts_a_new_run(tmp_path):
    from rlsweep import checkpoint

    cfg = compose_cfg(*RUN)
    assert checkpoint.resume_point(cfg, tmp_path / "fresh") is None
    cfg.trainer.resume = False
    assert checkpoint.resume_point(cfg, tmp_path / "fresh") is None


@pytest.mark.slow
def test_a_resumed_ppo_run_keeps_its_observation_statistics(tmp_path):
    """PPO normalizes observations (VecNormalize): a resume continues its running statistics
    from the checkpoint instead of starting them again, which would shift every input the
    policy was trained on."""
    run = ["algo=ppo", *TINY, "algo.n_steps=64", "trainer.total_timesteps=640",
           "trainer.eval_freq=128", "trainer.checkpoint_freq=256", "trainer.resume=true",
           "logger=none", "seed=4"]
    run_dir = tmp_path / "run"
    _killed_after_checkpoint(run, run_dir, 256)
    with open(run_dir / "checkpoint" / "vecnormalize.pkl", "rb") as f:
        at_checkpoint = pickle.load(f).obs_rms.count

    done = run_cli(*run, f"hydra.run.dir={run_dir}", env={"WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text())["resumes"] == 1
    with open(run_dir / "vecnormalize.pkl", "rb") as f:
        final = pickle.load(f).obs_rms.count
    # one count per observation seen in training: all 640 steps, the 256 before the kill included
    assert at_checkpoint >= 256 and final >= 640, (at_checkpoint, final)
