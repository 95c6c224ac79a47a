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
        "n_complete": len(complete),
        "n_pruned": len(by_state[TrialState.PRUNED]),
        "n_failed": len(by_state[TrialState.FAIL]),
        "n_running": len(by_state[TrialState.RUNNING]),
        "n_waiting": len(by_state[TrialState.WAITING]),
        "env_steps": int(sum(t.user_attrs.get("env_steps", 0) for t in finished)),
        "wall_time_s": float(sum(t.user_attrs.get("wall_time_s", 0.0) for t in finished)),
    }


def progress_line(cell: str, s: dict[str, Any], budget: int) -> str:
    done = s["n_complete"] + s["n_pruned"] + s["n_failed"]
    best = "-" if s["best_value"] is None else f"{s['best_value']:.4g}"
    return (f"[{cell}] {done}/{budget} done ({s['n_complete']} complete, {s['n_pruned']} pruned, "
            f"{s['n_failed']} failed), {s['n_running']} running, best {best}")


def write_summary(sweep_dir: Path, summary: dict[str, dict]) -> Path:
    return write_json_atomic(sweep_dir / SUMMARY_FILE, summary)


def format_table(summary: dict[str, dict]) -> str:
    """A plain-text table of the summary, one row per cell."""
    header = ("cell", "best", "complete", "pruned", "failed", "env steps", "wall s", "best params")
    rows = [header]
    for cell, s in summary.items():
        best = "-" if s["best_value"] is None or math.isnan(s["best_value"]) \
            else f"{s['best_value']:.4g}"
        params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float)
                           else f"{k.split('.')[-1]}={v}" for k, v in s["best_params"].items())
        rows.append((cell, best, str(s["n_complete"]), str(s["n_pruned"]), str(s["n_failed"]),
                     str(s["env_steps"]), f"{s['wall_time_s']:.0f}", params))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)
