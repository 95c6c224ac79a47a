"""Config groups are the only registry: options name what they build, users add their own in
a config dir, and every option trains (tiny budgets) on an env it can act in."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from rlsweep.cli import group_options
from rlsweep.config import ConfigError, validate
from tests.conftest import ROOT, compose_cfg, run_cli

TINY_GYM = ["trainer.eval_episodes=1", "logger=none"]
# Each algorithm option on a cheap env whose action space it can act in.
ALGO_ENVS = {
    "dqn": ["env=gym", "env.id=CartPole-v1", "trainer.total_timesteps=300",
            "algo.learning_starts=100"],
    "tqc": ["env=gym", "env.id=Pendulum-v1", "trainer.total_timesteps=200",
            "algo.learning_starts=100"],
    "td3": ["env=gym", "env.id=Pendulum-v1", "trainer.total_timesteps=200",
            "algo.learning_starts=100"],
    "sbx_td3": ["env=gym", "env.id=Pendulum-v1", "trainer.total_timesteps=200",
            "algo.learning_starts=100"],
    "crossq": ["env=gym", "env.id=Pendulum-v1", "trainer.total_timesteps=200",
            "algo.learning_starts=100"],
    "sbx_ppo": ["env=gym", "env.id=Pendulum-v1", "trainer.total_timesteps=128", "algo.n_steps=64"],
}


def test_no_python_list_of_option_names():
    pattern = re.compile(r"^(ALGOS|REWARDS|ENVS)\s*=|ALGO_CLASSES\s*[:=]", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "rlsweep").rglob("*.py")
                 if pattern.search(p.read_text())]
    assert not offenders


@pytest.mark.parametrize("group", ["algo", "env", "reward"])
def test_every_option_names_what_it_builds(group):
    for option in group_options(group):
        cfg = compose_cfg(f"{group}={option}")
        assert cfg[group].get("_target_"), f"{group}={option} names no _target_"
        validate(cfg)


@pytest.mark.parametrize("overrides,field,hint", [
    (["env=gym", "env.id=Pendulm-v1"], "env.id", "Pendulum-v1"),
    (["env=robosuite", "env.task=Lfit"], "env.task", "Lift"),
    (["env.robosuite.robots=NoSuchBot"], "env.robosuite.robots", "Panda"),
    (["env=robosuite", "env.task=Door", "+env.robosuite.nosuch=1"], "env.robosuite.nosuch", "Door"),
    (["env=gym", "+env.nosuch=1"], "env.nosuch", "not a rlsweep.envs.gym_env.make_gym_env argument"),
    (["env=gym", "reward=sparse"], "reward", "reports none"),
    (["+reward.factor=2"], "reward.factor", "not a gymnasium.Wrapper argument"),
    (["reward=staged", "reward.lift_weight=-1"], "reward.lift_weight", ">= 0"),
    (["algo=td3", "algo.action_noise.type=pink"], "algo.action_noise.type", "normal"),
    (["env._target_=nowhere.make"], "env._target_", "cannot be imported"),
])
def test_bad_option_values_are_one_clear_line(overrides, field, hint):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides))
    message = str(err.value)
    assert field in message and hint in message and "\n" not in message


@pytest.mark.parametrize("algo", sorted(ALGO_ENVS))
def test_algorithm_trains_saves_and_reloads(tmp_path, algo):
    from omegaconf import OmegaConf

    from rlsweep.evaluate import evaluate_run
    from rlsweep.train import train

    cfg = compose_cfg(f"algo={algo}", *ALGO_ENVS[algo], *TINY_GYM, "trainer.eval_freq=1000")  # one evaluation
    result = train(cfg, tmp_path)
    assert result.ok and result.env_steps == cfg.trainer.total_timesteps
    OmegaConf.save(cfg, tmp_path / "config.yaml")  # where a sweep trial keeps its config
    replay = evaluate_run(tmp_path, episodes=1)
    assert replay["mean_return"] == pytest.approx(result.mean_return, abs=1e-4)  # its episode
    assert replay["success_rate"] is None  # gym envs report no success: none shown, not 0


def test_a_gym_run_is_filmed(tmp_path):
    """Gymnasium's classic-control envs draw with pygame (a dependency): the replay films."""
    import imageio.v3 as iio
    from omegaconf import OmegaConf

    from rlsweep.evaluate import evaluate_run
    from rlsweep.train import train

    cfg = compose_cfg("algo=td3", *ALGO_ENVS["td3"], *TINY_GYM, "trainer.eval_freq=1000")
    train(cfg, tmp_path)
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    replay = evaluate_run(tmp_path, episodes=1, video=True)
    frames = list(iio.imiter(replay["video"]))
    assert len(frames) >= 150 and frames[0].ndim == 3  # Pendulum's 200-step episode
    assert frames[0].std() > 0  # a drawing, not a blank frame


