"""One real training run on Lift, end to end: artifacts, metrics, reload, replay, stopping."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from rlsweep.callbacks import DivergenceGuard
from rlsweep.run_result import RunStatus
from rlsweep.train import train
from tests.conftest import TINY, compose_cfg, run_cli

pytestmark = pytest.mark.slow
PLANTED_KEY = "planted0secret0key0" + "0" * 21
METRIC_KEYS = {"success_rate", "mean_return", "std_return", "env_steps", "wall_time_s",
               "env_steps_per_s", "status"}


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    """`python -m rlsweep algo=sac ...` as a user runs it, with a W&B key planted."""
    run_dir = tmp_path_factory.mktemp("sac") / "run"
    result = run_cli("algo=sac", "reward=dense", *TINY, "trainer.total_timesteps=300",
                     "trainer.eval_freq=150", f"hydra.run.dir={run_dir}",
                     env={"WANDB_API_KEY": PLANTED_KEY})
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_run_dir_holds_config_model_metrics_and_curve(sac_run):
    run_dir, _ = sac_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["status"] == "ok" and metrics["env_steps"] == 300
    assert 0.0 <= metrics["success_rate"] <= 1.0 and metrics["env_steps_per_s"] > 0
    assert (run_dir / "model.zip").stat().st_size > 0
    assert "algo" in (run_dir / ".hydra" / "config.yaml").read_text()
    rows = list(csv.DictReader(open(run_dir / "learning_curve.csv")))
    assert [int(r["env_steps"]) for r in rows] == [150, 300]
    assert float(rows[-1]["mean_return"]) == pytest.approx(metrics["mean_return"])
    assert (run_dir / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_wandb_offline_run_written_and_key_never_stored(sac_run):
    run_dir, result = sac_run
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb")), "no offline W&B run"
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert PLANTED_KEY.encode() not in path.read_bytes(), path
    assert PLANTED_KEY not in result.stdout + result.stderr


def test_evaluate_reloads_model_and_films_an_episode(sac_run):
    run_dir, _ = sac_run
    result = run_cli("run_dir=" + str(run_dir), "episodes=2", "video=true",
                     module="rlsweep.evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["episodes"] == 2 and len(report["returns"]) == 2
    assert 0.0 <= report["success_rate"] <= 1.0 and "success_rate=" in result.stdout
    video = run_dir / "video.mp4"
    assert video.stat().st_size > 10_000
    import imageio.v3 as iio

    frames = list(iio.imiter(video))
    assert len(frames) == 39 and frames[0].shape == (256, 256, 3)  # one per env step but the last


def test_ppo_with_vecnormalize_is_reproducible_and_uses_one_thread(tmp_path):
    overrides = ["algo=ppo", "reward=sparse", "policy=small", *TINY, "algo.n_steps=64",
                 "algo.batch_size=32", "algo.n_epochs=2", "trainer.total_timesteps=128",
                 "trainer.eval_freq=64", "logger=none", "seed=4"]
    torch.set_num_threads(2)
    first = train(compose_cfg(*overrides), tmp_path / "a")
    assert torch.get_num_threads() == 1
    second = train(compose_cfg(*overrides), tmp_path / "b")
    assert first.ok and second.ok
    for key in ("success_rate", "mean_return", "std_return", "env_steps"):
        assert getattr(first, key) == getattr(second, key), key
    assert (tmp_path / "a" / "vecnormalize.pkl").exists()
    curve_a = (tmp_path / "a" / "learning_curve.csv").read_text().splitlines()
    curve_b = (tmp_path / "b" / "learning_curve.csv").read_text().splitlines()
    strip_time = lambda lines: [",".join(l.split(",")[:4]) for l in lines]  # noqa: E731
    assert strip_time(curve_a) == strip_time(curve_b)


def test_subproc_envs_count_steps_across_workers(tmp_path):
    cfg = compose_cfg("algo=a2c", *TINY, "env.n_envs=2", "env.vec_env=subproc", "logger=none",
                      "trainer.total_timesteps=80", "trainer.eval_freq=40")
    result = train(cfg, tmp_path)
    assert result.ok and result.env_steps == 80


def test_eval_hook_can_stop_a_run_early(tmp_path):
    seen = []

    def stop_after_first(step, result):
        seen.append((step, result.success_rate))
        return False

    cfg = compose_cfg("algo=a2c", *TINY, "logger=none", "trainer.total_timesteps=400",
                      "trainer.eval_freq=40")
    result = train(cfg, tmp_path, eval_hook=stop_after_first)
    assert len(seen) == 1 and seen[0][0] == 40
    assert (result.status, result.detail) == (RunStatus.PRUNED, "at env step 40")
    assert result.describe() == "pruned at env step 40" and result.env_steps == 40
    assert result.success_rate == seen[0][1]
    assert (tmp_path / "model.zip").exists() and (tmp_path / "metrics.json").exists()


class NaNRewardAfter(gym.Wrapper):
    """Pendulum whose reward turns NaN after `steps` steps: a diverging run on demand."""

    def __init__(self, env, steps):
        super().__init__(env)
        self.steps, self.count = steps, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.count += 1
        return obs, (np.nan if self.count > self.steps else reward), terminated, truncated, info


def test_divergence_guard_stops_training_with_a_reason():
    model = PPO("MlpPolicy", NaNRewardAfter(gym.make("Pendulum-v1"), 50), n_steps=64, seed=0)
    guard = DivergenceGuard()
    model.learn(640, callback=guard)
    assert model.num_timesteps == 51
    assert guard.reason == "non-finite rewards at env step 51"


@pytest.mark.parametrize("algo", ["sbx_sac", "sbx_tqc"])
def test_sbx_algo_trains_and_its_reloaded_model_replays_the_final_evaluation(tmp_path, algo):
    """SBX (JAX) options train, save and reload like SB3's: replaying the saved model on the
    run's evaluation seed gives exactly the episodes of its one (final) evaluation."""
    from omegaconf import OmegaConf

    from rlsweep.evaluate import evaluate_run

    cfg = compose_cfg(f"algo={algo}", *TINY, "trainer.eval_episodes=2", "logger=none",
                      "trainer.total_timesteps=240", "algo.learning_starts=80",
                      "trainer.eval_freq=240")
    result = train(cfg, tmp_path)
    assert result.ok and result.env_steps == 240 and result.algo == algo
    assert result.compile_s > 0  # JAX compiled the model's functions, timed apart from training
    OmegaConf.save(cfg, tmp_path / "config.yaml")  # where a sweep trial keeps its config
    replay = evaluate_run(tmp_path, episodes=2)
    assert replay["mean_return"] == pytest.approx(result.mean_return, abs=1e-6)
    assert replay["success_rate"] == result.success_rate


def test_divergence_guard_reads_jax_weights():
    import jax
    import jax.numpy as jnp
    import sbx

    from rlsweep.callbacks import weights_finite

    model = sbx.SAC("MlpPolicy", gym.make("Pendulum-v1"), seed=0)
    assert weights_finite(model.policy)
    state = model.policy.qf_state
    poisoned = jax.tree_util.tree_map(lambda leaf: leaf.at[..., 0].set(jnp.nan), state.params)
    model.policy.qf_state = state.replace(params=poisoned)
    assert not weights_finite(model.policy)


def test_single_run_prints_progress_lines(tmp_path):
    result = run_cli("algo=a2c", *TINY, "logger=none", "trainer.total_timesteps=400",
                     "trainer.eval_freq=200", "trainer.progress_s=0.01", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "steps/s | ETA" in line]
    assert lines, "no progress line"
    assert all("/400 (" in line for line in lines)
    assert any("eval at 200: success 0.00, return" in line for line in lines)
