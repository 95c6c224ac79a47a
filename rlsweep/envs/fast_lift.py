"""The `fast` backend: robosuite's own env, stepped without its per-substep Python.

Stock robosuite runs 25 physics substeps per env step (500 Hz under a 20 Hz policy) and, at
each one, Python: the composite controller, the OSC law with fresh Jacobians and mass matrix,
the gripper, and every observable's timer. That Python is over 70% of a step. `FastLiftStepper`
(named after Lift, its first task; it steps every task in `COVERED_TASKS`) keeps everything
robosuite decides once per env step in robosuite's own code (the action split, the gripper's
action, the OSC goal from the action, the reward, the success check and the observations) and
runs the 25 substeps in one compiled loop, `osc_substeps`, which calls MuJoCo's C API on the
same model and data: `mj_step1`, the same OSC_POSE law with the same gains (robosuite's
`opspace_matrices` with Cholesky inverses where they equal its own), `mj_step2`. The dynamics,
control law and control rate are unchanged; only where the arithmetic runs is.
docs/architecture.md says where floating-point order differs.

Why a compiled loop around `mj_step1`/`mj_step2` rather than a `mjcb_control` callback: the
callback is global to the process, so a stock env stepped in the same process (a test, an eval
env) would run our controller too; and stock robosuite itself steps with `step1`/`step2`
(`lite_physics`), so this loop is the same call sequence.

The loop is about the robot and its controller, not the task: a task's own per-step work is
its reward and success check, which run in robosuite's code once per step as in stock. Only
what the loop reproduces is accepted (`unsupported_reason`): a task in `COVERED_TASKS` (not
Wipe, whose reward reads per-step robot history the loop does not keep), one fixed-base arm run by OSC (fixed impedance, no
interpolator) with a GRIP gripper, default observables, no on-screen viewer. Anything else
falls back to stock robosuite with a warning (see `RobosuiteEnv`).
"""

from __future__ import annotations

import os
from typing import Any

import llvmlite.binding
import mujoco
import numba
import numpy as np
from numba import types


def _mujoco_c_api() -> dict[str, Any]:
    """MuJoCo C functions as numba external symbols, resolved in the libmujoco `mujoco` loaded.

    Declared by symbol name rather than as ctypes pointers so the compiled loop can be cached
    on disk (a ctypes pointer is a per-process address; a symbol name is not). Pointer
    arguments are declared `uintp`: the loop passes raw addresses as integers.
    """
    llvmlite.binding.load_library_permanently(
        os.path.join(os.path.dirname(mujoco.__file__), f"libmujoco.so.{mujoco.__version__}"))
    ptr = types.uintp
    return {
        "mj_step1": types.ExternalFunction("mj_step1", types.void(ptr, ptr)),
        "mj_step2": types.ExternalFunction("mj_step2", types.void(ptr, ptr)),
        "mj_jacSite": types.ExternalFunction("mj_jacSite", types.void(ptr, ptr, ptr, ptr, types.int32)),
        "mj_fullM": types.ExternalFunction("mj_fullM", types.void(ptr, ptr, ptr)),
    }


_C_API = _mujoco_c_api()
mj_step1, mj_step2 = _C_API["mj_step1"], _C_API["mj_step2"]
mj_jac_site, mj_full_m = _C_API["mj_jacSite"], _C_API["mj_fullM"]


# Where the Cholesky inverse stands in for robosuite's LU (`inv`) and SVD (`pinv`) inverses:
# below this bound on the condition number kappa, pinv's 1e-15 cutoff drops no singular value
# (pinv is the inverse), and the methods differ by rounding amplified by at most kappa * 1e-16,
# so <= 1e-8 relative. Above it the loop calls robosuite's own `inv`/`pinv`.
MAX_CONDITION_FOR_CHOLESKY = 1e8


