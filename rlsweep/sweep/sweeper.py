"""What `python -m rlsweep -m ...` does once Hydra hands the overrides to our sweeper.

1. Check everything before any job starts: sweeper settings, the grid, every cell's composed
   config, every search-space parameter (it must exist, and its range's ends must validate),
   and that the storage is reachable.
2. Write the plan, create each cell's study with its budget of n_trials queued trials.
3. Launch n_jobs worker jobs through the configured Hydra launcher (joblib, submitit, ray);
   print one progress line per cell whenever its counts change.
4. Summarize every cell into `sweep_summary.json` and a table.
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from rlsweep.config import ConfigError, first_line, option_name, validate
from rlsweep.files import is_disk_full
from rlsweep.periodic import Periodic
from rlsweep.sweep.plan import (SCORING_SETTINGS, build_plan, resume_conflict, studies_on_disk,
                                sweep_name, write_plan)
from rlsweep.sweep.processes import child_pids
from rlsweep.sweep.space import (SWEEP_GROUPS, Cell, declared_space, grid_cells,
                                 parse_sweep_request)
from rlsweep.sweep.study import (STORAGE_OUTAGE_S, SWEEP_HOST_ENV, SWEEP_PID_ENV, Objectives,
                                 StorageUnreachable, check_connection_budget,
                                 check_existing_study, check_grid, check_settings,
                                 check_storage_holds, count_trials, make_sampler, make_storage,
                                 mask_url, open_cell_study, requeue_dead_sweeps_trials,
                                 requeue_orphans, set_storage_outage, sized_pruner_kwargs,
                                 sized_sampler_kwargs, sqlite_file_missing, storage_lacks,
                                 storage_url, study_name, with_retries, worker_identity,
                                 worker_jobs)
from rlsweep.sweep.summary import (SUMMARY_FILE, budget_note, cell_summary, format_pareto,
                                   format_table, progress_line, write_summary)
from rlsweep.sweep.worker import DiskFull

log = logging.getLogger("rlsweep.sweep")
_MISSING = object()


def job_config(cfg: DictConfig) -> DictConfig:
    """The run config without Hydra's own node."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def check_writable(sweep_dir: Path) -> None:
    """The sweep dir must take files before any job starts (a full disk, a path under a file)."""
    probe = sweep_dir / ".rlsweep-write-probe"
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)  # some room for the plan, storage pages and trial.json
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise ConfigError(f"hydra.sweep.dir={sweep_dir} is not writable: {err.strerror or err}") \
            from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:  # the dir was never made
            pass


def _check_space(cell: Cell, cfg: DictConfig) -> None:
    """Each parameter must exist in the cell's config and each end of its range must validate."""
    for path, dist in cell.space.items():
        section, _, key = path.partition(".")
        if OmegaConf.select(cfg, path, default=_MISSING) is _MISSING or key in NOT_PARAMETERS:
            takes = ""
            if section in ("algo", "policy") and section in cfg:
                keys = [k for k in cfg[section] if k not in NOT_PARAMETERS]
                takes = (f": {section}={option_name(cfg[section])} takes "
                         + ", ".join(keys)) if keys else ""
            raise ConfigError(f"search space parameter {path} does not exist in the composed "
                              f"config of cell {cell.name}{takes}")
        ends = dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)
        for value in ends:
            probe = cfg.copy()
            OmegaConf.update(probe, path, value, merge=False)
            try:
                validate(probe)
            except ConfigError as err:
                raise ConfigError(f"search space of {cell.name}: {err}") from None


# Keys of a config section that name or describe an option, not parameters of what it builds.
NOT_PARAMETERS = ("_target_", "name", "search_space")


def _check_metric(objectives: Objectives, cell: Cell, cfg: DictConfig) -> None:
    """A success metric needs an env that reports success (gymnasium envs rank by return)."""
    if "success_rate" in objectives.metrics and not cfg.env.reports_success:
        raise ConfigError(f"hydra.sweeper.metric=success_rate is invalid for cell {cell.name}: "
                          f"env={option_name(cfg.env)} reports no task success (env.reports_success="
                          "false); use mean_return or success_then_return (= return there)")


