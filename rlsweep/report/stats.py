"""Honest comparison of cells across seeds, as in Agarwal et al. 2021 ("Deep RL at the Edge of
the Statistical Precipice", the method of the rliable library).

- IQM: the interquartile mean of per-seed scores (mean of the middle 50%): robust to an outlier
  seed, less noisy than the median.
- 95% confidence intervals by stratified bootstrap: resample seeds with replacement within each
  task (Lift is our one task, so strata = tasks = 1), recompute the statistic, take the 2.5 and
  97.5 percentiles (2,000 resamples, fixed RNG seed so a report is reproducible).
- Probability of improvement P(A > B): the chance that a random seed of A scores higher than a
  random seed of B (ties count half), i.e. the Mann-Whitney U statistic divided by n_A * n_B,
  with its own bootstrap CI.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import trim_mean

METHOD = ("Interquartile mean (IQM) over seeds with 95% stratified-bootstrap confidence intervals "
          "(2,000 resamples, percentile method) and probability of improvement P(A > B) "
          "(Mann-Whitney U / n_A n_B), following Agarwal et al., NeurIPS 2021 (rliable).")
RESAMPLES = 2000


def iqm(scores: np.ndarray) -> float:
    return float(trim_mean(np.asarray(scores, dtype=float), 0.25))


def probability_of_improvement(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float)[:, None], np.asarray(b, float)[None, :]
    return float(np.mean((a > b) + 0.5 * (a == b)))


def _percentiles(samples: list[float]) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def iqm_with_ci(scores: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(IQM, CI low, CI high) of one cell's per-seed scores."""
    scores = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    boot = [iqm(rng.choice(scores, size=len(scores), replace=True)) for _ in range(RESAMPLES)]
    return (iqm(scores), *_percentiles(boot))


def improvement_with_ci(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(P(A > B), CI low, CI high), resampling the seeds of A and of B independently."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    boot = [probability_of_improvement(rng.choice(a, len(a)), rng.choice(b, len(b)))
            for _ in range(RESAMPLES)]
    return (probability_of_improvement(a, b), *_percentiles(boot))
