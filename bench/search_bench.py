"""Search quality: the sweeper's default sampler against random search at the same budget.

The synthetic objectives (rlsweep.sweep.synthetic) have a known optimum, and a trial's quality
in (0, 1] says how close its parameters are (1 at the optimum, exp(-distance)):
- "1 parameter": only `algo.learning_rate` matters (optimum 10**-3.5, distance in decades);
  PPO's five other declared parameters are ignored. Random search's luck in one dimension
  soon finds the peak (its expected score, in closed form, is shown).
- "3 parameters": the learning rate, gae_lambda and ent_coef matter jointly (Euclidean distance,
  each range 2 units wide); three parameters are ignored. Closer to a real search, where
  several parameters interact; random search's expected score is estimated by sampling.
Every sweep is a real one through the user's command, with the user's defaults (median pruner,
2 workers, PPO's declared search space):

    python -m rlsweep -m algo=ppo logger=none
        hydra.sweeper.objective=rlsweep.sweep.synthetic.<objective>
        trainer.total_timesteps=400 trainer.eval_freq=100 hydra.sweeper.n_jobs=2
        hydra.sweeper.n_trials=<N> hydra.sweeper.sampler=<tpe|random> hydra.sweeper.seed=<K>
        hydra.sweeper.on_finish=null hydra.sweep.dir=<work dir>/<objective>/<N>/<sampler>/seed_<K>

(`on_finish=null` skips report.html: it only reads the finished sweep folder, so it cannot change
what the search found, and it would add ~7 s per sweep.) A sweep's score is the best quality
among its COMPLETE trials (each trial's trial.json), its regret 1 - that. Both samplers run at
the default n_trials and at a larger budget, on the same sweep seeds, the two samplers of a
seed back to back in alternating order so machine load hits both alike. The seed seeds each
trial's sampler with the cell and the trial's number (never the process): a random sweep
replays exactly, a TPE sweep its random start-up trials; with 2 workers TPE's later trials also
depend on which trials finished first, so "paired by seed" means "same start, run at the same
time".

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
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Callable

from hydra_plugins.rlsweep_sweeper.rlsweep_sweeper import RLSweeperConf
from rlsweep.sweep.records import TrialRecord, trial_dirs
from rlsweep.sweep.synthetic import quality, quality3

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLER = RLSweeperConf.sampler  # what a user gets without hydra.sweeper.sampler
BASELINE = "random"
BUDGETS = (RLSweeperConf.n_trials, 24)   # trials per sweep: the default, and a larger one
N_JOBS = 2
TOTAL_STEPS, EVAL_FREQ = 400, 100        # 0.4 s of sleep per full trial, 4 evaluations
CELL = "ppo-dense"
OPTIMUM_LOG10 = -3.5                     # quality's peak, rlsweep.sweep.synthetic
PARAM = "algo.learning_rate"
PARAMS_3 = ("algo.learning_rate", "algo.gae_lambda", "algo.ent_coef")


@dataclass(frozen=True)
class Objective:
    """A synthetic objective of the bench: its name, the function the sweep trains, the
    parameters it reads, its quality, and the sweep seeds it runs on."""

    name: str
    function: str
    params: tuple[str, ...]
    quality: Callable[..., float]
    seeds: tuple[int, ...]

    def score_of(self, params: dict) -> float:
        return self.quality(*(params[p] for p in self.params))


OBJECTIVES = (
    Objective("1 parameter", "rlsweep.sweep.synthetic.synthetic_objective", (PARAM,), quality,
              (0, 1, 2, 3, 4)),
    # More seeds: the expected gap per seed is larger here but not certain (a sign test
    # over 5 seeds cannot go below p = 0.031; over 10, 0.001).
    Objective("3 parameters", "rlsweep.sweep.synthetic.synthetic_objective_3", PARAMS_3,
              quality3, tuple(range(10))),
)


def command(objective: Objective, sampler: str, n_trials: int | str, seed: int | str,
            sweep_dir: Path | str) -> list[str]:
    return [sys.executable, "-m", "rlsweep", "-m", "algo=ppo", "logger=none",
            f"hydra.sweeper.objective={objective.function}",
            f"trainer.total_timesteps={TOTAL_STEPS}", f"trainer.eval_freq={EVAL_FREQ}",
            f"hydra.sweeper.n_jobs={N_JOBS}", f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.sampler={sampler}", f"hydra.sweeper.seed={seed}",
            "hydra.sweeper.on_finish=null", f"hydra.sweep.dir={sweep_dir}"]


def _slug(objective: Objective) -> str:
    return objective.name.replace(" ", "_")


def run() -> dict:
    work = Path(os.environ.get("SEARCH_WORK") or tempfile.mkdtemp(prefix="rlsweep-search-"))
    print(f"search bench: sweeps in {work}", flush=True)
    code_before = code_version()
    results = []
    for objective in OBJECTIVES:
        sweeps = []
        for n_trials in BUDGETS:
            for seed in objective.seeds:
                order = ((DEFAULT_SAMPLER, BASELINE) if seed % 2 == 0
                         else (BASELINE, DEFAULT_SAMPLER))
                for sampler in order:
                    sweeps.append(run_sweep(work, objective, sampler, n_trials, seed))
        ranges = planned_ranges(work / _slug(objective) / str(BUDGETS[0]) / DEFAULT_SAMPLER
                                / f"seed_{objective.seeds[0]}", objective.params)
        theory = {n: expected_best_random_of(objective, ranges, n) for n in (1, *BUDGETS)}
        results.append({
            "name": objective.name, "params": list(objective.params),
            "seeds": list(objective.seeds), "ranges": ranges,
            "command": " ".join(["python", *command(objective, "<sampler>", "<N>", "<K>",
                                                    "<dir>")[1:]]),
            "sweeps": sweeps,
            "budgets": [summarize(sweeps, n, theory[n], theory[1]) for n in BUDGETS]})
    return {"default_sampler": DEFAULT_SAMPLER, "baseline": BASELINE, "n_jobs": N_JOBS,
            "total_timesteps": TOTAL_STEPS, "eval_freq": EVAL_FREQ,
            "code": {**code_version(), "sweeper_changed_during_run":
                     code_version()["sweeper_sha1"] != code_before["sweeper_sha1"]},
            "objectives": results}


def run_sweep(work: Path, objective: Objective, sampler: str, n_trials: int, seed: int) -> dict:
    """One sweep (or its finished copy in `work`), scored from its trial.json files."""
    sweep_dir = work / _slug(objective) / str(n_trials) / sampler / f"seed_{seed}"
    cmd = command(objective, sampler, n_trials, seed, sweep_dir)
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
    scored = score(read_trials(sweep_dir / CELL), objective)
    print(f"search bench: {objective.name}, n_trials={n_trials} {sampler:<6} seed {seed}: best "
          f"quality {_fmt(scored['best_quality'])} ({command_s:.0f} s"
          f"{', reused' if reuse else ''})", flush=True)
    return {"sampler": sampler, "n_trials": n_trials, "seed": seed, "command_s": command_s,
            "reused": reuse, **scored}


def read_trials(cell_dir: Path) -> list[TrialRecord]:
    return [TrialRecord.read(trial_dir) for trial_dir in trial_dirs(cell_dir)]


def score(trials: list[TrialRecord], objective: Objective = OBJECTIVES[0]) -> dict:
    """Best quality among COMPLETE trials, its regret and parameters, counts."""
    def has_params(t: TrialRecord) -> bool:
        return all(p in t.params for p in objective.params)

    complete = [t for t in trials if t.state == "COMPLETE" and has_params(t)]
    best = max(complete, key=lambda t: objective.score_of(t.params), default=None)
    best_q = objective.score_of(best.params) if best else None
    sampled = [objective.score_of(t.params) for t in trials if has_params(t)]
    return {"best_quality": best_q, "regret": None if best_q is None else 1 - best_q,
            # also counting pruned and failed trials: did the pruner stop the best one?
            "best_quality_any_state": max(sampled, default=None),
            # where the sampler put its trials, whatever became of them
            "sampled_quality_mean": mean(sampled) if sampled else None,
            "best_params": {p: best.params[p] for p in objective.params} if best else None,
            "n_complete": len(complete),
            "n_pruned": sum(t.state == "PRUNED" for t in trials),
            "n_failed": sum(t.state == "FAIL" for t in trials)}


def planned_ranges(sweep_dir: Path, params: tuple[str, ...]) -> dict[str, dict]:
    """Each parameter's search range as the sweep planned it (sweep_plan.json):
    {param: {"low", "high", "log"}}."""
    plan = json.loads((sweep_dir / "sweep_plan.json").read_text())
    cell = next(c for c in plan["cells"] if c["name"] == CELL)
    ranges = {}
    for p in params:
        attrs = json.loads(cell["space"][p])["attributes"]
        ranges[p] = {"low": attrs["low"], "high": attrs["high"], "log": attrs.get("log", False)}
    return ranges


def expected_best_random_of(objective: Objective, ranges: dict[str, dict], n: int) -> float:
    """Random search's expected best quality over n draws from the planned ranges: in closed
    form for the learning rate alone, else the mean of 20,000 simulated searches."""
    if objective.params == (PARAM,):
        return expected_best_random(n, ranges[PARAM]["low"], ranges[PARAM]["high"])
    rng = random.Random(0)

    def draw(r: dict) -> float:
        if r["log"]:
            return 10 ** rng.uniform(math.log10(r["low"]), math.log10(r["high"]))
        return rng.uniform(r["low"], r["high"])

    return mean(max(objective.quality(*(draw(ranges[p]) for p in objective.params))
                    for _ in range(n)) for _ in range(20_000))


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


def summarize(sweeps: list[dict], n_trials: int, random_expected: float,
              random_expected_one_draw: float) -> dict:
    out = {"n_trials": n_trials, "random_expected": random_expected,
           "random_expected_one_draw": random_expected_one_draw}
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
    lines = ["## Default sampler vs random search (synthetic objectives, issue 14)", "",
             f"Each sweep runs `<command>` once with `<sampler>={d}` (the default) and once with "
             f"`{r}` per sweep seed, the two samplers of a seed back to back in alternating "
             f"order. Trials sleep {results['total_timesteps'] / 1000:.1f} s when not pruned "
             "(the default median pruner is on), on PPO's declared search space. Each trial "
             "has a known quality in (0, 1]: exp(-distance of its parameters from the "
             "optimum). A sweep's score is the best quality among its complete trials "
             "(regret = 1 - score). \"random, in theory\": E[best quality of N random draws]."]
    for objective in _objectives(results):
        lines += ["", *_objective_md(results, objective)]
    code = results.get("code", {})
    if code.get("commit"):
        lines += ["", f"Code: commit {code['commit']}"
                  + (f", with uncommitted changes to the sweeper (its files hash to "
                     f"{code['sweeper_sha1']})" if code["sweeper_modified"]
                     else ", sweeper unmodified")
                  + ("; the sweeper's code CHANGED during the run, so sweeps ran different "
                     "code." if code.get("sweeper_changed_during_run") else ".")]
    return "\n".join(lines)


def _objectives(results: dict) -> list[dict]:
    """The measured objectives; a run from before the 3-parameter objective had only one."""
    if "objectives" in results:
        return results["objectives"]
    lo, hi = results["learning_rate_range"]
    return [{"name": "1 parameter", "params": [PARAM], "seeds": results["seeds"],
             "ranges": {PARAM: {"low": lo, "high": hi, "log": True}},
             "command": results["command"], "sweeps": results["sweeps"],
             "budgets": results["budgets"]}]


def _objective_md(results: dict, objective: dict) -> list[str]:
    d, r = results["default_sampler"], results["baseline"]
    ranges = ", ".join(f"`{p}` in [{v['low']:g}, {v['high']:g}]"
                       + (" log-uniform" if v["log"] else "")
                       for p, v in objective["ranges"].items())
    what = ("only the learning rate matters, distance in decades from 10^-3.5: quality = "
            "exp(-|log10 lr + 3.5|)" if len(objective["params"]) == 1 else
            "the three matter jointly: quality = exp(-Euclidean distance from lr 10^-3.5, "
            "gae_lambda 0.95, ent_coef 1e-5), each range 2 units wide (rlsweep.sweep.synthetic."
            "quality3)")
    lines = [f"### {objective['name'].capitalize()}", "",
             f"`{objective['command']}` on sweep seeds "
             f"{', '.join(map(str, objective['seeds']))}; {ranges}; {what}; PPO's other "
             "declared parameters are sampled and ignored.", "",
             f"| trials per sweep | {d} (default): best quality, mean (min-max) | {r}: best "
             f"quality, mean (min-max) | random, in theory | mean regret {d} / {r} | {d} beat "
             f"{r} (one-sided sign test p) | per seed: {d} vs {r} | quality of all its trials, "
             f"mean {d} / {r} (random, in theory) | complete (pruned) trials, mean {d} / {r} | "
             "command s, mean |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for b in objective["budgets"]:
        bd, br = b[d], b[r]
        per_seed = ", ".join(f"{_fmt(p[d], '.2f')}/{_fmt(p[r], '.2f')}" for p in b["pairs"])
        ties = f", {b['ties']} tied" if b["ties"] else ""
        lines.append(
            f"| {b['n_trials']} | **{_fmt(bd['best_quality_mean'])}** "
            f"({_fmt(bd['best_quality_min'])}-{_fmt(bd['best_quality_max'])}) | "
            f"**{_fmt(br['best_quality_mean'])}** ({_fmt(br['best_quality_min'])}-"
            f"{_fmt(br['best_quality_max'])}) | {_fmt(b['random_expected'])} | "
            f"{_fmt(bd['regret_mean'])} / {_fmt(br['regret_mean'])} | "
            f"{b['wins']} of {len(b['pairs'])} seeds{ties} (p={b['sign_test_p']:.3f}) | "
            f"{per_seed} | {_fmt(bd.get('sampled_quality_mean'))} / "
            f"{_fmt(br.get('sampled_quality_mean'))} ({_fmt(b.get('random_expected_one_draw'))}) | "
            f"{_fmt(bd['complete_mean'], '.1f')} ({_fmt(bd['pruned_mean'], '.1f')}) / "
            f"{_fmt(br['complete_mean'], '.1f')} ({_fmt(br['pruned_mean'], '.1f')}) | "
            f"{_fmt(bd['command_s_mean'], '.0f')} / {_fmt(br['command_s_mean'], '.0f')} |")
    lines += ["", _explanation(results, objective)]
    reused = sum(s.get("reused", False) for s in objective["sweeps"])
    if reused:
        lines += ["", f"{reused} of {len(objective['sweeps'])} sweeps were reused from an "
                  "earlier, interrupted run of this bench (SEARCH_WORK)."]
    return lines


def _explanation(results: dict, objective: dict) -> str:
    d, r = results["default_sampler"], results["baseline"]
    n_seeds = len(objective["seeds"])
    parts = []
    for b in objective["budgets"]:
        bd, br = b[d]["best_quality_mean"], b[r]["best_quality_mean"]
        if bd is None or br is None:
            parts.append(f"at {b['n_trials']} trials some sweeps scored nothing (no complete "
                         "trial)")
            continue
        # a gap within 0.01 is no gap at these seed counts
        verdict = ("about the same as" if abs(bd - br) < 0.01 else
                   "better than" if bd > br else "worse than")
        parts.append(f"at {b['n_trials']} trials {d} scored {bd:.3f} on average, {verdict} "
                     f"{r}'s {br:.3f} (theory for {r}: {b['random_expected']:.3f}), and won "
                     f"{b['wins']} of {len(b['pairs'])} seeds (p={b['sign_test_p']:.3f})"
                     + (f"; its trials averaged quality {sd:.3f}, {r}'s {sr:.3f}"
                        if (sd := b[d].get("sampled_quality_mean")) is not None
                        and (sr := b[r].get("sampled_quality_mean")) is not None else ""))
    return ("What it shows: " + "; ".join(parts) + ". TPE samples at random until it has "
            "`n_startup_trials` trials (the sweeper sizes it to a quarter of the budget, 2-10) "
            "and only then models the good and bad regions. After start-up it places more of "
            "its trials near the optimum (the column \"quality of all its trials\"), but the "
            "best of a sweep is another matter: where one parameter matters, random search "
            "gets close to the optimum too once it has enough draws (the theory column), so "
            "the best-value gap can stay small even where TPE works. "
            f"With {n_seeds} seeds a clean sweep of wins gives a sign test p of "
            f"{sign_test(n_seeds, 0):.3f}. Trials the pruner stops are not scored; the median "
            "pruner stops trials that are behind, and " + _pruned_best(results, objective) + ".")


def _pruned_best(results: dict, objective: dict) -> str:
    counts = [b.get("best_not_complete") for b in objective["budgets"]]
    if None in counts:
        return "a sweep's best parameters are then practically always in a complete trial"
    n = sum(b[results["default_sampler"]]["seeds"] + b[results["baseline"]]["seeds"]
            for b in objective["budgets"])
    return (f"in {sum(counts)} of these {n} sweeps the best parameters sampled were in a "
            "pruned or failed trial")