def _check_budget(cell: Cell, cfg: DictConfig, pruner: str) -> None:
    """Trials must evaluate before they end: the pruner and a trial's value use evaluations."""
    trainer = cfg.trainer
    if trainer.eval_freq > trainer.total_timesteps:
        raise ConfigError(f"trainer.eval_freq={trainer.eval_freq} is invalid in a sweep: larger "
                          f"than trainer.total_timesteps={trainer.total_timesteps} (cell "
                          f"{cell.name}), so trials never evaluate while training and "
                          f"{'pruning is off' if pruner != 'none' else 'only the final evaluation counts'};"
                          " use eval_freq <= total_timesteps")


def trial_seeds(request_seeds: list[int] | None, seeds_per_trial: int, base_seed: int) -> list[int]:
    """The seeds every trial trains: the sweep's `seed=...` list, or seeds_per_trial seeds
    counted up from the config's seed. ConfigError if both are given and disagree."""
    if request_seeds is None:
        return [base_seed + k for k in range(seeds_per_trial)]
    if seeds_per_trial not in (1, len(request_seeds)):
        raise ConfigError(f"hydra.sweeper.seeds_per_trial={seeds_per_trial} is invalid with "
                          f"seed={','.join(map(str, request_seeds))}: the list already gives "
                          f"{len(request_seeds)} seeds per trial; drop one of the two")
    return list(request_seeds)


def plan_cells(config: DictConfig, config_loader, arguments: list[str],
               objectives: Objectives | None = None,
               ) -> tuple[list[Cell], dict[str, DictConfig]]:
    """Grid cells with their search spaces, seeds and validated base configs (ConfigError if
    bad)."""
    settings = config.hydra.sweeper
    objectives = objectives or Objectives.from_settings(settings)
    request = parse_sweep_request(arguments)
    choices = config.hydra.runtime.choices
    cells = grid_cells(request, {g: choices[g] for g in SWEEP_GROUPS if g in choices})
    base_configs = {}
    for cell in cells:
        try:
            composed = config_loader.load_sweep_config(config, request.fixed + cell.overrides)
        except Exception as err:
            raise ConfigError(f"cell {cell.name}: {first_line(err)}") from None
        cfg = job_config(composed)
        validate(cfg)
        _check_metric(objectives, cell, cfg)
        _check_budget(cell, cfg, settings.pruner)
        cell.seeds = trial_seeds(request.seeds, settings.get("seeds_per_trial", 1), cfg.seed)
        declared = {**declared_space("algo", cfg.algo.get("search_space", {})),
                    **declared_space("policy", cfg.policy.get("search_space", {}))}
        # A value given on the command line is the user's choice: it holds in every trial
        # (it is in the composed config) instead of being sampled over.
        cell.fixed = {path: line for path, line in request.fixed_values.items()
                      if path in declared and path not in request.ranges}
        cell.space = {**{path: d for path, d in declared.items() if path not in cell.fixed},
                      **request.ranges}
        _check_space(cell, cfg)
        base_configs[cell.name] = cfg
    return cells, base_configs


class ProgressPrinter(Periodic):
    """Prints a cell's progress line each time its counts change, from a background thread.

    A look reads every trial of every cell, which grows with the sweep (1,000 trials: a tenth
    of a second, and the database's work besides): the interval stretches to 20x the last
    look's time, so watching never takes more than ~5% of a core from the workers."""

    def __init__(self, studies: Mapping[str, Any], budget: int, metrics: tuple[str, ...],
                 interval_s: float = 2.0, reports_success: Mapping[str, bool] | None = None):
        super().__init__(interval_s, self.poll)
        self.studies, self.budget, self.metrics = studies, budget, metrics
        self.reports_success = reports_success or {}  # by cell; a cell not named: it does
        self.min_interval_s = interval_s
        self._last: dict[str, str] = {}

    def poll(self) -> None:
        started = time.monotonic()
        try:
            self._print_changed_lines()
        finally:
            self.interval_s = max(self.min_interval_s, 20 * (time.monotonic() - started))

    def _print_changed_lines(self) -> None:
        for cell, study in self.studies.items():
            try:
                line = progress_line(cell, cell_summary(
                    study, self.metrics, self.reports_success.get(cell, True)), self.budget)
            except Exception:  # a busy storage must never break the sweep; try next time
                continue
            if self._last.get(cell) != line:
                self._last[cell] = line
                print(line, flush=True)


