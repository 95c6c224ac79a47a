"""Run the benchmarks on this machine and write bench/results.{md,json}.

`python -m bench` (`make bench`) runs every section in one run. `python -m bench env` reruns
only the named sections and keeps the others' last results, each with its own date.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench import (env_bench, fault_bench, sac_speed_bench, search_bench, solve_bench,
                   sweeper_bench, tuning_bench)
from rlsweep.files import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).resolve().parent
SECTIONS = {
    "solve": solve_bench, "tuning": tuning_bench, "sac_speed": sac_speed_bench, "env": env_bench,
    "sweeper": sweeper_bench, "faults": fault_bench, "search": search_bench,
}  # report order


def main(names: list[str]) -> None:
    unknown = set(names) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"bench: unknown section {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(SECTIONS)}")
    path = RESULTS / "results.json"
    machine = {"python": platform.python_version(), "cores": os.cpu_count(), "cpu": cpu()}
    results: dict = {}
    for name in names or SECTIONS:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        measured = {"date": started, "machine": machine, **SECTIONS[name].run()}
        # Read the file again just before writing: a section can run for hours, and another
        # bench run may have written its sections meanwhile. Only this section is replaced;
        # the others keep their own dates (a finished section is never lost). Under a lock,
        # so two runs finishing at once take turns; written whole (a rename), so a reader
        # or a crash never sees half a file.
        with _locked(path.with_name(".results.lock")):
            results = json.loads(path.read_text()) if path.exists() else {}
            results[name] = measured
            results = {n: results[n] for n in SECTIONS if n in results}  # report order
            write_json_atomic(path, results)
            write_markdown(results)


def cpu() -> str:
    """The CPU model and its widest vector units: speed ratios between torch and JAX (XLA)
    code differ between CPUs of this class (torch's SAC update gains more from AVX-512/AMX)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    flags = next((set(line.split(":", 1)[1].split()) for line in info.splitlines()
                  if line.startswith("flags")), set())
    units = [unit for unit in ("avx2", "avx512f", "amx_tile") if unit in flags]
    return f"{model} ({', '.join(units) or 'no AVX2'})"


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_markdown(results: dict) -> None:
    """bench/results.md from the results of every section that has been measured."""
    md = ["# Benchmark results", "", "Rerun with `make bench`. Compare numbers only within "
          "one section: machines of this class differ up to 2.4x in absolute speed.", ""]
    for name, module in SECTIONS.items():
        if isinstance(results.get(name), dict) and "date" in results[name]:
            section = results[name]
            md += [module.markdown(section), "",
                   f"_Measured {section['date']} on {section['machine']['cores']} cores"
                   + (f" of an {section['machine']['cpu']}" if "cpu" in section["machine"] else "")
                   + f", Python {section['machine']['python']}._", ""]
    write_text_atomic(RESULTS / "results.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1:])
