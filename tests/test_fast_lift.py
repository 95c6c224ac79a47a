"""The `fast` backend is stock robosuite, faster: same observations, rewards and success.

Each test steps a stock env (`env.backend=robosuite`) and a fast one built from the same seed
with the same actions, side by side. The tolerances are the ones docs/architecture.md states.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rlsweep.envs.scripted import ScriptedLiftController

OBS_TOLERANCE = 1e-6   # float32 observations, as the policy sees them
STATE_TOLERANCE = 1e-9  # float64 joint and cube state inside MuJoCo


def paired_envs(lift_env_factory, *overrides: str, seed: int = 0):
    stock = lift_env_factory("env.backend=robosuite", *overrides, seed=seed)
    fast = lift_env_factory("env.backend=fast", *overrides, seed=seed)
    assert (stock.unwrapped.backend, fast.unwrapped.backend) == ("robosuite", "fast")
    return stock, fast


def sim_state(env) -> np.ndarray:
    data = env.unwrapped.sim_env.sim.data
    return np.concatenate([data.qpos, data.qvel])


@pytest.mark.parametrize("controller", ["OSC_POSE", "OSC_POSITION"])
def test_random_actions_give_the_same_observations_rewards_and_state(lift_env_factory, controller):
    stock, fast = paired_envs(lift_env_factory, "env.horizon=150", "reward=dense",
                              f"env.robosuite.controller={controller}")
    obs_stock, _ = stock.reset(seed=3)
    obs_fast, _ = fast.reset(seed=3)
    np.testing.assert_array_equal(obs_stock, obs_fast)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(150, *stock.action_space.shape))
    worst_obs = worst_state = 0.0
    for action in actions:
        obs_stock, reward_stock, term_s, trunc_s, info_stock = stock.step(action)
        obs_fast, reward_fast, term_f, trunc_f, info_fast = fast.step(action)
        worst_obs = max(worst_obs, float(np.abs(obs_stock - obs_fast).max()))
        worst_state = max(worst_state, float(np.abs(sim_state(stock) - sim_state(fast)).max()))
        assert reward_fast == pytest.approx(reward_stock, abs=1e-9)
        assert (info_fast["is_success"], term_f, trunc_f) == (info_stock["is_success"], term_s, trunc_s)
    assert trunc_s, "the horizon ends both episodes"
    assert worst_obs <= OBS_TOLERANCE, worst_obs
    assert worst_state <= STATE_TOLERANCE, worst_state


@pytest.mark.parametrize("reward", ["dense", "sparse"])
def test_scripted_grasp_and_lift_succeeds_alike(lift_env_factory, reward):
    stock, fast = paired_envs(lift_env_factory, "env.horizon=60", f"reward={reward}")
    for seed in (0, 1, 2):
        outcomes = []
        for env in (stock, fast):
            controller = ScriptedLiftController()
            env.reset(seed=seed)
            rewards, successes = [], []
            for _ in range(60):
                _, r, _, _, info = env.step(controller.act(env.unwrapped.task_state()))
                rewards.append(r)
                successes.append(info["is_success"])
            outcomes.append((np.array(rewards), np.array(successes)))
        (rewards_stock, success_stock), (rewards_fast, success_fast) = outcomes
        assert success_stock.any(), f"seed {seed}: the scripted lift should succeed"
        np.testing.assert_array_equal(success_fast, success_stock)
        np.testing.assert_allclose(rewards_fast, rewards_stock, atol=1e-6)


def test_hard_reset_rebuilds_the_sim_and_fast_follows_it(lift_env_factory):
    stock, fast = paired_envs(lift_env_factory, "env.horizon=20", "env.robosuite.hard_reset=true")
    actions = np.random.default_rng(1).uniform(-1, 1, size=(20, 7))
    for episode_seed in (4, 5):  # the second reset builds a new MjModel/MjData
        stock.reset(seed=episode_seed)
        fast.reset(seed=episode_seed)
        for action in actions:
            obs_stock = stock.step(action)[0]
            obs_fast = fast.step(action)[0]
        assert np.abs(obs_stock - obs_fast).max() <= OBS_TOLERANCE


def test_uncovered_controller_falls_back_to_stock_with_a_warning(lift_env_factory, caplog):
    with caplog.at_level(logging.WARNING, logger="rlsweep.envs.lift"):
        env = lift_env_factory("env.backend=fast", "env.robosuite.controller=IK_POSE", "env.horizon=5")
    assert env.unwrapped.backend == "robosuite"
    assert "env.backend=fast does not cover arm controller IK_POSE" in caplog.text
    env.reset(seed=0)
    env.step(np.zeros(7))
