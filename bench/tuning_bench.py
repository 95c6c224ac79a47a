"""A sweep that finds something: the `lift_sbx_sac` preset run to its end, and its winner
retrained on fresh seeds beside the defaults the sweep started from.

The sweep starts from SBX SAC's own values (`PRE_TUNING_SBX_SAC`), as the preset's first night
did: that night's find became today's default, so this run checks that the preset finds such a
setup again, and measures it against where it started.

1. `python -m rlsweep -m +hparams_search=lift_sbx_sac <PRE_TUNING_SBX_SAC>
   hydra.sweep.dir=bench/night/lift_sbx_sac` with TUNING_JOBS workers (default: cores). The
   study is SQLite inside that folder, so a sweep cut off (a session's end) resumes where it
   stopped: finished trials are kept, trials cut mid-way are retried.
2. `python -m rlsweep.confirm bench/night/lift_sbx_sac seeds=5 baseline=true`: the best trial's
   config and the cell's defaults (base_config.yaml) each trained on the same 5 fresh seeds, for
   the trials' budget; seeds already trained are not run again.
3. The section: the trials' outcomes, the winner's parameters, the confirmation's IQM success
   rate and return with 95% CIs, P(best > defaults), and per confirmation seed the first
   evaluation at >= 0.9 success (the solve benchmark's measure, within the trials' budget).

`TUNING_JOBS=0` trains nothing and only reports what is on disk. bench/night/ is committed
without models, checkpoints and W&B files (.gitignore), so a later session can resume it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from bench.solve_bench import PRE_TUNING_SBX_SAC, first_at_target, read_curve
from rlsweep.confirm import DEFAULTS
from rlsweep.report.data import ConfirmData, ConfirmedCell
from rlsweep.sweep.plan import read_plan_file
from rlsweep.sweep.records import TrialRecord, trial_dirs

ROOT = Path(__file__).resolve().parent.parent
PRESET = "lift_sbx_sac"
SWEEP_DIR = ROOT / "bench" / "night" / PRESET
SEEDS = 5


def sweep_command(sweep_dir: Path, jobs: int) -> list[str]:
    return [sys.executable, "-m", "rlsweep", "-m", f"+hparams_search={PRESET}", *PRE_TUNING_SBX_SAC,
            f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.n_jobs={jobs}"]


def confirm_command(sweep_dir: Path) -> list[str]:
    return [sys.executable, "-m", "rlsweep.confirm", str(sweep_dir), f"seeds={SEEDS}",
            "baseline=true"]


def run() -> dict:
    jobs = int(os.environ.get("TUNING_JOBS", os.cpu_count() or 1))
    if jobs > 0:  # TUNING_JOBS=0 only reports
        for command in (sweep_command(SWEEP_DIR, jobs), confirm_command(SWEEP_DIR)):
            print("tuning:", " ".join(command[1:]), flush=True)
            subprocess.run(command, cwd=ROOT, check=True)
    return collect(SWEEP_DIR)


def steps_to_target(run_dir: Path) -> Optional[int]:
    """Env steps at the run's first evaluation at >= 0.9 success (None: not within its budget)."""
    if not (run_dir / "learning_curve.csv").exists():
        return None
    hit = first_at_target(read_curve(run_dir))
    return int(hit["env_steps"]) if hit else None


def _confirmed(cell: ConfirmedCell, runs_dir: Path) -> dict:
    return {"trial": cell.best_trial, "params": cell.params,
            "iqm_success_rate": list(cell.iqm_success_rate),
            "iqm_mean_return": list(cell.iqm_mean_return) if cell.iqm_mean_return else None,
            "seeds": [{"seed": s.seed, "status": s.status, "success_rate": s.success_rate,
                       "mean_return": s.mean_return,
                       "steps_to_0_9": steps_to_target(runs_dir / f"seed_{s.seed}")}
                      for s in cell.seeds]}


