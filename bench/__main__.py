"""Run every benchmark once, side by side on this machine, and write bench/results.{md,json}."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from bench import sweeper_bench

RESULTS = Path(__file__).resolve().parent


def main() -> None:
    results = {"machine": {"python": platform.python_version(), "cpu": platform.processor(),
                           "cores": __import__("os").cpu_count(),
                           "date": time.strftime("%Y-%m-%d %H:%M:%S")},
               "sweeper": sweeper_bench.run()}
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2))
    md = ["# Benchmark results", "",
          f"Measured {results['machine']['date']} on {results['machine']['cores']} cores, "
          f"Python {results['machine']['python']}. Rerun with `make bench`.", "",
          sweeper_bench.markdown(results["sweeper"])]
    (RESULTS / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