@numba.njit(nogil=True, cache=True)
def _cholesky_inverse(a: np.ndarray, out: np.ndarray) -> bool:
    """Inverse of symmetric positive definite `a` into `out`; False if `a` is not SPD."""
    n = a.shape[0]
    lower = np.zeros((n, n))
    for j in range(n):
        pivot = a[j, j]
        for k in range(j):
            pivot -= lower[j, k] * lower[j, k]
        if not pivot > 0.0:
            return False
        lower[j, j] = np.sqrt(pivot)
        for i in range(j + 1, n):
            value = a[i, j]
            for k in range(j):
                value -= lower[i, k] * lower[j, k]
            lower[i, j] = value / lower[j, j]
    # inv(L), lower triangular, then inv(a) = inv(L)^T inv(L).
    lower_inv = np.zeros((n, n))
    for j in range(n):
        lower_inv[j, j] = 1.0 / lower[j, j]
        for i in range(j + 1, n):
            value = 0.0
            for k in range(j, i):
                value -= lower[i, k] * lower_inv[k, j]
            lower_inv[i, j] = value / lower[i, i]
    for i in range(n):
        for j in range(i, n):
            value = 0.0
            for k in range(j, n):
                value += lower_inv[k, i] * lower_inv[k, j]
            out[i, j] = value
            out[j, i] = value
    return True


@numba.njit(nogil=True, cache=True)
def spd_inverse(a: np.ndarray, pseudo: bool) -> np.ndarray:
    """`np.linalg.pinv(a)` (`pseudo`) or `np.linalg.inv(a)` of symmetric `a`, by Cholesky when
    `a` is positive definite with condition number under MAX_CONDITION_FOR_CHOLESKY.

    ||A||_F * ||inv(A)||_F bounds A's 2-norm condition number from above.
    """
    inverse = np.empty_like(a)
    if _cholesky_inverse(a, inverse):
        if np.sqrt(np.sum(a * a)) * np.sqrt(np.sum(inverse * inverse)) < MAX_CONDITION_FOR_CHOLESKY:
            return inverse
    if pseudo:
        return np.ascontiguousarray(np.linalg.pinv(a))
    return np.ascontiguousarray(np.linalg.inv(a))


@numba.njit(nogil=True, cache=True)
def _orientation_error(desired: np.ndarray, current: np.ndarray) -> np.ndarray:
    """robosuite's `control_utils.orientation_error`, copied so numba's on-disk cache of this
    module cannot hold a stale copy of robosuite's (its cache key is this file only)."""
    return 0.5 * (np.cross(current[0:3, 0], desired[0:3, 0])
                  + np.cross(current[0:3, 1], desired[0:3, 1])
                  + np.cross(current[0:3, 2], desired[0:3, 2]))


@numba.njit(nogil=True, cache=True)
def _opspace_matrices(mass_matrix, j_full, j_pos, j_ori):
    """robosuite's `control_utils.opspace_matrices`, same formulas and order of products,
    with its inverses taken by `spd_inverse` (the mass matrix and the three lambda inverses
    are symmetric positive definite away from singular arm poses)."""
    mass_matrix_inv = spd_inverse(mass_matrix, False)
    lambda_full_inv = np.dot(np.dot(j_full, mass_matrix_inv), j_full.transpose())
    lambda_pos_inv = np.dot(np.dot(j_pos, mass_matrix_inv), j_pos.transpose())
    lambda_ori_inv = np.dot(np.dot(j_ori, mass_matrix_inv), j_ori.transpose())
    lambda_full = spd_inverse(lambda_full_inv, True)
    lambda_pos = spd_inverse(lambda_pos_inv, True)
    lambda_ori = spd_inverse(lambda_ori_inv, True)
    jbar = np.dot(np.dot(mass_matrix_inv, j_full.transpose()), lambda_full)
    nullspace_matrix = np.eye(j_full.shape[-1], j_full.shape[-1]) - np.dot(jbar, j_full)
    return lambda_full, lambda_pos, lambda_ori, nullspace_matrix


