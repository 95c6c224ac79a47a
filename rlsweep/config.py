"""Structured-config schema and validation of a composed run config.

The dataclasses type every field users can type on the command line, so Hydra rejects
``trainer.total_timesteps=abc`` or an unknown key while composing. A key added with `+`
(``+trainer.total_timestep=10``) gets past Hydra, which opens the node for it, and nothing would
read it: `validate` refuses it, and checks what types cannot express (ranges, algorithm keyword
arguments, robosuite keyword arguments, observation keys) before any env is built, raising a
`ConfigError` whose message is one line naming the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

VEC_ENVS = ("dummy", "subproc")
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
    "n_steps": (int, 2, True, None),  # SB3 normalizes advantages over the rollout: >= 2 steps
    "batch_size": (int, 1, True, None),
    "n_epochs": (int, 1, True, None),
    "buffer_size": (int, 1, True, None),
    "learning_starts": (int, 0, True, None),
    "train_freq": (int, 1, True, None),
    "gradient_steps": (int, 1, True, None),
    "policy_delay": (int, 1, True, None),
}


MIN_CHECKPOINT_FREQ = 100  # env steps; a checkpoint holds the replay buffer (up to GBs)


class ConfigError(ValueError):
    """A user-facing configuration error; its message is one line naming the field."""


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
    # algo, env and reward are open dicts: their keys differ per option (each names what it
    # builds with `_target_`) and `validate` checks them against that target's signature.
    algo: Dict[str, Any] = field(default_factory=dict)
    env: Dict[str, Any] = field(default_factory=dict)
    reward: Dict[str, Any] = field(default_factory=dict)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0


ConfigStore.instance().store(name="rlsweep_schema", node=RunConfig)


def cpus_per_worker(n_envs: int, threads: int, seeds_per_trial: int = 1) -> int:
    """Cores one sweep worker keeps busy: per seed it trains in parallel, its env copies (each
    steps on a core) plus its torch/JAX threads. Cluster launcher presets ask for this many
    (`${rlsweep_cpus:${env.n_envs},${trainer.threads},${hydra.sweeper.seeds_per_trial}}`)."""
    return int(seeds_per_trial) * (int(n_envs) + int(threads))


OmegaConf.register_new_resolver("rlsweep_cpus", cpus_per_worker, replace=True)


def algo_kwargs(algo: DictConfig | dict) -> dict:
    """The SB3 constructor keyword arguments of an algo config (everything but our meta keys)."""
    plain = OmegaConf.to_container(algo, resolve=True) if isinstance(algo, DictConfig) else algo
    return {k: v for k, v in plain.items() if k not in ALGO_META_KEYS}


def option_name(option: DictConfig | dict) -> str:
    """What an option is called in titles and records: its `name`, else its target's last part
    (a user's yaml need not say `name`)."""
    return str(option.get("name") or str(option.get("_target_", "?")).rsplit(".", 1)[-1])


def first_line(message: object) -> str:
    """The first non-empty line of an error message ("" if it has none): errors reach users
    as one line."""
    return next((line.strip() for line in str(message).splitlines() if line.strip()), "")


def _fail(path: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{path}={value!r} is invalid: {expected}")


def check_choice(path: str, value: Any, allowed: tuple | list, suggest: bool = False) -> None:
    """ConfigError unless `value` is one of `allowed`; `suggest` adds close matches (long lists)."""
    if value not in allowed:
        close = difflib.get_close_matches(str(value), list(map(str, allowed)), n=3) if suggest else []
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{path}={value!r} is invalid{hint}: allowed values are "
                          + ", ".join(map(str, allowed)))


def unknown_key_message(path: str, key: str, allowed: Sequence[str]) -> str:
    """One line for a key a structured node does not have, naming the nearest allowed one and
    all of them (never the value: it may be a storage URL with its password).

    :param path: the node's dotted path ("" for the top level)
    :param key: the unknown key
    :param allowed: the node's keys
    """
    prefix = f"{path}." if path else ""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    return (f"{prefix}{key} is invalid: not a key of {path or 'the top-level config'}{hint}; "
            "allowed: " + ", ".join(allowed))


def check_known_keys(path: str, keys: Iterable[str], allowed: Sequence[str]) -> None:
    """ConfigError naming the first of `keys` that is not in `allowed`: a key added with `+` to
    a structured node, which nothing reads (a typo would be silently ignored)."""
    for key in keys:
        if key not in allowed:
            raise ConfigError(unknown_key_message(path, str(key), allowed))


def schema_keys(schema: type) -> list[str]:
    """The fields of a structured-config dataclass a user sets, in their order (not Hydra's
    `_target_`)."""
    return [f.name for f in dataclasses.fields(schema) if not f.name.startswith("_")]


# The structured groups of a run config: their keys are fixed by the schema.
STRUCTURED_GROUPS = {"policy": PolicyConfig, "trainer": TrainerConfig, "logger": LoggerConfig}


def check_number(path: str, value: Any, kind: type, low: float, inclusive: bool,
                 high: Optional[float] = None) -> None:
    """ConfigError unless `value` is a `kind` above `low` (>= if `inclusive`), at most `high`."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok_type = is_int if kind is int else (is_int or isinstance(value, float))
    bound = f"{'>=' if inclusive else '>'} {low}" + (f" and <= {high}" if high is not None else "")
    expected = f"must be {'an integer' if kind is int else 'a number'} {bound}"
    if not ok_type:
        _fail(path, value, expected)
    if (value < low if inclusive else value <= low) or (high is not None and value > high):
        _fail(path, value, expected)


def _import_target(group: str, option: DictConfig) -> Any:
    """The class or function an option names with `_target_` (ConfigError if it cannot)."""
    from hydra.utils import get_object

    target = option.get("_target_")
    if not target:
        raise ConfigError(f"{group}={option.get('name')!r} is invalid: its yaml names nothing to "
                          "build (_target_: <module>.<class or function>)")
    try:
        return get_object(target)
    except Exception as err:  # ImportError, AttributeError, or Hydra's wrapping of them
        raise ConfigError(f"{group}._target_={target!r} is invalid: cannot be imported "
                          f"({first_line(err.__cause__ or err)})") from None


def keyword_names(target: Any, reserved: tuple[str, ...]) -> list[str] | None:
    """Keyword arguments `target` accepts, minus those rlsweep passes itself; None: any."""
    params = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return sorted(set(params) - {"self", *reserved})


def check_keywords(group: str, target_name: str, kwargs: dict, allowed: list[str] | None) -> None:
    """ConfigError for the first of `kwargs` that `target_name` does not take (`allowed`, from
    `keyword_names`; None: it takes any)."""
    for key, value in kwargs.items():
        if allowed is not None and key not in allowed:
            _fail(f"{group}.{key}", value, f"not a {target_name} argument; "
                  + (f"allowed: {', '.join(allowed)}" if allowed else "it takes none here"))


def _run_target_check(target: Any, option: DictConfig) -> None:
    """An option's target may define `check_config(config)`: target-specific one-line errors
    (unknown robosuite task or gymnasium id, ...) before anything is built."""
    check = getattr(target, "check_config", None)
    if check is not None:
        check(OmegaConf.to_container(option, resolve=True))


def _check_ent_coef(value: Any) -> None:
    """A number >= 0, or for the SAC family "auto" / "auto_<initial value > 0>" (learned)."""
    if isinstance(value, str) and value.startswith("auto"):
        initial = value[len("auto_"):] if value.startswith("auto_") else "1.0"
        try:
            ok = value == "auto" or float(initial) > 0
        except ValueError:
            ok = False
        if not ok:
            _fail("algo.ent_coef", value, "must be a number >= 0, auto, or auto_<initial value > 0>")
        return
    check_number("algo.ent_coef", value, float, 0.0, True)


def _validate_algo(algo: DictConfig, targets: bool) -> None:
    if targets:
        cls = _import_target("algo", algo)
        allowed = keyword_names(cls, ALGO_RESERVED)
        check_keywords("algo", algo._target_, algo_kwargs(algo), allowed)
    for key, value in algo_kwargs(algo).items():
        if key in ALGO_NUMERIC:
            check_number(f"algo.{key}", value, *ALGO_NUMERIC[key])
    if "ent_coef" in algo:
        _check_ent_coef(algo.ent_coef)
    if not isinstance(algo.get("normalize", False), bool):
        _fail("algo.normalize", algo.normalize, "must be true or false")
    noise = algo.get("action_noise")
    if noise is not None:
        from rlsweep.algos import ACTION_NOISE

        check_known_keys("algo.action_noise", noise, ("type", "sigma"))
        check_choice("algo.action_noise.type", noise.get("type"), tuple(ACTION_NOISE))
        check_number("algo.action_noise.sigma", noise.get("sigma"), float, 0.0, True)


def _validate_env(env: DictConfig, targets: bool) -> None:
    from rlsweep.envs.build import env_kwargs

    check_number("env.n_envs", env.get("n_envs"), int, 1, True)
    check_choice("env.vec_env", env.get("vec_env"), VEC_ENVS)
    if not isinstance(env.get("reports_success"), bool):
        _fail("env.reports_success", env.get("reports_success"), "must be true or false")
    if env.get("horizon") is not None:
        check_number("env.horizon", env.horizon, int, 1, True)
    elif env.reports_success:  # the score's tie-break divides the return by it (study.py)
        raise ConfigError("env.horizon=None is invalid with env.reports_success=true: a success "
                          "score breaks ties by the return per env step of an episode, so the "
                          f"episode length must be known; set env.horizon{_registered_limit(env)}")
    if targets:
        target = _import_target("env", env)
        check_keywords("env", env._target_, env_kwargs(env),
                        keyword_names(target, ("seed", "render_mode")))
        _run_target_check(target, env)


def _registered_limit(env: DictConfig) -> str:
    """" (e.g. =200, ...)": the time limit gymnasium registers for the env's id, if it has one."""
    if not env.get("id"):
        return ""
    try:
        import gymnasium as gym

        steps = gym.spec(str(env.id)).max_episode_steps
    except Exception:  # not a registered id: its own check says so
        return ""
    return f"={steps} (the limit {env.id} registers)" if steps else ""


def _validate_reward(reward: DictConfig, env: DictConfig, targets: bool) -> None:
    if not targets:
        return
    import gymnasium as gym

    from rlsweep.envs.build import reward_kwargs

    target = _import_target("reward", reward)
    if not (inspect.isclass(target) and issubclass(target, gym.Wrapper)):
        _fail("reward._target_", reward._target_, "must name a gymnasium.Wrapper class")
    check_keywords("reward", reward._target_, reward_kwargs(reward),
                   keyword_names(target, ("env",)))
    if getattr(target, "needs_success", False) and not env.get("reports_success"):
        _fail("reward", option_name(reward), f"{reward._target_} pays on task success, and "
              f"env={option_name(env)} reports none (env.reports_success=false)")
    _run_target_check(target, reward)


def validate(cfg: DictConfig, targets: bool = True) -> None:
    """Check a composed run config; raise `ConfigError` on the first bad field.

    :param targets: also import each option's `_target_` and check the option's keys against
        what it takes (and its own `check_config`). A sweep's worker passes False for each
        trial: the sweep checked those for every cell and every end of every range before any
        job, and the import (SB3, torch, robosuite) would cost each worker seconds and hundreds
        of MB that only its training process needs.
    """
    # Hydra's own node is there when the command line's config is checked
    check_known_keys("", cfg, [*schema_keys(RunConfig), "hydra"])
    for group, schema in STRUCTURED_GROUPS.items():
        check_known_keys(group, cfg[group], schema_keys(schema))
    _validate_algo(cfg.algo, targets)
    _validate_env(cfg.env, targets)
    _validate_reward(cfg.reward, cfg.env, targets)
    check_choice("policy.activation", cfg.policy.activation, ACTIVATIONS)
    for size in cfg.policy.net_arch:
        check_number("policy.net_arch", size, int, 1, True)
    t = cfg.trainer
    check_number("trainer.total_timesteps", t.total_timesteps, int, 1, True)
    check_number("trainer.eval_freq", t.eval_freq, int, 1, True)
    check_number("trainer.eval_episodes", t.eval_episodes, int, 1, True)
    check_number("trainer.checkpoint_freq", t.checkpoint_freq, int, 0, True)
    if 0 < t.checkpoint_freq < MIN_CHECKPOINT_FREQ:
        _fail("trainer.checkpoint_freq", t.checkpoint_freq,
              f"must be 0 (no checkpoint) or >= {MIN_CHECKPOINT_FREQ} env steps: each checkpoint "
              "saves the model and the whole replay buffer")
    check_number("seed", cfg.seed, int, 0, True)
    check_number("trainer.threads", t.threads, int, 1, True)
    if t.stop_success_rate is not None:
        check_number("trainer.stop_success_rate", t.stop_success_rate, float, 0.0, False, 1.0)
        if not cfg.env.get("reports_success"):  # it would never stop the run
            _fail("trainer.stop_success_rate", t.stop_success_rate,
                  f"env={option_name(cfg.env)} reports no task success (env.reports_success="
                  "false); leave it null")
    check_number("trainer.stop_success_evals", t.stop_success_evals, int, 1, True)
    check_number("trainer.progress_s", t.progress_s, float, 0.0, True)
    learning_starts = cfg.algo.get("learning_starts")
    if t.eval_freq > t.total_timesteps and learning_starts is not None \
            and t.total_timesteps <= learning_starts:
        # Only the final evaluation, of a policy that never trained. (eval_freq above the
        # budget alone is a way to ask for just the final evaluation; sweeps refuse it, since
        # their pruner needs evaluations.)
        raise ConfigError(f"trainer.eval_freq={t.eval_freq} is invalid: larger than "
                          f"trainer.total_timesteps={t.total_timesteps}, which ends before "
                          f"algo.learning_starts={learning_starts}, so the run's only evaluation "
                          "would be of an untrained policy; use eval_freq <= total_timesteps and "
                          "total_timesteps > learning_starts")
    check_choice("trainer.device", t.device, DEVICES)
    check_choice("logger.name", cfg.logger.name, ("wandb", "none"))
    check_choice("logger.mode", cfg.logger.mode, LOGGER_MODES)
