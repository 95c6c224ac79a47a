"""Reward variants for Lift, as gymnasium wrappers.

`dense` is robosuite's shaped reward (what `LiftEnv` returns), `sparse` pays only on success,
and `StagedLiftReward` is our own shaping: the example of how a user adds a reward without
touching robosuite. Every variant keeps robosuite's shaped reward in `info["dense_reward"]`.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np


class SparseReward(gym.Wrapper):
    """1.0 (times robosuite's reward_scale) on steps where the task succeeds, else 0."""

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        scale = self.unwrapped.sim_env.reward_scale or 1.0
        return obs, scale * float(info["is_success"]), terminated, truncated, info


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


def wrap_reward(env: gym.Env, reward_cfg: Mapping[str, Any]) -> gym.Env:
    """Wrap `env` with the reward variant `reward_cfg["name"]` (dense, sparse or staged)."""
    name = reward_cfg["name"]
    if name == "dense":
        return env
    if name == "sparse":
        return SparseReward(env)
    if name == "staged":
        params = {k: v for k, v in reward_cfg.items() if k != "name"}
        return StagedLiftReward(env, **params)
    raise ValueError(f"reward.name={name!r} is invalid: allowed values are dense, sparse, staged")
