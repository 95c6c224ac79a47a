"""Weights & Biases tracking: offline unless the user has a key, and never touching the key.

The API key is read by wandb itself from WANDB_API_KEY or ~/.netrc; rlsweep only checks that
one exists (to choose online mode) and never copies it into configs, logs or files. W&B's
system metadata (which includes the command line) is turned off for the same reason.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Mapping

from rlsweep.run_result import RunResult, RunStatus


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode(logger_cfg: Mapping[str, Any]) -> str:
    """WANDB_MODE in the environment wins; `auto` means online with a key, else offline."""
    mode = os.environ.get("WANDB_MODE") or logger_cfg["mode"]
    if mode == "auto":
        return "online" if has_wandb_key() else "offline"
    return mode


def start_wandb_run(logger_cfg: Mapping[str, Any], run_dir: Path, config: dict,
                    extra_config: dict | None = None, **init_kwargs):
    """Start a W&B run writing under `run_dir`, or return None when tracking is off.

    `extra_config` (e.g. a trial's sampled parameters, flattened) is merged into the run config.
    """
    mode = wandb_mode(logger_cfg)
    if logger_cfg["name"] != "wandb" or mode == "disabled":
        return None
    import wandb

    return wandb.init(project=logger_cfg["project"], entity=logger_cfg.get("entity"), mode=mode,
                      dir=str(run_dir), config={**config, **(extra_config or {})}, reinit="create_new",
                      # x_disable_meta: wandb's metadata records the command line, which
                      # can hold a storage URL with its password (our tests caught it).
                      settings=wandb.Settings(console="off", silent=True, x_disable_meta=True),
                      **init_kwargs)


def run_state(result: RunResult | None) -> str:
    """Optuna-style final state of a run (None: it raised)."""
    if result is None:
        return "failed"
    return {RunStatus.OK: "complete", RunStatus.PRUNED: "pruned"}.get(result.status, "failed")


def finish_wandb_run(run, result: RunResult | None) -> None:
    """Put the run's result in the run summary, tag its final state, and close it.

    `result` is None when training raised: the run is tagged failed and closed with exit code 1.
    """
    if run is None:
        return
    run.summary.update(result.to_json() if result else {"status": "failed", "detail": "exception"})
    run.tags = tuple(run.tags) + (run_state(result),)
    run.finish(exit_code=0 if result else 1)
