"""`python -m rlsweep.report <sweep dir> [<sweep dir> ...] [out=PATH]`: compare sweeps.

Writes a self-contained HTML report (one sweep: <sweep dir>/report.html; several:
<first sweep dir>/compare.html), and a W&B Report when W&B is online.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rlsweep.report.build import report


def main(argv: list[str]) -> int:
    out = next((Path(a.split("=", 1)[1]) for a in argv if a.startswith("out=")), None)
    dirs = [Path(a) for a in argv if not a.startswith("out=")]
    if not dirs:
        print("error: sweep dirs are required: python -m rlsweep.report <sweep dir>... [out=PATH]",
              file=sys.stderr)
        return 2
    try:
        for line in report(dirs, out):
            print(line)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
