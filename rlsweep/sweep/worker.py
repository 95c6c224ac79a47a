"""A sweep worker: the task function the Hydra launcher runs n_jobs times in parallel.

Each worker loops: claim a WAITING trial from any cell's study -> sample its parameters ->
train in its own trial folder, reporting every evaluation so the pruner can stop it -> tell
Optuna the outcome. A pruned or failed trial frees the worker at once for the next claim, so no
core idles while trials remain (there is no batch barrier). Workers exit when no trial is left
waiting or running; while another worker's trial runs they poll, so that a trial whose worker
died goes stale, is failed by its heartbeat and retried here. Every storage call is retried on
transient database errors (study.with_retries); a trial fails only for its own errors. Two
faults are nobody's trial's and stop the worker after recording what they can: a storage down
longer than hydra.sweeper.storage_outage_s (StorageUnreachable) and a full disk (DiskFull).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.trial import TrialState

from rlsweep.config import first_line, validate
from rlsweep.files import is_disk_full, write_text_atomic
from rlsweep.periodic import Periodic
from rlsweep.run_result import RunStatus
from rlsweep.sweep.plan import read_plan, read_sweep_name
from rlsweep.sweep.records import TRIAL_FILE, SeedRecord, TrialRecord
from rlsweep.sweep.seeds import EvaluationLog, SeedOutcome, Trainer, run_seeds
from rlsweep.sweep.study import (SWEEP_HOST_ENV, SWEEP_PID_ENV, Objectives, ParamBuffer,
                                 claim_trial, count_trials, fail_stale_trials, make_pruner, make_sampler,
                                 make_storage, note_storage_error, objective_value, queue_retry,
                                 record_takeover, record_worker_job, requeue_orphans, root_cause,
                                 set_storage_outage, set_user_attrs, sized_pruner_kwargs,
                                 sized_sampler_kwargs, storage_url, with_retries,
                                 worker_identity, STORAGE_OUTAGE_S, StorageUnreachable)

log = logging.getLogger("rlsweep.worker")


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """Sample `name` from `dist` through the trial's public suggest API."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"unsupported distribution for {name}: {dist!r}")


# Set when this worker process gets Ctrl-C. Native code (numba in robosuite's controller)
# turns the KeyboardInterrupt into another exception; without this flag an interrupted trial
# would be recorded as a failed one instead of being retried on resume.
_interrupted = threading.Event()


def _on_sigint(signum, frame) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


class Preempted(BaseException):
    """SIGTERM reached this worker: `scancel`, a preemption, a job's time limit, a lost Ray
    node. Not an error of the trial: a BaseException, so trial code does not catch it."""


# Set by SIGTERM. The handler only sets it; the worker raises Preempted at points where no
# storage update is half done (`stop_if_preempted`: before each claim, and every second while
# a trial trains), so a signal never splits "fail the trial" from "queue its retry".
_preempted = threading.Event()
PREEMPTED_REASON = ("preempted: its worker got SIGTERM (scancel, preemption, time limit); "
                    "retried without spending its retry")
RESTARTED_REASON = ("its worker died and was started again (a requeued Slurm job); retried "
                    "without spending its retry")


def _on_sigterm(signum, frame) -> None:
    _preempted.set()


def stop_if_preempted() -> None:
    if _preempted.is_set():
        raise Preempted


def trap_signals() -> dict[int, Any]:
    """Ctrl-C leaves the running trial to be retried on resume; SIGTERM requeues it now.
    Returns the handlers replaced, for `release_signals` (a pool process runs other jobs)."""
    _interrupted.clear()
    _preempted.clear()
    try:
        return {signal.SIGINT: signal.signal(signal.SIGINT, _on_sigint),
                signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}
    except ValueError:  # not the process's main thread: leave signals to the launcher
        return {}


def release_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def heartbeat(storage, trial_id: int, interval: int) -> Periodic:
    """Record the trial's heartbeat every `interval` s, so a dead worker's trial goes stale.

    `claim_trial` records the first beat at the claim; this keeps it fresh. A failed beat (a
    database blip) is logged and tried again at once if it was late, else at the next interval
    (Periodic keeps its schedule), never fatal.
    """
    failing = False  # a storage outage: one warning, not one per beat

    def beat() -> None:
        nonlocal failing
        try:
            storage.record_heartbeat(trial_id)
        except Exception as err:
            note_storage_error()  # the other workers' beats fail too (fail_stale_trials)
            if not failing:
                log.warning("heartbeat of trial id %s failed: %s", trial_id,
                            first_line(root_cause(err)))
            failing = True
        else:
            failing = False

    return Periodic(interval, beat)