def collect(sweep_dir: Path) -> dict:
    """What is on disk in `sweep_dir`: per cell its trials' outcomes, its best trial and, once
    `rlsweep.confirm ... baseline=true` has run, the winner against the defaults."""
    confirm = ConfirmData.read(sweep_dir / "confirm.json")
    if not (sweep_dir / "sweep_plan.json").exists():  # not started (the plan is written last)
        cells_dirs, plan = [], {}
    else:
        plan = read_plan_file(sweep_dir)
        cells_dirs = [sweep_dir / cell["name"] for cell in plan["cells"]]
    pick = max if plan.get("direction") == "maximize" else min
    cells = []
    for cell_dir in cells_dirs:
        records = [TrialRecord.read(d) for d in trial_dirs(cell_dir)]
        complete = [r for r in records if r.state == "COMPLETE" and r.value is not None]
        best = pick(complete, key=lambda r: r.value, default=None)
        budget = OmegaConf.load(cell_dir / "base_config.yaml").trainer.total_timesteps
        cell = {"cell": cell_dir.name, "n_trials": plan["n_trials"],
                "env_steps_per_trial": int(budget),
                "trials": dict(Counter(r.state for r in records)),
                "best": None if best is None else {
                    "trial": best.number, "params": best.params,
                    "success_rate": best.success_rate, "mean_return": best.mean_return},
                "confirm": None}
        name = cell_dir.name
        if confirm and name in confirm.cells and name + DEFAULTS in confirm.cells:
            improvement = next(i for i in confirm.improvement
                               if (i.a, i.b) == (name, name + DEFAULTS))
            cell["confirm"] = {
                "seeds": len(confirm.cells[name].seeds),
                "best": _confirmed(confirm.cells[name], sweep_dir / "confirm" / name),
                "defaults": _confirmed(confirm.cells[name + DEFAULTS],
                                       sweep_dir / "confirm" / f"{name}.defaults"),
                "p_best_over_defaults": [improvement.probability, improvement.low,
                                         improvement.high]}
        cells.append(cell)
    return {"preset": PRESET, "sweep_dir": str(sweep_dir.relative_to(ROOT))
            if sweep_dir.is_relative_to(ROOT) else str(sweep_dir),
            "commands": [" ".join(["python", *sweep_command(Path("<sweep dir>"), 2)[1:]]),
                         " ".join(["python", *confirm_command(Path("<sweep dir>"))[1:]])],
            "cells": cells}


def _interval(value: Optional[list]) -> str:
    if not value:
        return "-"
    return f"{value[0]:.2f} [{value[1]:.2f}, {value[2]:.2f}]"


def _number(value: Optional[float], spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _params(params: dict) -> str:
    return ", ".join(f"`{key.rsplit('.', 1)[-1]}={value:.3g}`" if isinstance(value, float)
                     else f"`{key.rsplit('.', 1)[-1]}={value}`" for key, value in params.items())


def _steps(seeds: list[dict], budget: int) -> str:
    reached = sorted(s["steps_to_0_9"] for s in seeds if s["steps_to_0_9"] is not None)
    text = f"{len(reached)}/{len(seeds)} seeds by {budget // 1000}k"
    return text + (f" (at {', '.join(f'{v // 1000}k' for v in reached)})" if reached else "")


def markdown(results: dict) -> str:
    lines = [f"## A sweep that finds something: `+hparams_search={results['preset']}` (issue 12)",
             "", f"`{results['commands'][0]}`, then `{results['commands'][1]}`: the best trial's "
             "config and the defaults the sweep started from (SBX SAC's own values, the default "
             f"before this preset's first night), each retrained on the same {SEEDS} fresh "
             "seeds for the trials' budget. IQM with 95% stratified-bootstrap CIs; 'seeds at "
             ">= 0.9' counts the confirmation seeds whose evaluation (20 episodes, every 10k env steps) "
             f"reached 0.9 success within that budget. Sweep folder: `{results['sweep_dir']}`.",
             ""]
    if not results["cells"]:
        lines += ["Not started yet.", ""]
    for cell in results["cells"]:
        states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(cell["trials"].items()))
        best = cell["best"]
        # records, not trials: a failed trial that was retried has a record and a retry
        lines.append(f"- **{cell['cell']}**: a budget of {cell['n_trials']} trials of "
                     f"{cell['env_steps_per_trial']:,} env steps; trials ended"
                     f"{' so far' if sum(cell['trials'].values()) < cell['n_trials'] else ''}: "
                     f"{states or 'none'}."
                     + (f" Best: trial {best['trial']}, success {_number(best['success_rate'])} "
                        f"and return {_number(best['mean_return'], '.1f')} over its last "
                        f"evaluations, {_params(best['params'])}." if best else ""))
        confirmed = cell["confirm"]
        if not confirmed:
            lines += ["", "Not confirmed yet: the sweep or `rlsweep.confirm` has not finished.", ""]
            continue
        budget = cell["env_steps_per_trial"]
        lines += ["", "| config | IQM success rate [95% CI] | IQM return [95% CI] | "
                  "seeds at >= 0.9 |", "|---|---|---|---|"]
        for label, key in ((f"best (trial {confirmed['best']['trial']})", "best"),
                           ("defaults", "defaults")):
            row = confirmed[key]
            lines.append(f"| {label} | {_interval(row['iqm_success_rate'])} | "
                         f"{_interval(row['iqm_mean_return'])} | {_steps(row['seeds'], budget)} |")
        lines += ["", f"P(best > defaults) on success rate: "
                  f"{_interval(confirmed['p_best_over_defaults'])}.", ""]
    return "\n".join(lines)
