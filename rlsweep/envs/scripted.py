"""A scripted Lift controller: reach above the cube, descend, grasp, lift.

It reads the true state (`LiftEnv.task_state`) and emits delta actions for OSC_POSE (7-D: position,
rotation, gripper) or OSC_POSITION (4-D: position, gripper); rotation is left at zero. Tests use it to
show that the env, its success detection and the reward variants are wired right: a working env
must let this simple script succeed on most seeds.
"""

from __future__ import annotations

import numpy as np

# OSC_POSE and OSC_POSITION map an action of 1.0 to a 5 cm position delta per env step
# (robosuite's default).
_ACTION_PER_M = 1.0 / 0.05
OPEN, CLOSE = -1.0, 1.0


class ScriptedLiftController:
    """Finite-state controller; call `act(task_state)` each step, `reset()` per episode.

    :param action_dim: the env's action length: 7 for OSC_POSE, 4 for OSC_POSITION
    """

    def __init__(self, action_dim: int = 7, hover_m: float = 0.06, lift_m: float = 0.15,
                 grasp_steps: int = 8):
        self.action_dim = action_dim
        self.hover_m, self.lift_m, self.grasp_steps = hover_m, lift_m, grasp_steps
        self.reset()

    def reset(self) -> None:
        self.phase, self._closing = "hover", 0

    def _move(self, eef: np.ndarray, target: np.ndarray, gripper: float) -> np.ndarray:
        action = np.zeros(self.action_dim)
        action[:3] = np.clip((target - eef) * _ACTION_PER_M, -1.0, 1.0)
        action[-1] = gripper
        return action

    def act(self, state: dict) -> np.ndarray:
        eef, cube = state["eef_pos"], state["cube_pos"]
        if self.phase == "hover":
            target = cube + [0.0, 0.0, self.hover_m]
            if np.linalg.norm(target - eef) < 0.01:
                self.phase = "descend"
            return self._move(eef, target, OPEN)
        if self.phase == "descend":
            target = cube + [0.0, 0.0, -0.005]
            if np.linalg.norm((target - eef)[:2]) < 0.01 and eef[2] - cube[2] < 0.01:
                self.phase = "grasp"
            return self._move(eef, target, OPEN)
        if self.phase == "grasp":
            self._closing += 1
            if self._closing >= self.grasp_steps:
                self.phase = "lift"
            return self._move(eef, eef, CLOSE)
        target = np.array([eef[0], eef[1], state["table_height"] + self.lift_m])
        return self._move(eef, target, CLOSE)