class DiskFull(Exception):
    """A trial's files could not be written: the disk of the sweep dir is full. Not the trial's
    fault, and every next trial would fail the same way: the worker stops after recording the
    trial FAIL with the reason (where the storage can still be written)."""


class TrialTakenOver(Exception):
    """Another worker failed this worker's trial (no heartbeat for grace_period) and queued its
    retry, while this worker still ran it: a long pause, a stuck heartbeat."""


def _takeover_reason(study: optuna.Study, trial: optuna.Trial, grace_period: int) -> str:
    """Why the trial is no longer ours, naming the retry that runs its parameters again."""
    try:
        retries = [t.number for t in study.get_trials(deepcopy=False)
                   if trial.number in t.system_attrs.get("retry_history", [])]
    except Exception:  # the reason is worth writing even if the storage is unreachable now
        retries = []
    retry = f"trial {retries[0]} retries it" if retries else "its retry counts"
    return (f"taken over: another worker failed trial {trial.number} after no heartbeat for "
            f"hydra.sweeper.grace_period={grace_period} s while it still ran here (a long pause "
            f"or a stuck heartbeat); {retry}")


def stored(trial: optuna.Trial, call, what: str):
    """A storage call about our trial: retried on transient errors; TrialTakenOver if another
    worker has failed the trial meanwhile (Optuna refuses to update a finished trial)."""
    try:
        return with_retries(call, f"{what} of trial {trial.number}")
    except optuna.exceptions.UpdateFinishedTrialError as err:
        raise TrialTakenOver(str(err)) from err


def tell(study: optuna.Study, trial: optuna.Trial, state: TrialState,
         values: list[float] | None = None) -> optuna.trial.FrozenTrial:
    """Tell Optuna how the trial ended; return it frozen. Transient storage errors are retried;
    TrialTakenOver if another worker failed it meanwhile; ValueError if Optuna refuses the
    values (e.g. NaN), the trial still RUNNING."""
    attempts = 0

    def tell_once() -> optuna.trial.FrozenTrial:
        nonlocal attempts
        attempts += 1
        try:
            return study.tell(trial, values, state=state)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as err:
            now = study._storage.get_trial(trial._trial_id)
            if now.state == TrialState.RUNNING:
                raise  # Optuna refused our values: the trial's own failure
            if attempts > 1 and now.state == state:
                return now  # an earlier attempt committed, but its answer was lost
            raise TrialTakenOver(str(err)) from err

    return with_retries(tell_once, f"telling the end of trial {trial.number}")


class CellSampler:
    """The samplers of one cell's trials in a worker. With `hydra.sweeper.seed`, each trial's
    sampler is seeded from (seed, cell, the trial's number), never the process: the same
    command and seed sample the same parameters (any sampler with n_jobs=1; `random` with any
    n_jobs, whichever worker claims a trial); a resume or a second sweep process on the same
    study samples new trials, whose numbers are new, and never replays a stream. QMC keeps one
    sampler per cell, seeded from (seed, cell): its points are one scrambled sequence, indexed
    by the study. Without a seed, one unseeded sampler per cell.

    :param name: the sampler (hydra.sweeper.sampler; random for grid)
    :param kwargs: its keyword arguments, sized (sized_sampler_kwargs)
    :param space: the cell's search space
    :param seed: hydra.sweeper.seed
    :param cell_index: the cell's place in the plan
    """

    def __init__(self, name: str, kwargs: dict[str, Any], space: dict[str, BaseDistribution],
                 seed: int | None, cell_index: int):
        self.name, self.kwargs, self.space = name, kwargs, space
        self.seed, self.cell_index = seed, cell_index
        self._shared = None

    def _seeded(self, *entropy: int):
        seed = None if self.seed is None else int(np.random.SeedSequence(
            [self.seed, self.cell_index, *entropy]).generate_state(1)[0])
        return make_sampler(self.name, seed, self.kwargs, self.space)

    def shared(self):
        """The cell's one sampler: the study's at load (Optuna only asks it for its settings
        before a trial samples) and each trial's when unseeded or QMC."""
        if self._shared is None:
            self._shared = self._seeded()
        return self._shared

    def for_trial(self, number: int):
        """The sampler that samples trial `number`."""
        if self.seed is None or self.name == "qmc":
            return self.shared()
        return self._seeded(number)


