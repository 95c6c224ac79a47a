"""One env as a run's config says: the env option's `_target_`, then the reward option's.

Both are built with Hydra's `instantiate`: the env target gets the env option's keys (except
rlsweep's own: `ENV_META_KEYS`) plus `seed` and `render_mode`; the reward target is a
`gymnasium.Wrapper` class, given the env as `env=` plus the reward option's keys.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from rlsweep.config import ConfigError

# Keys of an env option that are rlsweep's (how many copies, how run, what it reports), not the
# target's keyword arguments.
ENV_META_KEYS = ("_target_", "name", "n_envs", "vec_env", "reports_success")
REWARD_META_KEYS = ("_target_", "name")


def env_kwargs(env_cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in env_cfg.items() if k not in ENV_META_KEYS}


def reward_kwargs(reward_cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reward_cfg.items() if k not in REWARD_META_KEYS}


def make_env(env_cfg: Mapping[str, Any], reward_cfg: Mapping[str, Any], seed: int | None,
             render_mode: str | None = None) -> gym.Env:
    """The env option's env (with its time limit), wrapped by the reward option's wrapper."""
    env = _instantiate({"_target_": env_cfg["_target_"], **env_kwargs(env_cfg)},
                       seed=seed, render_mode=render_mode)
    return _instantiate({"_target_": reward_cfg["_target_"], **reward_kwargs(reward_cfg)}, env=env)


def _instantiate(spec: dict, **kwargs):
    """Hydra's instantiate, letting a target's own ConfigError (one line for the user) through
    instead of Hydra's multi-line wrapping of it."""
    try:
        return instantiate(spec, **kwargs, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise
