"""`hydra/sweeper=rlsweep`: Optuna studies per grid cell, run by barrier-free workers.

A thin plugin: settings (the dataclass below, under `hydra.sweeper`) and the Hydra Sweeper
interface. The work is in `rlsweep.sweep`: `sweeper.run_sweep` plans and launches, and the
launcher runs `worker.run_worker` (not the single-run task function) n_jobs times.
"""


import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write


@dataclass
class RLSweeperConf:
    _target_: str = "hydra_plugins.rlsweep_sweeper.rlsweep_sweeper.RLSweeper"
    n_trials: int = 8                  # trials per cell (each cell is one Optuna study)
    n_jobs: int = 2                    # parallel workers, shared by all cells
    # tpe | random | cmaes | qmc | grid | gp | nsga2 | nsga3. Sized to n_trials unless
    # sampler_kwargs say otherwise: TPE/GP sample n_trials/4 (2-10) trials at random first,
    # NSGA-II/III generations hold n_trials/4 (4-50); TPE counts running trials as bad
    # guesses with n_jobs > 1 (constant liar), so workers do not sample the same region.
    sampler: str = "tpe"
    sampler_kwargs: Dict[str, Any] = field(default_factory=dict)
    # median | successive_halving | hyperband | threshold | none. The median pruner compares
    # against n_trials/4 (2-5) finished trials and never prunes in a trial's first third.
    pruner: str = "median"
    pruner_kwargs: Dict[str, Any] = field(default_factory=dict)
    # success_then_return | success_rate | mean_return, or a list with a direction each for a
    # Pareto front, which may add the trial totals wall_time_s, env_steps:
    #   metric=[success_rate,wall_time_s] direction=[maximize,minimize]
    metric: Any = "success_then_return"
    direction: Any = "maximize"
    # A trial's value: the mean of its last this many evaluations (one is noisy).
    value_last_evals: int = 3
    # Seeds each trial trains (in parallel processes; `seed=0,1,2` in a sweep gives the list);
    # every evaluation reported to the pruner, and the value, combine them:
    seeds_per_trial: int = 1
    seed_aggregate: str = "mean"       # mean | iqm
    seed: Optional[int] = 0            # a trial samples from (seed, cell, trial number)
    storage: Optional[str] = None      # any Optuna RDB URL; default: SQLite in the sweep dir
    # SQLite with a launcher that can run jobs on other machines (Slurm, Ray) is refused; true
    # says every job runs on this machine (a one-node cluster), where SQLite is safe.
    single_node: bool = False
    study_name: Optional[str] = None   # study of a cell: <study_name>-<cell>, or just <cell>
    heartbeat_interval: int = 10       # s between a running trial's heartbeats
    # s without heartbeat before a trial is failed and retried. Must outlast one beat stuck on
    # SQLite's 15 s lock timeout plus the next beat (2 x 10 + 15 = 35 s), or a live trial can
    # be taken over; smaller values (e.g. in tests) get a warning.
    grace_period: int = 60
    # s of wall time after which a trial that is still training (hung, or far slower than
    # planned) is stopped and recorded FAIL, freeing its worker; null: no limit.
    trial_timeout_s: Optional[float] = None
    # s a storage outage (database down, restarting, failing over) is ridden out: each storage
    # call is retried with backoff; still down after that, the sweep stops in one line.
    storage_outage_s: float = 90
    # What a trial runs: a function with rlsweep.train.train's signature returning a RunResult
    # (rlsweep/run_result.py, the Objective protocol). The synthetic one
    # (rlsweep.sweep.synthetic.synthetic_objective) measures the sweeper itself in tests/bench.
    objective: str = "rlsweep.train.train"
    # Called with the sweep dir once every cell's budget is finished; returns the report's path.
    # A setting, not an import, so the sweep never depends on the report (null: no report).
    on_finish: Optional[str] = "rlsweep.report.build.finish_sweep"


ConfigStore.instance().store(group="hydra/sweeper", name="rlsweep", node=RLSweeperConf,
                             provider="rlsweep")


class RLSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from rlsweep.config import ConfigError, check_known_keys, schema_keys
        from rlsweep.sweep.worker import run_worker

        try:  # `+hydra.sweeper.<typo>=...` reaches us as a setting nothing reads
            check_known_keys("hydra.sweeper", self.settings, schema_keys(RLSweeperConf))
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        self.hydra_context, self.config = hydra_context, config
        # Size the launcher's pool to our workers when the launcher has one (joblib does).
        with read_write(config.hydra.launcher), open_dict(config.hydra.launcher):
            if "n_jobs" in config.hydra.launcher and isinstance(self.settings["n_jobs"], int):
                config.hydra.launcher.n_jobs = max(self.settings["n_jobs"], 1)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=run_worker, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from rlsweep.sweep.sweeper import run_sweep

        return run_sweep(self.settings, self.config, self.hydra_context.config_loader,
                         self.launcher, arguments)