def _write_report(sweep_dir: Path, on_finish: str | None) -> str:
    """report.html and the W&B summary run (`hydra.sweeper.on_finish`, rlsweep.report's by
    default); a failure here never loses the sweep's results."""
    if not on_finish:
        return ""
    from hydra.utils import get_method

    try:
        return f", report: {get_method(on_finish)(sweep_dir).name}"
    except Exception as err:
        log.warning("could not write the report: %s (rerun: python -m rlsweep.report %s)",
                    err, sweep_dir)
        return ""


MAX_LAUNCHES = 3


# Launchers whose jobs run on this machine (by class, so a user's preset extending one counts).
LOCAL_LAUNCHER_CLASSES = ("JoblibLauncher", "BasicLauncher", "LocalLauncher")


def launcher_class(target: str) -> str:
    """The class name (JoblibLauncher, SlurmLauncher, ...) of a launcher's `_target_`."""
    return target.rsplit(".", 1)[-1]


def check_storage_reachable(url: str, launcher_target: str, single_node: bool) -> None:
    """Refuse SQLite when the launcher may run workers on other machines: each would open its own
    copy of the file (or one on NFS, where SQLite's locking breaks) and the sweep would split or
    corrupt. `hydra.sweeper.single_node=true` says a cluster launcher stays on this machine.

    :param url: the storage URL the workers will use
    :param launcher_target: the launcher's `_target_` class path
    :param single_node: the user's opt-in (`hydra.sweeper.single_node`)
    """
    name = launcher_class(launcher_target)
    if url.startswith("sqlite") and name not in LOCAL_LAUNCHER_CLASSES and not single_node:
        raise ConfigError(
            f"hydra.sweeper.storage is SQLite ({mask_url(url)}) but hydra/launcher "
            f"{name} may start workers on other machines, which "
            "cannot share it: set hydra.sweeper.storage=postgresql://... (docs/cluster.md), or "
            "hydra.sweeper.single_node=true if every job runs on this machine")


def _user_set(config: DictConfig, key: str) -> bool:
    """Whether `key` was given on the command line (not a default)."""
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in config.hydra.overrides.hydra)


def _all_failed(studies: Mapping[str, Any]) -> str | None:
    """The first failure's reason if trials ended and every one of them FAILED, else None."""
    ended = sorted((t for s in studies.values() for t in s.get_trials(deepcopy=False)
                    if t.state.is_finished()), key=lambda t: t.datetime_complete or t.datetime_start)
    if not ended or any(t.state != TrialState.FAIL for t in ended):
        return None
    reasons = [t.user_attrs.get("fail_reason") for t in ended]
    return next((r for r in reasons if r), "no reason recorded (the worker died)")


def _work_left(studies: Mapping[str, Any]) -> bool:
    return with_retries(lambda: count_trials(studies.values(), TrialState.WAITING,
                                             TrialState.RUNNING) > 0, "counting the trials left")


def _stopping_error(returns: Sequence[Any] | None) -> DiskFull | StorageUnreachable | None:
    """What stopped a worker that no new launch can cure (a full disk, a storage down longer
    than hydra.sweeper.storage_outage_s), if any worker stopped for it."""
    from hydra.core.utils import JobStatus

    for job in returns or []:
        # What ended the worker, read without `return_value`, which prints Hydra's "Error
        # executing job" line before it re-raises (other crashes are reported after the summary)
        error = getattr(job, "_return_value", None) if job.status == JobStatus.FAILED else None
        if isinstance(error, (DiskFull, StorageUnreachable)):
            return error
    return None


