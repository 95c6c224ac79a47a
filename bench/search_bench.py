"""Search quality: the sweeper's default sampler against random search at the same budget.

The synthetic objective (rlsweep.sweep.synthetic) has a known optimum: its trials succeed the
more, the closer `algo.learning_rate` is to 10**-3.5, and `quality(lr)` in (0, 1] says how close
(1 at the optimum, exp(-distance in decades)). Every sweep is a real one through the user's
command, with the user's defaults (median pruner, 2 workers, PPO's declared search space: the
learning rate log-uniform in [1e-5, 1e-3] plus five parameters the objective ignores):

    python -m rlsweep -m algo=ppo logger=none
        hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective
        trainer.total_timesteps=400 trainer.eval_freq=100 hydra.sweeper.n_jobs=2
        hydra.sweeper.n_trials=<N> hydra.sweeper.sampler=<tpe|random> hydra.sweeper.seed=<K>
        hydra.sweeper.on_finish=null hydra.sweep.dir=<work dir>/<N>/<sampler>/seed_<K>

(`on_finish=null` skips report.html: it only reads the finished sweep folder, so it cannot change
what the search found, and it would add ~7 s per sweep.) A sweep's score is the best
quality(learning_rate) among its COMPLETE trials (each trial's trial.json), its regret
1 - that. Both samplers run at the default n_trials and at a larger budget, on the same sweep
seeds, the two samplers of a seed back to back in alternating order so machine load hits both
alike. The seed only decorrelates: the sweeper mixes it with worker, cell and process ids, so a
sweep is not replayable and "paired by seed" means "run at the same time".

Also shown: what random search should score in theory, E[best quality of N log-uniform draws]
(pruning hardly matters there: the median pruner stops trials that are behind, never the best).

Resumable: `SEARCH_WORK=<dir> python -m bench search` keeps its sweeps in <dir> and reuses every
one whose sweep_summary.json exists and whose command was the same (only for a rerun of the same
code: a changed sweeper needs a fresh dir). Without SEARCH_WORK each run starts in a fresh
temporary dir.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

from hydra_plugins.rlsweep_sweeper.rlsweep_sweeper import RLSweeperConf
from rlsweep.sweep.records import TrialRecord, trial_dirs
from rlsweep.sweep.synthetic import quality

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLER = RLSweeperConf.sampler  # what a user gets without hydra.sweeper.sampler
BASELINE = "random"
BUDGETS = (RLSweeperConf.n_trials, 24)   # trials per sweep: the default, and a larger one
SEEDS = (0, 1, 2, 3, 4)
N_JOBS = 2
TOTAL_STEPS, EVAL_FREQ = 400, 100        # 0.4 s of sleep per full trial, 4 evaluations
CELL = "ppo-dense"
OPTIMUM_LOG10 = -3.5                     # quality's peak, rlsweep.sweep.synthetic
PARAM = "algo.learning_rate"


def command(sampler: str, n_trials: int | str, seed: int | str, sweep_dir: Path | str) -> list[str]:
    return [sys.executable, "-m", "rlsweep", "-m", "algo=ppo", "logger=none",
            "hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective",
            f"trainer.total_timesteps={TOTAL_STEPS}", f"trainer.eval_freq={EVAL_FREQ}",
            f"hydra.sweeper.n_jobs={N_JOBS}", f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.sampler={sampler}", f"hydra.sweeper.seed={seed}",
            "hydra.sweeper.on_finish=null", f"hydra.sweep.dir={sweep_dir}"]


def run() -> dict:
    work = Path(os.environ.get("SEARCH_WORK") or tempfile.mkdtemp(prefix="rlsweep-search-"))
    print(f"search bench: sweeps in {work}", flush=True)
    code_before = code_version()
    sweeps = []
    for n_trials in BUDGETS:
        for seed in SEEDS:
            order = (DEFAULT_SAMPLER, BASELINE) if seed % 2 == 0 else (BASELINE, DEFAULT_SAMPLER)
            for sampler in order:
                sweeps.append(run_sweep(work, sampler, n_trials, seed))
    lo, hi = learning_rate_range(work / str(BUDGETS[0]) / DEFAULT_SAMPLER / f"seed_{SEEDS[0]}")
    return {"default_sampler": DEFAULT_SAMPLER, "baseline": BASELINE, "n_jobs": N_JOBS,
            "total_timesteps": TOTAL_STEPS, "eval_freq": EVAL_FREQ, "seeds": list(SEEDS),
            "learning_rate_range": [lo, hi], "optimum": 10 ** OPTIMUM_LOG10,
            "command": " ".join(["python", *command("<sampler>", "<N>", "<K>", "<dir>")[1:]]),
            "code": {**code_version(), "sweeper_changed_during_run":
                     code_version()["sweeper_sha1"] != code_before["sweeper_sha1"]},
            "sweeps": sweeps,
            "budgets": [summarize(sweeps, n, lo, hi) for n in BUDGETS]}


def run_sweep(work: Path, sampler: str, n_trials: int, seed: int) -> dict:
    """One sweep (or its finished copy in `work`), scored from its trial.json files."""
    sweep_dir = work / str(n_trials) / sampler / f"seed_{seed}"
    cmd = command(sampler, n_trials, seed, sweep_dir)
    record = sweep_dir.parent / f"seed_{seed}.command.json"
    reuse = (sweep_dir / "sweep_summary.json").exists() and record.exists() \
        and json.loads(record.read_text())["command"] == cmd[1:]
    if reuse:
        command_s = json.loads(record.read_text())["command_s"]
    else:
        if sweep_dir.exists():  # an unfinished or different sweep: start it over
            shutil.rmtree(sweep_dir)
        sweep_dir.parent.mkdir(parents=True, exist_ok=True)
        log = sweep_dir.parent / f"seed_{seed}.log"
        started = time.perf_counter()
        with log.open("w") as out:
            done = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        command_s = time.perf_counter() - started
        if done.returncode != 0 or not (sweep_dir / "sweep_summary.json").exists():
            tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
            raise RuntimeError(f"search bench: sweep failed (exit {done.returncode}), log {log}:\n"
                               f"{tail}")
        record.write_text(json.dumps({"command": cmd[1:], "command_s": command_s}))
    scored = score(read_trials(sweep_dir / CELL))
    print(f"search bench: n_trials={n_trials} {sampler:<6} seed {seed}: best quality "
          f"{_fmt(scored['best_quality'])} ({command_s:.0f} s{', reused' if reuse else ''})",
          flush=True)
    return {"sampler": sampler, "n_trials": n_trials, "seed": seed, "command_s": command_s,
            "reused": reuse, **scored}


def read_trials(cell_dir: Path) -> list[TrialRecord]:
    return [TrialRecord.read(trial_dir) for trial_dir in trial_dirs(cell_dir)]


def score(trials: list[TrialRecord]) -> dict:
    """Best quality(learning_rate) among COMPLETE trials, its regret and learning rate, counts."""
    complete = [t for t in trials if t.state == "COMPLETE" and PARAM in t.params]
    best = max(complete, key=lambda t: quality(t.params[PARAM]), default=None)
    best_q = quality(best.params[PARAM]) if best else None
    sampled = [quality(t.params[PARAM]) for t in trials if PARAM in t.params]
    return {"best_quality": best_q, "regret": None if best_q is None else 1 - best_q,
            # also counting pruned and failed trials: did the pruner stop the best one?
            "best_quality_any_state": max(sampled, default=None),
            # where the sampler put its trials, whatever became of them
            "sampled_quality_mean": mean(sampled) if sampled else None,
            "best_learning_rate": best.params[PARAM] if best else None,
            "n_complete": len(complete),
            "n_pruned": sum(t.state == "PRUNED" for t in trials),
            "n_failed": sum(t.state == "FAIL" for t in trials)}


def learning_rate_range(sweep_dir: Path) -> tuple[float, float]:
    """The learning rate's search range as the sweep planned it (sweep_plan.json)."""
    plan = json.loads((sweep_dir / "sweep_plan.json").read_text())
    cell = next(c for c in plan["cells"] if c["name"] == CELL)
    attrs = json.loads(cell["space"][PARAM])["attributes"]
    return attrs["low"], attrs["high"]


