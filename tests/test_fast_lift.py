"""The `fast` backend is stock robosuite, faster: same observations, rewards and success.

Each paired test steps a stock env (`env.backend=robosuite`) and a fast one built from the
same seed with the same actions, side by side, on Lift and on a task of each other covered
family. The tolerances are the ones docs/architecture.md ("The fast backend") states.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import pytest

from rlsweep.envs.scripted import ScriptedLiftController

OBS_TOLERANCE = 1e-6    # float32 observations, as the policy sees them
STATE_TOLERANCE = 1e-9  # float64 joint and cube state inside MuJoCo


def paired_envs(lift_env_factory, *overrides: str, seed: int = 0):
    stock = lift_env_factory("env.backend=robosuite", *overrides, seed=seed)
    fast = lift_env_factory("env.backend=fast", *overrides, seed=seed)
    assert (stock.unwrapped.backend, fast.unwrapped.backend) == ("robosuite", "fast")
    return stock, fast


def sim_state(env) -> np.ndarray:
    data = env.unwrapped.sim_env.sim.data
    return np.concatenate([data.qpos, data.qvel])


def assert_same_random_rollout(stock, fast, steps: int) -> None:
    """`steps` random actions give the same observations, rewards, success and MuJoCo state."""
    obs_stock, _ = stock.reset(seed=3)
    obs_fast, _ = fast.reset(seed=3)
    np.testing.assert_array_equal(obs_stock, obs_fast)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, *stock.action_space.shape))
    worst_obs = worst_state = 0.0
    for action in actions:
        obs_stock, reward_stock, _, _, info_stock = stock.step(action)
        obs_fast, reward_fast, _, _, info_fast = fast.step(action)
        worst_obs = max(worst_obs, float(np.abs(obs_stock - obs_fast).max()))
        worst_state = max(worst_state, float(np.abs(sim_state(stock) - sim_state(fast)).max()))
        assert reward_fast == pytest.approx(reward_stock, abs=1e-9)
        assert info_fast["is_success"] == info_stock["is_success"]
    assert worst_obs <= OBS_TOLERANCE, worst_obs
    assert worst_state <= STATE_TOLERANCE, worst_state


@pytest.mark.parametrize("setup", [
    ("env.robosuite.controller=OSC_POSE",),
    ("env.robosuite.controller=OSC_POSITION",),
    # UR5e's own Robotiq85 gripper is chaotic: stock against stock with qvel nudged by 1e-12
    # differs by 1.6 rad/s within 4 steps. With the Panda gripper the arm can be compared.
    ("env.robosuite.robots=UR5e", "+env.robosuite.gripper_types=PandaGripper"),
], ids=["Panda-OSC_POSE", "Panda-OSC_POSITION", "UR5e-OSC_POSE"])
def test_random_actions_give_the_same_observations_rewards_and_state(lift_env_factory, setup):
    stock, fast = paired_envs(lift_env_factory, "env.horizon=150", "reward=dense", *setup)
    assert_same_random_rollout(stock, fast, 150)


# A task of each covered family besides Lift (the PickPlace and NutAssembly variants load other
# objects into the same task code). 40 steps: the arm moves freely and the objects rest on their
# table, bins or pegs. On Door, random arm motion reaches the door by step ~115, where stock
# itself with qvel nudged by 1e-12 departs as far as fast does (both 2e-4 by step 150).
@pytest.mark.parametrize("task", ["Door", "Stack", "PickPlaceCan", "NutAssemblyRound", "ToolHang"])
def test_other_tasks_give_the_same_observations_rewards_and_state(lift_env_factory, task):
    stock, fast = paired_envs(lift_env_factory, "env=robosuite", f"env.task={task}",
                              "env.robosuite.controller=OSC_POSE", "env.horizon=40",
                              "reward=dense")
    assert_same_random_rollout(stock, fast, 40)


@pytest.mark.parametrize("reward", ["dense", "sparse"])
def test_scripted_grasp_and_lift_succeeds_alike(lift_env_factory, reward):
    stock, fast = paired_envs(lift_env_factory, "env.horizon=60", f"reward={reward}")
    for seed in (0, 1, 2):
        outcomes = []
        for env in (stock, fast):
            controller = ScriptedLiftController(env.action_space.shape[0])
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
    actions = np.random.default_rng(1).uniform(-1, 1, size=(20, stock.action_space.shape[0]))
    sims = []
    for episode_seed in (4, 5):
        stock.reset(seed=episode_seed)
        fast.reset(seed=episode_seed)
        sims.append(fast.unwrapped.sim_env.sim)
        for action in actions:
            assert np.abs(stock.step(action)[0] - fast.step(action)[0]).max() <= OBS_TOLERANCE
    assert sims[0] is not sims[1], "a hard reset builds a new MjModel/MjData"


@pytest.mark.parametrize("arm_settings", [{"input_ref_frame": "world"}, {"uncouple_pos_ori": False}])
def test_osc_variants_the_kernel_branches_on(arm_settings):
    """Settings no default robot config uses, so built directly with robosuite."""
    import robosuite

    from rlsweep.envs.fast_lift import FastLiftStepper
    from rlsweep.envs.lift import controller_config

    def make():
        config = controller_config("OSC_POSE", "Panda")
        config["body_parts"]["right"].update(arm_settings)
        return robosuite.make("Lift", robots="Panda", controller_configs=config, has_renderer=False,
                              has_offscreen_renderer=False, use_camera_obs=False, ignore_done=True,
                              reward_shaping=True, seed=0)

    stock, fast = make(), make()
    stepper = FastLiftStepper(fast)
    stock.reset()
    fast.reset()
    # 80 steps of free motion: at step 98 this trajectory makes contact, where stock itself
    # nudged by 1e-12 departs by 1e-5 (and fast by 3e-6).
    for action in np.random.default_rng(2).uniform(-1, 1, size=(80, 7)):
        obs_stock, reward_stock, _, _ = stock.step(action)
        obs_fast, reward_fast = stepper.step(action)
        for key, value in obs_stock.items():
            np.testing.assert_allclose(obs_fast[key], value, atol=1e-9, err_msg=key)
        assert reward_fast == pytest.approx(reward_stock, abs=1e-9)
    stock.close()
    fast.close()


def test_spd_inverse_is_inv_and_pinv_where_robosuite_uses_them():
    from rlsweep.envs.fast_lift import MAX_CONDITION_FOR_CHOLESKY, spd_inverse

    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for condition in (1.0, 1e3, 1e7):  # Cholesky path
        a = basis @ np.diag(np.geomspace(1.0, condition, 6)) @ basis.T
        np.testing.assert_allclose(spd_inverse(a, False), np.linalg.inv(a), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(spd_inverse(a, True), np.linalg.pinv(a), rtol=1e-6, atol=1e-12)
    ill = basis @ np.diag(np.geomspace(1.0, 10 * MAX_CONDITION_FOR_CHOLESKY, 6)) @ basis.T
    numba_pinv = numba.njit(lambda a: np.linalg.pinv(a))  # what robosuite's jitted code calls
    np.testing.assert_array_equal(spd_inverse(ill, True), numba_pinv(ill))
    singular = basis[:, :4] @ basis[:, :4].T  # rank 4: pinv, not an inverse
    np.testing.assert_allclose(spd_inverse(singular, True), np.linalg.pinv(singular), atol=1e-9)


def test_opspace_matrices_match_robosuites():
    from robosuite.utils.control_utils import opspace_matrices

    from rlsweep.envs.fast_lift import _opspace_matrices

    rng = np.random.default_rng(1)
    for _ in range(5):
        root = rng.normal(size=(7, 7))
        mass = root @ root.T + 0.1 * np.eye(7)
        jacobian = rng.normal(size=(6, 7))
        ours = _opspace_matrices(mass, jacobian, jacobian[:3].copy(), jacobian[3:].copy())
        theirs = opspace_matrices(mass, jacobian, jacobian[:3].copy(), jacobian[3:].copy())
        for mine, reference in zip(ours, theirs):
            np.testing.assert_allclose(mine, reference, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("overrides, reason", [
    (("env.robosuite.controller=IK_POSE",), "arm controller IK_POSE"),
    (("env.robosuite.control_freq=30",), "control_freq 30"),
    # Wipe's reward reads the robot's per-step history, which the fast loop does not keep.
    (("env=robosuite", "env.task=Wipe"), "env Wipe (its reward reads the robot's per-step"),
], ids=["IK_POSE", "control_freq-30", "Wipe"])
def test_uncovered_setups_fall_back_to_stock_with_a_warning(lift_env_factory, caplog, overrides,
                                                            reason):
    with caplog.at_level(logging.WARNING, logger="rlsweep.envs.robosuite_env"):
        env = lift_env_factory("env.backend=fast", *overrides, "env.horizon=5")
    assert env.unwrapped.backend == "robosuite"
    assert f"env.backend=fast does not cover {reason}" in caplog.text
    env.reset(seed=0)
    env.step(np.zeros(env.action_space.shape))


def test_a_fast_backend_that_cannot_start_falls_back(lift_env_factory, caplog, monkeypatch):
    from rlsweep.envs import fast_lift

    def broken(self, sim_env):
        raise OSError("libmujoco not found")

    monkeypatch.setattr(fast_lift.FastLiftStepper, "__init__", broken)
    with caplog.at_level(logging.WARNING, logger="rlsweep.envs.robosuite_env"):
        env = lift_env_factory("env.backend=fast", "env.horizon=5")
    assert env.unwrapped.backend == "robosuite"
    assert "OSError: libmujoco not found" in caplog.text


def test_a_task_not_compared_with_stock_is_refused(lift_env_factory, caplog, monkeypatch):
    """Only listed tasks are stepped fast, even if nothing else about them is refused."""
    from rlsweep.envs import fast_lift

    monkeypatch.setattr(fast_lift, "COVERED_TASKS",
                        tuple(t for t in fast_lift.COVERED_TASKS if t != "Lift"))
    with caplog.at_level(logging.WARNING, logger="rlsweep.envs.robosuite_env"):
        env = lift_env_factory("env.backend=fast", "env.horizon=5")
    assert env.unwrapped.backend == "robosuite"
    assert "does not cover env Lift (only robosuite's" in caplog.text


def test_a_task_that_replaces_a_step_hook_is_refused():
    """A task doing its own work inside the substeps is refused before anything is built."""
    from robosuite.environments.base import REGISTERED_ENVS
    from robosuite.environments.manipulation.lift import Lift

    from rlsweep.envs.fast_lift import unsupported_reason

    try:
        class LiftWithPreAction(Lift):  # robosuite registers every env class it sees defined
            def _pre_action(self, action, policy_step=False):
                super()._pre_action(action, policy_step)
    finally:
        REGISTERED_ENVS.pop("LiftWithPreAction", None)
    reason = unsupported_reason(object.__new__(LiftWithPreAction))
    assert reason.startswith("env LiftWithPreAction (its own _pre_action"), reason
