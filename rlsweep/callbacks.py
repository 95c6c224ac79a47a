"""SB3 callbacks, each with one job: periodic evaluation, and stopping a diverged run."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from rlsweep.evaluation import EvalResult, run_episodes

# Called after every periodic evaluation with (env steps, result); returning False stops training.
# The sweeper uses it to report to Optuna and prune.
EvalHook = Callable[[int, EvalResult], bool]


class PeriodicEvaluation(BaseCallback):
    """Evaluate every `eval_freq` env steps; keep the learning curve; let a hook stop training.

    Env steps count every parallel env, so with `n_envs` > 1 an evaluation happens at the first
    step at or past each multiple of `eval_freq`.
    """

    def __init__(self, eval_env: VecEnv, eval_freq: int, episodes: int, deterministic: bool,
                 hook: EvalHook | None = None):
        super().__init__()
        self.eval_env, self.eval_freq, self.episodes = eval_env, eval_freq, episodes
        self.deterministic, self.hook = deterministic, hook
        self.curve: list[dict[str, float]] = []
        self.stopped_at: int | None = None
        self.eval_seconds = 0.0
        self._next_eval = eval_freq
        self._start = time.perf_counter()

    def evaluate(self) -> EvalResult:
        """Evaluate the current policy (also used once more after training ends)."""
        started = time.perf_counter()
        sync_envs_normalization(self.training_env, self.eval_env)
        result = run_episodes(
            lambda obs: self.model.predict(obs, deterministic=self.deterministic)[0],
            self.eval_env, self.episodes)
        self.eval_seconds += time.perf_counter() - started
        return result

    def record(self, result: EvalResult) -> None:
        """Add `result` to the learning curve and to the SB3 logger (CSV, W&B)."""
        self.curve.append({"env_steps": self.num_timesteps, **result.summary(),
                           "wall_time_s": time.perf_counter() - self._start})
        for key, value in result.summary().items():
            self.logger.record(f"eval/{key}", value)
        self.logger.dump(self.num_timesteps)

    def _on_step(self) -> bool:
        if self.num_timesteps < self._next_eval:
            return True
        while self._next_eval <= self.num_timesteps:
            self._next_eval += self.eval_freq
        result = self.evaluate()
        self.record(result)
        if self.hook is not None and not self.hook(self.num_timesteps, result):
            self.stopped_at = self.num_timesteps
            return False
        return True


class StepBudget(BaseCallback):
    """Stop at exactly `total_timesteps` env steps.

    SB3's `learn` only checks its budget between rollouts, so PPO with n_steps=1024 and a budget
    of 160 would run 1024 steps. Trials of a sweep must spend the budget they were given.
    """

    def __init__(self, total_timesteps: int):
        super().__init__()
        self.total_timesteps = total_timesteps

    def _on_step(self) -> bool:
        return self.num_timesteps < self.total_timesteps


class DivergenceGuard(BaseCallback):
    """Stop training when rewards, observations or network weights stop being finite.

    A NaN in a run otherwise surfaces as an obscure exception deep in torch, or worse, as a
    silently useless model. `reason` says what went non-finite and when.
    """

    def __init__(self, check_weights_every: int = 1000):
        super().__init__()
        self.check_weights_every = check_weights_every
        self.reason: str | None = None
        self._next_weight_check = check_weights_every

    def _on_step(self) -> bool:
        for name in ("rewards", "new_obs"):
            values = self.locals.get(name)
            if values is not None and not np.all(np.isfinite(values)):
                self.reason = f"diverged: non-finite {name} at env step {self.num_timesteps}"
                return False
        if self.num_timesteps >= self._next_weight_check:
            self._next_weight_check += self.check_weights_every
            if not all(torch.isfinite(p).all() for p in self.model.policy.parameters()):
                self.reason = f"diverged: non-finite network weights at env step {self.num_timesteps}"
                return False
        return True
