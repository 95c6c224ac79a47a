"""Weights & Biases tracking: offline unless the user has a key, and never touching the key.

The API key is read by wandb itself from WANDB_API_KEY or ~/.netrc; rlsweep only checks that
one exists (to choose online mode) and never copies it into configs, logs or files. W&B's
system metadata (which includes the command line) is turned off for the same reason.
"""

from __future__ import annotations

import functools
import netrc
import os
import socket
import sys
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from rlsweep.run_result import RunResult, RunStatus


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


REACH_TIMEOUT_S = 5.0  # a W&B host that does not accept a connection in this long is "down"


def wandb_server() -> str:
    """The W&B server wandb would talk to (its base_url: WANDB_BASE_URL or its default).
    Read as wandb.setup() reads it, without starting wandb's service process."""
    import wandb

    settings = wandb.Settings()
    settings.update_from_env_vars(dict(os.environ))
    return settings.base_url


@functools.lru_cache(maxsize=None)  # asked once per process and server, so it warns once
def wandb_unreachable(base_url: str) -> str | None:
    """Why the W&B server at `base_url` cannot be reached from here, or None if it accepts a
    TCP connection. wandb itself would retry for its init_timeout (90 s) and then raise a
    26-line traceback."""
    url = urlsplit(base_url)
    host = url.hostname or ""
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as err:  # no DNS, refused, no route, timed out
        return f"{host}:{port} is unreachable ({err.strerror or type(err).__name__})"
    return None


_WARNED: set[str] = set()


def _offline_because(why: str) -> str:
    print(f"warning: W&B logs offline: {why}; sync the runs later with `wandb sync`, or set "
          "WANDB_MODE=offline to skip this check", file=sys.stderr, flush=True)
    return "offline"


def wandb_mode(logger_cfg: Mapping[str, Any]) -> str:
    """WANDB_MODE in the environment wins; `auto` means online with a key and a reachable W&B
    server, else offline (an unreachable server says so in one line)."""
    mode = os.environ.get("WANDB_MODE") or logger_cfg["mode"]
    if mode == "auto":
        if not has_wandb_key():
            return "offline"
        server = wandb_server()
        why = wandb_unreachable(server)
        if why is None:
            return "online"
        if why not in _WARNED:  # once per process, though asked at every run
            _WARNED.add(why)
            _offline_because(why)
        return "offline"
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

    def init(mode: str):
        return wandb.init(project=logger_cfg["project"], entity=logger_cfg.get("entity"),
                          mode=mode, dir=str(run_dir), config={**config, **(extra_config or {})},
                          reinit="create_new",
                          # x_disable_meta: wandb's metadata records the command line, which
                          # can hold a storage URL with its password (our tests caught it).
                          settings=wandb.Settings(console="off", silent=True,
                                                  x_disable_meta=True),
                          **init_kwargs)

    if mode != "online":
        return init(mode)
    try:
        return init(mode)
    except wandb.errors.Error as err:  # a key the server refuses, a server that went away
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return init(_offline_because(f"the W&B server refused or failed the run ({why[:200]})"))


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
