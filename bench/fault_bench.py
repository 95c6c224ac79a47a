"""Faults under load (issue 15): 8 workers x 1,000 near-instant trials, on the embedded SQLite
storage and on a real PostgreSQL, while a chaos loop kills and pauses processes at random.

One synthetic sweep per storage (rlsweep.sweep.synthetic: each trial sleeps 0.1 s over two
evaluations; random sampler, no pruner; heartbeat 2 s, grace period 20 s). Every 4-10 s the chaos
loop picks one fault at random:
- SIGKILL a training process (what the OOM killer picks): that trial fails and is retried once;
- SIGSTOP a worker for 1-30 s, then SIGCONT: past the grace period its trial is taken over
  (and on SQLite a worker stopped inside a transaction stalls every other one meanwhile);
- SIGKILL a worker itself, at most once per sweep (joblib then aborts and relaunches the batch,
  and the sweeper allows 3 launches).
The sweep must end by itself (hung: it did not within TIMEOUT_S). Then, from the storage and
the trial folders:
- lost: trials left WAITING or RUNNING, or finished without a trial.json;
- run twice: a trial and its retry both finished with a result (COMPLETE or PRUNED);
- claimed twice: a step reported twice or a tell on a finished trial, in the sweep's log;
- failed for good: trials FAILED with no retry left (each names its reason; not lost).
Targets: lost 0, run twice 0, claimed twice 0, hung 0.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import psutil

from bench.postgres import on_throwaway_postgres
from rlsweep.sweep.records import TRIAL_FILE, TrialRecord

ROOT = Path(__file__).resolve().parent.parent
TRIALS, WORKERS, TIMEOUT_S = 1000, 8, 2400
HEARTBEAT_S, GRACE_S = 2, 20  # the grace SQLite needs: 2 beats + its 15 s lock timeout
PASSWORD = "bench0fault0pw"


def run() -> dict:
    rows = [run_one("sqlite", None),
            on_throwaway_postgres(PASSWORD, lambda url: run_one("postgresql", url))]
    return {"trials": TRIALS, "workers": WORKERS, "grace_period_s": GRACE_S, "rows": rows}


def _processes(sweep: psutil.Process, marker: str) -> list[psutil.Process]:
    try:
        return [p for p in sweep.children(recursive=True) if marker in " ".join(p.cmdline())]
    except psutil.Error:
        return []


class Chaos(threading.Thread):
    """Inject one random fault every 4-10 s into the sweep's processes until told to stop."""

    def __init__(self, sweep_pid: int, seed: int = 0):
        super().__init__(daemon=True)
        self.sweep = psutil.Process(sweep_pid)
        self.rng = random.Random(seed)
        self.done = threading.Event()
        self.faults: Counter = Counter()

    def run(self) -> None:
        while not self.done.wait(self.rng.uniform(4, 10)):
            kind = self.rng.choice(["kill_trainer", "kill_trainer", "stop_worker", "stop_worker",
                                    "kill_worker"])
            if kind == "kill_worker" and self.faults["kill_worker"]:
                kind = "stop_worker"
            marker = "rlsweep.sweep.seeds" if kind == "kill_trainer" else "popen_loky"
            targets = _processes(self.sweep, marker)
            if not targets:
                continue
            target = self.rng.choice(targets)
            try:
                if kind == "stop_worker":
                    target.send_signal(signal.SIGSTOP)
                    self.done.wait(self.rng.uniform(1, 30))
                    target.send_signal(signal.SIGCONT)
                else:
                    target.send_signal(signal.SIGKILL)
            except psutil.Error:  # it ended meanwhile
                continue
            self.faults[kind] += 1


