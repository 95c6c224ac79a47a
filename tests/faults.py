"""Fault injection for sweeps: objectives that break the way real trials break.

Used as `hydra.sweeper.objective=tests.faults.<name>`. The env faults run the real
rlsweep.train.train; the storage faults run the synthetic objective (only the storage matters).
"""

from __future__ import annotations

import sqlite3
import threading
import time
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


def hold_write_lock(db: Path, seconds: float) -> threading.Thread:
    """Take `db`'s write lock from a connection of our own (BEGIN EXCLUSIVE, as another process
    busy writing would) and keep it `seconds` in a background thread; return once it is held."""
    held = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(db, timeout=120, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            held.set()
            time.sleep(seconds)
            connection.execute("COMMIT")
        finally:
            connection.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(120), f"could not lock {db}"
    return thread


def synthetic_with_storage_locked(cfg, run_dir: Path, eval_hook=None, wandb_init=None):
    """The synthetic objective, while another connection holds the sweep's SQLite storage locked
    for longer than the worker waits for a lock: across the first evaluation's report and again
    as the trial ends (its user attributes and tell). Transient errors, not the trial's own."""
    from rlsweep.sweep.study import SQLITE_LOCK_TIMEOUT_S
    from rlsweep.sweep.synthetic import synthetic_objective

    db = Path(run_dir).parents[1] / "optuna.db"
    locked_s = SQLITE_LOCK_TIMEOUT_S + 2
    evaluations = 0

    def hook(step, result):
        nonlocal evaluations
        evaluations += 1
        if evaluations == 1:
            hold_write_lock(db, locked_s)
        return eval_hook(step, result)

    result = synthetic_objective(cfg, run_dir, hook, wandb_init)
    hold_write_lock(db, locked_s)
    return result
