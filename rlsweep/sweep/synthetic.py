"""Synthetic objectives with train()'s signature, for measuring the sweeper where speed matters.

They "train" by sleeping: every `trainer.eval_freq` env steps cost eval_freq / STEPS_PER_S
seconds, then they report an evaluation whose success rate grows with progress and with how
close the trial's parameters are to a known optimum: `synthetic_objective` looks only at
`algo.learning_rate` (optimum 10**-3.5), `synthetic_objective_3` at PPO's learning rate,
gae_lambda and ent_coef together (bench/search_bench.py: a search where random search's
luck in one dimension does not suffice). Poor parameters fall behind the median early, so
roughly half the trials of a sweep get pruned. A learning rate of DIVERGE_LR or more diverges
at the first evaluation, as a real run's weights would (no algo's search space reaches it).
Trial durations are known, so worker utilization and per-trial overhead can be computed
exactly (see bench/sweeper_bench.py).
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


def quality3(learning_rate: float, gae_lambda: float, ent_coef: float) -> float:
    """In (0, 1]: 1 at learning_rate 10**-3.5, gae_lambda 0.95 and ent_coef 1e-5, falling off
    as exp(-Euclidean distance). Each parameter is measured in units that make its PPO search
    range 2 wide, as the learning rate's 2 decades are: ent_coef's 6 decades count 1/3 each,
    gae_lambda's [0.9, 0.99] is 2 units."""
    return math.exp(-math.sqrt((math.log10(learning_rate) + 3.5) ** 2
                               + ((gae_lambda - 0.95) * 2 / 0.09) ** 2
                               + ((math.log10(ent_coef) + 5) * 2 / 6) ** 2))


def synthetic_objective(cfg: DictConfig, run_dir: Path, eval_hook: EvalHook | None = None,
                        wandb_init: dict | None = None) -> RunResult:
    """Success follows quality(learning_rate): one parameter matters."""
    return _pretend_training(cfg, run_dir, eval_hook, quality(cfg.algo.learning_rate))


def synthetic_objective_3(cfg: DictConfig, run_dir: Path, eval_hook: EvalHook | None = None,
                          wandb_init: dict | None = None) -> RunResult:
    """Success follows quality3: three of PPO's parameters matter, jointly (search quality)."""
    return _pretend_training(cfg, run_dir, eval_hook, quality3(
        cfg.algo.learning_rate, cfg.algo.gae_lambda, cfg.algo.ent_coef))


def _pretend_training(cfg: DictConfig, run_dir: Path, eval_hook: EvalHook | None,
                      q: float) -> RunResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps, status, detail, success = 0, RunStatus.OK, "", 0.0
    reports_success = bool(cfg.env.reports_success)
    while steps < cfg.trainer.total_timesteps:
        period = min(cfg.trainer.eval_freq, cfg.trainer.total_timesteps - steps)
        time.sleep(period / STEPS_PER_S)
        steps += period
        if cfg.algo.learning_rate >= DIVERGE_LR:
            status, detail, success = RunStatus.DIVERGED, "non-finite loss (synthetic)", 0.0
            break
        success = q * steps / cfg.trainer.total_timesteps
        result = EvalResult(successes=[k < round(10 * success) for k in range(10)]
                            if reports_success else None,  # an env without success: none
                            returns=[success * cfg.env.horizon] * 10)
        if eval_hook is not None and not eval_hook(steps, result):
            status, detail = RunStatus.PRUNED, f"at env step {steps}"
            break
    seconds = time.perf_counter() - started
    result = RunResult(status=status, detail=detail, seed=cfg.seed,
                       success_rate=round(10 * success) / 10 if reports_success else None,
                       mean_return=success * cfg.env.horizon, std_return=0.0, env_steps=steps,
                       wall_time_s=seconds, env_steps_per_s=steps / max(seconds, 1e-9))
    run_result.save(run_dir, result)
    return result
