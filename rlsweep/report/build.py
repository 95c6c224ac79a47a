"""What happens after a sweep and what `python -m rlsweep.report` does."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rlsweep.config import first_line
from rlsweep.report.data import SweepData, comparison_metric, load_sweep
from rlsweep.report.film import film_best_trial
from rlsweep.report.html import confirm_label, sweep_prefixes, write_report
from rlsweep.report.stats import Improvement, improvement
from rlsweep.report.wandb_report import build_wandb_report, is_online, log_sweep_summary

REPORT_FILE = "report.html"


def logger_config(sweep: SweepData) -> dict[str, Any]:
    """The W&B settings the sweep's trials used (from its first cell's composed config)."""
    path = sweep.path / next(iter(sweep.cells)) / "base_config.yaml"
    if not path.is_file():
        raise ValueError(f"{path} is missing: the sweep wrote it before any job (copy it back "
                         "from the sweep's own folder, or rerun the sweep's command to resume)")
    try:
        return OmegaConf.to_container(OmegaConf.load(path).logger)
    except Exception as err:  # not YAML, no logger node: a damaged or edited file
        raise ValueError(f"{path} is damaged: {first_line(err)}") from None


def finish_sweep(sweep_dir: Path) -> Path:
    """At the end of a sweep: the W&B summary run (if W&B is on) and `report.html`."""
    sweep = load_sweep(sweep_dir)
    log_sweep_summary(sweep, logger_config(sweep))
    return write_report([sweep], sweep_dir / REPORT_FILE, {sweep.name: film_best_trial(sweep)})


def cross_sweep_improvements(sweeps: list[SweepData]) -> list[Improvement]:
    """P(A > B) for every pair of confirmed cells of two different sweeps (both orders), from
    the per-seed scores in their confirm.json; a sweep without one adds no pair. It compares
    success rates, or returns when a cell's env has no notion of success (`comparison_metric`);
    a pair with a seed of unknown return adds nothing.

    Labels are "<sweep>/<cell>" (`sweep_prefixes`), so two sweeps' "ppo-dense" stay apart.

    :param sweeps: the sweeps compared, in report order
    """
    prefixes = sweep_prefixes(sweeps)
    metric = comparison_metric(cell for sweep in sweeps if sweep.confirm is not None
                               for cell in sweep.confirm.cells.values())
    cells = [[(confirm_label(prefix, name), cell.scores(metric))
              for name, cell in sweep.confirm.cells.items()]
             for sweep, prefix in zip(sweeps, prefixes) if sweep.confirm is not None]
    pairs = []
    for first, second in itertools.combinations(cells, 2):
        for (a, a_scores), (b, b_scores) in itertools.product(first, second):
            if None in a_scores + b_scores:
                continue
            forward = improvement(a, a_scores, b, b_scores, metric)
            pairs += [forward, forward.reversed()]  # one bootstrap serves both orders
    return pairs


def default_output(sweep_dirs: list[Path]) -> Path:
    return sweep_dirs[0] / (REPORT_FILE if len(sweep_dirs) == 1 else "compare.html")


# Where a sweep's offline W&B runs are: a trial with one seed, each seed of a trial with
# several, each confirmation seed, and the sweep's summary run.
OFFLINE_RUNS = ("*/trial_*/wandb/offline-run-*", "*/trial_*/seed_*/wandb/offline-run-*",
                "confirm/*/seed_*/wandb/offline-run-*", "wandb/offline-run-*")


def offline_run_globs(sweep_dirs: list[Path]) -> list[str]:
    """The `wandb sync` arguments that cover every offline run of the sweeps: only patterns
    that match something, since a shell passes a pattern matching nothing on as it is and
    `wandb sync` then fails on it."""
    return [f"{d}/{pattern}" for d in sweep_dirs for pattern in OFFLINE_RUNS
            if next(Path(d).glob(pattern), None) is not None]


def report(sweep_dirs: list[Path], out: Path | None = None) -> list[str]:
    """Write the local report comparing the sweeps, and the W&B Report when online.

    Returns the lines to show the user (where things were written, or how to sync).
    """
    sweeps = [load_sweep(d) for d in sweep_dirs]
    captions = {sweep.name: film_best_trial(sweep) for sweep in sweeps}
    path = write_report(sweeps, out or default_output(sweep_dirs), captions,
                        cross_sweep=cross_sweep_improvements(sweeps))
    lines = [f"wrote {path}"]
    logger_cfg = logger_config(sweeps[0])
    if is_online(logger_cfg):
        wandb_report = build_wandb_report(sweeps, logger_cfg)
        wandb_report.save()
        lines.append(f"W&B report: {wandb_report.url}")
    else:
        runs = " ".join(offline_run_globs(sweep_dirs))
        lines.append("W&B is offline (no API key, or WANDB_MODE/logger.mode says so): wrote only "
                     "the local report.")
        if runs:
            lines += [f"To sync the offline runs: wandb login && wandb sync {runs}",
                      "then rerun this command with WANDB_MODE=online to build the W&B Report."]
    return lines
