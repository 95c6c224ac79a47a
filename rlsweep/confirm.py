"""`python -m rlsweep.confirm <sweep dir> seeds=5 [baseline=true]`: retrain each cell's best
configuration on fresh seeds and compare cells honestly.

With `baseline=true` each cell's defaults (its base_config.yaml: the same config with the
algo's own value of every searched parameter) are trained on the same seeds too, as the cell
`<cell> (defaults)`, so the comparison says whether the search beat what it started from.

A cell's best trial was picked on one seed, so its value is biased upward. Here each best
configuration (its trial's composed config, unchanged but for the seed) is trained again on
`seeds` new seeds in `<sweep dir>/confirm/<cell>/seed_<n>/`. Every config's seeds run as one
Hydra multirun through the sweep's own launcher (configs in `confirm/jobs/`), so no config
waits for another's last seed. Seeds that left a metrics.json (ok or diverged) are not
run again; seeds that left none (failed) are retried. Then `confirm.json` gets per-cell IQM
success rate and return with 95% stratified-bootstrap CIs and P(A > B) for every pair of cells
(rlsweep.report.stats), and report.html is rewritten.

Every seed counts. Dropping the seeds whose run diverged or failed would leave only a cell's
lucky runs, so such a seed scores success 0 and the confirmation's worst return
(`WORST_RETURN_RULE`); confirm.json records per seed how its run ended.

On an env with no notion of success (env.reports_success=false, e.g. Pendulum) a seed's
success rate is null, never 0: the cell has no IQM success rate, and P(A > B) compares returns
(`comparison_metric`), as the sweep ranked such trials.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from omegaconf import OmegaConf

from rlsweep import run_result
from rlsweep.arguments import KeyValueParser, UsageError
from rlsweep.cli import CONF_DIR
from rlsweep.config import first_line
from rlsweep.files import write_json_atomic
from rlsweep.report import stats
from rlsweep.report.build import REPORT_FILE
from rlsweep.report.data import (CONFIRM_FILE, FAILED, ConfirmData, ConfirmedCell, SeedScore,
                                 comparison_metric, load_sweep)
from rlsweep.report.html import write_report
from rlsweep.run_result import RunResult, RunStatus
from rlsweep.sweep.plan import read_plan_file

FRESH_SEED_OFFSET = 1000  # confirmation seeds never coincide with the sweep's seed
DEFAULT_SEEDS = 5
# The env's lowest possible return is not known in general (robosuite's dense reward is >= 0,
# a gymnasium env's may be unbounded), so the worst return is taken from the runs themselves.
WORST_RETURN_RULE = ("the lowest mean return of any seed that finished (status ok) in any cell of "
                     "this confirmation, so a seed that diverged or failed scores no better than "
                     "the worst run that finished (an env's lowest possible return is not known "
                     "in general)")


@dataclass
class SeedRun:
    """A confirmation seed's run as it ended on disk.

    :param seed: the training seed
    :param run_dir: `<sweep dir>/confirm/<cell>/seed_<seed>`
    :param result: its metrics.json; None if it left none (it raised, was killed or never
        started) or an unusable one
    :param problem: why there is no result ("" when there is one)
    :param reports_success: whether its env has a notion of success (False: no success rate,
        not 0)
    """

    seed: int
    run_dir: Path
    result: Optional[RunResult]
    problem: str = ""
    reports_success: bool = True

    @property
    def finished(self) -> bool:
        """Trained its budget and evaluated: its own scores count."""
        return self.result is not None and self.result.ok


def read_seed_run(run_dir: Path, seed: int, reports_success: bool = True) -> SeedRun:
    """The seed's metrics.json (through `rlsweep.run_result`), or why it has none.

    :param run_dir: the seed's run dir
    :param seed: its training seed
    :param reports_success: whether its env has a notion of success; if not, its success
        rate is None whatever the file says (one written before such envs said null says 0)
    """
    if not (run_dir / run_result.FILE).exists():
        return SeedRun(seed, run_dir, None, f"no {run_result.FILE}: the run raised, was killed or "
                                            f"never started (see {run_dir})", reports_success)
    try:
        result = run_result.load(run_dir)
    except (ValueError, TypeError, KeyError) as err:  # truncated file, unknown status, ...
        return SeedRun(seed, run_dir, None, f"unreadable {run_result.FILE}: {first_line(err)}",
                       reports_success)
    if not reports_success:
        result.success_rate = None
    needed = ("success_rate", "mean_return") if reports_success else ("mean_return",)
    if result.ok and not all(isinstance(getattr(result, k), (int, float))
                             and math.isfinite(getattr(result, k)) for k in needed):
        return SeedRun(seed, run_dir, None, f"{run_result.FILE} says ok but holds no finite "
                                            + " and ".join(needed), reports_success)
    return SeedRun(seed, run_dir, result, reports_success=reports_success)


def worst_return(runs: Iterable[SeedRun]) -> Optional[float]:
    """The return a diverged or failed seed scores (`WORST_RETURN_RULE`); None if no run finished.

    :param runs: the seed runs of every cell of the confirmation
    """
    returns = [run.result.mean_return for run in runs if run.finished]
    return min(returns) if returns else None


def score_seed(run: SeedRun, worst: Optional[float]) -> SeedScore:
    """A finished seed scores its last evaluation; any other (diverged, failed, ...) scores
    success 0 and `worst`. On an env with no notion of success its success is None.

    :param run: the seed's run
    :param worst: `worst_return` of the whole confirmation
    """
    failed_success = 0.0 if run.reports_success else None
    if run.finished:
        success = run.result.success_rate
        return SeedScore(run.seed, RunStatus.OK.value, "",
                         None if success is None else float(success), float(run.result.mean_return))
    if run.result is None:
        return SeedScore(run.seed, FAILED, run.problem, failed_success, worst)
    return SeedScore(run.seed, run.result.status.value, run.result.describe(), failed_success,
                     worst)


def score_cell(best_trial: Optional[int], params: dict, scores: list[SeedScore]
               ) -> ConfirmedCell:
    """A cell's IQMs over all its seeds' scores (failures included).

    :param best_trial: the sweep trial whose config was retrained (None: the cell's defaults)
    :param params: its sampled parameters
    :param scores: one per seed (`score_seed`)
    """
    if not scores:
        raise ValueError(f"{'defaults' if best_trial is None else f'best trial {best_trial}'}: "
                         "no seed to score")
    returns = [s.mean_return for s in scores]
    successes = [s.success_rate for s in scores]
    return ConfirmedCell(
        best_trial=best_trial, params=params, seeds=scores,
        # none on an env with no notion of success (its seeds' success rates are None)
        iqm_success_rate=None if None in successes else stats.iqm_with_ci(successes),
        # no return is known only when no seed of the whole confirmation finished
        iqm_mean_return=None if None in returns else stats.iqm_with_ci(returns))


JOBS_DIR = "jobs"  # confirm/jobs/: the multirun's configs (a cell's name always holds a '-')
JOB_GROUP = "confirmed"  # the config group whose options are the jobs: `<out dir name>/seed_<n>`


def write_job_configs(confirm_dir: Path, launcher: str, jobs: dict[str, tuple[Path, int]]) -> None:
    """The configs of one Hydra multirun over every job: a primary config (the sweep's launcher,
    each job's output in `<confirm_dir>/<option>`) and an option of the group `confirmed` a job.

    :param confirm_dir: `<sweep dir>/confirm`
    :param launcher: the sweep's launcher (a `hydra/launcher` option)
    :param jobs: option name (`<out dir name>/seed_<n>`) -> (the config it trains: a best trial's
        config.yaml or a cell's base_config.yaml, unchanged but for its seed; the seed)
    """
    jobs_dir = confirm_dir / JOBS_DIR
    for option, (config_file, seed) in jobs.items():
        cfg = OmegaConf.load(config_file)
        cfg.seed = seed
        path = jobs_dir / JOB_GROUP / f"{option}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# @package _global_\n" + OmegaConf.to_yaml(cfg))
    hydra = {"sweep": {"dir": str(confirm_dir.resolve()), "subdir": f"${{hydra:runtime.choices.{JOB_GROUP}}}"},
             "job": {"chdir": False, "name": "confirm"},
             # our launcher presets (conf/hydra/launcher/*) must stay reachable
             "searchpath": [f"file://{CONF_DIR}"]}
    # a default job (the first), so the config composes without the multirun's list
    defaults: list = [{JOB_GROUP: next(iter(jobs))}, "_self_"]
    if launcher != "basic":  # Hydra wants overrides last in a defaults list
        defaults.append({"override hydra/launcher": launcher})
    OmegaConf.save(OmegaConf.create({"defaults": defaults, "hydra": hydra}), jobs_dir / "config.yaml")


def run_jobs(confirm_dir: Path, options: list[str]) -> None:
    """Train every job in one Hydra multirun, so the launcher's workers take the next job of any
    config as soon as they are free (one multirun a config would wait for its slowest seed)."""
    done = subprocess.run([sys.executable, "-m", "rlsweep", "--config-path",
                           str((confirm_dir / JOBS_DIR).resolve()), "--config-name", "config", "-m",
                           f"{JOB_GROUP}=" + ",".join(options)], check=False)
    if done.returncode != 0:  # seeds that did finish still count; the others score as failed
        print(f"the confirmation runs exited with {done.returncode} (output above)", file=sys.stderr)


DEFAULTS = " (defaults)"  # a cell's baseline is named `<cell> (defaults)`


def confirmed_dir(sweep_dir: Path, name: str) -> Path:
    """Where `confirm` trains the seeds of a confirmed config: `confirm/<cell>/` for a cell's
    best config, `confirm/<cell>.defaults/` for its defaults (named `<cell> (defaults)`)."""
    if name.endswith(DEFAULTS):
        return sweep_dir / "confirm" / f"{name[:-len(DEFAULTS)]}.defaults"
    return sweep_dir / "confirm" / name


def confirm(sweep_dir: Path, n_seeds: int, baseline: bool = False) -> ConfirmData:
    """Retrain every cell's best config on `n_seeds` fresh seeds; write confirm.json and report.html.

    :param sweep_dir: a finished sweep
    :param n_seeds: seeds per cell (fewer than `stats.FEW_SEEDS` draws a warning)
    :param baseline: also train each cell's defaults (base_config.yaml) on the same seeds, in
        `confirm/<cell>.defaults/`
    """
    if n_seeds < 1:
        raise ValueError(f"seeds={n_seeds} is invalid: at least 1 seed is needed")
    sweep = load_sweep(sweep_dir)
    launcher = read_plan_file(sweep_dir).get("launcher", "basic")
    few_seeds = stats.few_seeds_note(n_seeds)
    jobs: dict[str, tuple[Path, int]] = {}  # option name -> (config file, seed), see write_job_configs
    planned: dict[str, tuple[Path, list[int], bool]] = {}  # confirmed name -> (its runs' dir,
    # seeds, whether its env reports success)
    picked: dict[str, tuple[Optional[int], dict]] = {}  # confirmed name -> (trial, params)
    skipped: dict[str, str] = {}
    for name, cell in sweep.cells.items():
        best = cell.summary.get("best_trial")
        if best is None:
            skipped[name] = "no complete trial to confirm"
            continue
        trial_dir = sweep_dir / name / f"trial_{best:03d}"
        if not (trial_dir / "config.yaml").exists():  # run by another process on a shared study
            skipped[name] = f"best trial {best} ran in another sweep dir; confirm it there"
            continue
        trial_cfg = OmegaConf.load(trial_dir / "config.yaml")
        base_seed = trial_cfg.seed
        reports_success = bool(trial_cfg.env.get("reports_success", True))
        seeds = [base_seed + FRESH_SEED_OFFSET + k for k in range(n_seeds)]
        configs = {name: (trial_dir / "config.yaml", confirmed_dir(sweep_dir, name),
                          best, cell.summary.get("best_params", {}))}
        if baseline:
            configs[name + DEFAULTS] = (sweep_dir / name / "base_config.yaml",
                                        confirmed_dir(sweep_dir, name + DEFAULTS), None, {})
        for confirmed, (config_file, out_dir, trial, params) in configs.items():
            for seed in seeds:  # seeds that left a metrics.json are not run again
                if not (out_dir / f"seed_{seed}" / run_result.FILE).exists():
                    jobs[f"{out_dir.name}/seed_{seed}"] = (config_file, seed)
            planned[confirmed] = (out_dir, seeds, reports_success)
            picked[confirmed] = (trial, params)
    if not planned:  # nothing to train or score: an empty confirm.json would read as a result
        raise ValueError(f"{sweep_dir} has nothing to confirm, nothing was written: "
                         + "; ".join(f"{name}: {reason}" for name, reason in skipped.items()))
    if few_seeds:
        print(f"warning: {few_seeds}", file=sys.stderr)
    for name, reason in skipped.items():
        print(f"{name}: {reason}", file=sys.stderr)
    if jobs:
        write_job_configs(sweep_dir / "confirm", launcher, jobs)
        run_jobs(sweep_dir / "confirm", list(jobs))
    runs = {name: [read_seed_run(out_dir / f"seed_{seed}", seed, reports_success)
                   for seed in seeds]
            for name, (out_dir, seeds, reports_success) in planned.items()}

    worst = worst_return(run for cell_runs in runs.values() for run in cell_runs)
    cells = {}
    for name, cell_runs in runs.items():
        scores = [score_seed(run, worst) for run in cell_runs]
        cells[name] = score_cell(*picked[name], scores)
        for s in cells[name].failures:
            success = "" if s.success_rate is None else f"success {s.success_rate:g}, "
            print(f"{name}: seed {s.seed} scores as a failure ({success}return "
                  f"{_number(s.mean_return)}): {s.detail}", file=sys.stderr)
    metric = comparison_metric(cells.values())
    result = ConfirmData(
        method=stats.METHOD, cells=cells, seeds_per_cell=n_seeds, worst_return=worst,
        worst_return_rule=WORST_RETURN_RULE, few_seeds_note=few_seeds, skipped=skipped,
        improvement_metric=metric,
        # returns are unknown only when no seed of the whole confirmation finished
        improvement=[stats.improvement(a, cells[a].scores(metric), b, cells[b].scores(metric),
                                       metric)
                     for a, b in itertools.permutations(cells, 2)
                     if None not in cells[a].scores(metric) + cells[b].scores(metric)])
    write_json_atomic(sweep_dir / CONFIRM_FILE, result.to_json())
    sweep.confirm = result  # what load_sweep would now read back from confirm.json
    write_report([sweep], sweep_dir / REPORT_FILE)
    return result


def _number(value: Optional[float]) -> str:
    return "unknown" if value is None else f"{value:.4g}"


def summary_line(name: str, cell: ConfirmedCell) -> str:
    """One line per cell for the terminal: IQMs with CIs (no success rate on an env with no
    notion of success), and which seeds scored as failures."""
    parts = []
    if cell.iqm_success_rate is not None:
        iqm, low, high = cell.iqm_success_rate
        parts.append(f"IQM success rate {iqm:.2f} [{low:.2f}, {high:.2f}]")
    if cell.iqm_mean_return is not None:
        iqm, low, high = cell.iqm_mean_return
        parts.append(f"IQM return {iqm:.4g} [{low:.4g}, {high:.4g}]")
    line = f"{name}: {', '.join(parts) or 'no score'} over {len(cell.seeds)} seeds"
    if cell.failures:
        line += (f" ({len(cell.failures)} scored as failures: "
                 + ", ".join(f"seed {s.seed} {s.status}" for s in cell.failures) + ")")
    return line


PARSER = KeyValueParser(
    prog="python -m rlsweep.confirm",
    usage="python -m rlsweep.confirm SWEEP_DIR [seeds=N] [baseline=true|false]",
    description=__doc__.split("\n\n", 1)[1],
    options={"seeds": (str(DEFAULT_SEEDS), "fresh seeds per cell, an integer >= 1"),
             "baseline": ("false", "also train each cell's defaults on the same seeds")})
PARSER.add_argument("sweep_dir", nargs="*", help="a finished sweep's hydra.sweep.dir")


def main(argv: list[str]) -> int:
    try:
        args = PARSER.parse(argv)
        seeds, baseline, dirs = args.seeds, args.baseline.lower(), args.sweep_dir
        if not seeds.isdigit() or int(seeds) < 1:
            raise UsageError(f"seeds={seeds!r} is invalid: expected an integer >= 1")
        if baseline not in ("true", "false"):
            raise UsageError(f"baseline={args.baseline!r} is invalid: expected true or false")
        if len(dirs) != 1:
            raise UsageError(f"one sweep dir is required, got {len(dirs)}; usage: {PARSER.usage}")
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = confirm(Path(dirs[0]), int(seeds), baseline == "true")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, cell in result.cells.items():
        print(summary_line(name, cell))
    print(f"wrote {Path(dirs[0]) / CONFIRM_FILE} and {Path(dirs[0]) / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
