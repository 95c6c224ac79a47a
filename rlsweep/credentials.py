"""Passwords in storage URLs: masked in any text we echo, and kept off disk.

An error that echoes an override (Hydra's parser, its "To append ... use +<override>" advice)
would print the password of `hydra.sweeper.storage=postgresql://user:password@host/db`;
`mask_credentials` hides it. And some of Hydra's paths write the whole config, password
included: a single run saves it to `.hydra/hydra.yaml`, the submitit launchers pickle it into
`.submitit/<job>/*.pkl` (mode 0644). `check_storage_password` refuses a literal password
there; `${oc.env:RLSWEEP_DB_PASSWORD}` in its place stays unresolved in every copy Hydra
writes and is resolved only in memory (docs/cluster.md).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from omegaconf import DictConfig, OmegaConf

from rlsweep.config import ConfigError

PASSWORD_ENV = "RLSWEEP_DB_PASSWORD"  # the variable docs/cluster.md exports

# scheme://user:password@ . The password runs to the last @ before the line or the next URL
# ends (not to the first @, as URL parsers do), so an unencoded @ or a space in it is masked
# too; masking a little more than the password is harmless.
_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>(?:(?!://)[^\n])*)@")
# A password that is one interpolation without arguments (`${oc.env:VAR}`) names where it comes
# from, not what it is: shown as is. A default (`${oc.env:VAR,pw}`) may be the password itself.
_INTERPOLATION = re.compile(r"\$\{[\w.:\-]+\}")

# Launchers that hand the config to their jobs in memory or through pipes, never in a file
# (an strace of a joblib/loky sweep showed the pickled config crossing pipes only).
IN_MEMORY_LAUNCHERS = ("hydra._internal.core_plugins.basic_launcher.BasicLauncher",
                       "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")


def _written_out(password: str) -> bool:
    return bool(password) and not _INTERPOLATION.fullmatch(password)


def mask_credentials(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` replaced by *** (an
    `${oc.env:...}` in its place is kept: it names a variable, not the password)."""
    return _USERINFO.sub(
        lambda m: f"{m['head']}:***@" if _written_out(m["password"]) else m[0], text)


def password_from_env(text: str) -> str:
    """`text` with every URL password replaced by the interpolation docs/cluster.md
    recommends, to show the user the safe form of what they typed."""
    return _USERINFO.sub(
        lambda m: f"{m['head']}:${{oc.env:{PASSWORD_ENV}}}@" if m["password"] else m[0], text)


def quote_password(url: str) -> str:
    """`url` with its password percent-encoded, as SQLAlchemy reads URLs: a password holding
    `@` would otherwise end at its first `@` (the rest read as the host), and one holding `{`
    or `}` would break Optuna, which calls `url.format()`. A `%` is kept as is, so a password
    already encoded (SQLAlchemy's documented form) stays the same."""
    return _USERINFO.sub(lambda m: f"{m['head']}:{quote(m['password'], safe='%')}@", url, count=1)


def literal_password(url: str) -> str | None:
    """The password written out in `url`; None if it has none or it is one interpolation
    (`${oc.env:...}`), which Hydra never resolves in what it writes."""
    match = _USERINFO.search(url)
    return match["password"] if match and _written_out(match["password"]) else None


def _launcher_writes(cfg: DictConfig) -> str:
    """Where the multirun launcher puts each job's config on disk ("" if it does not)."""
    target = cfg.hydra.launcher.get("_target_", "")
    if target in IN_MEMORY_LAUNCHERS:
        return ""
    name = cfg.hydra.runtime.choices.get("hydra/launcher") or target
    if "submitit" in target:
        return f"hydra/launcher={name} writes it to disk in each job's pickle (.submitit/)"
    return (f"hydra/launcher={name} may write it to disk with each job's config (only "
            "joblib and basic are known not to)")


def check_storage_password(cfg: DictConfig, multirun: bool) -> None:
    """ConfigError (password masked) if `hydra.sweeper.storage` holds a literal password
    that Hydra would write to disk: a single run's .hydra/hydra.yaml, a pickling launcher.

    `cfg` is the composed config with Hydra's node, not resolved: an unset variable in an
    interpolation is the worker's business, and resolving would put the password in it."""
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)
    storage = sweeper.get("storage") if isinstance(sweeper, dict) else None
    if not isinstance(storage, str) or literal_password(storage) is None:
        return
    use_env = (f"export {PASSWORD_ENV} and use "
               f"'hydra.sweeper.storage={password_from_env(storage)}' (docs/cluster.md)")
    if multirun:
        writes = _launcher_writes(cfg)
        fix = use_env
    elif cfg.hydra.output_subdir is not None:
        writes = (f"a single run would write it to {cfg.hydra.output_subdir}/hydra.yaml in "
                  "its run dir, and never uses it")
        fix = f"drop it, or {use_env}"
    else:
        return
    if writes:
        raise ConfigError(f"hydra.sweeper.storage={mask_credentials(storage)} holds a "
                          f"password: {writes}; {fix}")