@numba.njit(nogil=True, cache=True)
def osc_substeps(model, data, n_substeps, qm_address, qpos, qvel, site_xpos, site_xmat,
                 qfrc_bias, ctrl, ref_site, base_site, qpos_index, qvel_index, arm_actuators,
                 ctrl_low, ctrl_high, goal_pos, goal_ori, kp, kd, initial_joint,
                 goal_in_base_frame, uncouple_pos_ori, first_step1_done, torques_out):
    """`n_substeps` of robosuite's substep: mj_step1, OSC torques into ctrl, mj_step2.

    With `first_step1_done` the caller has already run the first substep's mj_step1 (the OSC
    goal is set from that state) and the loop starts at its control. Each line mirrors
    robosuite 1.5.2 `OperationalSpaceController.run_controller` with its `update()` (lite
    physics) and `Robot.control` clipping, in the same operation order.
    """
    nv = qvel.shape[0]
    jacp = np.zeros((3, nv))
    jacr = np.zeros((3, nv))
    base_jacp = np.zeros((3, nv))
    base_jacr = np.zeros((3, nv))
    full_mass = np.zeros((nv, nv))
    joint_kp = 10.0
    joint_kv = np.sqrt(joint_kp) * 2
    for substep in range(n_substeps):
        if substep > 0 or not first_step1_done:
            mj_step1(model, data)
        # CompositeController.update_state: the arm's origin is its base site.
        origin_pos = site_xpos[base_site].copy()
        origin_ori = site_xmat[base_site].copy().reshape((3, 3))
        # OperationalSpaceController.update (lite physics: no extra forward).
        ref_pos = site_xpos[ref_site].copy()
        ref_ori_mat = site_xmat[ref_site].copy().reshape((3, 3))
        mj_jac_site(model, data, jacp.ctypes.data, 0, ref_site)
        mj_jac_site(model, data, 0, jacr.ctypes.data, ref_site)
        ref_pos_vel = np.dot(jacp, qvel)
        ref_ori_vel = np.dot(jacr, qvel)
        j_pos = jacp[:, qvel_index]
        j_ori = jacr[:, qvel_index]
        j_full = np.vstack((j_pos, j_ori))
        joint_pos = qpos[qpos_index]
        joint_vel = qvel[qvel_index]
        mj_full_m(model, full_mass.ctypes.data, qm_address)
        mass_matrix = full_mass[qvel_index, :][:, qvel_index]
        # OperationalSpaceController.run_controller (no interpolators).
        if goal_in_base_frame:
            desired_world_pos = origin_pos + np.dot(origin_ori, goal_pos)
            desired_world_ori = np.dot(origin_ori, goal_ori)
        else:
            desired_world_pos = goal_pos.copy()
            desired_world_ori = goal_ori.copy()
        ori_error = _orientation_error(desired_world_ori, ref_ori_mat)
        position_error = desired_world_pos - ref_pos
        mj_jac_site(model, data, base_jacp.ctypes.data, 0, base_site)
        base_pos_vel = np.dot(base_jacp, qvel)
        vel_pos_error = -(ref_pos_vel - base_pos_vel)
        desired_force = position_error * kp[0:3] + vel_pos_error * kd[0:3]
        mj_jac_site(model, data, 0, base_jacr.ctypes.data, base_site)
        base_ori_vel = np.dot(base_jacr, qvel)
        vel_ori_error = -(ref_ori_vel - base_ori_vel)
        desired_torque = ori_error * kp[3:6] + vel_ori_error * kd[3:6]
        lambda_full, lambda_pos, lambda_ori, nullspace_matrix = _opspace_matrices(
            mass_matrix, j_full, j_pos, j_ori)
        if uncouple_pos_ori:
            decoupled_wrench = np.concatenate(
                (np.dot(lambda_pos, desired_force), np.dot(lambda_ori, desired_torque)))
        else:
            decoupled_wrench = np.dot(lambda_full, np.concatenate((desired_force, desired_torque)))
        torques = np.dot(j_full.T, decoupled_wrench) + qfrc_bias[qvel_index]
        # control_utils.nullspace_torques with its default joint_kp=10.
        pose_torques = np.dot(mass_matrix,
                              (joint_kp * (initial_joint - joint_pos) - joint_kv * joint_vel))
        torques += np.dot(nullspace_matrix.transpose(), pose_torques)
        # Robot.control: clip to the actuators' ctrlrange. The gripper's ctrl, fixed for
        # the whole env step, was written by the caller and stays.
        for i in range(arm_actuators.shape[0]):
            ctrl[arm_actuators[i]] = min(max(torques[i], ctrl_low[i]), ctrl_high[i])
        mj_step2(model, data)
        torques_out[:] = torques


