"""`python -m rlsweep.report <sweep dir> [<sweep dir> ...] [out=PATH]`: compare sweeps.

Writes a self-contained HTML report (one sweep: <sweep dir>/report.html; several:
<first sweep dir>/compare.html), and a W&B Report when W&B is online.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rlsweep.arguments import KeyValueParser, UsageError
from rlsweep.report.build import report


PARSER = KeyValueParser(
    prog="python -m rlsweep.report",
    usage="python -m rlsweep.report SWEEP_DIR [SWEEP_DIR ...] [out=PATH]",
    description=__doc__.split("\n\n", 1)[1],
    options={"out": (None, "the report's path (default: see above)")})
PARSER.add_argument("sweep_dir", nargs="+", help="a sweep's hydra.sweep.dir")


def main(argv: list[str]) -> int:
    try:
        args = PARSER.parse(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    dirs = [Path(d) for d in args.sweep_dir]
    try:
        for line in report(dirs, out):
            print(line)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only sweep dir, a full disk
        where = Path(err.filename).parent if err.filename else "the report's folder"
        print(f"error: cannot write the report in {where}: {err.strerror or err}; "
              "give another place with out=PATH", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
