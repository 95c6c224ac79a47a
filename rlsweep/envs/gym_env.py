"""Any registered gymnasium env (`env=gym env.id=Pendulum-v1`), built by `gymnasium.make`.

A cheap env checks a whole pipeline (training, sweep, report) in seconds before hours on Lift.
Such envs report no task success: `conf/env/gym.yaml` says `reports_success: false`, so sweeps
rank them by return.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Mapping, Sequence

import gymnasium as gym
from hydra.utils import instantiate

from rlsweep.config import ConfigError, check_keywords, first_line, keyword_names


def make_gym_env(id: str, kwargs: Mapping[str, Any] | None = None,
                 wrappers: Sequence[Mapping[str, Any]] = (), horizon: int | None = None,
                 seed: int | None = None, render_mode: str | None = None) -> gym.Env:
    """`gymnasium.make(id, **kwargs)`, then each wrapper of `wrappers` in order.

    :param id: a registered gymnasium id (Pendulum-v1, CartPole-v1, HalfCheetah-v5, ...)
    :param kwargs: keyword arguments for the env's constructor
    :param wrappers: `{_target_: <gymnasium.Wrapper class>, <its kwargs>}` each, applied in order
    :param horizon: episode length (a `TimeLimit`); None keeps the env's registered limit
    :param seed: the first reset's seed is given by the VecEnv; kept for the factory signature
    """
    del seed  # SB3's VecEnv seeds the first reset (seed + rank), as for every env option
    env = gym.make(id, render_mode=render_mode, max_episode_steps=horizon, **dict(kwargs or {}))
    for wrapper in wrappers:
        env = instantiate(dict(wrapper), env=env)
    return env


def check_config(config: Mapping[str, Any]) -> None:
    """One-line `ConfigError` for an unregistered id (with close matches), before any env.

    `module:id` (gymnasium's own syntax for an env registered by importing a package) imports
    the module first, as `gymnasium.make` does, then looks the id up."""
    env_id = config.get("id")
    name = env_id
    if isinstance(env_id, str) and ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except Exception as err:  # not installed, or it raises while registering its envs
            raise ConfigError(f"env.id={env_id!r} is invalid: module {module!r} cannot be "
                              f"imported ({type(err).__name__}: {first_line(err)})") from None
    registered = sorted(gym.envs.registry)
    if name not in registered:
        close = difflib.get_close_matches(str(name), registered, n=3)
        raise ConfigError(f"env.id={env_id!r} is invalid: not a registered gymnasium id"
                          + (f"; close matches: {', '.join(close)}" if close else "")
                          + " (see gymnasium.envs.registry)")
    for wrapper in config.get("wrappers") or ():
        if "_target_" not in wrapper:
            raise ConfigError(f"env.wrappers: {dict(wrapper)} is invalid: each wrapper needs a "
                              "_target_ (a gymnasium.Wrapper class)")
    _check_constructor_keywords(config)


def _check_constructor_keywords(config: Mapping[str, Any]) -> None:
    """`env.kwargs` against the env's constructor (gymnasium.make passes them on) and each
    wrapper's keys against its class, so a mistyped argument is refused before any env."""
    from gymnasium.envs.registration import load_env_creator
    from hydra.utils import get_object

    try:
        entry = gym.spec(config["id"]).entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
    except Exception:  # the env's own package is missing: gymnasium.make says so when built
        entry, creator = None, None
    if creator is not None:
        allowed = keyword_names(creator, ("render_mode",))  # rlsweep passes render_mode itself
        check_keywords("env.kwargs", f"{config['id']} ({entry})", dict(config.get("kwargs") or {}),
                       None if allowed is None else sorted({*allowed, "disable_env_checker"}))
    for i, wrapper in enumerate(config.get("wrappers") or ()):
        try:
            cls = get_object(wrapper["_target_"])
        except Exception as err:
            raise ConfigError(f"env.wrappers[{i}]._target_={wrapper['_target_']!r} is invalid: "
                              f"cannot be imported ({first_line(err.__cause__ or err)})") from None
        check_keywords(f"env.wrappers[{i}]", wrapper["_target_"],
                       {k: v for k, v in wrapper.items() if k != "_target_"},
                       keyword_names(cls, ("env",)))


make_gym_env.check_config = check_config
