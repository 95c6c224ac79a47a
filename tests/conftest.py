"""Shared fixtures: composed configs, a real Lift env, and a safe W&B/GL environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests never talk to the W&B cloud, whatever keys the developer's machine has.
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("MUJOCO_GL", "egl")

ROOT = Path(__file__).resolve().parent.parent


def require_installed(installed: bool, what: str) -> None:
    """Skip a test whose outside part (a Debian package, an extra) is missing on this machine;
    in CI, which installs every one, fail instead: a skipped engine is an untested path.

    :param installed: whether it is there
    :param what: what to install and who does, e.g. "Debian's postgresql (.ci/run installs it)"
    """
    if not installed:
        assert not os.environ.get("CI"), f"CI must install {what}"
        pytest.skip(f"not installed: {what}")
TINY = ["env.horizon=40", "trainer.eval_episodes=1"]

# The test layers: `make test-fast` runs the tests not marked slow, which stay in this process
# (plus the sweep's own trainer processes). A test that starts a command-line app (a Hydra
# subprocess: `python -m rlsweep ...`, `rlsweep.confirm`, `bench`, ...) belongs to the slow layer;
# the guard below makes an unmarked one fail instead of quietly slowing the fast layer down.
IN_PROCESS_MODULES = {"rlsweep.sweep.seeds"}  # the trainer process a worker keeps, not an app
_cli_forbidden = False


def _starts_an_app(argv: list) -> str | None:
    if not argv or "python" not in os.path.basename(str(argv[0])):
        return None
    argv = [str(a) for a in argv]
    for flag, module in zip(argv, argv[1:]):
        if flag == "-m" and module.split(".")[0] in {"rlsweep", "bench"} \
                and module not in IN_PROCESS_MODULES:
            return module
    return None


class _LayeredPopen(subprocess.Popen):
    def __init__(self, args, *rest, **kwargs):
        if not isinstance(args, (str, bytes, os.PathLike)):
            args = list(args)  # an iterator would be used up by the check
        module = _starts_an_app([args] if isinstance(args, (str, bytes, os.PathLike)) else args)
        if _cli_forbidden and module:
            raise RuntimeError(f"this test starts `python -m {module}`: mark it "
                               "@pytest.mark.slow (the fast layer stays in process)")
        super().__init__(args, *rest, **kwargs)


subprocess.Popen = _LayeredPopen


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    # Set before the item's fixtures (module-scoped ones included) start anything.
    global _cli_forbidden
    _cli_forbidden = item.get_closest_marker("slow") is None
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    global _cli_forbidden
    _cli_forbidden = False


def compose_cfg(*overrides: str):
    """The run config exactly as `python -m rlsweep <overrides>` composes it."""
    from rlsweep.cli import compose_config

    return compose_config(overrides)


def run_cli(*args: str, module: str = "rlsweep", env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m <module> <args>` as a user would; capture text output."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def lift_env_factory():
    """Build real Lift envs from config overrides (each call a new env), closed after the test.

    Function scope on purpose: each Lift env holds ~100 MB resident and reserves a 1.3 GB MuJoCo
    arena, and a test process that kept every env alive reached 4.5 GB resident / 43 GB virtual
    (a CI run then failed to spawn ffmpeg with ENOMEM).
    """
    from omegaconf import OmegaConf

    from rlsweep.envs.build import make_env

    made = []

    def make(*overrides: str, seed: int = 0, render_mode=None):
        cfg = compose_cfg(*overrides)
        env = make_env(OmegaConf.to_container(cfg.env), OmegaConf.to_container(cfg.reward),
                            seed=seed, render_mode=render_mode)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()
