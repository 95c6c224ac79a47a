"""Callbacks as pure functions of the learning curve they read (no training needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlsweep.callbacks import ProgressLine, StopOnSuccess


def curve(*success_rates: float) -> list[dict]:
    return [{"env_steps": 1000 * (k + 1), "success_rate": s, "mean_return": 10.0 * s}
            for k, s in enumerate(success_rates)]


@pytest.mark.parametrize("rates,consecutive,stops,solved_at", [
    ((0.0, 0.5, 0.85), 1, False, None),
    ((0.0, 0.9), 1, True, 2000),
    ((0.0, 0.95, 0.8, 0.9), 2, False, 2000),      # a lucky evaluation is not enough
    ((0.0, 0.95, 0.8, 0.9, 1.0), 2, True, 2000),  # solved_at stays the first hit
])
def test_stop_on_success(rates, consecutive, stops, solved_at):
    callback = StopOnSuccess(SimpleNamespace(curve=curve(*rates)), 0.9, consecutive)
    callback.num_timesteps = 5000
    assert callback._on_step() is (not stops)
    assert callback.stopped_at == (5000 if stops else None)
    assert callback.solved_at == solved_at


def test_progress_line_shows_steps_speed_eta_and_last_evaluation():
    evaluation = SimpleNamespace(curve=[], eval_seconds=0.0)
    progress = ProgressLine(evaluation, total_timesteps=300_000, interval_s=30.0)
    progress.num_timesteps = 30_000
    progress._started -= 100.0  # 100 s of training so far: 300 steps/s, 900 s left
    assert progress.line() == "env step 30,000/300,000 (10%) | 300 steps/s | ETA 15m00s"
    evaluation.curve = curve(0.25)
    evaluation.eval_seconds = 0.0
    assert progress.line().endswith("| eval at 1,000: success 0.25, return 2.5")
    without_success = ProgressLine(evaluation, total_timesteps=300_000, reports_success=False)
    without_success.num_timesteps = 30_000
    assert without_success.line().endswith("| eval at 1,000: return 2.5")  # Pendulum: no success