def expected_best_random(n: int, low: float, high: float, optimum_log10: float = OPTIMUM_LOG10,
                         steps: int = 20000) -> float:
    """E[max quality] over n learning rates drawn log-uniform in [low, high]: random search's
    expected score if no trial is lost. quality = exp(-D), D = |log10 lr - optimum|, so
    E[exp(-min D)] = 1 - integral_0^inf exp(-t) P(D > t)^n dt (trapezoid rule)."""
    a, b = math.log10(low), math.log10(high)
    left, right = max(optimum_log10 - a, 0.0), max(b - optimum_log10, 0.0)
    end = max(left, right)

    def survival(t: float) -> float:  # P(D > t) for one draw
        return (max(left - t, 0.0) + max(right - t, 0.0)) / (b - a)

    h = end / steps
    values = [math.exp(-k * h) * survival(k * h) ** n for k in range(steps + 1)]
    return 1 - h * (sum(values) - (values[0] + values[-1]) / 2)


def paired(sweeps: list[dict], n_trials: int) -> list[tuple[int, float | None, float | None]]:
    """(seed, default sampler's best quality, baseline's) per seed at one budget."""
    by = {(s["sampler"], s["seed"]): s["best_quality"] for s in sweeps if s["n_trials"] == n_trials}
    seeds = sorted({seed for _, seed in by})
    return [(k, by.get((DEFAULT_SAMPLER, k)), by.get((BASELINE, k))) for k in seeds]


