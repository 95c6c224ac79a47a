"""Command lines of rlsweep's own tools (evaluate, confirm, report): argparse, with the
`key=value` options they have always taken (`seeds=5`, like Hydra's overrides) and `--help`.
A bad command line raises UsageError, which each tool prints as one `error: ...; usage: ...`
line with exit status 2 (argparse itself would print two lines and exit)."""

from __future__ import annotations

import argparse
from typing import Mapping, Sequence


class UsageError(ValueError):
    """A bad command line; its message is one line ending with the usage."""


class KeyValueParser(argparse.ArgumentParser):
    """An ArgumentParser whose options are written `key=value` (`--key=value` works too).

    :param prog: the command, e.g. "python -m rlsweep.confirm"
    :param usage: the one-line usage shown by --help and after every error
    :param description: the text --help prints under the usage
    :param options: key -> (default, help) of each key=value option
    """

    def __init__(self, prog: str, usage: str, description: str,
                 options: Mapping[str, tuple[str | None, str]]):
        super().__init__(prog=prog, usage=usage, description=description,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
        self.keys = tuple(options)
        for key, (default, help_text) in options.items():
            self.add_argument(f"--{key}", default=default, metavar="VALUE",
                              help=f"{help_text} (written {key}=VALUE)")

    def error(self, message: str) -> None:  # argparse's own errors too
        raise UsageError(f"{message}; usage: {self.usage}")

    def parse(self, argv: Sequence[str]) -> argparse.Namespace:
        """Parse `argv`; `key=value` with an unknown key is an error naming it (a path holding
        `=` can be given as ./path)."""
        translated = []
        for arg in argv:
            key, sep, _ = arg.partition("=")
            if sep and not arg.startswith(("-", ".", "/")):
                if key not in self.keys:
                    self.error(f"unknown argument {key!r} in {arg!r}: allowed keys are "
                               + ", ".join(self.keys))
                arg = f"--{arg}"
            translated.append(arg)
        return self.parse_args(translated)