class LauncherStillWaiting(Exception):
    """Every trial is finished in the storage, yet the launcher still waits for its jobs."""


class LaunchedJobsGone(Exception):
    """Trials are left, but every worker job of the launch has left the cluster's queue."""


def slurm_jobs_gone(study, workers: list[str]) -> bool:
    """Whether every worker job of a launch has started (noted its SLURM_JOB_ID on the study)
    and none is in Slurm's queue any more (`squeue`: pending, running or requeued jobs are
    listed, ended ones are not). submitit asks Slurm's accounting (`sacct`) instead, and
    without it never learns that scancel, preemption or a time limit ended a job. False when
    a job has not started (it may wait in the queue for hours) or squeue cannot answer."""
    jobs = worker_jobs(study, workers)
    if None in jobs.values():
        return False
    try:
        # -a: hidden partitions too; -u: only our jobs, not the whole cluster's every 5 s
        queued = subprocess.run(["squeue", "-h", "-r", "-a", "-u", getpass.getuser(),
                                 "-o", "%A"], capture_output=True, text=True, timeout=30,
                                check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return False
    return not set(jobs.values()) & set(queued)


# How long the sweep waits for a cluster launcher once the storage says every trial finished.
LAUNCHER_GRACE_S = 60.0
JOBS_POLL_S = 5.0  # between squeue calls while a Slurm launch runs


def launch_watching_the_storage(launcher, jobs: list[list[str]], initial_job_idx: int,
                                work_left, grace_s: float = LAUNCHER_GRACE_S,
                                poll_s: float = 1.0, jobs_gone=None,
                                jobs_poll_s: float = JOBS_POLL_S) -> Any:
    """`launcher.launch(jobs)`, ended early when the storage says the work is done, or when
    the cluster says every worker job is gone while work is left.

    A cluster launcher learns that a job ended from the cluster: submitit asks Slurm's
    accounting (`sacct`), and without it never learns that a cancelled job is gone, so it waits
    forever. The storage knows better: once `work_left()` has been false for `grace_s` seconds
    (workers end within a second of the last trial), stop waiting and raise
    `LauncherStillWaiting`. And if `jobs_gone()` answers True twice in a row while trials are
    left (every worker job scancel'ed, preempted or out of time: nobody will run them), raise
    `LaunchedJobsGone`. The launch runs in a daemon thread, which ends with the process.

    :param launcher: a Hydra launcher
    :param jobs: the jobs' override lists
    :param initial_job_idx: index of the first job
    :param work_left: returns whether any trial is still waiting or running
    :param grace_s: seconds the launcher may go on waiting once no work is left
    :param poll_s: seconds between looks at the storage
    :param jobs_gone: returns whether every worker job of this launch has left the cluster
        (e.g. `slurm_jobs_gone`); None: the launcher itself sees its jobs end
    :param jobs_poll_s: seconds between questions to the cluster
    """
    outcome: dict[str, Any] = {}
    gone_answers, asked_at = 0, time.monotonic()

    def launch() -> None:
        try:
            outcome["returns"] = launcher.launch(jobs, initial_job_idx=initial_job_idx)
        except BaseException as err:  # handed to the sweep's thread below
            outcome["error"] = err

    thread = threading.Thread(target=launch, name="launcher", daemon=True)
    thread.start()
    done_since = None
    while True:
        thread.join(poll_s)
        if not thread.is_alive():
            break
        try:
            left = work_left()
        except Exception as err:  # a storage blip: look again at the next poll
            log.warning("could not count the trials left: %s", first_line(err))
            left = True
        if left:
            done_since = None
            if jobs_gone is not None and time.monotonic() - asked_at >= jobs_poll_s:
                asked_at = time.monotonic()
                gone_answers = gone_answers + 1 if jobs_gone() else 0
                if gone_answers >= 2:
                    raise LaunchedJobsGone(
                        "every worker job of this launch has left the cluster's queue "
                        "(scancel, preemption or a time limit) while trials are left")
        elif done_since is None:
            done_since = time.monotonic()
        elif time.monotonic() - done_since >= grace_s:
            raise LauncherStillWaiting(
                f"every trial is finished in the storage, but the launcher still waits for its "
                f"jobs after {grace_s:g} s (a job it cannot see end, e.g. Slurm without "
                "accounting after scancel): not waiting longer")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("returns")


class StopOnSigterm:
    """While the sweep runs its workers on this machine, SIGTERM to the sweep process (`kill`,
    `timeout`, a service manager, a terminal's process group) stops the sweep in order: it is
    passed on to the processes the sweep started (its joblib pool, submitit's local jobs),
    whose workers requeue their running trials with their retry unspent and return
    (worker.py); the sweep then launches no more, writes its summary and exits 143. Without
    it the sweep process died at once, without a summary, and its idle pool processes and
    their resource trackers (~100 MB each) lived on under init for minutes.

    :param enabled: False (workers on other machines) leaves SIGTERM's default: exit at once
    """

    def __init__(self, enabled: bool = True):
        self.enabled, self.received = enabled, False
        self._previous: Any = None

    def install(self) -> "StopOnSigterm":
        if self.enabled:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            except ValueError:  # not the main thread (an embedding app): leave signals alone
                self.enabled = False
        return self

    def _on_sigterm(self, signum, frame) -> None:
        self.received = True
        for pid in child_pids(os.getpid()):  # resource trackers ignore it; trainers are
            try:                             # grandchildren, stopped by their worker
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def restore(self) -> None:
        """SIGTERM's handler as it was before `install`."""
        if self.enabled:
            self.enabled = False
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None
                          else signal.SIG_DFL)


