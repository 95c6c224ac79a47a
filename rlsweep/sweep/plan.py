"""The sweep plan: what the sweeper decided, written once so every worker reads the same thing.

`sweep_plan.json` in the sweep dir lists each cell's name, study name, overrides and search
space; `<cell>/base_config.yaml` is the cell's composed, validated config that trials start from.
The storage URL is not in the plan (it may hold a password): workers read it from the config.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import distribution_to_json, json_to_distribution

from rlsweep.files import write_json_atomic
from rlsweep.sweep.space import Cell

PLAN_FILE = "sweep_plan.json"


def sweep_name(sweep_dir: Path, study_name: str | None) -> str:
    """The sweep's name in W&B (the group of its runs) and in reports."""
    return study_name or f"{sweep_dir.parent.name}_{sweep_dir.name}"


def write_plan(sweep_dir: Path, cells: list[Cell], study_names: dict[str, str],
               base_configs: dict[str, DictConfig], name: str, settings: dict) -> None:
    """Write the plan; `settings` keeps only what readers need (no storage URL)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    for cell in cells:
        (sweep_dir / cell.name).mkdir(exist_ok=True)
        OmegaConf.save(base_configs[cell.name], sweep_dir / cell.name / "base_config.yaml",
                       resolve=True)
    plan = {"sweep_name": name, "direction": _plain(settings["direction"]),
            "metric": _plain(settings["metric"]),
            "metrics": list(settings["metrics"]), "directions": list(settings["directions"]),
            "n_trials": settings["n_trials"], "launcher": settings["launcher"],
            "cells": [{"name": c.name, "study_name": study_names[c.name], "choices": c.choices,
                       "overrides": c.overrides, "seeds": c.seeds,
                       "space": {k: distribution_to_json(d) for k, d in c.space.items()}}
                      for c in cells]}
    write_json_atomic(sweep_dir / PLAN_FILE, plan)  # a worker never reads half a plan


def _plain(value):
    """A name, or a list of names (a multi-objective sweep), as JSON takes it."""
    return value if isinstance(value, str) else list(value)


def read_plan_file(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / PLAN_FILE).read_text())


def read_sweep_name(sweep_dir: Path) -> str:
    return read_plan_file(sweep_dir)["sweep_name"]


def read_plan(sweep_dir: Path) -> list[dict]:
    """Cells of the plan, each with `space` as Optuna distributions and its `base_config`."""
    cells = read_plan_file(sweep_dir)["cells"]
    for cell in cells:
        cell["space"] = {k: json_to_distribution(v) for k, v in cell["space"].items()}
        cell["base_config"] = OmegaConf.load(sweep_dir / cell["name"] / "base_config.yaml")
    return cells
