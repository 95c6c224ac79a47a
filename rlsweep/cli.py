"""Checks of the command line that run before Hydra, so bad input costs one line, not a trace.

Hydra reports an unknown group option or a mistyped value as a multi-line message; a run that
composes fine but has a bad value would only fail once envs are built. `preflight` turns all of
these into one line naming the field and the allowed values, before any env exists.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import re
import sys
from pathlib import Path
from typing import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from rlsweep.config import ConfigError, first_line, schema_keys, unknown_key_message, validate
from rlsweep.credentials import (PASSWORD_ENV, check_storage_password, mask_credentials,
                                 password_from_env)
from rlsweep.existing_run import check_run_dir
from rlsweep.sweep.space import SWEEP_GROUPS

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def _flag_values(argv: Sequence[str], names: tuple[str, ...]) -> list[str]:
    """The values given to one of Hydra's flags, as `--flag VALUE` or `--flag=VALUE`."""
    values = []
    for i, arg in enumerate(argv):
        flag, equals, value = arg.partition("=")
        if flag in names and equals:
            values.append(value)
        elif arg in names and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def config_dirs(argv: Sequence[str]) -> list[str]:
    """Directories given with `--config-dir DIR` / `-cd DIR` (Hydra adds them to its search path)."""
    return [str(Path(d).resolve()) for d in _flag_values(argv, ("--config-dir", "-cd"))]


def primary_config(argv: Sequence[str]) -> tuple[Path, str]:
    """The primary config Hydra will load: `--config-path/-cp DIR` (relative to the package, as
    Hydra resolves it for `python -m rlsweep`) and `--config-name/-cn NAME`, else conf/config."""
    paths = _flag_values(argv, ("--config-path", "-cp"))
    names = _flag_values(argv, ("--config-name", "-cn"))
    path = (Path(__file__).resolve().parent / paths[-1]).resolve() if paths else CONF_DIR
    return path, names[-1] if names else "config"


