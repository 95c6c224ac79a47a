"""A sweep worker: the task function the Hydra launcher runs n_jobs times in parallel.

Each worker loops: claim a WAITING trial from any cell's study -> sample its parameters ->
train in its own trial folder, reporting every evaluation so the pruner can stop it -> tell
Optuna the outcome. A pruned or failed trial frees the worker at once for the next claim, so no
core idles while trials remain (there is no batch barrier). Workers exit when no trial is left
waiting or running; while another worker's trial runs they poll, so that a trial whose worker
died goes stale, is failed by its heartbeat and retried here.
"""

from __future__ import annotations

import logging
import os
import signal
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
from rlsweep.files import write_json_atomic
from rlsweep.periodic import Periodic
from rlsweep.run_result import RunStatus
from rlsweep.sweep.plan import read_plan, read_sweep_name
from rlsweep.sweep.study import (claim_trial, count_trials, make_pruner, make_sampler, make_storage,
                                 objective_value, storage_url)

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


def trap_ctrl_c() -> None:
    try:
        signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the process's main thread: leave signals to the launcher
        pass


def heartbeat(storage, trial_id: int, interval: int) -> Periodic:
    """Record the trial's heartbeat every `interval` s, so a dead worker's trial goes stale.

    `claim_trial` records the first beat at the claim; this keeps it fresh. A failed beat (a
    database blip) is logged and retried at the next interval, never fatal.
    """
    def beat() -> None:
        try:
            storage.record_heartbeat(trial_id)
        except Exception as err:
            log.warning("heartbeat of trial id %s failed: %s", trial_id, err)

    return Periodic(interval, beat)


def prepare_trial(trial: optuna.Trial, cell: dict, trial_dir: Path) -> tuple[dict, DictConfig]:
    """Sample the trial's parameters into its cell's config; write config.yaml, overrides.yaml."""
    params = {name: suggest(trial, name, dist) for name, dist in cell["space"].items()}
    cfg = cell["base_config"].copy()
    for path, value in params.items():
        OmegaConf.update(cfg, path, value, merge=False)
    trial_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, trial_dir / "config.yaml")
    overrides = cell["overrides"] + [f"{k}={v}" for k, v in params.items()]
    (trial_dir / "overrides.yaml").write_text("\n".join(f"- {o}" for o in overrides) + "\n")
    return params, cfg


def run_trial(study: optuna.Study, trial: optuna.Trial, cell: dict, settings: DictConfig,
              storage, sweep_dir: Path, sweep_name: str, train) -> TrialState:
    """Train one trial in `<sweep dir>/<cell>/trial_<number>` and tell Optuna how it ended.

    `train` is the objective (rlsweep.train.train unless hydra.sweeper.objective says otherwise).
    Anything that goes wrong, from sampling to saving, makes the trial FAIL with its reason.
    """
    trial_dir = sweep_dir / cell["name"] / f"trial_{trial.number:03d}"
    params, result, value, reason, last_step, cfg = {}, None, None, None, 0, None

    def report(step: int, result) -> bool:
        nonlocal last_step
        last_step = step
        trial.report(objective_value(result.summary(), settings.metric, cfg.env.get("horizon"),
                                     cfg.env.reports_success), step)
        # A run that has spent its whole budget is finished, not pruned.
        return step >= cfg.trainer.total_timesteps or not trial.should_prune()

    started = time.perf_counter()
    with heartbeat(storage, trial._trial_id, settings.heartbeat_interval):
        try:
            params, cfg = prepare_trial(trial, cell, trial_dir)
            validate(cfg)
            result = train(cfg, trial_dir, eval_hook=report, wandb_init={
                "group": sweep_name, "job_type": cell["name"], "name": f"{cell['name']}-{trial.number}",
                "tags": [cell["choices"].get(g, "") for g in ("algo", "reward", "policy")],
                "extra_config": {"sweep": sweep_name, "cell": cell["name"], "trial": trial.number,
                                 **{f"param/{k}": v for k, v in params.items()}}})
            last_step = result.env_steps
            if result.status is RunStatus.OK:
                state = TrialState.COMPLETE
                value = objective_value(result.to_json(), settings.metric, cfg.env.get("horizon"),
                                        cfg.env.reports_success)
            elif result.status is RunStatus.PRUNED:
                state = TrialState.PRUNED
            else:
                state, reason = TrialState.FAIL, result.describe()
        except Exception as err:  # a failing trial is recorded with its reason; the sweep goes on
            if _interrupted.is_set():  # Ctrl-C, not the trial's fault: leave it RUNNING, so it
                raise KeyboardInterrupt from err  # goes stale and is retried on resume
            state, reason = TrialState.FAIL, first_line(f"{type(err).__name__}: {err}")
            trial_dir.mkdir(parents=True, exist_ok=True)
            (trial_dir / "error.log").write_text(traceback.format_exc())
            log.warning("trial %s of %s failed: %s", trial.number, cell["name"], reason)
        wall = time.perf_counter() - started
        intermediate = {}
        try:
            reports_success = cfg is None or cfg.env.get("reports_success", True)
            for key, val in (("env_steps", result.env_steps if result else last_step),
                             # none on an env that reports no success: shown as "-", not 0
                             ("success_rate", result.success_rate
                              if result and reports_success else None),
                             ("mean_return", result.mean_return if result else None),
                             ("wall_time_s", wall), ("last_step", last_step),
                             ("trial_dir", str(trial_dir)), ("worker", HydraConfig.get().job.num),
                             ("fail_reason", reason)):
                trial.set_user_attr(key, val)
            frozen = study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
            intermediate = frozen.intermediate_values
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as err:
            # Its heartbeat went stale (e.g. a long database stall): another worker already
            # failed it and queued a retry. Keep this run's files; the retry counts.
            state, reason = TrialState.FAIL, f"taken over by a retry: {err}"
            log.warning("trial %s of %s %s", trial.number, cell["name"], reason)

    write_json_atomic(trial_dir / "trial.json", {
        "number": trial.number, "cell": cell["name"], "state": state.name, "params": params,
        "value": value, "last_step": last_step,
        "status": result.describe() if result else reason,
        "fail_reason": reason, "env_steps": result.env_steps if result else last_step,
        "wall_time_s": wall, "intermediate_values": intermediate})
    return state