def prepare_trial(trial: optuna.Trial, cell: dict, trial_dir: Path) -> tuple[dict, DictConfig]:
    """Sample the trial's parameters into its cell's config; write config.yaml, overrides.yaml."""
    if "sampler" in cell:  # the trial's own seeded sampler (CellSampler); Optuna samples lazily
        trial.study.sampler = cell["sampler"].for_trial(trial.number)
    # Sampled through Optuna's suggest API, stored in one transaction (ParamBuffer).
    buffer = ParamBuffer(trial.storage)
    trial.storage = buffer
    try:  # a retry after a storage blip keeps what was sampled (the trial caches it)
        with trial.study._storage.reads_once():  # the sampler sees one read of the study
            params = stored(trial, lambda: {name: suggest(trial, name, dist)
                                            for name, dist in cell["space"].items()},
                            "sampling its parameters")
    finally:
        trial.storage = buffer.storage
    stored(trial, buffer.flush, "saving its parameters")
    cfg = cell["base_config"].copy()
    for path, value in params.items():
        OmegaConf.update(cfg, path, value, merge=False)
    trial_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, trial_dir / "config.yaml")
    overrides = cell["overrides"] + [f"{k}={v}" for k, v in params.items()]
    (trial_dir / "overrides.yaml").write_text("\n".join(f"- {o}" for o in overrides) + "\n")
    return params, cfg


def trial_values(evals: EvaluationLog, objectives: Objectives, last_n: int, wall_time_s: float,
                 env_steps: float, horizon: int | None, reports_success: bool) -> list[float]:
    """A finished trial's value for each objective: an evaluation metric is averaged over the
    last `last_n` evaluations (seeds already aggregated); a trial total is taken whole."""
    totals = {"wall_time_s": wall_time_s, "env_steps": env_steps}
    tail = evals.points[-last_n:]
    return [float(totals[m]) if m in totals else
            float(np.mean([objective_value(p, m, horizon, reports_success) for p in tail]))
            for m in objectives.metrics]


def worst_value(direction: str) -> float:
    """What a diverged trial reports at its last step: worse than any real evaluation, so the
    pruner and the sampler rank it last (rl-zoo3 prunes such trials the same way)."""
    return -math.inf if direction == "maximize" else math.inf


