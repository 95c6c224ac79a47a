"""A strip of frames of the sweep's best trial's policy, for report.html."""

from __future__ import annotations

import logging

from rlsweep.config import first_line
from rlsweep.report.data import SweepData, ReportTrial

STRIP_FILE = "best_policy.png"
log = logging.getLogger("rlsweep.report")


def best_trial(sweep: SweepData) -> tuple[str, ReportTrial] | None:
    """The best complete trial over every cell that left a model, with its cell's name."""
    sign = 1 if sweep.direction == "maximize" else -1
    ranked = [(sign * t.first_value, name, t) for name, cell in sweep.cells.items()
              for t in cell.trials
              if t.state == "COMPLETE" and t.value is not None and t.model_dir is not None]
    if not ranked:
        return None
    _, name, trial = max(ranked, key=lambda r: r[0])
    return name, trial


def film_best_trial(sweep: SweepData) -> str:
    """Write `best_policy.png` in the sweep dir (one episode of the best trial, six frames);
    returns a line saying what it shows, or why there is none (no model, no rendering)."""
    from rlsweep.evaluate import film_strip

    best = best_trial(sweep)
    if best is None:
        return "no complete trial left a model to film"
    cell, trial = best
    try:
        lifted = film_strip(trial.model_dir, sweep.path / STRIP_FILE)
    except Exception as err:  # no offscreen GL on this machine, ...: the report goes on without
        log.warning("could not film the best trial: %s", first_line(err))
        return f"rendering is not available here ({first_line(err) or type(err).__name__})"
    shown = f"{cell} trial {trial.number}, one episode on a fresh evaluation seed"
    if lifted is None:  # the env has no notion of success
        return shown
    return shown + (": the cube was lifted" if lifted else ": the cube was not lifted")