def _launch_until_done(launcher, n_jobs: int, studies: Mapping[str, Any], storage,
                       on_this_machine: bool = True, slurm: bool = False,
                       fixed: Sequence[str] = (), stopping=lambda: False) -> Any:
    """Launch n_jobs workers; if a worker process dies (killed, a bug), the launcher may abort
    the whole batch (joblib kills every pool process when one dies): launch again while trials
    are left. The batch's trials are failed at once and retried without spending their one
    retry (their workers died together, whatever the trials did); a trial no worker of ours
    held (another sweep process's) is left to its heartbeat. A launcher of other machines'
    jobs is not waited for once the storage says every trial finished, nor (Slurm) once
    every job of the launch has left the queue with trials left: the next launch runs them
    (`launch_watching_the_storage`).

    `fixed` are the command line's fixed task overrides (`+hparams_search=...`, ...). Each job
    gets them: Hydra composes a job's config from the hydra overrides and the job's own list
    only, so without them a preset's `hydra.sweeper` settings (pruner, sampler kwargs, ...)
    would not reach the workers, which read their settings from their job's config.
    `stopping()` true (SIGTERM reached the sweep): no further launch."""
    returns = None
    # the workers' claims name this process
    os.environ[SWEEP_PID_ENV], os.environ[SWEEP_HOST_ENV] = str(os.getpid()), socket.gethostname()
    for launch in range(MAX_LAUNCHES):
        numbers = [launch * n_jobs + k for k in range(n_jobs)]
        jobs = [[*fixed, f"hydra.sweep.subdir=workers/{n}", "hydra.output_subdir=null"]
                for n in numbers]
        ours = [worker_identity(socket.gethostname(), os.getpid(), n) for n in numbers]
        try:
            if on_this_machine:  # local processes: the launcher sees them end
                returns = launcher.launch(jobs, initial_job_idx=numbers[0])
            else:
                first = next(iter(studies.values()))  # where the workers note their jobs
                returns = launch_watching_the_storage(
                    launcher, jobs, numbers[0], lambda: _work_left(studies),
                    jobs_gone=(lambda: slurm_jobs_gone(first, ours)) if slurm else None)
        except (DiskFull, StorageUnreachable):  # another launch would stop the same way
            raise
        except LauncherStillWaiting as err:
            print(f"rlsweep: {err}", file=sys.stderr, flush=True)
            return None
        except LaunchedJobsGone as err:
            print(f"rlsweep: {err}: launching new worker jobs", file=sys.stderr, flush=True)
            requeue_orphans(  # trials of workers killed without SIGTERM (SIGKILL, node loss)
                studies, storage, set(ours),
                "its worker job left the cluster's queue; retried without spending its retry")
            returns = None
        except Exception as err:  # not KeyboardInterrupt: Ctrl-C stops the sweep
            reason = first_line(err)
            print(f"rlsweep: a worker died ({type(err).__name__}: {reason}); "
                  "relaunching workers for the trials left", file=sys.stderr, flush=True)
            requeued = requeue_orphans(
                studies, storage, set(ours), "its worker died with the launcher's batch "
                "(another worker died); retried without spending its retry")
            if requeued:
                print(f"rlsweep: trials {', '.join(map(str, requeued))} queued again",
                      file=sys.stderr, flush=True)
            returns = None
        stop = _stopping_error(returns)
        if stop is not None:  # another launch would stop the same way
            raise stop
        if stopping() or not _work_left(studies):
            break
    return returns