def run_trial(study: optuna.Study, trial: optuna.Trial, cell: dict, settings: DictConfig,
              objectives: Objectives, seeds: list[int], storage, sweep_dir: Path,
              sweep_name: str, trainers: list[Trainer]) -> TrialState:
    """Train one trial in `<sweep dir>/<cell>/trial_<number>` and tell Optuna how it ended.

    Each seed's run trains in one of `trainers` (processes running hydra.sweeper.objective).
    With one seed the run is the trial folder itself; with several, each seed's run is a
    `seed_<s>/` folder in it and every evaluation is their aggregate. A diverged run is PRUNED
    at its step with the worst value (the sampler learns to avoid it); anything else that goes
    wrong, from sampling to saving, makes the trial FAIL with its reason. A trial whose
    training process died (killed, out of memory) is also retried once, like a dead worker's.
    If another worker failed and retried the trial meanwhile (this one paused past
    grace_period), training stops at the next evaluation and trial.json says `taken_over`, as
    does the sweep summary.
    """
    trial_dir = sweep_dir / cell["name"] / f"trial_{trial.number:03d}"
    params, cfg, reason, value = {}, None, None, None
    taken_over = False
    # Why this worker stops after this trial (the storage down for good, a full disk): raised
    # once what can be recorded is.
    stop: StorageUnreachable | DiskFull | None = None
    error: Exception | None = None
    outcomes: list[SeedOutcome] = []
    evals = EvaluationLog(settings.seed_aggregate)

    def on_evaluation(step: int, summaries: list[dict]) -> bool:
        point = evals.add(step, summaries)
        if objectives.multi:  # Optuna cannot prune multi-objective trials
            return True
        stored(trial, lambda: trial.report(objective_value(
            point, objectives.metrics[0], cfg.env.get("horizon"), cfg.env.reports_success), step),
            "reporting an evaluation")
        # A run that has spent its whole budget is finished, not pruned.
        return step >= cfg.trainer.total_timesteps or \
            not stored(trial, trial.should_prune, "asking the pruner")

    def wandb_init(seed: int | None) -> dict:
        suffix = "" if seed is None else f"-seed{seed}"
        return {"group": sweep_name, "job_type": cell["name"],
                "name": f"{cell['name']}-{trial.number}{suffix}",
                "tags": [cell["choices"].get(g, "") for g in ("algo", "reward", "policy")],
                "extra_config": {"sweep": sweep_name, "cell": cell["name"], "trial": trial.number,
                                 **{f"param/{k}": v for k, v in params.items()}}}

    started = time.perf_counter()
    with heartbeat(storage, trial._trial_id, settings.heartbeat_interval):
        try:
            params, cfg = prepare_trial(trial, cell, trial_dir)
            validate(cfg, targets=False)  # the sweep checked the targets of every cell
            while len(trainers) < len(seeds):
                trainers.append(Trainer(settings.objective))
            outcomes = run_seeds(trainers, cfg, seeds, trial_dir, on_evaluation,
                                 lambda seed: wandb_init(None if len(seeds) == 1 else seed),
                                 settings.get("trial_timeout_s"), stop_if_preempted)
            if _interrupted.is_set():  # Ctrl-C reached the trainer first: not the trial's fault
                raise KeyboardInterrupt
            state, reason, value = _conclude(trial, outcomes, evals, objectives, settings, cfg,
                                             time.perf_counter() - started)
        except (TrialTakenOver, optuna.exceptions.UpdateFinishedTrialError):
            state, taken_over = TrialState.FAIL, True  # its retry runs; nothing more to train
        except StorageUnreachable as err:  # not the trial's fault; nothing can be told now
            state, reason, stop = TrialState.FAIL, _storage_lost(err), err
        except Exception as err:  # a failing trial is recorded with its reason; the sweep goes on
            if _interrupted.is_set():  # Ctrl-C, not the trial's fault: leave it RUNNING, so it
                raise KeyboardInterrupt from err  # goes stale and is retried on resume
            state, reason, error = TrialState.FAIL, first_line(f"{type(err).__name__}: {err}"), err
            with contextlib.suppress(OSError):  # a full disk: no error.log (not an empty one)
                trial_dir.mkdir(parents=True, exist_ok=True)
                write_text_atomic(trial_dir / "error.log", traceback.format_exc())
            if not is_disk_full(err):
                log.warning("trial %s of %s failed: %s", trial.number, cell["name"], reason)
        # A full disk is not the trial's fault: its retry is free, and the worker stops.
        disk_full = stop is None and state == TrialState.FAIL and not taken_over and \
            is_disk_full(error or reason)
        if disk_full:
            reason = f"disk full: {reason}"
        wall = time.perf_counter() - started
        results = [o.result for o in outcomes if o.result is not None]
        env_steps = int(np.mean([r.env_steps for r in results])) if results else evals.last_step
        reports_success = cfg is None or cfg.env.get("reports_success", True)
        recent = evals.recent(settings.value_last_evals)
        if not reports_success:  # none on an env that reports no success (shown as "-", not
            recent["success_rate"] = None  # 0), even from an objective that says 0
        intermediate = {}
        if not taken_over and stop is None:
            try:
                totals = {
                    "env_steps": env_steps,
                    "success_rate": recent["success_rate"],
                    "mean_return": recent["mean_return"], "wall_time_s": wall,
                    "last_step": evals.last_step or env_steps,
                    "seeds": [o.seed for o in outcomes] or seeds, "trial_dir": str(trial_dir),
                    "diverged": any(o.result is not None and o.result.status is RunStatus.DIVERGED
                                    for o in outcomes),
                    "worker": HydraConfig.get().job.num}
                if disk_full:
                    stored(trial, lambda: set_user_attrs(storage, trial._trial_id, totals),
                           "saving its totals")
                    why = f"{reason}; retried without spending its retry"
                    queued = requeue_orphans({cell["name"]: study}, storage, {own_identity()},
                                             why)
                    reason = why if queued else reason
                    again = " and is queued again" if queued else ""
                    stop = DiskFull(f"the disk of {sweep_dir} is full: trial {trial.number} of "
                                    f"{cell['name']} failed writing its files "
                                    f"({error_text(reason)}){again}; free space on that disk and "
                                    "rerun the same command to resume")
                else:
                    state, reason, intermediate = _record_outcome(
                        study, storage, trial, state, reason, value, totals)
                    if not taken_over and state == TrialState.FAIL and \
                            any(o.killed for o in outcomes):
                        queue_retry(study, storage, trial._trial_id)  # as if its worker died
            except TrialTakenOver:
                taken_over = True
            except StorageUnreachable as err:  # its end is not in the storage: retried on resume
                state, reason, stop = TrialState.FAIL, _storage_lost(err), err
            except Exception as err:
                if not is_disk_full(err):
                    raise
                # The storage itself is on the full disk (SQLite in the sweep dir): the trial
                # stays RUNNING in it and is retried on resume.
                stop = DiskFull(f"the disk of {sweep_dir} is full, and the storage is on it: "
                                f"trial {trial.number} of {cell['name']} could not be recorded "
                                f"({first_line(root_cause(err))}); free space on that disk "
                                "and rerun the same command to resume")
        if taken_over:
            # Its heartbeat went stale (a long pause, a stuck beat): another worker already
            # failed it and queued a retry. Keep this run's files; the retry counts.
            state = TrialState.FAIL
            reason = _takeover_reason(study, trial, settings.grace_period)
            log.warning("trial %s of %s %s", trial.number, cell["name"], reason)
            try:
                record_takeover(study, trial.number, reason)
            except Exception as err:  # trial.json still says so
                log.warning("could not record the takeover of trial %s in the storage: %s",
                            trial.number, first_line(err))

    record = TrialRecord(
        number=trial.number, cell=cell["name"], state=state.name, params=params,
        value=(value[0] if value and not objectives.multi else value)
        if state == TrialState.COMPLETE else None,
        last_step=evals.last_step or env_steps, status=reason or "ok",
        fail_reason=reason if state == TrialState.FAIL else None,
        env_steps=env_steps, wall_time_s=wall,
        success_rate=recent["success_rate"], mean_return=recent["mean_return"],
        taken_over=taken_over, taken_over_reason=reason if taken_over else None,
        seeds=[SeedRecord(seed=o.seed, run_dir=str(o.run_dir),
                          status=o.result.describe() if o.result else o.error,
                          success_rate=o.result.success_rate
                          if o.result and reports_success else None,
                          mean_return=o.result.mean_return if o.result else None)
               for o in outcomes],
        intermediate_values=dict(intermediate))
    try:
        trial_dir.mkdir(parents=True, exist_ok=True)
        record.write(trial_dir)
    except OSError as err:
        if not is_disk_full(err):
            raise
        if stop is None:  # its end is in the storage, but the next trial could not write either
            stop = DiskFull(f"the disk of {sweep_dir} is full: trial {trial.number} of "
                            f"{cell['name']} ended {state.name} in the storage but could not "
                            f"write {TRIAL_FILE} ({err.strerror}); free space on that disk and "
                            "rerun the same command to resume")
    if stop is not None:
        if isinstance(stop, DiskFull):
            # The worker's log file is on the full disk too: Python's logging would print a
            # traceback for each line it cannot write there (the console still shows them).
            logging.raiseExceptions = False
        raise stop
    return state


