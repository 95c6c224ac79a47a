"""A trial's evaluations, aggregated over its seeds, and the processes that train its runs.

Every run of a sweep trains in a trainer process of its worker (`python -m rlsweep.sweep.seeds`,
kept across the worker's trials), never in the worker itself: a run that dies (out of memory, a
segfault in native code, a `kill`) then takes down only its own trial, which the worker records
as failed and retries once, while the launcher's other workers and their trials go on. (With
joblib's process pool, the default launcher, one dead pool process aborts every other.)

With `hydra.sweeper.seeds_per_trial=k` (or `seed=0,1,2` in a sweep) a trial trains the same
parameters on k seeds, each in its own trainer process (in `<trial dir>/seed_<s>/`), so the k
runs use k cores when the machine has them. They run in lockstep: at each evaluation every seed
waits until all have evaluated; the worker then reports the aggregate (mean or IQM) of their
success rates and returns to Optuna, asks the pruner once, and tells every seed to go on or
stop. One seed's pruning decision is everyone's. With one seed the run is the trial folder.

Messages between the worker and a trainer go over a socket pair (`multiprocessing`'s
Connection), never over stdout, which robosuite and SB3 write to (into the run's train.log).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from rlsweep.files import write_text_atomic
from rlsweep.run_result import RunResult

log = logging.getLogger("rlsweep.worker")

SEED_DIR = "seed_{seed}"


def aggregate(values: Sequence[Optional[float]], how: str) -> Optional[float]:
    """Mean or IQM (mean of the middle half) of the seeds' values; None if none has one.

    With fewer than 4 values the IQM trims nothing and equals the mean.
    """
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return None
    if how == "iqm":
        ordered = np.sort(present)
        cut = present.size // 4
        return float(ordered[cut:present.size - cut].mean())
    return float(present.mean())


@dataclass
class EvaluationLog:
    """A trial's evaluations in env-step order, each aggregated over the trial's seeds.

    :param how: "mean" or "iqm", how the seeds' numbers at one step are combined
    """

    how: str = "mean"
    steps: list[int] = field(default_factory=list)
    points: list[dict[str, Optional[float]]] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        return self.steps[-1] if self.steps else 0

    def add(self, step: int, summaries: Sequence[dict[str, Any]]) -> dict[str, Optional[float]]:
        """Record the seeds' evaluation summaries at `step`; return their aggregate."""
        point = {key: aggregate([s.get(key) for s in summaries], self.how)
                 for key in ("success_rate", "mean_return")}
        self.steps.append(step)
        self.points.append(point)
        return point

    def recent(self, last_n: int) -> dict[str, Optional[float]]:
        """Mean of each number over the last `last_n` evaluations (what a trial's value uses:
        one evaluation of a policy is noisy, its last few agree better)."""
        tail = self.points[-last_n:]
        return {key: aggregate([p[key] for p in tail], "mean")
                for key in ("success_rate", "mean_return")}


@dataclass
class SeedOutcome:
    """How one seed's run of a trial ended: its result, or the error that stopped it."""

    seed: int
    run_dir: Path
    result: Optional[RunResult] = None
    error: Optional[str] = None
    killed: Optional[str] = None   # how its training process died, if it did (no result, no error sent)


# ------------------------------------------------------------------ the worker's side

