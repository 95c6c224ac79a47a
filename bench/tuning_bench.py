"""A sweep that finds something: the `lift_sbx_sac` preset run to its end, and its winner
retrained on fresh seeds beside the defaults the sweep started from.

The sweep starts from SBX SAC's own values (`PRE_TUNING_SBX_SAC`), as the preset's first night
did: that night's find became today's default, so this run checks that the preset finds such a
setup again, and measures it against where it started.

Each run of the preset is a `NightRun` in `RUNS`: its folder in bench/night/ and the overrides
that reproduce it from today's preset. `python -m bench tuning` advances the last one; the
section reports them all, so a run made with an earlier preset stays beside the current one.

1. `python -m rlsweep -m +hparams_search=lift_sbx_sac <PRE_TUNING_SBX_SAC> <run overrides>
   hydra.sweep.dir=bench/night/<folder>` with TUNING_JOBS workers (default: cores). The
   study is SQLite inside that folder, so a sweep cut off (a session's end) resumes where it
   stopped: finished trials are kept, trials cut mid-way are retried.
2. `python -m rlsweep.confirm bench/night/<folder> seeds=5 baseline=true`: the best trial's
   config and the cell's defaults (base_config.yaml) each trained on the same 5 fresh seeds, for
   the trials' budget; seeds already trained are not run again.
3. The section: the trials' outcomes, the winner's parameters, the confirmation's IQM success
   rate and return with 95% CIs, P(best > defaults), and per confirmation seed the first
   evaluation at >= 0.9 success (the solve benchmark's measure, within the trials' budget).
   For a run that pruned: its pruner replayed (Optuna's own) on the confirmation seeds'
   learning curves against the run's complete trials, i.e. at which env step it would have
   stopped the best config and the defaults on each fresh seed.

`TUNING_JOBS=0` trains nothing and only reports what is on disk. bench/night/ is committed
without models, checkpoints and W&B files (.gitignore), so a later session can resume it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
from omegaconf import OmegaConf

from bench.solve_bench import PRE_TUNING_SBX_SAC, first_at_target, read_curve
from rlsweep.confirm import DEFAULTS, confirmed_dir
from rlsweep.report.data import ConfirmData, ConfirmedCell
from rlsweep.sweep.plan import read_plan_file
from rlsweep.sweep.records import TrialRecord, trial_dirs
from rlsweep.sweep.study import make_pruner, objective_value, sized_pruner_kwargs

ROOT = Path(__file__).resolve().parent.parent
PRESET = "lift_sbx_sac"
NIGHT_DIR = ROOT / "bench" / "night"
SEEDS = 5


@dataclass(frozen=True)
class NightRun:
    """One run of the preset.

    :param folder: its sweep dir, in bench/night/
    :param pruner: the pruner it ran with and its keyword arguments (today's preset prunes
        none), replayed on the confirmation's curves; None if it did not prune
    :param overrides: any other settings of an earlier preset
    :param note: what differs, for the reader
    """

    folder: str
    pruner: Optional[tuple[str, dict[str, Any]]] = None
    overrides: tuple[str, ...] = ()
    note: str = ""

    @property
    def preset_overrides(self) -> tuple[str, ...]:
        """The overrides that reproduce this run from today's preset."""
        if self.pruner is None:
            return self.overrides
        name, kwargs = self.pruner
        return (f"hydra.sweeper.pruner={name}",
                *(f"+hydra.sweeper.pruner_kwargs.{key}={value}" for key, value in kwargs.items()),
                *self.overrides)

    @property
    def sweep_dir(self) -> Path:
        return NIGHT_DIR / self.folder


RUNS = (
    NightRun("lift_sbx_sac", ("median", {"n_startup_trials": 4, "n_warmup_steps": 30000}),
             note="the preset until 2026-11-27: the median pruner from 30k env steps"),
    NightRun("lift_sbx_sac.no_pruning",
             note="today's preset: no pruning (the replay of the run above shows why)"),
)
SWEEP_DIR = RUNS[-1].sweep_dir  # the run `python -m bench tuning` advances


