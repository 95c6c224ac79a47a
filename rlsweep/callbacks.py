"""SB3 callbacks, each with one job: periodic evaluation, and stopping a diverged run."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from rlsweep.checkpoint import Progress
from rlsweep.evaluation import EvalHook, EvalResult, run_episodes


class PeriodicEvaluation(BaseCallback):
    """Evaluate every `eval_freq` env steps; keep the learning curve; let a hook stop training.

    Env steps count every parallel env, so with `n_envs` > 1 an evaluation happens at the first
    step at or past each multiple of `eval_freq`. A resumed run passes its checkpoint's
    `Progress`: the curve and the clocks continue from it. On an env without a notion of
    success (`reports_success` False) the curve's `success_rate` is None, never 0.
    """

    def __init__(self, eval_env: VecEnv, eval_freq: int, episodes: int, deterministic: bool,
                 hook: EvalHook | None = None, resume: Progress | None = None,
                 clock: Callable[[], float] = time.perf_counter, reports_success: bool = True):
        super().__init__()
        self.reports_success = reports_success
        self.clock = clock  # measures `eval_seconds` (the trainer's clock stops while JAX compiles)
        self.eval_env, self.eval_freq, self.episodes = eval_env, eval_freq, episodes
        self.deterministic, self.hook = deterministic, hook
        self.curve: list[dict[str, float]] = list(resume.curve) if resume else []
        self.stopped_at: int | None = None
        self.eval_seconds = resume.eval_seconds if resume else 0.0
        self._next_eval = eval_freq
        self._start = time.perf_counter() - (resume.wall_seconds if resume else 0.0)

    def elapsed(self) -> float:
        """Seconds since training started (across resumes): the curve's `wall_time_s` clock."""
        return time.perf_counter() - self._start

    def _on_training_start(self) -> None:
        self._next_eval = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq

    def evaluate(self) -> EvalResult:
        """Evaluate the current policy (also used once more after training ends)."""
        started = self.clock()
        sync_envs_normalization(self.training_env, self.eval_env)
        result = run_episodes(
            lambda obs: self.model.predict(obs, deterministic=self.deterministic)[0],
            self.eval_env, self.episodes, reports_success=self.reports_success)
        self.eval_seconds += self.clock() - started
        return result

    def record(self, result: EvalResult) -> None:
        """Add `result` to the learning curve and to the SB3 logger (CSV, W&B)."""
        self.curve.append({"env_steps": self.num_timesteps, **result.summary(),
                           "wall_time_s": self.elapsed()})
        for key, value in result.summary().items():
            if value is not None:  # no success rate on an env without success: no column
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


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(seconds % 60):02d}s"


class ProgressLine(BaseCallback):
    """Print one progress line every `interval_s` seconds of training: env steps, training
    env steps/s, time left at that speed, and the last evaluation's success rate and return.

    A line at a time (not a redrawn bar), so it reads the same in a terminal and in a log
    file. Sweeps leave it off: their per-cell lines already report.

    :param evaluation: the run's periodic evaluation (for the last success rate and return)
    :param total_timesteps: the run's budget in env steps
    :param interval_s: seconds between lines
    :param write: where lines go (a logger's info, print, ...)
    :param reports_success: whether the env reports task success (Pendulum does not: no
        success rate is shown, only the return)
    """

    def __init__(self, evaluation: PeriodicEvaluation, total_timesteps: int,
                 interval_s: float = 30.0, write: Callable[[str], None] = print,
                 reports_success: bool = True):
        super().__init__()
        self.evaluation, self.total_timesteps = evaluation, total_timesteps
        self.reports_success = reports_success
        self.interval_s, self.write = interval_s, write
        self._started = self._last_line = time.perf_counter()
        self._first_step, self._eval_before = 0, 0.0

    def _on_training_start(self) -> None:  # a resumed run: speed over this process's steps
        self._first_step, self._eval_before = self.num_timesteps, self.evaluation.eval_seconds
        self._started = self._last_line = time.perf_counter()

    def line(self) -> str:
        """The progress line for now."""
        elapsed = (time.perf_counter() - self._started
                   - (self.evaluation.eval_seconds - self._eval_before))
        speed = (self.num_timesteps - self._first_step) / max(elapsed, 1e-9)
        left = max(self.total_timesteps - self.num_timesteps, 0) / max(speed, 1e-9)
        text = (f"env step {self.num_timesteps:,}/{self.total_timesteps:,} "
                f"({100 * self.num_timesteps / self.total_timesteps:.0f}%) | {speed:.0f} steps/s"
                f" | ETA {_duration(left)}")
        if self.evaluation.curve:
            last = self.evaluation.curve[-1]
            success = (f"success {last['success_rate']:.2f}, "
                       if self.reports_success and last["success_rate"] is not None else "")
            text += f" | eval at {last['env_steps']:,}: {success}return {last['mean_return']:.1f}"
        return text

    def _on_step(self) -> bool:
        now = time.perf_counter()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            self.write(self.line())
        return True


class StopOnSuccess(BaseCallback):
    """Stop once `consecutive` evaluations in a row reach `success_rate` (the task is solved).

    Like SB3's `StopTrainingOnRewardThreshold`, but on the task's success rate, which is what
    "solved" means for Lift; more than one evaluation in a row guards against a lucky one.
    `solved_at` is the env step of the first evaluation of the run that reached the threshold.

    :param evaluation: the run's periodic evaluation, whose learning curve this reads
    :param success_rate: success rate (0..1) an evaluation must reach
    :param consecutive: evaluations in a row that must reach it before training stops
    """

    def __init__(self, evaluation: PeriodicEvaluation, success_rate: float, consecutive: int = 1):
        super().__init__()
        self.evaluation, self.success_rate, self.consecutive = evaluation, success_rate, consecutive
        self.stopped_at: int | None = None

    @property
    def solved_at(self) -> int | None:
        return next((point["env_steps"] for point in self.evaluation.curve
                     if point["success_rate"] >= self.success_rate), None)

    def _on_step(self) -> bool:
        recent = self.evaluation.curve[-self.consecutive:]
        if len(recent) == self.consecutive and all(
                point["success_rate"] >= self.success_rate for point in recent):
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


def weights_finite(policy) -> bool:
    """Whether every network weight of an SB3 (torch) or SBX (flax) policy is finite."""
    # SBX policies are torch Modules too (SB3's base class) but hold no torch parameters: their
    # weights live in flax TrainState attributes (actor_state, qf_state, vf_state).
    states = [v for k, v in vars(policy).items() if k.endswith("_state") and hasattr(v, "params")]
    if states:
        import jax

        return all(bool(np.isfinite(np.asarray(leaf)).all())
                   for state in states for leaf in jax.tree_util.tree_leaves(state.params))
    return all(bool(torch.isfinite(p).all()) for p in policy.parameters())


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
                self.reason = f"non-finite {name} at env step {self.num_timesteps}"
                return False
        if self.num_timesteps >= self._next_weight_check:
            self._next_weight_check = self.num_timesteps + self.check_weights_every
            if not weights_finite(self.model.policy):
                self.reason = f"non-finite network weights at env step {self.num_timesteps}"
                return False
        return True
