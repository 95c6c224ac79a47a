"""robosuite Lift (a Panda lifts a cube): `RobosuiteEnv` plus what Lift's extras read.

`conf/env/lift.yaml` (the default env) builds `LiftEnv`; the staged reward and the scripted
controller read `task_state()`, the cube's and gripper's state.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

from rlsweep.config import ConfigError, check_choice
from rlsweep.envs.robosuite_env import RobosuiteEnv, controller_config  # noqa: F401 (re-export)

# Flat observation keys robosuite offers for Lift with one Panda and object observations on.
# tests/test_env.py checks this list against a real env, so it cannot drift from robosuite.
LIFT_OBS_KEYS = (
    "object-state", "robot0_proprio-state",
    "cube_pos", "cube_quat", "gripper_to_cube_pos",
    "robot0_joint_pos", "robot0_joint_pos_cos", "robot0_joint_pos_sin", "robot0_joint_vel",
    "robot0_joint_acc", "robot0_eef_pos", "robot0_eef_quat", "robot0_eef_quat_site",
    "robot0_gripper_qpos", "robot0_gripper_qvel",
)


class LiftEnv(RobosuiteEnv):
    """robosuite Lift (see `RobosuiteEnv`), with the task state rewards and scripts read."""

    @staticmethod
    def check_config(config: Mapping[str, Any]) -> None:
        if config.get("task") != "Lift":
            raise ConfigError(f"env.task={config.get('task')!r} is invalid: env=lift builds Lift; "
                              "use env=robosuite for other tasks")
        RobosuiteEnv.check_config(config)
        for key in config.get("obs_keys") or ():
            check_choice("env.obs_keys", key, LIFT_OBS_KEYS)

    def task_state(self) -> dict[str, Any]:
        """Positions and contact facts that rewards and the scripted controller read."""
        env = self.sim_env
        return {
            "eef_pos": np.array(env.sim.data.site_xpos[env.robots[0].eef_site_id["right"]]),
            "cube_pos": np.array(env.sim.data.body_xpos[env.cube_body_id]),
            "table_height": float(env.model.mujoco_arena.table_offset[2]),
            "grasping": bool(env._check_grasp(gripper=env.robots[0].gripper, object_geoms=env.cube)),
            "success": bool(env._check_success()),
        }


def make_lift_env(task: str, obs_keys: Sequence[str], robosuite: Mapping[str, Any], horizon: int,
                  backend: str = "fast", seed: int | None = None,
                  render_mode: str | None = None) -> gym.Env:
    """`LiftEnv` ending each episode at `horizon` env steps (see `make_robosuite_env`)."""
    env = LiftEnv(task, obs_keys, robosuite, horizon, backend=backend, seed=seed,
                  render_mode=render_mode)
    return gym.wrappers.TimeLimit(env, max_episode_steps=horizon)


make_lift_env.check_config = LiftEnv.check_config
