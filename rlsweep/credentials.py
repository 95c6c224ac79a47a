"""Passwords in storage URLs: masked in any text we echo.

An error that echoes an override (Hydra's parser, its "To append ... use +<override>" advice)
would print the password of `hydra.sweeper.storage=postgresql://user:password@host/db`;
`mask_credentials` hides it.
"""

from __future__ import annotations

import re

PASSWORD_ENV = "RLSWEEP_DB_PASSWORD"  # the variable docs/cluster.md exports

# scheme://user:password@ . The password runs to the last @ before the line or the next URL
# ends (not to the first @, as URL parsers do), so an unencoded @ or a space in it is masked
# too; masking a little more than the password is harmless.
_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>(?:(?!://)[^\n])*)@")
# A password that is one interpolation without arguments (`${oc.env:VAR}`) names where it comes
# from, not what it is: shown as is. A default (`${oc.env:VAR,pw}`) may be the password itself.
_INTERPOLATION = re.compile(r"\$\{[\w.:\-]+\}")


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