def test_td3_action_noise_is_built_from_config(tmp_path):
    from stable_baselines3.common.noise import OrnsteinUhlenbeckActionNoise

    from rlsweep.train import build_envs, _new_model

    cfg = compose_cfg("algo=td3", "env=gym", "env.id=Pendulum-v1",
                      "algo.action_noise.type=ornstein_uhlenbeck", "algo.action_noise.sigma=0.3")
    train_env, eval_env = build_envs(cfg)
    try:
        noise = _new_model(cfg, train_env).action_noise
    finally:
        train_env.close(), eval_env.close()
    assert isinstance(noise, OrnsteinUhlenbeckActionNoise)
    assert noise._sigma.tolist() == [0.3]  # one action dimension on Pendulum


def test_other_robosuite_task_trains_with_ppo(tmp_path):
    from rlsweep.train import train

    cfg = compose_cfg("env=robosuite", "env.task=Door", "algo=ppo", "algo.n_steps=64",
                      "trainer.total_timesteps=128", "trainer.eval_freq=128",
                      "trainer.eval_episodes=1", "env.horizon=32", "logger=none")
    result = train(cfg, tmp_path)
    assert result.ok and result.env_steps == 128
    assert (tmp_path / "model.zip").exists()


@pytest.mark.slow
def test_algorithm_that_cannot_act_in_the_env_is_one_line(tmp_path):
    done = run_cli("env=gym", "env.id=Pendulum-v1", "algo=dqn", "logger=none",
                   f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "action space" in done.stderr and "dqn" in done.stderr


@pytest.mark.slow
def test_user_reward_and_algo_from_a_config_dir(tmp_path):
    """A wrapper and an algorithm option that live outside rlsweep work with no code change."""
    package = tmp_path / "pkg"
    (package).mkdir()
    (package / "scaled_reward.py").write_text(textwrap.dedent("""
        import gymnasium as gym

        class Scaled(gym.RewardWrapper):
            def __init__(self, env, factor=1.0):
                super().__init__(env)
                self.factor = factor

            def reward(self, reward):
                return self.factor * reward
    """))
    conf = tmp_path / "conf"
    (conf / "reward").mkdir(parents=True)
    (conf / "algo").mkdir()
    (conf / "reward" / "zeroed.yaml").write_text("_target_: scaled_reward.Scaled\nname: zeroed\nfactor: 0.0\n")
    (conf / "algo" / "my_sac.yaml").write_text(textwrap.dedent("""
        name: my_sac
        _target_: stable_baselines3.SAC
        normalize: false
        learning_starts: 50
        buffer_size: 1000
        search_space:
          learning_rate: tag(log, interval(1e-4, 1e-3))
    """))
    run_dir = tmp_path / "run"
    done = run_cli("--config-dir", str(conf), "reward=zeroed", "algo=my_sac", "env=gym",
                   "env.id=Pendulum-v1", "trainer.total_timesteps=150", "trainer.eval_freq=150",
                   "trainer.eval_episodes=1", "logger=none", f"hydra.run.dir={run_dir}",
                   env={"PYTHONPATH": str(package)})
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["mean_return"] == 0.0  # the user's wrapper zeroed every reward
    assert metrics["algo"] == "my_sac"

    # the preflight sees the user's options too, and still names the allowed ones on a typo
    bad = run_cli("--config-dir", str(conf), "reward=zerod", f"hydra.run.dir={run_dir}_bad")
    assert bad.returncode == 2 and "zeroed" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_success_metric_on_an_env_without_success_is_refused_before_any_job(tmp_path):
    done = run_cli("-m", "env=gym", "hydra.sweeper.metric=success_rate", "logger=none",
                   f"hydra.sweep.dir={tmp_path}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "reports no task success" in done.stderr
    assert not list(Path(tmp_path).glob("*/trial_*"))


def test_return_only_env_ranks_trials_by_return():
    from rlsweep.sweep.study import objective_value

    worse, better = {"success_rate": 0.0, "mean_return": -900.0}, {"success_rate": 0.0, "mean_return": -200.0}
    assert objective_value(better, "success_then_return", None, reports_success=False) == -200.0
    assert (objective_value(better, "success_then_return", None, False)
            > objective_value(worse, "success_then_return", None, False))


def test_an_observation_key_the_task_lacks_is_one_line():
    from omegaconf import OmegaConf

    from rlsweep.envs.build import make_env

    cfg = compose_cfg("env=robosuite", "env.task=Door", "env.obs_keys=[cube_pos]")
    with pytest.raises(ConfigError, match=r"env.obs_keys='cube_pos' is invalid: Door observes .*handle_pos"):
        make_env(OmegaConf.to_container(cfg.env, resolve=True),
                 OmegaConf.to_container(cfg.reward, resolve=True), seed=0)