def run_worker(cfg: DictConfig) -> dict[str, int]:
    """Task function of one worker job (see module docstring). Returns its trial counts."""
    from hydra.utils import get_method

    trap_ctrl_c()
    hydra_cfg = HydraConfig.get()
    settings = hydra_cfg.sweeper
    # Import the objective (torch, SB3, robosuite: seconds) before claiming, not inside a trial.
    train = get_method(settings.objective)
    sweep_dir = Path(hydra_cfg.sweep.dir)
    worker = hydra_cfg.job.num
    storage = make_storage(storage_url(settings.storage, sweep_dir), settings.heartbeat_interval,
                           settings.grace_period)
    cells = read_plan(sweep_dir)
    studies = {}
    for index, cell in enumerate(cells):
        # Distinct streams per worker, cell and process: a rerun or a second machine joining
        # the study must not replay the same "random" trials. (Parallel sampling is not
        # reproducible anyway; `seed` decorrelates, it does not replay.)
        seed = None if settings.seed is None else int(np.random.SeedSequence(
            [settings.seed, worker, index, os.getpid()]).generate_state(1)[0])
        # grid: every parameter arrives fixed from the queue, so any sampler will do
        name = "random" if settings.sampler == "grid" else settings.sampler
        sampler = make_sampler(name, seed, {} if name != settings.sampler
                               else settings.sampler_kwargs, cell["space"])
        studies[cell["name"]] = optuna.load_study(
            study_name=cell["study_name"], storage=storage, sampler=sampler,
            pruner=make_pruner(settings.pruner, settings.pruner_kwargs))
    # Start at a different cell per worker so parallel workers spread over the grid.
    order = cells[worker % len(cells):] + cells[:worker % len(cells)]
    counts = {state.name: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    sweep_name = read_sweep_name(sweep_dir)
    while True:
        claimed = None
        for cell in order:
            study = studies[cell["name"]]
            optuna.storages.fail_stale_trials(study)  # dead workers' trials: failed, retried once
            trial = claim_trial(study, storage)
            if trial is not None:
                claimed = (study, trial, cell)
                break
        if claimed is not None:
            state = run_trial(*claimed, settings, storage, sweep_dir, sweep_name, train)
            counts[state.name] += 1
            continue
        if count_trials(studies.values(), TrialState.RUNNING) == 0:
            return counts
        time.sleep(min(settings.heartbeat_interval, 5))