def _summarize(sweep_dir: Path, studies: Mapping[str, Any], objectives: Objectives,
               base_configs: Mapping[str, DictConfig], settings: Mapping[str, Any], url: str,
               reports_success: Mapping[str, bool], storage_down: bool) -> str:
    """Print the table and write sweep_summary.json and the report, as far as the storage and
    the disk allow; return what could not be done ("" if nothing), for the one line that says
    why the sweep stopped. Never raises for an unreachable storage or a full disk: the sweep's
    results are in the storage and the trial folders either way.

    :param reports_success: per cell, whether its env has a notion of success (else none shown)
    :param storage_down: the storage already failed for the whole outage budget: one try
    """
    try:
        summary = with_retries(lambda: {cell: cell_summary(study, objectives.metrics,
                                                             reports_success[cell])
                                        for cell, study in studies.items()},
                               "summarizing the sweep", outage_s=0 if storage_down else None)
    except StorageUnreachable as err:
        if storage_down:
            return "no summary was written (it needs the storage)"
        return (f"hydra.sweeper.storage={mask_url(url)} is unreachable: {err}; no summary was "
                "written (rerun the same command once it answers)")
    print(format_table(summary), flush=True)
    pareto = format_pareto(summary)
    if pareto:
        print(pareto, flush=True)
    note = budget_note(min(c.trainer.total_timesteps for c in base_configs.values()),
                       option_name(next(iter(base_configs.values())).env))
    if note:
        print(note, flush=True)
    try:
        path = write_summary(sweep_dir, summary)
    except OSError as err:
        if not is_disk_full(err):
            raise
        return f"{SUMMARY_FILE} and the report could not be written ({err.strerror})"
    report = _write_report(sweep_dir, settings.get("on_finish"))
    print(f"rlsweep: results in {sweep_dir} (summary: {path.name}{report}; "
          f"optuna-dashboard {mask_url(url)})", flush=True)
    return ""