def error_text(reason: str) -> str:
    """An error line without its exception class name: "[Errno 28] No space left on device:
    'path'"."""
    return reason.removeprefix("disk full: ").split("; ")[0].split(": ", 1)[-1]


def _storage_lost(err: StorageUnreachable) -> str:
    """A trial's reason when the storage went away under it (in trial.json: the storage
    cannot take it)."""
    return (f"the storage was unreachable: {err}; the trial is left RUNNING there and is "
            "retried on resume")


def _record_outcome(study: optuna.Study, storage, trial: optuna.Trial, state: TrialState,
                    reason: str | None, values: list[float] | None, attrs: dict[str, Any]
                    ) -> tuple[TrialState, str | None, dict[int, float]]:
    """Store the trial's totals and fail_reason as user attributes (one transaction), then tell
    its end; return the state and reason told and its intermediate values. TrialTakenOver if
    another worker failed it meanwhile."""
    stored(trial, lambda: set_user_attrs(storage, trial._trial_id,
                                         {**attrs, "fail_reason": reason}), "saving its totals")
    try:
        frozen = tell(study, trial, state, values if state == TrialState.COMPLETE else None)
    except ValueError as err:  # Optuna refused the values (e.g. NaN): the trial's own failure
        state, reason = TrialState.FAIL, first_line(f"{type(err).__name__}: {err}")
        stored(trial, lambda: trial.set_user_attr("fail_reason", reason), "saving why")
        frozen = tell(study, trial, state)
    return state, reason, frozen.intermediate_values