def _searchpath(dirs: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """The override that adds `dirs` to Hydra's search path (unless the user set it)."""
    if not dirs or any(o.lstrip("+").startswith("hydra.searchpath=") for o in overrides):
        return []
    return ["hydra.searchpath=[" + ",".join(f"file://{d}" for d in dirs) + "]"]


def group_options(group: str, overrides: Sequence[str] = (), dirs: Sequence[str] = ()) -> list[str]:
    """Options of a config group: conf/ plus any user config dir on the search path."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        search = [o for o in overrides if o.lstrip("+").startswith("hydra.searchpath=")]
        return sorted(loader.get_group_options(group, config_name="config",
                                               overrides=search + _searchpath(dirs, overrides)))


def _user_overrides(argv: list[str]) -> list[str]:
    """Command-line overrides (not Hydra's own flags like -m or --cfg)."""
    return [a for a in argv if not a.startswith("-") and "=" in a]


def check_group_choices(overrides: list[str], dirs: Sequence[str] = ()) -> None:
    """Every `group=option` (including sweep lists like `algo=ppo,sac`) must name a config file."""
    for override in OverridesParser.create().parse_overrides(overrides):
        group = override.key_or_group
        if override.package is not None or group not in SWEEP_GROUPS or override.is_delete():
            continue
        allowed = group_options(group, overrides, dirs)
        for choice in override.sweep_string_iterator() if override.is_sweep_override() \
                else [override.get_value_element_as_str()]:
            if choice not in allowed:
                raise ConfigError(f"{group}={choice!r} is invalid: allowed values are "
                                  + ", ".join(allowed))


def compose_config(overrides: Sequence[str], return_hydra_config: bool = False,
                   dirs: Sequence[str] = (), primary: tuple[Path, str] = (CONF_DIR, "config")
                   ) -> DictConfig:
    """The run config exactly as `python -m rlsweep [--config-dir D...] <overrides>` composes it
    (the schema is registered by importing rlsweep.config, which this module does).

    :param primary: the primary config's dir and name (`primary_config` of a command line)
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(primary[0]), version_base="1.3"):
        return compose(primary[1], overrides=[*overrides, *_searchpath(dirs, overrides)],
                       return_hydra_config=return_hydra_config)


def check_composed(overrides: list[str], multirun: bool, dirs: Sequence[str] = (),
                   primary: tuple[Path, str] = (CONF_DIR, "config")) -> None:
    """Compose the config as Hydra will (Hydra's own node included) and validate it.

    In a sweep only the fixed overrides are composed here; the sweeper validates every cell.
    """
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    try:
        cfg = compose_config(fixed, return_hydra_config=True, dirs=dirs, primary=primary)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_one_line(err)) from None
    # A config may set the mode itself (a sweep preset: `hydra.mode: MULTIRUN`), as Hydra reads it.
    multirun = multirun or OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN
    check_storage_password(cfg, multirun)
    check_sections(cfg, primary)
    if multirun:
        check_sweeper_resolves(cfg)
        check_launcher_installed(cfg)
    else:
        validate(cfg)
        # before Hydra writes .hydra/ there: a finished run or a checkpoint is never trained over
        check_run_dir(Path(cfg.hydra.run.dir), cfg.trainer.resume)


def check_sections(cfg: DictConfig, primary: tuple[Path, str]) -> None:
    """ConfigError if a group's section (algo, env, ..., logger) is not a mapping: with a
    primary config that has no defaults list (a run's or trial's composed config.yaml given
    with --config-path/--config-name), `logger=none` replaces the whole section by a string,
    which would fail later as an AttributeError."""
    for group in SWEEP_GROUPS:
        value = cfg.get(group)
        if value is not None and not isinstance(value, DictConfig):
            raise ConfigError(
                f"{group}={value!r} is invalid with --config-name {primary[1]} "
                f"(in {primary[0]}): that config has no {group} config group (a composed "
                f"config.yaml has no defaults list), so {group}=... sets its whole {group} "
                f"section; set its fields instead, e.g. {group}.name=...")


# Launchers whose package is an optional extra: launcher class -> (module, extra).
LAUNCHER_EXTRAS = {"hydra_plugins.rlsweep_ray_launcher.ray_launcher.RayLauncher": ("ray", "ray")}


def check_launcher_installed(cfg: DictConfig) -> None:
    """ConfigError if the chosen launcher needs an extra that is not installed: otherwise each
    job would die importing it (ModuleNotFoundError per worker) and the sweep would end
    saying "rerun the same command to resume", which cannot help."""
    needs = LAUNCHER_EXTRAS.get(cfg.hydra.launcher.get("_target_", ""))
    if needs is None:
        return
    module, extra = needs
    try:
        importlib.import_module(module)
    except ImportError as err:
        name = cfg.hydra.runtime.choices.get("hydra/launcher") or module
        raise ConfigError(f"hydra/launcher={name} needs the {extra} extra, which is not "
                          f"installed ({first_line(err)}): install the {extra} extra: "
                          f"pip install -e '.[{extra}]'") from None


def check_sweeper_resolves(cfg: DictConfig) -> None:
    """ConfigError naming the field and the variable if a `hydra.sweeper` setting reads an
    unset environment variable, e.g. `storage=postgresql://u:${oc.env:VAR}@host/db` with VAR unset: Hydra
    resolves the settings when it builds the sweeper, and would fail in 3 chained tracebacks.
    The resolved values are not kept (the password stays in memory only, never printed)."""
    try:
        OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "hydra.sweeper"
        unset = re.search(r"Environment variable '([^']+)' not found", str(err))
        if unset:  # other failures (e.g. `${hydra:...}`, set only once Hydra runs) are Hydra's
            raise ConfigError(f"{key} is invalid: it reads the environment variable "
                              f"{unset[1]}, which is not set; export {unset[1]}") from None


def _one_line(err: BaseException) -> str:
    """Hydra/OmegaConf errors span lines (override, reason, full_key, ...): keep what and why.

    Hydra lists a group's options one a line under "Available options in '<group>':"; they
    become "allowed values are a, b". Hydra's advice to add a key with `+` is dropped where the
    node is structured (trainer, policy, logger, hydra.sweeper, ...): nothing would read the key.
    """
    cause = err.__cause__
    schema = getattr(cause, "object_type", None)
    unknown_key = isinstance(cause, (ConfigAttributeError, ConfigKeyError))
    if unknown_key and dataclasses.is_dataclass(schema) and cause.key not in schema_keys(schema):
        return unknown_key_message(str(cause.full_key).rpartition(".")[0], str(cause.key),
                                   schema_keys(schema))
    lines = str(err).strip().splitlines()
    what = [line for line in lines if line.strip()]
    if err.__cause__:
        why = [line for line in str(err.__cause__).strip().splitlines() if line.strip()][:1]
    else:
        why = what[1:2]
    listed = next((i for i, line in enumerate(lines) if line.startswith("Available options in")), None)
    if listed is not None:
        options = itertools.takewhile(lambda line: line.startswith("\t"), lines[listed + 1:])
        why = ["allowed values are " + ", ".join(option.strip() for option in options)]
    hint = [line for line in what[1:] if line.startswith("To append")]  # Hydra's "+key" advice
    return ": ".join([what[0].rstrip(".")] + why + hint)


def _unparsable(overrides: list[str], err: Exception) -> str:
    """Name the override Hydra's grammar rejected (its own message names only a token), with
    any URL password masked: the token Hydra quotes may be a piece of the password, so the
    reason given is the one for the masked override."""
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException as own:
            shown = mask_credentials(override)
            if shown == override:
                return f"{override!r} cannot be parsed: {first_line(own)}"
            try:
                parser.parse_overrides([shown])
            except OverrideParseException as masked:
                return f"{shown!r} cannot be parsed: {first_line(masked)}"
            return (f"{shown!r} cannot be parsed: its password holds characters Hydra's "
                    "override grammar reserves (such as ( ) [ ] { } = , # ' or spaces); "
                    f"export {PASSWORD_ENV} and use '{password_from_env(shown)}' "
                    "(docs/cluster.md)")
    return first_line(err)


def preflight(argv: list[str]) -> None:
    """Exit with one `error: ...` line (status 2) if the command line is bad."""
    overrides = _user_overrides(argv)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    dirs = config_dirs(argv)
    try:
        for config_dir in dirs:  # Hydra only warns and goes on without it
            if not Path(config_dir).is_dir():
                raise ConfigError(f"--config-dir {config_dir} is invalid: no such directory")
        check_group_choices(overrides, dirs)
        check_composed(overrides, multirun, dirs, primary_config(argv))
    except OverrideParseException as err:
        print(f"error: {mask_credentials(_unparsable(overrides, err))}", file=sys.stderr)
        sys.exit(2)
    except ConfigError as err:  # Hydra's messages may repeat an override, password included
        print(f"error: {mask_credentials(str(err))}", file=sys.stderr)
        sys.exit(2)
