"""A synthetic objective with train()'s signature, for measuring the sweeper where speed matters.

It "trains" by sleeping: every `trainer.eval_freq` env steps cost eval_freq / STEPS_PER_S
seconds, then it reports an evaluation whose success rate grows with progress and with how
close `algo.learning_rate` is to 10**-3.5. Poor learning rates fall behind the median early, so
roughly half the trials of a sweep get pruned. A learning rate of DIVERGE_LR or more diverges
at the first evaluation, as a real run's weights would (no algo's search space reaches it). Trial durations are known, so worker utilization
and per-trial overhead can be computed exactly (see bench/sweeper_bench.py).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from omegaconf import DictConfig

from rlsweep import run_result
from rlsweep.evaluation import EvalHook, EvalResult
from rlsweep.run_result import RunResult, RunStatus

STEPS_PER_S = 1000.0  # the pretend env speed: eval_freq=100 costs 0.1 s
DIVERGE_LR = 0.1


def quality(learning_rate: float) -> float:
    """In (0, 1]: 1 at learning_rate = 10**-3.5, falling off with log-distance."""
    return math.exp(-abs(math.log10(learning_rate) + 3.5))


def synthetic_objective(cfg: DictConfig, run_dir: Path, eval_hook: EvalHook | None = None,
                        wandb_init: dict | None = None) -> RunResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    q = quality(cfg.algo.learning_rate)
    steps, status, detail, success = 0, RunStatus.OK, "", 0.0
    while steps < cfg.trainer.total_timesteps:
        period = min(cfg.trainer.eval_freq, cfg.trainer.total_timesteps - steps)
        time.sleep(period / STEPS_PER_S)
        steps += period
        if cfg.algo.learning_rate >= DIVERGE_LR:
            status, detail, success = RunStatus.DIVERGED, "non-finite loss (synthetic)", 0.0
            break
        success = q * steps / cfg.trainer.total_timesteps
        result = EvalResult(successes=[k < round(10 * success) for k in range(10)],
                            returns=[success * cfg.env.horizon] * 10)
        if eval_hook is not None and not eval_hook(steps, result):
            status, detail = RunStatus.PRUNED, f"at env step {steps}"
            break
    seconds = time.perf_counter() - started
    result = RunResult(status=status, detail=detail, seed=cfg.seed, success_rate=round(10 * success) / 10,
                       mean_return=success * cfg.env.horizon, std_return=0.0, env_steps=steps,
                       wall_time_s=seconds, env_steps_per_s=steps / max(seconds, 1e-9))
    run_result.save(run_dir, result)
    return result