def _conclude(trial: optuna.Trial, outcomes: list[SeedOutcome], evals: EvaluationLog,
              objectives: Objectives, settings: DictConfig, cfg: DictConfig, wall: float
              ) -> tuple[TrialState, str | None, list[float] | None]:
    """The trial's state, reason (why it is not COMPLETE) and values from its seeds' ends."""
    errors = [o.error for o in outcomes if o.error]
    if errors:
        return TrialState.FAIL, errors[0], None
    results = [o.result for o in outcomes]
    diverged = [(o.seed, o.result) for o in outcomes if o.result.status is RunStatus.DIVERGED]
    if diverged:
        seed, result = diverged[0]
        if not objectives.multi:  # ranked last at the step where it broke
            stored(trial, lambda: trial.report(worst_value(objectives.directions[0]),
                                               max(result.env_steps, evals.last_step + 1)),
                   "reporting its divergence")
        which = f"seed {seed} " if len(outcomes) > 1 else ""
        return TrialState.PRUNED, f"{which}{result.describe()}", None
    pruned = [r for r in results if r.status is RunStatus.PRUNED]
    if pruned:
        return TrialState.PRUNED, pruned[0].describe(), None
    final_step = max(r.env_steps for r in results)
    if final_step > evals.last_step:  # the final evaluation, taken after the last periodic one
        evals.add(final_step, [{"success_rate": r.success_rate, "mean_return": r.mean_return}
                               for r in results])
    values = trial_values(evals, objectives, settings.value_last_evals, wall,
                          float(np.mean([r.env_steps for r in results])),
                          cfg.env.get("horizon"), cfg.env.reports_success)
    return TrialState.COMPLETE, None, values


def run_worker(cfg: DictConfig) -> dict[str, int]:
    """Task function of one worker job (see module docstring). Returns its trial counts."""
    previous_handlers = trap_signals()
    try:
        return _run_worker(cfg)
    finally:
        release_signals(previous_handlers)


def _run_worker(cfg: DictConfig) -> dict[str, int]:
    hydra_cfg = HydraConfig.get()
    settings = hydra_cfg.sweeper
    sweep_dir = Path(hydra_cfg.sweep.dir)
    worker = hydra_cfg.job.num
    set_storage_outage(settings.get("storage_outage_s", STORAGE_OUTAGE_S))
    storage = make_storage(storage_url(settings.storage, sweep_dir), settings.heartbeat_interval,
                           settings.grace_period)
    cells = read_plan(sweep_dir)
    objectives = Objectives.from_settings(settings)
    # Optuna cannot prune multi-objective trials (the sweeper said so when it started).
    pruner_name = "none" if objectives.multi else settings.pruner
    studies = {}
    for index, cell in enumerate(cells):
        trainer = cell["base_config"].trainer
        # grid: every parameter arrives fixed from the queue, so any sampler will do
        name = "random" if settings.sampler == "grid" else settings.sampler
        sampler_kwargs, _ = sized_sampler_kwargs(
            name, settings.n_trials, settings.n_jobs,
            {} if name != settings.sampler else settings.sampler_kwargs)
        pruner_kwargs, _ = sized_pruner_kwargs(
            pruner_name, settings.n_trials, trainer.total_timesteps, trainer.eval_freq,
            settings.pruner_kwargs if pruner_name == settings.pruner else {})
        cell["sampler"] = CellSampler(name, sampler_kwargs, cell["space"], settings.seed, index)
        study = optuna.load_study(
            study_name=cell["study_name"], storage=storage, sampler=cell["sampler"].shared(),
            pruner=make_pruner(pruner_name, pruner_kwargs))
        # Without Optuna's cache in front of the database: the cache re-reads every unfinished
        # trial at each look, and a cell's whole budget waits in the queue as unfinished trials
        # (1,000 rows read per claim, per sample, per pruning decision); the database filters
        # by state itself. The claim also bypasses the cache (`claim_trial`), which the cache
        # would then not know.
        study._storage = storage
        studies[cell["name"]] = study
    if os.environ.get("SLURM_JOB_ID"):  # the sweep can then tell when its jobs are gone
        record_worker_job(studies[cells[0]["name"]], own_identity(), os.environ["SLURM_JOB_ID"])
    # Start at a different cell per worker so parallel workers spread over the grid.
    order = cells[worker % len(cells):] + cells[:worker % len(cells)]
    sweep_name = read_sweep_name(sweep_dir)
    trainers: list[Trainer] = []  # started at the first trial, kept for the next ones
    try:
        return _claim_and_train(studies, order, storage, settings, objectives, sweep_dir,
                                sweep_name, trainers)
    finally:
        for trainer in trainers:
            trainer.close()


