"""A trial's evaluations, aggregated over its seeds, and training k seeds of one trial at once.

With `hydra.sweeper.seeds_per_trial=k` (or `seed=0,1,2` in a sweep) a trial trains the same
parameters on k seeds. Each seed is its own process (`python -m rlsweep.sweep.seeds`, in
`<trial dir>/seed_<s>/`), so the k runs use k cores when the machine has them. They run in
lockstep: at each evaluation every seed waits until all have evaluated; the worker then reports
the aggregate (mean or IQM) of their success rates and returns to Optuna, asks the pruner once,
and tells every seed to go on or stop. One seed's pruning decision is everyone's.

Messages between the worker and a seed process go over a socket pair (`multiprocessing`'s
Connection), never over stdout, which robosuite and SB3 write to.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

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


# ------------------------------------------------------------------ the worker's side

@dataclass
class _SeedProcess:
    seed: int
    run_dir: Path
    process: subprocess.Popen
    conn: Connection
    waiting_at: Optional[int] = None   # env step of the evaluation it waits an answer for
    last_summary: Optional[dict] = None
    outcome: Optional[SeedOutcome] = None


def run_seeds(objective: str, cfg: DictConfig, seeds: Sequence[int], trial_dir: Path,
              on_evaluation: Callable[[int, list[dict]], bool],
              wandb_init: Callable[[int], dict]) -> list[SeedOutcome]:
    """Train `cfg` once per seed, in parallel processes, in `<trial_dir>/seed_<s>/`.

    :param objective: import path of the training function (`hydra.sweeper.objective`)
    :param cfg: the trial's config; each seed's run gets it with `seed` replaced
    :param seeds: the seeds to train
    :param trial_dir: the trial's folder
    :param on_evaluation: called once all seeds still training have evaluated at an env step,
        with that step and every seed's latest summary; False stops them all (pruned)
    :param wandb_init: a seed's `wandb.init` arguments
    :return: one outcome per seed, in the order of `seeds`
    """
    procs = [_start(objective, cfg, seed, trial_dir, wandb_init(seed)) for seed in seeds]
    stop = False
    try:
        while any(p.outcome is None for p in procs):
            live = [p for p in procs if p.outcome is None]
            for conn in wait([p.conn for p in live]):
                proc = next(p for p in live if p.conn is conn)
                _receive(proc)
            live = [p for p in procs if p.outcome is None]
            failed = any(p.outcome is not None and (p.outcome.error or not p.outcome.result.ok)
                         for p in procs)
            if live and all(p.waiting_at is not None for p in live):
                step = max(p.waiting_at for p in live)
                if not stop and not failed:
                    go_on = on_evaluation(step, [p.last_summary for p in procs
                                                 if p.last_summary is not None])
                    stop = not go_on
                for p in live:
                    p.waiting_at = None
                    p.conn.send(not (stop or failed))
    finally:
        for p in procs:
            if p.process.poll() is None:
                p.process.kill()
            p.process.wait()
            p.conn.close()
    return [p.outcome for p in procs]


def _start(objective: str, cfg: DictConfig, seed: int, trial_dir: Path,
           wandb_init: dict) -> _SeedProcess:
    run_dir = trial_dir / SEED_DIR.format(seed=seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_cfg = cfg.copy()
    seed_cfg.seed = seed
    OmegaConf.save(seed_cfg, run_dir / "config.yaml")
    ours, theirs = socket.socketpair()
    log_file = open(run_dir / "seed.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "rlsweep.sweep.seeds", str(run_dir), str(theirs.fileno())],
        pass_fds=(theirs.fileno(),), stdout=log_file, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log_file.close()
    theirs.close()
    conn = Connection(ours.detach())
    conn.send({"objective": objective, "wandb_init": wandb_init})
    return _SeedProcess(seed=seed, run_dir=run_dir, process=process, conn=conn)


def _receive(proc: _SeedProcess) -> None:
    try:
        message = proc.conn.recv()
    except (EOFError, OSError):
        code = proc.process.wait()
        proc.outcome = SeedOutcome(proc.seed, proc.run_dir, error=(
            f"seed {proc.seed}: its process died (exit code {code}; see "
            f"{proc.run_dir / 'seed.log'})"))
        return
    kind = message[0]
    if kind == "eval":
        _, step, summary = message
        proc.waiting_at, proc.last_summary = step, summary
    elif kind == "done":
        proc.outcome = SeedOutcome(proc.seed, proc.run_dir, result=RunResult.from_json(message[1]))
    else:  # "error"
        proc.outcome = SeedOutcome(proc.seed, proc.run_dir, error=f"seed {proc.seed}: {message[1]}")


# ------------------------------------------------------------------ the seed process's side

def _seed_main(run_dir: Path, fd: int) -> int:
    from hydra.utils import get_method

    from rlsweep.config import first_line

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - "
                        "%(message)s")
    conn = Connection(fd)
    setup = conn.recv()
    cfg = OmegaConf.load(run_dir / "config.yaml")

    def hook(step: int, result) -> bool:
        conn.send(("eval", step, result.summary()))
        return conn.recv()

    try:
        result = get_method(setup["objective"])(cfg, run_dir, eval_hook=hook,
                                                 wandb_init=setup["wandb_init"])
    except Exception as err:  # the worker records it as the trial's failure reason
        (run_dir / "error.log").write_text(traceback.format_exc())
        conn.send(("error", first_line(f"{type(err).__name__}: {err}")))
        return 1
    conn.send(("done", json.loads(json.dumps(result.to_json()))))
    return 0


if __name__ == "__main__":
    sys.exit(_seed_main(Path(sys.argv[1]), int(sys.argv[2])))
