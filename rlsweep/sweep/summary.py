"""Counting a cell's trials: the live progress line and the final `sweep_summary.json`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from rlsweep.files import write_json_atomic

SUMMARY_FILE = "sweep_summary.json"
# Env steps the default config needed to first reach 0.9 success on Lift, fewest over its seeds,
# in the solve benchmark (bench/results.md, "Time to solve Lift"); a test keeps the two equal.
# Trials given fewer env steps than this should not be expected to lift the cube.
LIFT_SOLVE_STEPS = 140_000


def cell_summary(study: optuna.Study) -> dict[str, Any]:
    """Best value/params, trial counts and compute spent of one cell's study.

    A trial failed by its heartbeat and then retried counts once: as its retry.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials} - {None}
    by_state = {s: [t for t in trials if t.state == s and t.number not in retried]
                for s in TrialState}
    complete = by_state[TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if study.direction.name == "MAXIMIZE" and complete \
        else min(complete, key=lambda t: t.value) if complete else None
    finished = [t for t in trials if t.state.is_finished()]
    return {
        "study_name": study.study_name,
        "best_value": best.value if best else None,
        "best_params": best.params if best else {},
        "best_trial": best.number if best else None,
        # What the objective blends, as users read it: the best trial's last evaluation.
        "best_success_rate": best.user_attrs.get("success_rate") if best else None,
        "best_mean_return": best.user_attrs.get("mean_return") if best else None,
        "n_complete": len(complete),
        "n_pruned": len(by_state[TrialState.PRUNED]),
        "n_failed": len(by_state[TrialState.FAIL]),
        "n_running": len(by_state[TrialState.RUNNING]),
        "n_waiting": len(by_state[TrialState.WAITING]),
        "env_steps": int(sum(t.user_attrs.get("env_steps", 0) for t in finished)),
        "wall_time_s": float(sum(t.user_attrs.get("wall_time_s", 0.0) for t in finished)),
    }


def _number(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def progress_line(cell: str, s: dict[str, Any], budget: int) -> str:
    done = s["n_complete"] + s["n_pruned"] + s["n_failed"]
    best = "-" if s["best_value"] is None else (
        f"success {_number(s.get('best_success_rate'), '.2f')}, "
        f"return {_number(s.get('best_mean_return'), '.1f')}")
    return (f"[{cell}] {done}/{budget} done ({s['n_complete']} complete, {s['n_pruned']} pruned, "
            f"{s['n_failed']} failed), {s['n_running']} running, best {best}")


def write_summary(sweep_dir: Path, summary: dict[str, dict]) -> Path:
    return write_json_atomic(sweep_dir / SUMMARY_FILE, summary)


def format_table(summary: dict[str, dict]) -> str:
    """A plain-text table of the summary, one row per cell: the best trial's success rate and
    return (its last evaluation), then counts, compute spent and the best parameters."""
    header = ("cell", "success", "return", "complete", "pruned", "failed", "env steps", "wall s",
              "best params")
    rows = [header]
    for cell, s in summary.items():
        params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float)
                           else f"{k.split('.')[-1]}={v}" for k, v in s["best_params"].items())
        rows.append((cell, _number(s.get("best_success_rate"), ".2f"),
                     _number(s.get("best_mean_return"), ".1f"), str(s["n_complete"]),
                     str(s["n_pruned"]), str(s["n_failed"]), str(s["env_steps"]),
                     f"{s['wall_time_s']:.0f}", params))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def budget_note(trial_steps: int, env_name: str = "Lift") -> str | None:
    """A plain warning when trials are too short to expect any success on Lift, else None."""
    if env_name != "Lift" or LIFT_SOLVE_STEPS is None or trial_steps >= LIFT_SOLVE_STEPS:
        return None
    return (f"note: trials of {trial_steps:,} env steps are too short to expect any success on "
            f"Lift: the fastest setup in the solve benchmark needed {LIFT_SOLVE_STEPS:,} env steps "
            "to reach 0.9 success (bench/results.md). Success 0 here says nothing about the "
            "hyperparameters; compare returns, or raise trainer.total_timesteps.")