def run_one(storage: str, url: str | None) -> dict:
    sweep_dir = Path(tempfile.mkdtemp(prefix=f"rlsweep-faults-{storage}-")) / "sweep"
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = sweep_dir.parent / "sweep.log"
    overrides = [
        "algo=ppo", "logger=none",
        "hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective",
        "hydra.sweeper.sampler=random", "hydra.sweeper.pruner=none",
        f"hydra.sweeper.n_trials={TRIALS}", f"hydra.sweeper.n_jobs={WORKERS}",
        "trainer.total_timesteps=100", "trainer.eval_freq=50",
        f"hydra.sweeper.heartbeat_interval={HEARTBEAT_S}", f"hydra.sweeper.grace_period={GRACE_S}",
        f"hydra.sweep.dir={sweep_dir}"]
    env = None
    if url is not None:  # the password through the environment, as docs/cluster.md says
        overrides += ["hydra.sweeper.storage=" + url.replace(PASSWORD, "${oc.env:BENCH_PG_PW}"),
                      "hydra.sweeper.study_name=faults"]
        env = {**os.environ, "BENCH_PG_PW": PASSWORD}
    started = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "rlsweep", "-m", *overrides], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        chaos = Chaos(proc.pid)
        chaos.start()
        try:
            proc.wait(timeout=TIMEOUT_S)
            hung = 0
        except subprocess.TimeoutExpired:
            hung = 1
            os.killpg(proc.pid, signal.SIGKILL)  # the sweep and every worker it started
            proc.wait()
        chaos.done.set()
        chaos.join()
    command_s = time.perf_counter() - started
    study = optuna.load_study(study_name="faults-ppo-dense" if url else "ppo-dense",
                              storage=url or f"sqlite:///{sweep_dir}/optuna.db")
    return {"storage": storage, "hung": hung, "exit_code": proc.returncode,
            "command_s": command_s, "faults": dict(chaos.faults),
            **count_outcomes(study.get_trials(), sweep_dir / "ppo-dense", log_path.read_text())}


def count_outcomes(trials: list, cell_dir: Path, log: str) -> dict:
    """What the faults cost, from the study's trials and the cell's trial folders."""
    by_number = {t.number: t for t in trials}
    retry_of = {t.number: t.system_attrs["failed_trial"] for t in trials
                if "failed_trial" in t.system_attrs}
    retried = set(retry_of.values())

    def root(number: int) -> int:
        while number in retry_of:
            number = retry_of[number]
        return number

    results = Counter(root(t.number) for t in trials
                      if t.state.name in ("COMPLETE", "PRUNED"))
    records = {}
    for t in trials:
        trial_dir = cell_dir / f"trial_{t.number:03d}"
        records[t.number] = (TrialRecord.read(trial_dir) if (trial_dir / TRIAL_FILE).exists()
                             else None)
    unfinished = [t.number for t in trials if not t.state.is_finished()]
    no_record = [t.number for t in trials if t.state.name in ("COMPLETE", "PRUNED")
                 and records[t.number] is None]
    failed_for_good = [t for t in trials if t.state.name == "FAIL" and t.number not in retried]
    return {
        "trials_in_study": len(trials),
        "complete": sum(t.state.name == "COMPLETE" for t in trials),
        "retries": len(retry_of),
        "taken_over": sum(bool(r and r.taken_over) for r in records.values()),
        "lost": len(unfinished) + len(no_record),
        "run_twice": sum(n > 1 for n in results.values()),
        "claimed_twice": log.count("already reported") + log.count("already finished"),
        "failed_for_good": len(failed_for_good),
        "failed_for_good_reasons": sorted({(by_number[t.number].user_attrs.get("fail_reason")
                                            or "no reason recorded")[:120]
                                           for t in failed_for_good}),
        "relaunches": log.count("a worker died"),
    }


def markdown(results: dict) -> str:
    lines = ["## Faults under load (synthetic objective, issue 15)", "",
             f"{results['workers']} workers, {results['trials']} near-instant trials per storage; "
             "every 4-10 s a random training process is SIGKILLed or a worker SIGSTOPped for "
             f"1-30 s (grace period {results['grace_period_s']} s), and one worker is SIGKILLed "
             "once. Targets: lost 0, run twice 0, claimed twice 0, hung 0.", "",
             "| storage | faults injected | lost | run twice | claimed twice | hung | retries | "
             "taken over | failed for good | relaunches | whole command |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['storage']} | skipped: {r['skipped']} |||||||||| |")
            continue
        faults = ", ".join(f"{k} {v}" for k, v in sorted(r["faults"].items())) or "none"
        lines.append(f"| {r['storage']} | {faults} | {r['lost']} | {r['run_twice']} | "
                     f"{r['claimed_twice']} | {r['hung']} | {r['retries']} | {r['taken_over']} | "
                     f"{r['failed_for_good']} | {r['relaunches']} | {r['command_s']:.0f} s |")
    reasons = sorted({x for r in results["rows"] for x in r.get("failed_for_good_reasons", [])})
    if reasons:
        lines += ["", "Failed for good (a trial and its one retry both hit by a fault): "
                  + "; ".join(f"`{x}`" for x in reasons)]
    return "\n".join(lines)