def sweep_pid() -> int:
    """The sweep process's pid, as it put it in the workers' environment (else the parent's:
    a local pool's process)."""
    return int(os.environ.get(SWEEP_PID_ENV, os.getppid()))


def own_identity() -> str:
    """This worker's worker_identity, from what the sweep process put in its environment."""
    return worker_identity(os.environ.get(SWEEP_HOST_ENV, socket.gethostname()), sweep_pid(),
                           HydraConfig.get().job.num)


def _claim_and_train(studies: dict[str, optuna.Study], order: list[dict], storage,
                     settings: DictConfig, objectives: Objectives, sweep_dir: Path,
                     sweep_name: str, trainers: list[Trainer]) -> dict[str, int]:
    """Claim and train trials until none is left waiting or running; return the counts."""
    counts = {state.name: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    sweep = sweep_pid()
    claimed_by = own_identity()
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        # A requeued job: trials RUNNING under this identity were held by its earlier run,
        # which died without a word (SIGKILL, a lost node): retry them now, for free, instead
        # of after their heartbeats' grace period. Only then: elsewhere an identity may be
        # shared by a live worker (Ray tasks do not see the sweep's environment).
        restarted = requeue_orphans(studies, storage, {claimed_by}, RESTARTED_REASON)
        if restarted:
            log.warning("worker %s started again: its earlier run's trial(s) %s queued again",
                        claimed_by, ", ".join(map(str, restarted)))
    pool_process = os.getppid() == sweep  # a local pool's process, child of the sweep
    stale_checked: dict[str, float] = {}  # cell -> when this worker last looked for stale trials
    try:
        while True:
            stop_if_preempted()
            if pool_process and os.getppid() != sweep:
                # The sweep process died and this pool process outlived it (joblib's do): stop
                # claiming, as a killed sweep should, and exit (nobody is left to take a result).
                log.warning("the sweep process died: worker %s stops", claimed_by)
                for trainer in trainers:
                    trainer.close()
                os._exit(0)
            claimed = None
            for cell in order:
                study = studies[cell["name"]]
                # Dead workers' trials: failed, retried once. Once a second per cell, not at
                # every claim: the check takes the storage's write lock, and near-instant
                # trials claim many times a second; a dead worker's trial waits grace_period
                # anyway.
                if time.monotonic() - stale_checked.get(cell["name"], -math.inf) >= 1.0:
                    fail_stale_trials(study, storage)
                    stale_checked[cell["name"]] = time.monotonic()
                trial = claim_trial(study, storage, claimed_by)
                if trial is not None:
                    claimed = (study, trial, cell)
                    break
            if claimed is not None:
                study, trial, cell = claimed
                state = run_trial(study, trial, cell, settings, objectives, cell["seeds"],
                                  storage, sweep_dir, sweep_name, trainers)
                counts[state.name] += 1
                continue
            if with_retries(lambda: count_trials(studies.values(), TrialState.RUNNING),
                            "counting running trials") == 0:
                return counts
            # Short: when the last running trial ends, every waiting worker (and so the
            # launcher's batch) should end within a second, not a heartbeat later.
            time.sleep(min(settings.heartbeat_interval, 1))
    except Preempted:
        # Stop claiming; the running trial goes back to the queue at once (its retry unspent:
        # the machine went away, not the trial) instead of going stale; the job exits cleanly.
        for trainer in trainers:
            trainer.stop()
        requeued = requeue_orphans(studies, storage, {claimed_by}, PREEMPTED_REASON)
        log.warning("worker %s got SIGTERM: stopped%s", claimed_by,
                    f", trial(s) {', '.join(map(str, requeued))} queued again" if requeued else "")
        if os.getpid() == sweep:  # the basic launcher: SIGTERM was for the sweep itself
            raise SystemExit(128 + signal.SIGTERM)  # after its summary (run_sweep's finally)
        return counts