# robosuite's single-arm tasks the fast backend steps: their per-step behaviour is robosuite's
# generic step (robot control, physics, observables, then `_post_action`: reward and its
# success bookkeeping), which is all the stepper reproduces, and tests/test_fast_lift.py
# compares a task of each family (Lift, Door, Stack, PickPlaceCan, NutAssemblyRound, ToolHang)
# with stock. The PickPlace and NutAssembly variants differ only in which objects are loaded.
COVERED_TASKS = (
    "Lift", "Door", "Stack", "ToolHang",
    "PickPlace", "PickPlaceSingle", "PickPlaceMilk", "PickPlaceBread", "PickPlaceCereal",
    "PickPlaceCan",
    "NutAssembly", "NutAssemblySingle", "NutAssemblySquare", "NutAssemblyRound",
)
_COVERED_FAMILIES = "Lift, Door, Stack, ToolHang, PickPlace*, NutAssembly*"
# robosuite's single-arm tasks refused for what they read, not for their controller setup.
REFUSED_TASKS = {
    "Wipe": "its reward reads the robot's per-step force and acceleration history "
            "(recent_ee_forcetorques, recent_ee_acc), which the fast loop does not keep",
}


def _replaced_step_hooks() -> dict[str, type]:
    """Methods of robosuite's `step()` that the stepper does not call as stock does, and the
    robosuite class whose version it reproduces instead: `step` itself, `_pre_action` (run by
    robosuite only on an episode's first step, else compiled) and `_update_observables` (stock
    runs it every substep, the stepper once). A task overriding one does more per step than
    the stepper runs. (`_post_action`, `reward`, `_check_success` and `_get_observations` are
    the task's own, called once per step as in stock.)"""
    from robosuite.environments.base import MujocoEnv
    from robosuite.environments.robot_env import RobotEnv

    return {"step": MujocoEnv, "_pre_action": RobotEnv, "_update_observables": MujocoEnv}


