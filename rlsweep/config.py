"""Structured-config schema and validation of a composed run config.

The dataclasses type every field users can type on the command line, so Hydra rejects
``trainer.total_timesteps=abc`` or an unknown key while composing. `validate` then checks what
types cannot express (ranges, algorithm keyword arguments, robosuite keyword arguments,
observation keys) before any env is built, raising a `ConfigError` whose message is one line
naming the field and the allowed values.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

ALGOS = ("a2c", "ppo", "sac", "td3", "sbx_sac", "sbx_tqc")
REWARDS = ("dense", "sparse", "staged")
VEC_ENVS = ("dummy", "subproc")
ENV_BACKENDS = ("fast", "robosuite")
ACTIVATIONS = ("tanh", "relu", "elu", "leaky_relu")
LOGGER_MODES = ("auto", "offline", "online", "disabled")
DEVICES = ("cpu", "cuda", "auto")
# Keys of an algo config that are ours, not the SB3 constructor's.
ALGO_META_KEYS = ("_target_", "name", "normalize", "search_space")
# SB3 constructor arguments that rlsweep sets itself from other groups.
ALGO_RESERVED = ("policy", "env", "seed", "device", "policy_kwargs", "verbose", "tensorboard_log",
                 "_init_setup_model")
# Numeric SB3 kwargs we range-check: name -> (type, lower bound, inclusive?, upper bound or None).
ALGO_NUMERIC = {
    "learning_rate": (float, 0.0, False, None),
    "gamma": (float, 0.0, False, 1.0),
    "gae_lambda": (float, 0.0, False, 1.0),
    "tau": (float, 0.0, False, 1.0),
    "clip_range": (float, 0.0, False, None),
    "vf_coef": (float, 0.0, True, None),
    "max_grad_norm": (float, 0.0, False, None),
    "target_policy_noise": (float, 0.0, True, None),
    "target_noise_clip": (float, 0.0, True, None),
    "n_steps": (int, 1, True, None),
    "batch_size": (int, 1, True, None),
    "n_epochs": (int, 1, True, None),
    "buffer_size": (int, 1, True, None),
    "learning_starts": (int, 0, True, None),
    "train_freq": (int, 1, True, None),
    "gradient_steps": (int, 1, True, None),
    "policy_delay": (int, 1, True, None),
}


class ConfigError(ValueError):
    """A user-facing configuration error; its message is one line naming the field."""


@dataclass
class EnvConfig:
    name: str = "Lift"
    n_envs: int = 1
    vec_env: str = "dummy"
    backend: str = "fast"
    horizon: int = 200
    obs_keys: List[str] = field(default_factory=lambda: ["object-state", "robot0_proprio-state"])
    robosuite: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PolicyConfig:
    name: str = "medium"
    net_arch: List[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    search_space: Dict[str, Any] = field(default_factory=dict)  # swept with the algo's space


@dataclass
class TrainerConfig:
    total_timesteps: int = 300000
    eval_freq: int = 10000
    eval_episodes: int = 20
    deterministic_eval: bool = True
    checkpoint_freq: int = 0
    resume: bool = False
    stop_success_rate: Optional[float] = None
    stop_success_evals: int = 1
    progress_s: float = 30.0
    device: str = "cpu"
    threads: int = 1


@dataclass
class LoggerConfig:
    name: str = "wandb"
    project: str = "rlsweep"
    entity: Optional[str] = None
    mode: str = "offline"


@dataclass
class RunConfig:
    # algo and reward are open dicts: their keys differ per option and are checked by `validate`.
    algo: Dict[str, Any] = field(default_factory=dict)
    env: EnvConfig = field(default_factory=EnvConfig)
    reward: Dict[str, Any] = field(default_factory=dict)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0


ConfigStore.instance().store(name="rlsweep_schema", node=RunConfig)


def algo_kwargs(algo: DictConfig | dict) -> dict:
    """The SB3 constructor keyword arguments of an algo config (everything but our meta keys)."""
    plain = OmegaConf.to_container(algo, resolve=True) if isinstance(algo, DictConfig) else algo
    return {k: v for k, v in plain.items() if k not in ALGO_META_KEYS}


def first_line(message: object) -> str:
    """The first non-empty line of an error message ("" if it has none): errors reach users
    as one line."""
    return next((line.strip() for line in str(message).splitlines() if line.strip()), "")


def _fail(path: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{path}={value!r} is invalid: {expected}")


def _check_choice(path: str, value: Any, allowed: tuple | list) -> None:
    if value not in allowed:
        _fail(path, value, f"allowed values are {', '.join(map(str, allowed))}")


def _check_number(path: str, value: Any, kind: type, low: float, inclusive: bool,
                  high: Optional[float] = None) -> None:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok_type = is_int if kind is int else (is_int or isinstance(value, float))
    bound = f"{'>=' if inclusive else '>'} {low}" + (f" and <= {high}" if high is not None else "")
    expected = f"must be {'an integer' if kind is int else 'a number'} {bound}"
    if not ok_type:
        _fail(path, value, expected)
    if (value < low if inclusive else value <= low) or (high is not None and value > high):
        _fail(path, value, expected)


def _validate_algo(algo: DictConfig) -> None:
    _check_choice("algo.name", algo.get("name"), ALGOS)
    from rlsweep.algos import algo_class  # SB3 import is deferred: it costs ~1 s

    try:
        cls = algo_class(algo)
    except (ValueError, ImportError) as err:
        raise ConfigError(first_line(err)) from None
    allowed = sorted(set(inspect.signature(cls.__init__).parameters)
                     - {"self", *ALGO_RESERVED})
    for key, value in algo_kwargs(algo).items():
        if key not in allowed:
            _fail(f"algo.{key}", value, f"not a {algo._target_} argument; allowed: "
                  + ", ".join(allowed))
        if key in ALGO_NUMERIC:
            _check_number(f"algo.{key}", value, *ALGO_NUMERIC[key])
    if not isinstance(algo.get("normalize", False), bool):
        _fail("algo.normalize", algo.normalize, "must be true or false")


def _validate_env(env: DictConfig) -> None:
    from rlsweep.envs.lift import LIFT_OBS_KEYS, robosuite_kwarg_names

    _check_choice("env.name", env.name, ("Lift",))
    _check_number("env.n_envs", env.n_envs, int, 1, True)
    _check_number("env.horizon", env.horizon, int, 1, True)
    _check_choice("env.vec_env", env.vec_env, VEC_ENVS)
    _check_choice("env.backend", env.backend, ENV_BACKENDS)
    if not env.obs_keys:
        _fail("env.obs_keys", list(env.obs_keys), "needs at least one of " + ", ".join(LIFT_OBS_KEYS))
    for key in env.obs_keys:
        _check_choice("env.obs_keys", key, LIFT_OBS_KEYS)
    allowed = robosuite_kwarg_names()
    for key in env.robosuite:
        if key not in allowed:
            _fail(f"env.robosuite.{key}", env.robosuite[key],
                  "not a robosuite Lift argument; allowed: " + ", ".join(allowed))


def _validate_reward(reward: DictConfig) -> None:
    _check_choice("reward.name", reward.get("name"), REWARDS)
    for key in ("reach_weight", "grasp_weight", "lift_weight"):
        if key in reward:
            _check_number(f"reward.{key}", reward[key], float, 0.0, True)
    if "lift_target_m" in reward:
        _check_number("reward.lift_target_m", reward.lift_target_m, float, 0.0, False)


def validate(cfg: DictConfig) -> None:
    """Check a composed run config; raise `ConfigError` on the first bad field."""
    _validate_algo(cfg.algo)
    _validate_env(cfg.env)
    _validate_reward(cfg.reward)
    _check_choice("policy.activation", cfg.policy.activation, ACTIVATIONS)
    for size in cfg.policy.net_arch:
        _check_number("policy.net_arch", size, int, 1, True)
    t = cfg.trainer
    _check_number("trainer.total_timesteps", t.total_timesteps, int, 1, True)
    _check_number("trainer.eval_freq", t.eval_freq, int, 1, True)
    _check_number("trainer.eval_episodes", t.eval_episodes, int, 1, True)
    _check_number("trainer.checkpoint_freq", t.checkpoint_freq, int, 0, True)
    _check_number("trainer.threads", t.threads, int, 1, True)
    if t.stop_success_rate is not None:
        _check_number("trainer.stop_success_rate", t.stop_success_rate, float, 0.0, False, 1.0)
    _check_number("trainer.stop_success_evals", t.stop_success_evals, int, 1, True)
    _check_number("trainer.progress_s", t.progress_s, float, 0.0, True)
    _check_choice("trainer.device", t.device, DEVICES)
    _check_choice("logger.name", cfg.logger.name, ("wandb", "none"))
    _check_choice("logger.mode", cfg.logger.mode, LOGGER_MODES)