def sweep_command(sweep_dir: Path, jobs: int, overrides: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "rlsweep", "-m", f"+hparams_search={PRESET}", *PRE_TUNING_SBX_SAC,
            *overrides, f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.n_jobs={jobs}"]


def confirm_command(sweep_dir: Path) -> list[str]:
    return [sys.executable, "-m", "rlsweep.confirm", str(sweep_dir), f"seeds={SEEDS}",
            "baseline=true"]


def run() -> dict:
    jobs = int(os.environ.get("TUNING_JOBS", os.cpu_count() or 1))
    current = RUNS[-1]
    if jobs > 0:  # TUNING_JOBS=0 only reports
        for command in (sweep_command(current.sweep_dir, jobs, current.preset_overrides),
                        confirm_command(current.sweep_dir)):
            print("tuning:", " ".join(command[1:]), flush=True)
            subprocess.run(command, cwd=ROOT, check=True)
    return collect_runs()


def collect_runs() -> dict:
    """The section: every run in `RUNS`, as on disk."""
    return {"preset": PRESET, "runs": [collect_run(night) for night in RUNS]}


def collect_run(night: NightRun) -> dict:
    """One run: `collect` of its folder, its overrides and note, and its pruner's replay."""
    run = {"folder": night.folder, "note": night.note,
           **collect(night.sweep_dir, night.preset_overrides)}
    for cell in run["cells"]:
        cell["pruner_replay"] = None
        if night.pruner and cell["confirm"]:
            name, kwargs = night.pruner
            cell["pruner_replay"] = {"pruner": name, "kwargs": kwargs, **{
                key: replay_pruner(night, cell, key) for key in ("best", "defaults")}}
    return run


def curve_values(run_dir: Path) -> dict[int, float]:
    """A run's evaluations as the sweep reported them to its pruner (the objective's value)."""
    horizon = OmegaConf.load(run_dir / ".hydra" / "config.yaml").env.horizon
    return {int(point["env_steps"]): objective_value(point, "success_then_return", horizon)
            for point in read_curve(run_dir)}


def pruned_at(pruner: optuna.pruners.BasePruner, reference: list[dict[int, float]],
              curves: list[dict[int, float]], budget: int) -> list[Optional[int]]:
    """Per curve, the env step at which `pruner` would have stopped it, judged against complete
    trials whose intermediate values are `reference` (None: it would have run to `budget`).

    :param pruner: an Optuna pruner, asked exactly as the sweep's workers ask it
    :param reference: the complete trials' intermediate values by env step
    :param curves: the runs to replay, their values by env step
    :param budget: the trials' env steps: a trial ends there, it is not pruned there
    """
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for values in reference:
        study.add_trial(optuna.trial.create_trial(value=values[max(values)],
                                                  intermediate_values=values))
    stops = []
    for curve in curves:
        trial, stop = study.ask(), None
        for step in sorted(s for s in curve if s < budget):
            trial.report(curve[step], step)
            if trial.should_prune():
                stop = step
                break
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # never a reference for the next
        stops.append(stop)
    return stops


def replay_pruner(night: NightRun, cell: dict, which: str) -> list[Optional[int]]:
    """`pruned_at` for the confirmation seeds of a cell's best config ("best") or defaults
    ("defaults"), with the run's pruner sized as its workers sized it, against the cell's
    complete trials other than the best one (the winner's own lucky seed would raise the bar
    it is judged by; when it ran, it was not yet among the complete trials)."""
    sweep_dir, name = night.sweep_dir, cell["cell"]
    records = [TrialRecord.read(d) for d in trial_dirs(sweep_dir / name)]
    reference = [{int(k): v for k, v in r.intermediate_values.items() if v is not None}
                 for r in records if r.state == "COMPLETE" and r.number != cell["best"]["trial"]]
    trainer = OmegaConf.load(sweep_dir / name / "base_config.yaml").trainer
    pruner_name, given = night.pruner
    kwargs, _ = sized_pruner_kwargs(pruner_name, cell["n_trials"], int(trainer.total_timesteps),
                                    int(trainer.eval_freq), given)
    folder = confirmed_dir(sweep_dir, name if which == "best" else name + DEFAULTS)
    curves = []
    for seed in cell["confirm"][which]["seeds"]:  # the seeds confirm.json scored, no others
        run_dir = folder / f"seed_{seed['seed']}"
        if not (run_dir / "learning_curve.csv").exists():
            raise FileNotFoundError(f"{run_dir}: no learning_curve.csv to replay the pruner on")
        curves.append(curve_values(run_dir))
    return pruned_at(make_pruner(pruner_name, kwargs), reference, curves,
                     int(trainer.total_timesteps))


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


def collect(sweep_dir: Path, overrides: tuple[str, ...] = ()) -> dict:
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
                "best": _confirmed(confirm.cells[name], confirmed_dir(sweep_dir, name)),
                "defaults": _confirmed(confirm.cells[name + DEFAULTS],
                                       confirmed_dir(sweep_dir, name + DEFAULTS)),
                "p_best_over_defaults": [improvement.probability, improvement.low,
                                         improvement.high]}
        cells.append(cell)
    return {"preset": PRESET, "sweep_dir": str(sweep_dir.relative_to(ROOT))
            if sweep_dir.is_relative_to(ROOT) else str(sweep_dir),
            "commands": [" ".join(["python", *sweep_command(Path("<sweep dir>"), 2,
                                                            overrides)[1:]]),
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


def _ended(states: dict[str, int]) -> int:
    """Trials that ended for good: a FAIL record of a retried trial is not one of them."""
    return sum(n for state, n in states.items() if state != "FAIL")


def _stops(stops: list[Optional[int]]) -> str:
    pruned = [s for s in stops if s is not None]
    return (f"{len(pruned)} of {len(stops)} seeds"
            + (f" (at {', '.join(f'{s // 1000}k' for s in pruned)})" if pruned else ""))


def markdown(results: dict) -> str:
    """The section: what every run does, then each run (`run_markdown`)."""
    lines = [f"## A sweep that finds something: `+hparams_search={results['preset']}` (issue 12)",
             "", "Each run: the preset's sweep started from SBX SAC's own values (the default "
             "before this preset's first night, whose find is today's default), then "
             f"`rlsweep.confirm <sweep dir> seeds={SEEDS} baseline=true`: the best trial's config "
             f"and those starting values, each retrained on the same {SEEDS} fresh seeds for the "
             "trials' budget. IQM with 95% stratified-bootstrap CIs; 'seeds at >= 0.9' counts "
             "the confirmation seeds whose evaluation (20 episodes, every 10k env steps) reached "
             "0.9 success within that budget. The last run is the one `python -m bench tuning` "
             "advances.", ""]
    for run in results["runs"]:
        lines += run_markdown(run)
    return "\n".join(lines)


def run_markdown(run: dict) -> list[str]:
    """One run (`collect` of its folder): trials, best trial, confirmation, pruner replay."""
    lines = [f"### `{run['sweep_dir']}`" + (f": {run['note']}" if run.get("note") else ""), "",
             f"`{run['commands'][0]}`, then `{run['commands'][1]}`.", ""]
    if not run["cells"]:
        lines += ["Not started yet.", ""]
    for cell in run["cells"]:
        states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(cell["trials"].items()))
        best = cell["best"]
        # records, not trials: a failed trial that was retried has a record and a retry
        lines.append(f"- **{cell['cell']}**: a budget of {cell['n_trials']} trials of "
                     f"{cell['env_steps_per_trial']:,} env steps; trials ended"
                     f"{' so far' if _ended(cell['trials']) < cell['n_trials'] else ''}: "
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
        replay = cell.get("pruner_replay")
        if replay:
            kwargs = ", ".join(f"{k}={v}" for k, v in replay["kwargs"].items())
            lines += [f"Its pruner ({replay['pruner']}: {kwargs}) replayed on the confirmation "
                      "seeds' curves against this run's complete trials (the best one excepted: "
                      "its own lucky seed) would have stopped the "
                      f"best config on {_stops(replay['best'])} and the defaults on "
                      f"{_stops(replay['defaults'])}.", ""]
    return lines
