"""Any robosuite single-arm manipulation task as a well-behaved `gymnasium.Env`.

robosuite's own `GymWrapper` has traps that silently hurt RL (see docs/architecture.md):
it reports the horizon as termination, returns float64 observations under a float32 space,
leaves `info` empty, and its `reset(seed=)` does not reach the object placement.
`RobosuiteEnv` owns the robosuite env instead and fixes each: the horizon becomes a `TimeLimit`
truncation, observations are float32, `info` carries robosuite's own task success and shaped
reward, and `reset(seed=)` reseeds the generator robosuite draws every random placement from.

`conf/env/robosuite.yaml` builds it (`env=robosuite env.task=Door`); `conf/env/lift.yaml` is
the same with Lift's extras (rlsweep/envs/lift.py).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

from rlsweep.config import ConfigError, check_choice

_LOG = logging.getLogger(__name__)
# Set by RobosuiteEnv itself: users must not override them through env.robosuite.
_MANAGED_KWARGS = ("ignore_done", "seed", "horizon", "controller_configs", "robots")
BACKENDS = ("fast", "robosuite")


@functools.cache
def quiet_robosuite() -> None:
    """Import robosuite without its per-import warnings (missing optional robots, macros file).

    The filter must be on its logger before the import: the warnings are logged while importing.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")  # the only headless GL that works on these machines
    logging.getLogger("robosuite_logs").addFilter(lambda record: record.levelno >= logging.ERROR)
    logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)  # optional C module
    import robosuite  # noqa: F401


@functools.cache
def single_arm_tasks() -> tuple[str, ...]:
    """robosuite's registered tasks for one arm (two-arm and humanoid tasks need other setups)."""
    quiet_robosuite()
    from robosuite.environments.base import REGISTERED_ENVS
    from robosuite.environments.manipulation.manipulation_env import ManipulationEnv

    return tuple(sorted(name for name, cls in REGISTERED_ENVS.items()
                        if issubclass(cls, ManipulationEnv) and "TwoArm" not in name))


@functools.cache
def robot_names() -> tuple[str, ...]:
    quiet_robosuite()
    from robosuite.robots import ROBOT_CLASS_MAPPING

    return tuple(sorted(ROBOT_CLASS_MAPPING))


@functools.cache
def robosuite_kwarg_names(task: str = "Lift") -> tuple[str, ...]:
    """Keyword arguments a user may pass to a robosuite task (plus `controller` and `robots`)."""
    quiet_robosuite()
    from robosuite.environments.base import REGISTERED_ENVS

    names = set(inspect.signature(REGISTERED_ENVS[task].__init__).parameters)
    return tuple(sorted(names - {"self", "kwargs", *_MANAGED_KWARGS} | {"controller", "robots"}))


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


class RobosuiteEnv(gym.Env):
    """A robosuite task with flat float32 observations and success in `info`.

    `info["is_success"]` is robosuite's own `_check_success()`, the key SB3's `Monitor` and
    `EvalCallback` read. `info["dense_reward"]` is robosuite's shaped reward, kept whatever reward
    wrapper is applied, so progress stays visible. The episode never terminates here: the horizon
    is a `TimeLimit` (see rlsweep/envs/build.py). `backend="fast"` steps the env through
    `FastLiftStepper` (compiled substeps, same dynamics) where it covers the setup;
    `self.backend` says which one runs.

    :param task: robosuite task name (Lift, Door, Stack, PickPlaceCan, ...)
    :param obs_keys: robosuite observation keys, concatenated in this order
    :param robosuite: keyword arguments for `robosuite.make` (plus `controller`, the arm's
        part-controller name, and `robots`)
    :param horizon: env steps per episode (robosuite's own horizon is set to it too)
    :param backend: `fast` or `robosuite` (stock stepping)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task: str, obs_keys: Sequence[str], robosuite: Mapping[str, Any],
                 horizon: int, backend: str = "fast", seed: int | None = None,
                 render_mode: str | None = None, camera: str = "frontview", image_size: int = 256):
        quiet_robosuite()
        import robosuite as suite

        kwargs = dict(robosuite)
        robot = kwargs.pop("robots", "Panda")
        controller = kwargs.pop("controller", "OSC_POSE")
        if render_mode == "rgb_array":
            kwargs["has_offscreen_renderer"] = True
        self.task, self.render_mode = task, render_mode
        self._camera, self._image_size = camera, image_size
        self.sim_env = suite.make(
            task, robots=robot, controller_configs=controller_config(controller, robot),
            ignore_done=True, seed=seed, reward_shaping=True, horizon=horizon, **kwargs)
        self.obs_keys = list(obs_keys)
        first_obs = self.sim_env.reset()
        missing = [k for k in self.obs_keys if k not in first_obs]
        if missing:
            raise ConfigError(f"env.obs_keys={missing[0]!r} is invalid: {task} observes "
                              + ", ".join(sorted(first_obs)))
        first = self._flatten(first_obs)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, first.shape, np.float32)
        low, high = self.sim_env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32))
        self.backend = self._choose_backend(backend)

    @staticmethod
    def check_config(config: Mapping[str, Any]) -> None:
        """One-line `ConfigError` for a bad task, robot, backend or robosuite argument, before
        any env is built. (Observation keys are checked against the built env's.)"""
        task = config.get("task")
        check_choice("env.task", task, single_arm_tasks(), suggest=True)
        check_choice("env.backend", config.get("backend", "fast"), BACKENDS, suggest=True)
        robosuite = config.get("robosuite") or {}
        robots = robosuite.get("robots", "Panda")
        for robot in [robots] if isinstance(robots, str) else list(robots):
            check_choice("env.robosuite.robots", robot, robot_names(), suggest=True)
        allowed = robosuite_kwarg_names(task)
        for key in robosuite:
            if key not in allowed:
                raise ConfigError(f"env.robosuite.{key}={robosuite[key]!r} is invalid: not a "
                                  f"robosuite {task} argument; allowed: " + ", ".join(allowed))
        if not config.get("obs_keys"):
            raise ConfigError("env.obs_keys=[] is invalid: needs at least one observation key")

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

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        size = self._image_size
        frame = self.sim_env.sim.render(camera_name=self._camera, width=size, height=size)
        return frame[::-1]  # MuJoCo's offscreen buffer is bottom-up

    def close(self) -> None:
        self.sim_env.close()


def make_robosuite_env(task: str, obs_keys: Sequence[str], robosuite: Mapping[str, Any],
                       horizon: int, backend: str = "fast", seed: int | None = None,
                       render_mode: str | None = None) -> gym.Env:
    """`RobosuiteEnv` (arguments as there) ending each episode at `horizon` env steps as a
    gymnasium `TimeLimit`: truncation, not termination, so value targets bootstrap."""
    env = RobosuiteEnv(task, obs_keys, robosuite, horizon, backend=backend, seed=seed,
                       render_mode=render_mode)
    return gym.wrappers.TimeLimit(env, max_episode_steps=horizon)


make_robosuite_env.check_config = RobosuiteEnv.check_config
