"""Fault injection for sweeps: objectives that break the way real trials break.

Used as `hydra.sweeper.objective=tests.faults.<name>`; each runs the real rlsweep.train.train.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym

import rlsweep.train

FAIL_AT_STEP = 30


class ExplodingStep(gym.Wrapper):
    """Raises inside `step`, as a simulator does on an unstable state."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps >= FAIL_AT_STEP:
            raise RuntimeError(f"injected fault: simulation unstable at step {self.steps}")
        return super().step(action)


def train_with_exploding_sparse_env(cfg, run_dir: Path, eval_hook=None, wandb_init=None):
    """The real training, but the Lift env of every `sparse` trial raises inside step."""
    if cfg.reward.name == "sparse":
        make = rlsweep.train.make_env
        rlsweep.train.make_env = lambda *a, **k: ExplodingStep(make(*a, **k))
        try:
            return rlsweep.train.train(cfg, run_dir, eval_hook, wandb_init)
        finally:
            rlsweep.train.make_env = make
    return rlsweep.train.train(cfg, run_dir, eval_hook, wandb_init)
