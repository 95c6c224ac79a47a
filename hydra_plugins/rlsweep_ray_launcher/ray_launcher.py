"""`hydra/launcher=rlsweep_ray`: Hydra jobs as tasks on an existing Ray cluster.

Ray is the engine; this plugin only turns each job into one `ray.remote` task and waits for
them. It exists because Hydra's own Ray launcher (hydra-ray-launcher 1.2.2) pins cloudpickle
2.2.1, which cannot save SB3 models; Ray ships its own cloudpickle, so this plugin adds no pin.

With rlsweep's sweeper each job is one sweep worker that keeps claiming trials from the shared
storage until every cell's budget is spent. Tasks run in the Ray worker processes of whichever
node has the CPUs: they see that node's environment (as `ray start` was run there), not the
driver's, and the sweep dir must be on a filesystem every node shares.
"""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.rlsweep_ray_launcher.ray_launcher.RayLauncher"
    # The cluster to join (`ray start --head` prints it); "auto" finds the one this node is in.
    address: str = "${oc.env:RAY_ADDRESS,auto}"
    # Options of `ray.remote` for each job's task (num_cpus, memory, resources, max_retries...).
    # max_retries: a task whose node dies is started again elsewhere (the worker it runs takes
    # new trials; the one it held is retried by the sweep), as Ray does for tasks by default.
    remote: Dict[str, Any] = field(default_factory=lambda: {"num_cpus": 1, "max_retries": 3})


ConfigStore.instance().store(group="hydra/launcher", name="rlsweep_ray", node=RayLauncherConf,
                             provider="rlsweep")


def _run_job_in_ray(idx: int, overrides: Sequence[str], hydra_context: HydraContext,
                    config: DictConfig, task_function: TaskFunction,
                    singleton_state: Dict[Any, Any], cwd: str) -> JobReturn:
    """One job, inside a Ray worker process: Hydra's global state as the driver had it, the
    driver's working directory (relative sweep dirs), then Hydra's own `run_job`."""
    os.chdir(cwd)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class RayLauncher(Launcher):
    """Runs each job as one Ray task and returns their JobReturns in order.

    :param address: the Ray cluster's address (`ray.init(address=...)`)
    :param remote: options for `ray.remote` (resources and retries of each job's task)
    """

    def __init__(self, address: str, remote: Dict[str, Any]) -> None:
        self.address = address
        self.remote = dict(remote)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        import ray  # the `[ray]` extra; imported here so the config composes without it

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=True)
        log.info("Ray launcher: %d jobs on the cluster at %s (%s)", len(job_overrides),
                 self.address, ray.cluster_resources().get("CPU", 0))
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
        task = ray.remote(**OmegaConf.to_container(OmegaConf.create(self.remote)))(
            _run_job_in_ray)
        state, cwd = Singleton.get_state(), os.getcwd()
        refs = [task.remote(initial_job_idx + idx, list(overrides), self.hydra_context,
                            self.config, self.task_function, state, cwd)
                for idx, overrides in enumerate(job_overrides)]
        return ray.get(refs)
