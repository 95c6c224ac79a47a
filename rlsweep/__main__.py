"""`python -m rlsweep [overrides]` trains one run; with `-m` it sweeps (see README)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rlsweep.cli import preflight
from rlsweep.config import ConfigError

log = logging.getLogger("rlsweep")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from rlsweep.train import train  # heavy imports (torch, robosuite) only once input is valid

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = train(cfg, run_dir, progress=log.info)
    except ConfigError as err:  # found once the run dir is known (trainer.resume): one line
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    success = f"success_rate={result.success_rate} " if cfg.env.reports_success else ""
    log.info("%s: %smean_return=%s env_steps=%d (%.0f env steps/s) -> %s", result.describe(),
             success, result.mean_return, result.env_steps, result.env_steps_per_s, run_dir)
    return result.success_rate


if __name__ == "__main__":
    preflight(sys.argv[1:])
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: one line, not the interrupted frames of every process
        print("rlsweep: interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