class Trainer:
    """A process (`python -m rlsweep.sweep.seeds`) that trains one run at a time for its worker.

    It is started at its first run and kept for the next ones (the objective's imports, seconds
    of torch and robosuite, are paid once per worker, not per trial). A run that kills it (out
    of memory, a crash in native code, a `kill`) ends only that run: the worker records the
    trial's failure and the next run starts a fresh process. The process dies with its worker.

    :param objective: import path of the training function (`hydra.sweeper.objective`)
    """

    def __init__(self, objective: str):
        self.objective = objective
        self.process: Optional[subprocess.Popen] = None
        self.conn: Optional[Connection] = None

    @property
    def pid(self) -> Optional[int]:
        return None if self.process is None else self.process.pid

    def start_run(self, run_dir: Path, cfg: DictConfig, wandb_init: dict) -> None:
        """Train the run `cfg` (saved as `<run_dir>/config.yaml`) in this process."""
        if self.process is None or self.process.poll() is not None:
            self._spawn()
        # The config itself, pickled (1 ms each way): loading config.yaml again here cost
        # 15-25 ms a trial, parsing YAML and building the config (bench sweeper).
        setup = {"run_dir": str(run_dir), "wandb_init": wandb_init, "config": cfg}
        try:
            self.conn.send(setup)
        except OSError:  # it died since its last run (killed while idle): a fresh one
            self._spawn()
            self.conn.send(setup)

    def _spawn(self) -> None:
        self.close()
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rlsweep.sweep.seeds", str(theirs.fileno()), str(os.getpid()),
             self.objective], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        theirs.close()
        self.conn = Connection(ours.detach())

    def death(self) -> str:
        """Why the process ended, once its connection closed: the signal that killed it or its
        exit code."""
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # its connection broke but it lives on: end it
            self.process.kill()
            code = self.process.wait()
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            return f"its training process was killed by {name}{hint}"
        return f"its training process exited with code {code}"

    def stop(self) -> None:
        """End the run in progress (the trial stopped early): kill the process; the next run
        starts a fresh one."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self.close()

    def close(self) -> None:
        """End the process: it exits when its connection closes."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@dataclass
class _Run:
    seed: int
    run_dir: Path
    trainer: Trainer
    waiting_at: Optional[int] = None   # env step of the evaluation it waits an answer for
    last_summary: Optional[dict] = None
    outcome: Optional[SeedOutcome] = None


def run_dir_of(trial_dir: Path, seeds: Sequence[int], seed: int) -> Path:
    """Where a seed's run of a trial lives: the trial folder itself with one seed."""
    return trial_dir if len(seeds) == 1 else trial_dir / SEED_DIR.format(seed=seed)


class TrialTimeout(Exception):
    """The trial trained longer than `hydra.sweeper.trial_timeout_s`."""


def run_seeds(trainers: Sequence[Trainer], cfg: DictConfig, seeds: Sequence[int],
              trial_dir: Path, on_evaluation: Callable[[int, list[dict]], bool],
              wandb_init: Callable[[int], dict],
              timeout_s: Optional[float] = None,
              check_stop: Callable[[], None] = lambda: None) -> list[SeedOutcome]:
    """Train `cfg` once per seed, each in one of `trainers` (in parallel), in lockstep.

    :param trainers: one trainer process per seed (at least `len(seeds)`)
    :param cfg: the trial's config; each seed's run gets it with `seed` replaced
    :param seeds: the seeds to train
    :param trial_dir: the trial's folder (the run's folder with one seed, else `seed_<s>/` in it)
    :param on_evaluation: called once all seeds still training have evaluated at an env step,
        with that step and every seed's latest summary; False stops them all (pruned)
    :param wandb_init: a seed's `wandb.init` arguments
    :param timeout_s: wall seconds after which the runs still training are stopped and
        `TrialTimeout` is raised (None: no limit)
    :param check_stop: called at least every second while the runs train; what it raises
        (the worker's `Preempted` on SIGTERM) ends them
    :return: one outcome per seed, in the order of `seeds`
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    runs = []
    for seed, trainer in zip(seeds, trainers):
        run_dir = run_dir_of(trial_dir, seeds, seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        seed_cfg = cfg
        if run_dir != trial_dir or seed != cfg.seed or not (run_dir / "config.yaml").exists():
            seed_cfg = cfg.copy()  # else the trial's own config.yaml is this run's
            seed_cfg.seed = seed
            OmegaConf.save(seed_cfg, run_dir / "config.yaml")
        trainer.start_run(run_dir, seed_cfg, wandb_init(seed))
        runs.append(_Run(seed=seed, run_dir=run_dir, trainer=trainer))
    name = (lambda run: "") if len(seeds) == 1 else (lambda run: f"seed {run.seed}: ")
    stop = False
    try:
        while any(r.outcome is None for r in runs):
            live = [r for r in runs if r.outcome is None]
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:  # `finally` below ends the trainers
                raise TrialTimeout(f"the trial trained longer than hydra.sweeper.trial_timeout_s="
                                   f"{timeout_s:g} s and was stopped")
            check_stop()
            for conn in wait([r.trainer.conn for r in live],
                             timeout=1.0 if left is None else min(left, 1.0)):
                _receive(next(r for r in live if r.trainer.conn is conn), name)
            live = [r for r in runs if r.outcome is None]
            failed = any(r.outcome is not None and (r.outcome.error or not r.outcome.result.ok)
                         for r in runs)
            if live and all(r.waiting_at is not None for r in live):
                step = max(r.waiting_at for r in live)
                if not stop and not failed:
                    go_on = on_evaluation(step, [r.last_summary for r in runs
                                                 if r.last_summary is not None])
                    stop = not go_on
                for r in live:
                    r.waiting_at = None
                    try:
                        r.trainer.conn.send(not (stop or failed))
                    except OSError:  # it died after sending its evaluation
                        _died(r, name)
    finally:
        for r in runs:  # an unfinished run (an error here, Ctrl-C, a takeover): end its process
            if r.outcome is None:
                r.trainer.stop()
    return [r.outcome for r in runs]


def _died(run: _Run, name: Callable[[_Run], str]) -> None:
    """The run's trainer process died: the run ends with how (the worker retries the trial)."""
    death = run.trainer.death()
    run.trainer.close()
    run.outcome = SeedOutcome(run.seed, run.run_dir, killed=death, error=(
        f"{name(run)}{death} (see {run.run_dir / 'train.log'})"))