def run_sweep(settings: Mapping[str, Any], config: DictConfig, config_loader, launcher,
              arguments: list[str]) -> Any:
    sweep_dir = Path(config.hydra.sweep.dir)
    try:
        objectives = check_settings(settings)
        set_storage_outage(settings.get("storage_outage_s", STORAGE_OUTAGE_S))
        check_writable(sweep_dir)
        pruning_notes = []
        if objectives.multi and settings["pruner"] != "none":
            if _user_set(config, "hydra.sweeper.pruner"):
                raise ConfigError(f"hydra.sweeper.pruner={settings['pruner']} is invalid with "
                                  f"several metrics {list(objectives.metrics)}: Optuna cannot "
                                  "prune multi-objective trials; allowed value is none")
            pruning_notes.append("pruning is off: Optuna cannot prune multi-objective trials "
                                 f"(metrics {', '.join(objectives.metrics)})")
        cells, base_configs = plan_cells(config, config_loader, arguments, objectives)
        grids = {}
        all_notes = [f"{line} is fixed on the command line: not searched"
                     for cell in cells for line in cell.fixed.values()] + pruning_notes
        for cell in cells:  # each worker builds these; fail here, not in every worker
            trainer = base_configs[cell.name].trainer
            sampler_kwargs, notes = sized_sampler_kwargs(
                settings["sampler"], settings["n_trials"], settings["n_jobs"],
                settings["sampler_kwargs"])
            if not objectives.multi:
                notes += sized_pruner_kwargs(settings["pruner"], settings["n_trials"],
                                             trainer.total_timesteps, trainer.eval_freq,
                                             settings["pruner_kwargs"])[1]
            if settings["sampler"] == "grid":
                grids[cell.name] = check_grid(cell.space, settings["n_trials"], cell.name)
            try:
                make_sampler(settings["sampler"], settings["seed"], sampler_kwargs, cell.space)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"hydra.sweeper.sampler_kwargs is invalid for "
                                  f"{settings['sampler']}: {err}") from None
            all_notes += notes
        launcher_name = config.hydra.runtime.choices.get("hydra/launcher", "basic")
        cores = os.cpu_count() or 1
        on_this_machine = launcher_class(config.hydra.launcher._target_) in LOCAL_LAUNCHER_CLASSES
        if on_this_machine and settings["n_jobs"] > cores:
            all_notes.append(f"hydra.sweeper.n_jobs={settings['n_jobs']} workers on this "
                             f"machine's {cores} cores: trials share cores and each runs slower "
                             f"(n_jobs={cores} finishes as soon)")
        for note in dict.fromkeys(all_notes):  # once each, in order
            print(f"note: {note}", flush=True)
        names = {c.name: study_name(settings["study_name"], c.name) for c in cells}
        plan = build_plan(cells, names, sweep_name(sweep_dir, settings["study_name"]),
                          objectives, settings["n_trials"], launcher_name,
                          scoring={k: settings[k] for k in SCORING_SETTINGS})
        # Everything is checked before anything is written: a refused resume leaves the sweep
        # dir and the storage as they were.
        conflict = resume_conflict(sweep_dir, plan, base_configs)
        if conflict:
            raise ConfigError(f"resume of hydra.sweep.dir={sweep_dir} refused, this command "
                              f"changes {conflict}; nothing was written (start another sweep "
                              "with a new hydra.sweep.dir)")
        url = storage_url(settings["storage"], sweep_dir)
        check_storage_reachable(url, config.hydra.launcher._target_, settings["single_node"])
        # A resume on a storage without the dir's studies would start them at trial 0 and
        # overwrite its trial folders; a missing SQLite file is refused before opening it,
        # which would create it.
        needed = studies_on_disk(sweep_dir, plan)
        missing_file = sqlite_file_missing(url) if needed else None
        if missing_file:
            raise storage_lacks(url, sweep_dir, f"the sweep's studies ({missing_file})")
        storage = make_storage(url, settings["heartbeat_interval"], settings["grace_period"])
        check_connection_budget(storage, settings["n_jobs"])
        check_storage_holds(storage, url, sweep_dir, needed)
        for cell in cells:
            check_existing_study(storage, names[cell.name], objectives.directions)
        # The studies before the plan: a plan in the dir means its studies exist (a sweep
        # killed in between resumes; studies_on_disk relies on it).
        studies = {c.name: open_cell_study(
            storage, names[c.name], objectives.directions, settings["n_trials"],
            grid=grids.get(c.name)) for c in cells}
        write_plan(sweep_dir, plan, base_configs)
    except ConfigError as err:  # e.g. an existing study of another direction in the storage
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"rlsweep: {len(cells)} cell(s) x {settings['n_trials']} trials, "
          f"{settings['n_jobs']} workers, storage {mask_url(url)}, sweep dir {sweep_dir}",
          flush=True)
    # Trials a killed or interrupted run of a sweep on this machine left RUNNING: queued again
    # now, their retry unspent, instead of after their heartbeats' grace period.
    requeued = requeue_dead_sweeps_trials(studies, storage)
    if requeued:
        print(f"rlsweep: trial(s) {', '.join(map(str, requeued))} were left running by a sweep "
              "process that is gone (killed, or Ctrl-C): queued again", file=sys.stderr,
              flush=True)
    returns, interrupted, stopped = None, False, None
    sigterm = StopOnSigterm(enabled=on_this_machine).install()  # until the summary is written
    # a cell whose env has no notion of success (Pendulum) shows none, not 0
    reports_success = {name: bool(c.env.reports_success) for name, c in base_configs.items()}
    try:
        with ProgressPrinter(studies, settings["n_trials"], objectives.metrics,
                             reports_success=reports_success) as progress:
            try:
                returns = _launch_until_done(
                    launcher, settings["n_jobs"], studies, storage,
                    on_this_machine=on_this_machine,
                    slurm=launcher_class(config.hydra.launcher._target_) == "SlurmLauncher",
                    fixed=parse_sweep_request(arguments).fixed,
                    stopping=lambda: sigterm.received)
            except (DiskFull, StorageUnreachable) as err:  # summarized below, then one line
                stopped = err
            progress.poll()
    except KeyboardInterrupt:  # Ctrl-C: the workers left their trials for the resume
        interrupted = True
    except BaseException:  # the sweep ends with this error, SIGTERM as before
        sigterm.restore()
        raise
    finally:  # also on Ctrl-C: what finished is in the storage and in its trial folder
        problem = _summarize(sweep_dir, studies, objectives, base_configs, settings, url,
                             reports_success,
                             storage_down=isinstance(stopped, StorageUnreachable))
        if problem and (interrupted or sys.exc_info()[1] is not None):  # said before it ends
            print(f"error: {problem}", file=sys.stderr, flush=True)
    sigterm.restore()
    if interrupted or sigterm.received:
        print(f"rlsweep: {'interrupted (Ctrl-C)' if interrupted else 'stopped by SIGTERM'}; "
              "rerun the same command to resume", file=sys.stderr, flush=True)
        sys.exit(130 if interrupted else 128 + signal.SIGTERM)
    if isinstance(stopped, StorageUnreachable):
        problem = "; ".join(filter(None, [
            f"hydra.sweeper.storage={mask_url(url)} is unreachable: {stopped}; the sweep "
            "stopped, its running trials are retried when you rerun the same command",
            problem]))
    elif stopped is not None:
        problem = "; ".join(filter(None, [str(stopped), problem]))
    if problem:  # one line: why the sweep stopped, and what of its summary is missing
        print(f"error: {problem}", file=sys.stderr, flush=True)
        sys.exit(1)
    crashed = False
    for k, job in enumerate(returns or []):
        try:
            job.return_value  # re-raises what killed the worker
        except Exception as err:  # a worker crash is a bug or a lost machine, not a failed trial
            print(f"rlsweep: worker {k} crashed: {err!r}", file=sys.stderr)
            crashed = True
    failed_reason = _all_failed(studies)
    if failed_reason is not None:
        print(f"rlsweep: every trial failed; the first: {failed_reason}", file=sys.stderr)
        sys.exit(1)
    work_left = _work_left(studies)
    if work_left:
        print("rlsweep: trials are left (workers kept dying); rerun the same command to resume",
              file=sys.stderr)
    if crashed or work_left:
        sys.exit(1)
    return returns