def unsupported_reason(sim_env: Any) -> str | None:
    """Why `sim_env` cannot be stepped by `FastLiftStepper` (None: it can).

    Checks the built controllers themselves, not config names, so whatever robosuite built is
    what is judged.
    """
    from robosuite.controllers.composite.composite_controller import CompositeController
    from robosuite.controllers.parts.arm.osc import OperationalSpaceController
    from robosuite.controllers.parts.gripper.simple_grip import SimpleGripController
    from robosuite.robots.fixed_base_robot import FixedBaseRobot
    from robosuite.utils import observables

    task = type(sim_env)
    if task.__name__ in REFUSED_TASKS and task.__module__.startswith("robosuite."):
        return f"env {task.__name__} ({REFUSED_TASKS[task.__name__]})"
    for hook, stock_class in _replaced_step_hooks().items():
        if getattr(task, hook) is not getattr(stock_class, hook):
            return (f"env {task.__name__} (its own {hook}: per-step behaviour the fast loop "
                    "does not run)")
    if task.__name__ not in COVERED_TASKS or not task.__module__.startswith("robosuite."):
        return (f"env {task.__name__} (only robosuite's {_COVERED_FAMILIES}, "
                "the tasks compared with stock)")
    if len(sim_env.robots) != 1 or not isinstance(sim_env.robots[0], FixedBaseRobot):
        return "only one fixed-base robot"
    robot = sim_env.robots[0]
    if type(robot.composite_controller) is not CompositeController:
        return f"composite controller {type(robot.composite_controller).__name__} (only BASIC)"
    parts = robot.composite_controller.part_controllers
    arms = [name for name in parts if name in robot.arms]
    if len(arms) != 1 or set(parts) - {arms[0], robot.get_gripper_name(arms[0])}:
        return f"controller parts {sorted(parts)} (only one arm and its gripper)"
    arm = parts[arms[0]]
    if not isinstance(arm, OperationalSpaceController) or arm.impedance_mode != "fixed" \
            or arm.interpolator_pos is not None or arm.interpolator_ori is not None \
            or not arm.lite_physics or arm.input_ref_frame not in ("base", "world"):
        return (f"arm controller {arm.name} "
                "(only OSC_POSE/OSC_POSITION, fixed impedance, no interpolation)")
    for name, part in parts.items():
        if name != arms[0] and (not isinstance(part, SimpleGripController)
                                or part.interpolator is not None):
            return f"gripper controller {type(part).__name__} (only GRIP without interpolation)"
    if not all(robot._enabled_parts.get(name, False) for name in parts):
        return "a disabled controller part"
    substeps = sim_env.control_timestep / sim_env.model_timestep
    if abs(substeps - round(substeps)) > 1e-9:
        # Stock's observable timers then sample mid-step on most steps, not after the last substep.
        return f"control_freq {sim_env.control_freq} (only rates that divide the physics rate)"
    if not sim_env.lite_physics or sim_env.has_renderer:
        return "lite_physics off or an on-screen renderer"
    for obs in sim_env._observables.values():
        if obs.is_enabled() and (obs._sampling_timestep != 1.0 / sim_env.control_freq
                                 or obs._corrupter is not observables.NO_CORRUPTION
                                 or obs._filter is not observables.NO_FILTER
                                 or obs._delayer is not observables.NO_DELAY):
            return f"observable {obs.name} is resampled, corrupted, filtered or delayed"
    return None


