"""robosuite Lift as a well-behaved `gymnasium.Env`.

robosuite's own `GymWrapper` has traps that silently hurt RL (see docs/architecture.md):
it reports the horizon as termination, returns float64 observations under a float32 space,
leaves `info` empty, and its `reset(seed=)` does not reach the cube placement. `LiftEnv`
owns the robosuite env instead and fixes each: the horizon becomes a `TimeLimit` truncation,
observations are float32, `info` carries robosuite's own task success and shaped reward, and
`reset(seed=)` reseeds the generator robosuite draws every random placement from.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

# Flat observation keys robosuite offers for Lift with one Panda and object observations on.
# tests/test_env.py checks this list against a real env, so it cannot drift from robosuite.
LIFT_OBS_KEYS = (
    "object-state", "robot0_proprio-state",
    "cube_pos", "cube_quat", "gripper_to_cube_pos",
    "robot0_joint_pos", "robot0_joint_pos_cos", "robot0_joint_pos_sin", "robot0_joint_vel",
    "robot0_joint_acc", "robot0_eef_pos", "robot0_eef_quat", "robot0_eef_quat_site",
    "robot0_gripper_qpos", "robot0_gripper_qvel",
)
_LOG = logging.getLogger(__name__)
# Set by LiftEnv itself: users must not override them through env.robosuite.
_MANAGED_KWARGS = ("ignore_done", "seed", "horizon", "controller_configs")


@functools.cache
def _quiet_robosuite() -> None:
    """Import robosuite without its per-import warnings (missing optional robots, macros file).

    The filter must be on its logger before the import: the warnings are logged while importing.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")  # the only headless GL that works on these machines
    logging.getLogger("robosuite_logs").addFilter(lambda record: record.levelno >= logging.ERROR)
    logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)  # optional C module
    import robosuite  # noqa: F401


@functools.cache
def robosuite_kwarg_names() -> tuple[str, ...]:
    """Keyword arguments a user may pass to robosuite's Lift (plus our `controller` shortcut)."""
    _quiet_robosuite()
    from robosuite.environments.manipulation.lift import Lift

    names = set(inspect.signature(Lift.__init__).parameters) - {"self", *_MANAGED_KWARGS}
    return tuple(sorted(names | {"controller"}))


def controller_config(controller: str, robot: str) -> dict:
    """robosuite composite controller config for `robot` with its arm run by `controller`.

    `controller` is a robosuite part-controller name (OSC_POSE, OSC_POSITION, IK_POSE, ...); the
    robot's default config supplies gains and the gripper, only the arm controller type changes.
    """
    from robosuite.controllers import load_composite_controller_config, load_part_controller_config

    config = load_composite_controller_config(robot=robot)
    arm = config["body_parts"]["right"]
    if arm["type"] != controller:
        part = load_part_controller_config(default_controller=controller)
        part["gripper"] = arm.get("gripper", {"type": "GRIP"})
        config["body_parts"]["right"] = part
    return config


class LiftEnv(gym.Env):
    """robosuite Lift with flat float32 observations and success in `info`.

    `info["is_success"]` is robosuite's own `_check_success()` (cube above the table by 4 cm),
    the key SB3's `Monitor` and `EvalCallback` read. `info["dense_reward"]` is robosuite's shaped
    reward, kept whatever reward variant wraps this env, so progress stays visible.
    The episode never terminates here: wrap with `TimeLimit` (see `make_lift_env`).
    `backend="fast"` steps the same robosuite env through `FastLiftStepper` (compiled substeps,
    same dynamics) where it covers the setup; `self.backend` says which one runs.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, obs_keys: Sequence[str], robosuite_kwargs: Mapping[str, Any],
                 seed: int | None = None, render_mode: str | None = None,
                 camera: str = "frontview", image_size: int = 256, backend: str = "fast"):
        _quiet_robosuite()
        import robosuite

        kwargs = dict(robosuite_kwargs)
        robot = kwargs.get("robots", "Panda")
        controller = kwargs.pop("controller", "OSC_POSE")
        if render_mode == "rgb_array":
            kwargs["has_offscreen_renderer"] = True
        self.render_mode = render_mode
        self._camera, self._image_size = camera, image_size
        self.sim_env = robosuite.make(
            "Lift", controller_configs=controller_config(controller, robot),
            ignore_done=True, seed=seed, reward_shaping=True, **kwargs)
        self.obs_keys = list(obs_keys)
        first = self._flatten(self.sim_env.reset())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, first.shape, np.float32)
        low, high = self.sim_env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32))
        self._needs_reset_obs: np.ndarray | None = first
        self.backend = self._choose_backend(backend)

    def _choose_backend(self, backend: str) -> str:
        """`fast` steps through `FastLiftStepper` where it covers this setup, else stock."""
        self._fast_stepper = None
        if backend != "fast":
            return "robosuite"
        try:
            from rlsweep.envs.fast_lift import FastLiftStepper, unsupported_reason

            reason = unsupported_reason(self.sim_env)
            if reason is None:
                self._fast_stepper = FastLiftStepper(self.sim_env)
                return "fast"
        except Exception as error:  # e.g. no libmujoco at the expected path, numba cannot compile
            reason = f"this machine ({type(error).__name__}: {error})"
        _LOG.warning("env.backend=fast does not cover %s; stepping stock robosuite instead", reason)
        return "robosuite"

    def _flatten(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.ravel(obs[k]) for k in self.obs_keys]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # Placement and joint noise all draw from sim_env.rng (shared with its placement
            # sampler), so reseed that generator in place rather than replacing it.
            self.sim_env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        obs = self._flatten(self.sim_env.reset())
        return obs, {"is_success": False}

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64)
        if self._fast_stepper is not None:
            obs, dense_reward = self._fast_stepper.step(action)
        else:
            obs, dense_reward, _, _ = self.sim_env.step(action)
        success = bool(self.sim_env._check_success())
        info = {"is_success": success, "dense_reward": float(dense_reward)}
        return self._flatten(obs), float(dense_reward), False, False, info

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

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        size = self._image_size
        frame = self.sim_env.sim.render(camera_name=self._camera, width=size, height=size)
        return frame[::-1]  # MuJoCo's offscreen buffer is bottom-up

    def close(self) -> None:
        self.sim_env.close()


def make_lift_env(env_cfg: Mapping[str, Any], reward_cfg: Mapping[str, Any], seed: int | None,
                  render_mode: str | None = None) -> gym.Env:
    """Build Lift as configured: `LiftEnv` -> reward variant -> `TimeLimit(env.horizon)`."""
    from rlsweep.envs.rewards import wrap_reward

    robosuite_kwargs = dict(env_cfg["robosuite"])
    robosuite_kwargs["horizon"] = env_cfg["horizon"]
    env = LiftEnv(env_cfg["obs_keys"], robosuite_kwargs, seed=seed, render_mode=render_mode,
                  backend=env_cfg.get("backend", "fast"))
    env = wrap_reward(env, reward_cfg)
    return gym.wrappers.TimeLimit(env, max_episode_steps=env_cfg["horizon"])