def sign_test(wins: int, losses: int) -> float:
    """One-sided p: P(at least `wins` of wins+losses fair coin flips), ties left out."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n if n else 1.0


def summarize(sweeps: list[dict], n_trials: int, low: float, high: float) -> dict:
    out = {"n_trials": n_trials, "random_expected": expected_best_random(n_trials, low, high),
           "random_expected_one_draw": expected_best_random(1, low, high)}
    for sampler in (DEFAULT_SAMPLER, BASELINE):
        runs = [s for s in sweeps if s["n_trials"] == n_trials and s["sampler"] == sampler]
        q = [s["best_quality"] for s in runs if s["best_quality"] is not None]
        out[sampler] = {
            "seeds": len(runs), "scored": len(q),
            "best_quality_mean": mean(q) if q else None,
            "best_quality_min": min(q) if q else None, "best_quality_max": max(q) if q else None,
            "regret_mean": 1 - mean(q) if q else None,
            "sampled_quality_mean": _mean([s.get("sampled_quality_mean") for s in runs]),
            "complete_mean": mean(s["n_complete"] for s in runs) if runs else None,
            "pruned_mean": mean(s["n_pruned"] for s in runs) if runs else None,
            "failed": sum(s["n_failed"] for s in runs),
            "command_s_mean": mean(s["command_s"] for s in runs) if runs else None}
    pairs = [(k, d, r) for k, d, r in paired(sweeps, n_trials) if d is not None and r is not None]
    wins = sum(d > r for _, d, r in pairs)
    losses = sum(d < r for _, d, r in pairs)
    runs = [s for s in sweeps if s["n_trials"] == n_trials]
    out["best_not_complete"] = sum(
        s.get("best_quality_any_state") is not None
        and (s["best_quality"] is None or s["best_quality_any_state"] > s["best_quality"])
        for s in runs)
    out.update(pairs=[{"seed": k, DEFAULT_SAMPLER: d, BASELINE: r} for k, d, r in pairs],
               wins=wins, losses=losses, ties=len(pairs) - wins - losses,
               sign_test_p=sign_test(wins, losses),
               mean_difference=mean(d - r for _, d, r in pairs) if pairs else None)
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return mean(values) if values else None


def code_version() -> dict:
    """The commit measured, whether the sweeper's code differs from it, and a hash of that code
    (issue 14 is being worked on while this bench runs: a run that spans a change says so)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    files = sorted([*(ROOT / "rlsweep" / "sweep").glob("*.py"),
                    *(ROOT / "hydra_plugins").rglob("*.py")])
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()[:12]
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "sweeper_modified": bool(git("status", "--porcelain", "--", "rlsweep/sweep",
                                         "hydra_plugins")),
            "sweeper_sha1": digest}


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    d, r = results["default_sampler"], results["baseline"]
    lo, hi = results["learning_rate_range"]
    n_seeds = len(results["seeds"])
    lines = [
        "## Default sampler vs random search (synthetic objective, issue 14)", "",
        f"Each sweep: `{results['command']}`, once with `<sampler>={d}` (the default) and once "
        f"with `{r}`, on sweep seeds {', '.join(map(str, results['seeds']))} (the two samplers "
        "of a seed back to back, in alternating order). The objective sleeps "
        f"{results['total_timesteps'] / 1000:.1f} s per full trial and succeeds the more, the "
        f"closer `algo.learning_rate` (log-uniform in [{lo:g}, {hi:g}], beside PPO's five other "
        "declared parameters, which it ignores) is to the known optimum 10^-3.5: quality = "
        "exp(-|log10 lr + 3.5|) in (0, 1]. A sweep's score is the best quality among its "
        "complete trials (regret = 1 - score); the default median pruner is on. "
        "\"random, in theory\": E[best quality of N log-uniform draws].", "",
        f"| trials per sweep | {d} (default): best quality, mean (min-max) | {r}: best quality, "
        f"mean (min-max) | random, in theory | mean regret {d} / {r} | {d} beat {r} "
        f"(one-sided sign test p) | per seed: {d} vs {r} | quality of all its trials, mean "
        f"{d} / {r} (random, in theory) | complete (pruned) trials, mean {d} / {r} | "
        "command s, mean |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for b in results["budgets"]:
        bd, br = b[d], b[r]
        per_seed = ", ".join(f"{_fmt(p[d], '.2f')}/{_fmt(p[r], '.2f')}" for p in b["pairs"])
        ties = f", {b['ties']} tied" if b["ties"] else ""
        lines.append(
            f"| {b['n_trials']} | **{_fmt(bd['best_quality_mean'])}** "
            f"({_fmt(bd['best_quality_min'])}-{_fmt(bd['best_quality_max'])}) | "
            f"**{_fmt(br['best_quality_mean'])}** ({_fmt(br['best_quality_min'])}-"
            f"{_fmt(br['best_quality_max'])}) | {_fmt(b['random_expected'])} | "
            f"{_fmt(bd['regret_mean'])} / {_fmt(br['regret_mean'])} | "
            f"{b['wins']} of {len(b['pairs'])} seeds{ties} (p={b['sign_test_p']:.2f}) | "
            f"{per_seed} | {_fmt(bd.get('sampled_quality_mean'))} / "
            f"{_fmt(br.get('sampled_quality_mean'))} ({_fmt(b.get('random_expected_one_draw'))}) | "
            f"{_fmt(bd['complete_mean'], '.1f')} ({_fmt(bd['pruned_mean'], '.1f')}) / "
            f"{_fmt(br['complete_mean'], '.1f')} ({_fmt(br['pruned_mean'], '.1f')}) | "
            f"{_fmt(bd['command_s_mean'], '.0f')} / {_fmt(br['command_s_mean'], '.0f')} |")
    lines += ["", _explanation(results, n_seeds)]
    reused = sum(s.get("reused", False) for s in results["sweeps"])
    if reused:
        lines += ["", f"{reused} of {len(results['sweeps'])} sweeps were reused from an earlier, "
                  "interrupted run of this bench (SEARCH_WORK)."]
    code = results.get("code", {})
    if code.get("commit"):
        lines += ["", f"Code: commit {code['commit']}"
                  + (f", with uncommitted changes to the sweeper (its files hash to "
                     f"{code['sweeper_sha1']})" if code["sweeper_modified"]
                     else ", sweeper unmodified")
                  + ("; the sweeper's code CHANGED during the run, so sweeps ran different "
                     "code." if code.get("sweeper_changed_during_run") else ".")]
    return "\n".join(lines)


def _explanation(results: dict, n_seeds: int) -> str:
    d, r = results["default_sampler"], results["baseline"]
    parts = []
    for b in results["budgets"]:
        bd, br = b[d]["best_quality_mean"], b[r]["best_quality_mean"]
        if bd is None or br is None:
            parts.append(f"at {b['n_trials']} trials some sweeps scored nothing (no complete "
                         "trial)")
            continue
        verdict = "better than" if bd > br else "worse than" if bd < br else "the same as"
        parts.append(f"at {b['n_trials']} trials {d} scored {bd:.3f} on average, {verdict} "
                     f"{r}'s {br:.3f} (theory for {r}: {b['random_expected']:.3f}), and won "
                     f"{b['wins']} of {len(b['pairs'])} seeds"
                     + (f"; its trials averaged quality {sd:.3f}, {r}'s {sr:.3f}"
                        if (sd := b[d].get("sampled_quality_mean")) is not None
                        and (sr := b[r].get("sampled_quality_mean")) is not None else ""))
    return ("What it shows: " + "; ".join(parts) + ". TPE samples at random until it has "
            "`n_startup_trials` trials (Optuna's own default is 10; the sweeper's sampler "
            "settings in the measured code decide it) and only then models the good and bad "
            "regions, so with a budget at or below its start-up count it is random search by "
            "construction. After start-up it places more of its trials near the optimum (the "
            "column \"quality of all its trials\"), but the best of a sweep is another "
            "matter: random search gets close to the optimum too once it has enough draws "
            "(the theory column), so the best-value gap can stay small even where TPE works. "
            f"With {n_seeds} seeds even a clean sweep of wins gives a sign test p of "
            f"{sign_test(n_seeds, 0):.3f}: these seeds can show a large, consistent gap, not a "
            "small one. Trials the pruner stops are not scored; the median pruner stops trials "
            "that are behind, and " + _pruned_best(results) + ".")


def _pruned_best(results: dict) -> str:
    counts = [b.get("best_not_complete") for b in results["budgets"]]
    if None in counts:
        return "a sweep's best learning rate is then practically always in a complete trial"
    n = sum(b[results["default_sampler"]]["seeds"] + b[results["baseline"]]["seeds"]
            for b in results["budgets"])
    return (f"in {sum(counts)} of these {n} sweeps the best learning rate sampled was in a "
            "pruned or failed trial")
