"""`python -m rlsweep.confirm <sweep dir> seeds=5`: retrain each cell's best configuration on
fresh seeds and compare cells honestly.

A cell's best trial was picked on one seed, so its value is biased upward. Here each best
configuration (its trial's composed config, unchanged but for the seed) is trained again on
`seeds` new seeds, as a Hydra multirun through the sweep's own launcher, in
`<sweep dir>/confirm/<cell>/seed_<n>/`. Seeds already finished are not run again. Then
`confirm.json` gets per-cell IQM success rate and return with 95% stratified-bootstrap CIs and
P(A > B) for every pair of cells (rlsweep.report.stats), and report.html is rewritten.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from rlsweep import run_result
from rlsweep.cli import CONF_DIR
from rlsweep.files import write_json_atomic
from rlsweep.report.build import REPORT_FILE
from rlsweep.report.data import CONFIRM_FILE, load_sweep
from rlsweep.report.html import write_report
from rlsweep.report.stats import METHOD, improvement_with_ci, iqm_with_ci
from rlsweep.sweep.plan import read_plan_file

FRESH_SEED_OFFSET = 1000  # confirmation seeds never coincide with the sweep's seed


def write_confirm_config(trial_dir: Path, out_dir: Path, launcher: str) -> None:
    """A primary Hydra config: the best trial's config, the sweep's launcher, one dir a seed."""
    cfg = OmegaConf.load(trial_dir / "config.yaml")
    hydra = {"sweep": {"dir": str(out_dir), "subdir": "seed_${seed}"},
             "job": {"chdir": False, "name": "confirm"},
             # our launcher presets (conf/hydra/launcher/*) must stay reachable
             "searchpath": [f"file://{CONF_DIR}"]}
    defaults = ["_self_"]
    if launcher != "basic":
        defaults.insert(0, {"override hydra/launcher": launcher})
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.merge({"defaults": defaults}, cfg, {"hydra": hydra}),
                   out_dir / "config.yaml")


def run_seeds(out_dir: Path, seeds: list[int]) -> None:
    """Train the missing seeds of one cell in parallel jobs (a Hydra multirun)."""
    missing = [s for s in seeds if not (out_dir / f"seed_{s}" / run_result.FILE).exists()]
    if missing:
        done = subprocess.run([sys.executable, "-m", "rlsweep", "--config-path",
                               str(out_dir.resolve()), "--config-name", "config", "-m",
                               "seed=" + ",".join(map(str, missing))], check=False)
        if done.returncode != 0:  # seeds that did finish still count
            print(f"{out_dir.name}: the seed runs exited with {done.returncode} (output above)",
                  file=sys.stderr)


def collect(out_dir: Path, seeds: list[int]) -> dict[str, list]:
    runs = {"seeds": [], "success_rate": [], "mean_return": []}
    for seed in seeds:
        run_dir = out_dir / f"seed_{seed}"
        if (run_dir / run_result.FILE).exists():
            result = run_result.load(run_dir)
            if result.ok:
                runs["seeds"].append(seed)
                runs["success_rate"].append(result.success_rate)
                runs["mean_return"].append(result.mean_return)
    return runs


def confirm(sweep_dir: Path, n_seeds: int) -> dict:
    sweep = load_sweep(sweep_dir)
    launcher = read_plan_file(sweep_dir).get("launcher", "basic")
    result = {"method": METHOD, "cells": {}, "improvement": {}}
    for name, cell in sweep.cells.items():
        best = cell.summary.get("best_trial")
        if best is None:
            print(f"{name}: no complete trial to confirm", file=sys.stderr)
            continue
        trial_dir = sweep_dir / name / f"trial_{best:03d}"
        if not (trial_dir / "config.yaml").exists():  # run by another process on a shared study
            print(f"{name}: best trial {best} ran in another sweep dir; confirm it there",
                  file=sys.stderr)
            continue
        base_seed = OmegaConf.load(trial_dir / "config.yaml").seed
        seeds = [base_seed + FRESH_SEED_OFFSET + k for k in range(n_seeds)]
        out_dir = sweep_dir / "confirm" / name
        write_confirm_config(trial_dir, out_dir, launcher)
        run_seeds(out_dir, seeds)
        runs = collect(out_dir, seeds)
        if not runs["seeds"]:
            print(f"{name}: no seed finished (see {out_dir})", file=sys.stderr)
            continue
        result["cells"][name] = {
            "best_trial": best, "params": cell.summary.get("best_params", {}), **runs,
            "iqm_success_rate": iqm_with_ci(runs["success_rate"]),
            "iqm_mean_return": iqm_with_ci(runs["mean_return"])}
    for a, b in itertools.permutations(result["cells"], 2):
        result["improvement"][f"{a} > {b}"] = improvement_with_ci(
            result["cells"][a]["success_rate"], result["cells"][b]["success_rate"])
    write_json_atomic(sweep_dir / CONFIRM_FILE, result)
    sweep.confirm = result  # what load_sweep would now read back from confirm.json
    write_report([sweep], sweep_dir / REPORT_FILE)
    return result


def main(argv: list[str]) -> int:
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    dirs = [a for a in argv if "=" not in a]
    unknown = set(args) - {"seeds"}
    if len(dirs) != 1 or unknown or not args.get("seeds", "5").isdigit() \
            or int(args.get("seeds", "5")) < 1:
        print("error: usage: python -m rlsweep.confirm <sweep dir> seeds=N (N >= 1)",
              file=sys.stderr)
        return 2
    try:
        result = confirm(Path(dirs[0]), int(args.get("seeds", "5")))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, c in result["cells"].items():
        iqm, low, high = c["iqm_success_rate"]
        print(f"{name}: IQM success rate {iqm:.3f} [{low:.3f}, {high:.3f}] over "
              f"{len(c['seeds'])} seeds")
    print(f"wrote {Path(dirs[0]) / CONFIRM_FILE} and {Path(dirs[0]) / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