def _receive(run: _Run, name: Callable[[_Run], str]) -> None:
    try:
        message = run.trainer.conn.recv()
    except (EOFError, OSError):
        _died(run, name)
        return
    kind = message[0]
    if kind == "eval":
        _, step, summary = message
        run.waiting_at, run.last_summary = step, summary
    elif kind == "done":
        run.outcome = SeedOutcome(run.seed, run.run_dir, result=RunResult.from_json(message[1]))
    else:  # "error"
        run.outcome = SeedOutcome(run.seed, run.run_dir, error=f"{name(run)}{message[1]}")


# ------------------------------------------------------------------ the trainer process's side

def _die_with(parent: int) -> None:
    """Have the kernel kill this process when its worker dies (Linux), so that a killed
    worker leaves no orphan training on."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the worker died before the line above
        os._exit(1)


def _log_to(path: Path) -> None:
    """Send this process's stdout and stderr (SB3, robosuite, tracebacks) to the run's log."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _trainer_main(fd: int, parent: int, objective: str) -> int:
    from hydra.utils import get_method

    from rlsweep.config import first_line

    _die_with(parent)
    # Ctrl-C reaches the whole process group: the worker handles it (the trial is left to be
    # retried on resume) and ends this process; a KeyboardInterrupt here would look like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM (scancel, preemption) reaches the whole job too: the worker requeues the trial
    # and then ends this process; dying first would look like a crash of the trial.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - "
                        "%(message)s")
    conn = Connection(fd)
    train = None
    while True:
        try:
            setup = conn.recv()
        except EOFError:  # the worker is done with this process
            return 0
        run_dir = Path(setup["run_dir"])

        def hook(step: int, result) -> bool:
            conn.send(("eval", step, result.summary()))
            return conn.recv()

        try:
            _log_to(run_dir / "train.log")
            train = train or get_method(objective)
            cfg = setup["config"]
            result = train(cfg, run_dir, eval_hook=hook, wandb_init=setup["wandb_init"])
        except Exception as err:  # the worker records it as the trial's failure reason
            try:
                write_text_atomic(run_dir / "error.log", traceback.format_exc())
            except OSError:  # a full disk (no empty error.log): the reason reaches the worker
                pass
            conn.send(("error", first_line(f"{type(err).__name__}: {err}")))
            continue
        conn.send(("done", json.loads(json.dumps(result.to_json()))))


if __name__ == "__main__":
    sys.exit(_trainer_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
