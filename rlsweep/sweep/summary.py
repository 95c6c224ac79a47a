"""Counting a cell's trials: the live progress line and the final `sweep_summary.json`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from rlsweep.files import write_json_atomic
from rlsweep.sweep.study import retried_trials, taken_over_trials

SUMMARY_FILE = "sweep_summary.json"
# Env steps the default config needed to first reach 0.9 success on Lift, fewest over its seeds,
# in the solve benchmark (bench/results.md, "Time to solve Lift"); a test keeps the two equal.
# Trials given fewer env steps than this should not be expected to lift the cube.
LIFT_SOLVE_STEPS = 60_000


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether values `a` are at least as good as `b` in every objective and better in one."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]
    at_least = all(s * x >= s * y for s, x, y in zip(sign, a, b))
    return at_least and any(s * x > s * y for s, x, y in zip(sign, a, b))


def pareto_front(points: list[dict[str, Any]], directions: Sequence[str]) -> list[dict[str, Any]]:
    """The points (each with a `values` list) no other point dominates, in input order."""
    return [p for p in points
            if not any(dominates(q["values"], p["values"], directions) for q in points)]


def _trial_record(t: optuna.trial.FrozenTrial, metrics: Sequence[str]) -> dict[str, Any]:
    return {"trial": t.number, "values": list(t.values),
            "objectives": dict(zip(metrics, t.values)), "params": t.params,
            "success_rate": t.user_attrs.get("success_rate"),
            "mean_return": t.user_attrs.get("mean_return")}


def cell_summary(study: optuna.Study, metrics: Sequence[str] = ("success_then_return",),
                 reports_success: bool = True) -> dict[str, Any]:
    """Best value/params (or, with several metrics, the Pareto front), trial counts and
    compute spent of one cell's study.

    `reports_success` False (the cell's env has no notion of success, e.g. Pendulum): the
    summary says so, and its success rates are None, never 0; tables leave the column out.

    A trial failed by its heartbeat and then retried counts once: as its retry.
    `n_taken_over` counts those whose worker was still running them (it paused longer than
    grace_period): the trial ran twice, and a grace_period that short wastes compute.
    """
    trials = study.get_trials(deepcopy=False)
    retried = retried_trials(trials)
    by_state = {s: [t for t in trials if t.state == s and t.number not in retried]
                for s in TrialState}
    complete = by_state[TrialState.COMPLETE]
    directions = [d.name.lower() for d in study.directions]
    pareto = None
    if len(directions) > 1:
        pareto = pareto_front([_trial_record(t, metrics) for t in complete], directions)
        # The row of the table: the front's member best in the first objective.
        first = [t for t in complete if t.number in {p["trial"] for p in pareto}]
        ranked = sorted(first, key=lambda t: t.values[0], reverse=directions[0] == "maximize")
        best = ranked[0] if ranked else None
        best_value = None
    else:
        best = (max if directions[0] == "maximize" else min)(complete, key=lambda t: t.value) \
            if complete else None
        best_value = best.value if best else None
    finished = [t for t in trials if t.state.is_finished()]
    summary = {
        "study_name": study.study_name,
        "best_value": best_value,
        "best_params": best.params if best else {},
        "best_trial": best.number if best else None,
        # What the objective blends, as users read it: the best trial's success rate and
        # return, each the mean of its last evaluations (the basis of its value).
        "best_success_rate": best.user_attrs.get("success_rate") if best and reports_success
        else None,
        "reports_success": reports_success,
        "best_mean_return": best.user_attrs.get("mean_return") if best else None,
        "n_complete": len(complete),
        "n_pruned": len(by_state[TrialState.PRUNED]),
        "n_diverged": sum(1 for t in by_state[TrialState.PRUNED] if _diverged(t)),
        "n_failed": len(by_state[TrialState.FAIL]),
        "n_running": len(by_state[TrialState.RUNNING]),
        "n_waiting": len(by_state[TrialState.WAITING]),
        "n_taken_over": len(taken_over_trials(study)),
        # compute spent: every seed of every finished trial
        "env_steps": int(sum(t.user_attrs.get("env_steps", 0) * len(t.user_attrs.get("seeds") or [0])
                             for t in finished)),
        "wall_time_s": float(sum(t.user_attrs.get("wall_time_s", 0.0) for t in finished)),
    }
    if pareto is not None:
        summary.update(metrics=list(metrics), directions=directions, pareto=pareto)
    return summary


def sweep_pareto(summary: dict[str, dict]) -> list[dict[str, Any]] | None:
    """The Pareto front across cells (each point names its cell), or None if single-objective."""
    cells = {c: s for c, s in summary.items() if isinstance(s, dict) and "pareto" in s}
    if not cells:
        return None
    directions = next(iter(cells.values()))["directions"]
    points = [{"cell": c, **p} for c, s in cells.items() for p in s["pareto"]]
    return pareto_front(points, directions)


def _number(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def progress_line(cell: str, s: dict[str, Any], budget: int) -> str:
    done = s["n_complete"] + s["n_pruned"] + s["n_failed"]
    success = (f"success {_number(s.get('best_success_rate'), '.2f')}, "
               if s.get("reports_success", True) else "")
    best = "-" if s.get("best_trial") is None and s.get("best_value") is None else (
        f"{success}return {_number(s.get('best_mean_return'), '.1f')}")
    taken_over = f", {s['n_taken_over']} taken over" if s.get("n_taken_over") else ""
    return (f"[{cell}] {done}/{budget} done ({s['n_complete']} complete, {s['n_pruned']} pruned, "
            f"{s['n_failed']} failed{taken_over}), {s['n_running']} running, best {best}")


def write_summary(sweep_dir: Path, summary: dict[str, dict]) -> Path:
    """One entry per cell; a multi-objective sweep adds `pareto`, the front across cells."""
    front = sweep_pareto(summary)
    return write_json_atomic(sweep_dir / SUMMARY_FILE,
                             summary if front is None else {**summary, "pareto": front})


def _params_text(params: dict[str, Any]) -> str:
    """Parameters by their last key, floats to 3 significant digits: `learning_rate=0.0003`."""
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float)
                     else f"{k.split('.')[-1]}={v}" for k, v in params.items())


def _columns(rows: list[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns; the last column (parameters) is left unpadded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]
                     for r in rows)


def format_pareto(summary: dict[str, dict]) -> str | None:
    """The Pareto front across cells as a plain-text table (None if single-objective)."""
    front = sweep_pareto(summary)
    if front is None:
        return None
    first = next(s for s in summary.values() if "pareto" in s)
    rows = [("cell", "trial", *[f"{m} ({d[:3]})" for m, d in zip(first["metrics"],
                                                                  first["directions"])], "params")]
    rows += [(p["cell"], str(p["trial"]), *[f"{v:.4g}" for v in p["values"]],
              _params_text(p["params"])) for p in front]
    return f"Pareto front across cells ({len(front)} trials):\n" + _columns(rows)


def reports_success(summary: dict[str, dict]) -> bool:
    """Whether any cell's env has a notion of success (a summary written before cells said so
    counts as having one)."""
    return any(s.get("reports_success", True) for s in summary.values() if isinstance(s, dict))


def format_table(summary: dict[str, dict]) -> str:
    """A plain-text table of the summary, one row per cell: the best trial's success rate and
    return, each the mean of its last `value_last_evals` evaluations (what its value is made
    of), then counts, compute spent and the best parameters. No success column when no cell's
    env reports success; "-" in a cell whose env does not, in a sweep where another does."""
    with_success = reports_success(summary)
    header = ("cell", "success", "return", "complete", "pruned", "failed", "env steps", "wall s",
              "best params")
    rows = [header]
    for cell, s in summary.items():
        rows.append((cell, _number(s.get("best_success_rate"), ".2f"),
                     _number(s.get("best_mean_return"), ".1f"), str(s["n_complete"]),
                     str(s["n_pruned"]), str(s["n_failed"]), str(s["env_steps"]),
                     f"{s['wall_time_s']:.0f}", _params_text(s["best_params"])))
    if not with_success:
        rows = [row[:1] + row[2:] for row in rows]
    table = _columns(rows)
    taken_over = {cell: s["n_taken_over"] for cell, s in summary.items() if s.get("n_taken_over")}
    if taken_over:  # each ran twice: never silent
        cells = ", ".join(f"{n} taken over in {cell}" for cell, n in taken_over.items())
        table += (f"\nwarning: {cells}: another worker failed and retried a trial that was still "
                  "running (its worker paused longer than hydra.sweeper.grace_period; see "
                  "taken_over in its trial.json); the retry counts")
    return table


def budget_note(trial_steps: int, env_name: str = "Lift") -> str | None:
    """A plain warning when trials are too short to expect any success on Lift, else None."""
    if env_name != "Lift" or LIFT_SOLVE_STEPS is None or trial_steps >= LIFT_SOLVE_STEPS:
        return None
    return (f"note: trials of {trial_steps:,} env steps are too short to expect any success on "
            f"Lift: the fastest setup in the solve benchmark needed {LIFT_SOLVE_STEPS:,} env steps "
            "to reach 0.9 success (bench/results.md). Success 0 here says nothing about the "
            "hyperparameters; compare returns, or raise trainer.total_timesteps.")


def _diverged(trial: FrozenTrial) -> bool:
    """Whether the trial was pruned because its run diverged (the worker's `diverged` attr;
    trials of sweeps from before it existed say so only in their reason)."""
    if "diverged" in trial.user_attrs:
        return bool(trial.user_attrs["diverged"])
    return "diverged" in str(trial.user_attrs.get("fail_reason") or "")
