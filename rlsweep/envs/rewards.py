"""Reward variants as gymnasium wrappers: a reward option is one of these (or any user's
`gymnasium.Wrapper` class) named by `_target_` in `conf/reward/<name>.yaml`, built with the env
as `env=` and the option's other keys as keyword arguments.

`dense` is the env's own reward (`_target_: gymnasium.Wrapper`, which changes nothing; for
robosuite tasks that is robosuite's shaped reward), `sparse` pays only on success, and
`StagedLiftReward` is our own shaping for Lift: the example of how a user adds a reward without
touching robosuite. robosuite envs keep their shaped reward in `info["dense_reward"]` whatever
wraps them.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from rlsweep.config import check_number


class SparseReward(gym.Wrapper):
    """`success_reward` on steps where the task succeeds (`info["is_success"]`), else 0.

    :param env: an env that reports `is_success` in `info` (robosuite tasks do)
    :param success_reward: reward of a successful step
    """

    needs_success = True  # validation refuses it on an env with env.reports_success=false

    def __init__(self, env: gym.Env, success_reward: float = 1.0):
        super().__init__(env)
        self.success_reward = success_reward

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, self.success_reward * float(info["is_success"]), terminated, truncated, info


class StagedLiftReward(gym.Wrapper):
    """Reach, then grasp, then lift: each stage's weight counts once the arm is in that stage.

    reach  = reach_weight * (1 - tanh(10 * gripper-to-cube distance))
    grasp  = grasp_weight while the gripper holds the cube
    lift   = lift_weight * min(1, cube height gain / lift_target_m) while grasping
    The reward of a step is the highest of the three stages reached in that step, so a policy is
    never paid for reaching once it holds the cube, and lifting is worth most.
    """

    def __init__(self, env: gym.Env, reach_weight: float = 0.25, grasp_weight: float = 0.35,
                 lift_weight: float = 0.4, lift_target_m: float = 0.04):
        super().__init__(env)
        self.weights = (reach_weight, grasp_weight, lift_weight)
        self.lift_target_m = lift_target_m
        self._rest_height = 0.0

    @staticmethod
    def check_config(config: Mapping[str, Any]) -> None:
        """Weights must be >= 0 and the lift target > 0 (one-line ConfigError otherwise)."""
        for key in ("reach_weight", "grasp_weight", "lift_weight"):
            if key in config:
                check_number(f"reward.{key}", config[key], float, 0.0, True)
        if "lift_target_m" in config:
            check_number("reward.lift_target_m", config["lift_target_m"], float, 0.0, False)

    def reset(self, **kwargs):
        obs, info = super().reset(**kwargs)
        self._rest_height = float(self.unwrapped.task_state()["cube_pos"][2])
        return obs, info

    def staged_reward(self, state: Mapping[str, Any]) -> float:
        reach_w, grasp_w, lift_w = self.weights
        dist = float(np.linalg.norm(state["eef_pos"] - state["cube_pos"]))
        reward = reach_w * (1.0 - np.tanh(10.0 * dist))
        if state["grasping"]:
            gain = max(0.0, float(state["cube_pos"][2]) - self._rest_height)
            reward = max(reward, grasp_w, lift_w * min(1.0, gain / self.lift_target_m))
        return float(reward)

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, self.staged_reward(self.unwrapped.task_state()), terminated, truncated, info