class FastLiftStepper:
    """Steps a robosuite env (Lift or another task in `COVERED_TASKS`) like its own `step()`,
    with its substeps compiled.

    Once per env step robosuite's own code turns the action into the OSC goal and the gripper
    command (`CompositeController.set_goal`, the gripper's `run_controller`), from the state
    after the first `mj_step1`, exactly where stock robosuite does it. All 25 substeps' OSC
    torques and physics then run in `osc_substeps` on that goal.
    Observations are sampled once after the last substep, which is where stock robosuite's
    observable timers sample them at the env's control rate (`unsupported_reason` checks that).
    """

    def __init__(self, sim_env: Any):
        reason = unsupported_reason(sim_env)
        if reason is not None:
            raise ValueError(f"fast backend does not cover {reason}")
        self.env = sim_env
        self.n_substeps = int(sim_env.control_timestep / sim_env.model_timestep)  # as robosuite
        self._bound: tuple[Any, Any] | None = None
        self._load_compiled_loop()

    def _load_compiled_loop(self) -> None:
        """Compile (first time on this machine, ~10 s) or load from cache (~0.1 s) the loop now,
        with a run of zero substeps, so that cost lands at construction and not in training."""
        robot = self.env.robots[0]
        arm = robot.part_controllers[robot.arms[0]]
        self._bind(robot, arm)
        zeros3, zeros6 = np.zeros(3), np.zeros(6)
        osc_substeps(*self._pointers, 0, *self._arrays, zeros3, np.eye(3), zeros6, zeros6,
                     np.zeros(len(arm.qpos_index)), True, True, True, self._torques)

    def _bind(self, robot: Any, arm: Any) -> None:
        """Cache raw pointers, array views and indices for this sim and arm controller.

        robosuite rebuilds the sim on a hard reset and the controllers on every reset, so this
        runs whenever either object changed.
        """
        model, data = self.env.sim.model, self.env.sim.data
        actuators = np.asarray(robot._ref_actuators_indexes_dict[robot.arms[0]], dtype=np.int64)
        self._pointers = (model._model._address, data._data._address)
        self._arrays = (
            data._data.qM.ctypes.data, data.qpos, data.qvel, data.site_xpos, data.site_xmat,
            data.qfrc_bias, data.ctrl,
            model.site_name2id(arm.ref_name),
            model.site_name2id(f"{arm.naming_prefix}{arm.part_name}_center"),  # the arm's base
            np.asarray(arm.qpos_index, dtype=np.int64), np.asarray(arm.qvel_index, dtype=np.int64),
            actuators, np.array(model.actuator_ctrlrange[actuators, 0]),
            np.array(model.actuator_ctrlrange[actuators, 1]))
        self._torques = np.zeros(len(arm.qvel_index))
        self._bound = (self.env.sim, arm)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        """One env step: (robosuite's observation dict, robosuite's reward)."""
        env = self.env
        robot = env.robots[0]
        arm = robot.part_controllers[robot.arms[0]]
        if env.done:
            raise ValueError("executing action in terminated episode")
        if len(action) != env.action_dim:  # stock asserts this in _pre_action
            raise ValueError("environment got invalid action dimension -- "
                             f"expected {env.action_dim}, got {len(action)}")
        if self._bound is None or self._bound[0] is not env.sim or self._bound[1] is not arm:
            self._bind(robot, arm)
        env.timestep += 1
        env.sim.step1()
        controller = robot.composite_controller
        if arm.new_update:
            # Robot.control(policy_step=True) minus the OSC run (the loop does it) and the
            # robot's history buffers (recent_qpos, recent_ee_*: no covered task's observations,
            # reward or success reads them; Wipe's do, and it is refused).
            controller.update_state()
            controller.set_goal(np.asarray(action, dtype=np.float64))
            for name, part in controller.part_controllers.items():
                if part is not arm:
                    actuators = robot._ref_actuators_indexes_dict[name]
                    low, high = env.sim.model.actuator_ctrlrange[actuators].T
                    env.sim.data.ctrl[actuators] = np.clip(part.run_controller(), low, high)
            n_substeps, first_step1_done = self.n_substeps, True
        else:
            # First step after a reset: robosuite's OSC still holds the state it cached at the
            # reset, and its first substep's torques come from that cache rather than from the
            # state now. Run that substep through robosuite itself to keep that behaviour.
            env._pre_action(action, policy_step=True)
            env.sim.step2()
            n_substeps, first_step1_done = self.n_substeps - 1, False
        osc_substeps(*self._pointers, n_substeps, *self._arrays,
                     np.ascontiguousarray(arm.goal_pos, dtype=np.float64),
                     np.ascontiguousarray(arm.goal_ori, dtype=np.float64),
                     np.asarray(arm.kp, dtype=np.float64), np.asarray(arm.kd, dtype=np.float64),
                     np.asarray(arm.initial_joint, dtype=np.float64),
                     arm.input_ref_frame == "base", bool(arm.uncoupling), first_step1_done,
                     self._torques)
        # What the OSC's own run_controller would leave: its last torques, and the flag that
        # makes its next update() read the state afresh.
        if n_substeps > 0:
            arm.torques = self._torques.copy()
        arm.new_update = True
        env._update_observables(force=True)
        env.cur_time += env.control_timestep
        reward, _, _ = env._post_action(action)
        return env._get_observations(), reward
