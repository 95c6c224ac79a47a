"""Sweeper efficiency: worker utilization and per-trial overhead on the synthetic objective.

A real sweep (our plugin, the joblib launcher, the SQLite storage, TPE and the median pruner)
runs trials whose objective sleeps for known times (rlsweep.sweep.synthetic): a full trial is
`TOTAL / 1000` s, and about half are pruned early. Then:
- busy = the objective's known sleep time (env steps reached / 1000), summed over trials;
- utilization = busy / (n_jobs x the window from the first trial's claim to the last's tell);
  also reported over the whole command, including process start-up and planning;
- overhead per trial = (window x n_jobs - busy) / trials: everything that is not the objective's
  own work (claim, sampling, files, each evaluation's report and pruning decision, tell, the
  next claim), and idle workers at the end.
It runs at three trial lengths, since overhead is per trial and per evaluation: 1 s trials
show it; 10 s trials are still 7x shorter than a default Lift trial (20k env steps at
~290 steps/s with the fast backend), so real sweeps sit beyond the last row.
Target (issue 3): utilization >= 0.9 with 2 workers.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from rlsweep.sweep.synthetic import STEPS_PER_S

ROOT = Path(__file__).resolve().parent.parent
N_JOBS, EVALS_PER_TRIAL = 2, 10
SETTINGS = ((1000, 40), (4000, 24), (10000, 16))  # (env steps of a full trial = ms, trials)


LOAD_TRIALS, LOAD_WORKERS = 1000, 8


def run() -> dict:
    return {"utilization": [run_one(total, n_trials) for total, n_trials in SETTINGS],
            "load": run_load()}


def _sweep(sweep_dir: Path, *overrides: str) -> tuple[float, list, float]:
    """Run one synthetic sweep: (seconds of the whole command, the cell's trials, seconds from
    the first trial's start to the last one's end)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlsweep", "-m", "algo=ppo", "logger=none",
                    "hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective",
                    *overrides, f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=(sweep_dir.parent / "stderr").open("w"))
    command_s = time.perf_counter() - started
    trials = optuna.load_study(study_name="ppo-dense",
                               storage=f"sqlite:///{sweep_dir}/optuna.db").get_trials()
    window = (max(t.datetime_complete for t in trials)
              - min(t.datetime_start for t in trials)).total_seconds()
    return command_s, trials, window


def run_load() -> dict:
    """8 workers, 1,000 near-instant trials on the embedded SQLite storage (issue 5)."""
    sweep_dir = Path(tempfile.mkdtemp(prefix="rlsweep-load-")) / "sweep"
    command_s, trials, window = _sweep(
        sweep_dir, "hydra.sweeper.sampler=random", "hydra.sweeper.pruner=none",
        f"hydra.sweeper.n_trials={LOAD_TRIALS}", f"hydra.sweeper.n_jobs={LOAD_WORKERS}",
        "trainer.total_timesteps=1", "trainer.eval_freq=1")
    log = (sweep_dir.parent / "stderr").read_text()
    return {"workers": LOAD_WORKERS, "trials": len(trials),
            "lost": LOAD_TRIALS - sum(t.state.is_finished() for t in trials),
            # a trial claimed by two workers: a step reported twice or a tell on a finished trial
            "claimed_twice": log.count("already reported") + log.count("already finished"),
            "complete": sum(t.state.name == "COMPLETE" for t in trials),
            "trials_per_s": len(trials) / window, "command_s": command_s}


def run_one(TOTAL: int, N_TRIALS: int) -> dict:
    sweep_dir = Path(tempfile.mkdtemp(prefix="rlsweep-bench-")) / "sweep"
    command_s, trials, window = _sweep(
        sweep_dir, f"hydra.sweeper.n_trials={N_TRIALS}", f"hydra.sweeper.n_jobs={N_JOBS}",
        "++hydra.sweeper.pruner_kwargs.n_startup_trials=4", f"trainer.total_timesteps={TOTAL}",
        f"trainer.eval_freq={TOTAL // EVALS_PER_TRIAL}")
    busy = sum(t.user_attrs["env_steps"] for t in trials) / STEPS_PER_S
    return {
        "n_jobs": N_JOBS, "n_trials": len(trials),
        "n_pruned": sum(t.state.name == "PRUNED" for t in trials),
        "full_trial_s": TOTAL / 1000, "busy_s": busy, "trial_window_s": window,
        "command_s": command_s,
        "utilization": busy / (N_JOBS * window),
        "utilization_whole_command": busy / (N_JOBS * command_s),
        "overhead_per_trial_ms": 1000 * (N_JOBS * window - busy) / len(trials),
    }


def markdown(results: dict) -> str:
    load = results["load"]
    return "\n".join([_utilization_md(results["utilization"]), "",
        "## Storage under load (synthetic objective, issue 5)", "",
        f"{load['workers']} workers, {load['trials']} near-instant trials, one study on the "
        "embedded SQLite storage (WAL, BEGIN IMMEDIATE transactions).", "",
        "| trials | lost | claimed twice | complete | throughput | whole command |",
        "|---|---|---|---|---|---|",
        f"| {load['trials']} | {load['lost']} | {load['claimed_twice']} | {load['complete']} | "
        f"{load['trials_per_s']:.1f} trials/s | {load['command_s']:.0f} s |"])


def _utilization_md(results: list[dict]) -> str:
    lines = ["## Sweeper: worker utilization (synthetic objective, issue 3)", "",
             "One cell, joblib launcher, SQLite storage, TPE + median pruner, "
             f"{EVALS_PER_TRIAL} evaluations (report + prune check) per full trial. "
             "Target: utilization >= 0.9 with 2 workers.", "",
             "| full trial | trials (pruned) | workers | utilization | utilization incl. "
             "start-up | overhead per trial | busy / window / command |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['full_trial_s']:.0f} s | {r['n_trials']} ({r['n_pruned']}) | {r['n_jobs']} | "
            f"{r['utilization']:.3f} | {r['utilization_whole_command']:.3f} | "
            f"{r['overhead_per_trial_ms']:.0f} ms | {r['busy_s']:.1f} s / "
            f"{r['trial_window_s']:.1f} s / {r['command_s']:.1f} s |")
    return "\n".join(lines)
