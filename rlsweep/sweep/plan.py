"""The sweep plan: what the sweeper decided, written once so every worker reads the same thing.

`sweep_plan.json` in the sweep dir lists each cell's name, study name, overrides and search
space; `<cell>/base_config.yaml` is the cell's composed, validated config that trials start from.
The storage URL is not in the plan (it may hold a password): workers read it from the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (CategoricalDistribution, distribution_to_json,
                                  json_to_distribution)

from rlsweep.files import read_json, write_json_atomic, write_text_atomic
from rlsweep.sweep.space import Cell
from rlsweep.sweep.study import Objectives, study_name

PLAN_FILE = "sweep_plan.json"
# Sweeper settings that define a trial's value besides metric and direction: a resume that
# changes one would mix two definitions of the value in one study (refused, resume_conflict).
SCORING_SETTINGS = ("value_last_evals", "seed_aggregate", "objective")


def sweep_name(sweep_dir: Path, study_name: str | None) -> str:
    """The sweep's name in W&B (the group of its runs) and in reports: `study_name`, else the
    name the dir's plan already has (a moved or copied sweep dir keeps its name), else one made
    from the dir's path."""
    if study_name:
        return study_name
    if (sweep_dir / PLAN_FILE).exists():
        try:
            old = read_plan_file(sweep_dir)
            if all(c["study_name"] == c["name"] for c in old["cells"]):  # no study_name set
                return old["sweep_name"]
        except (OSError, ValueError, KeyError, TypeError):  # resume_conflict names the file
            pass
    return f"{sweep_dir.parent.name}_{sweep_dir.name}"


def build_plan(cells: list[Cell], study_names: dict[str, str], name: str,
               objectives: Objectives, n_trials: int, launcher: str,
               scoring: Mapping[str, Any] | None = None) -> dict:
    """The plan as written to sweep_plan.json: only what readers need (no storage URL).
    `metric`/`direction` are a name, or a list in a multi-objective sweep (as the user wrote
    them); `metrics`/`directions` are always lists.

    :param scoring: the sweeper's SCORING_SETTINGS (what else defines a trial's value)
    """
    return {"sweep_name": name, "direction": _plain(objectives.directions),
            "metric": _plain(objectives.metrics),
            "metrics": list(objectives.metrics), "directions": list(objectives.directions),
            "n_trials": n_trials, "launcher": launcher,
            "scoring": {k: scoring[k] for k in SCORING_SETTINGS if k in (scoring or {})},
            "cells": [{"name": c.name, "study_name": study_names[c.name], "choices": c.choices,
                       "overrides": c.overrides, "seeds": c.seeds,
                       "space": {k: distribution_to_json(d) for k, d in c.space.items()}}
                      for c in cells]}


def write_plan(sweep_dir: Path, plan: dict, base_configs: dict[str, DictConfig]) -> None:
    """Write the plan and each cell's base config (after `check_resume` allowed it)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    for cell in plan["cells"]:
        (sweep_dir / cell["name"]).mkdir(exist_ok=True)
        write_text_atomic(sweep_dir / cell["name"] / "base_config.yaml",
                          OmegaConf.to_yaml(base_configs[cell["name"]], resolve=True))
    write_json_atomic(sweep_dir / PLAN_FILE, plan)  # a worker never reads half a plan


def _short(dist_json: str) -> str:
    """A search-space entry as the user wrote it: choice(...), interval(...), range(...)."""
    d = json_to_distribution(dist_json)
    if isinstance(d, CategoricalDistribution):
        return "choice(" + ", ".join(map(str, d.choices)) + ")"
    step = getattr(d, "step", None)
    body = f"{d.low}, {d.high}" + (f", step {step}" if step not in (None, 1) else "")
    return ("tag(log, interval(" + body + "))") if getattr(d, "log", False) else f"interval({body})"


def _first_difference(old: Any, new: Any, path: str = "") -> str | None:
    """The first dotted key where two config trees differ, as "key: old -> new"."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                return f"{where} removed (was {old[key]!r})"
            if key not in old:
                return f"{where} added ({new[key]!r})"
            found = _first_difference(old[key], new[key], where)
            if found:
                return found
        return None
    return None if old == new else f"{path}: {old!r} -> {new!r}"


def resume_conflict(sweep_dir: Path, plan: dict, base_configs: dict[str, DictConfig]) -> str | None:
    """What this sweep command changes about the sweep already in `sweep_dir` (None: nothing,
    or no sweep there yet). A resume may add trials (a larger n_trials) or change how trials
    are run (n_jobs, launcher, sampler, pruner); not which studies hold them, what they search
    or how their value is defined (metric, direction, SCORING_SETTINGS), which would mix two
    searches in one study, nor drop queued trials (a smaller n_trials)."""
    if not (sweep_dir / PLAN_FILE).exists():
        return None
    old = read_plan_file(sweep_dir)
    was, now = _study_prefix(old), _study_prefix(plan)
    if was != now:
        example = old["cells"][0]
        return (f"hydra.sweeper.study_name: this dir holds sweep {old['sweep_name']!r}, whose "
                f"studies are named {example['study_name']!r}, ...; this command's would be "
                f"{study_name(now, example['name'])!r}, ... (new studies: its trial folders "
                "would be overwritten); resume it "
                + (f"with hydra.sweeper.study_name={was}" if was else
                   "without hydra.sweeper.study_name"))
    for key in ("metrics", "directions"):
        before = old.get(key) or [old[key[:-1]]]
        if before != plan[key]:
            return f"hydra.sweeper.{key[:-1]}: {_plain_str(before)} -> {_plain_str(plan[key])}"
    for key, before in old.get("scoring", {}).items():  # plans before issue 31 have none
        if before != plan["scoring"].get(key):
            return (f"hydra.sweeper.{key}: {before} -> {plan['scoring'].get(key)} (it defines "
                    "a trial's value, and the finished trials keep the old one)")
    if plan["n_trials"] < old.get("n_trials", 0):
        return (f"hydra.sweeper.n_trials: {old['n_trials']} -> {plan['n_trials']} (a resume "
                f"can add trials to a cell, not drop queued ones: use n_trials >= "
                f"{old['n_trials']})")
    old_cells = {c["name"]: c for c in old["cells"]}
    new_cells = {c["name"]: c for c in plan["cells"]}
    if set(old_cells) != set(new_cells):
        return (f"the grid of cells: {', '.join(sorted(old_cells))} -> "
                f"{', '.join(sorted(new_cells))}")
    for name, new in new_cells.items():
        before = old_cells[name]
        if before.get("seeds", new["seeds"]) != new["seeds"]:
            return f"cell {name}: seeds {before['seeds']} -> {new['seeds']}"
        for key in sorted(set(before["space"]) | set(new["space"])):
            was, now = before["space"].get(key), new["space"].get(key)
            if was != now:
                return (f"cell {name}: search space {key}: "
                        f"{_short(was) if was else 'not searched'} -> "
                        f"{_short(now) if now else 'not searched'}")
        old_config = OmegaConf.to_container(OmegaConf.load(sweep_dir / name / "base_config.yaml"))
        diff = _first_difference(old_config,
                                 OmegaConf.to_container(base_configs[name], resolve=True))
        if diff:
            return f"cell {name}: fixed setting {diff}"
    return None


def studies_on_disk(sweep_dir: Path, plan: dict) -> dict[str, int]:
    """The studies whose trials the sweep dir already holds, each with how many trials it must
    have at least (its highest `trial_NNN` folder + 1; 0 without folders): what the storage
    must hold for a resume to number new trials past every folder. A dir with a plan needs
    every cell's study (the sweep creates them before writing its plan); one without needs
    those of the cells with trial folders. Empty for a new sweep dir. Call after
    `resume_conflict` allowed the plan: its study names are then the dir's.

    :param sweep_dir: the sweep dir
    :param plan: this command's plan (build_plan)
    """
    has_plan = (sweep_dir / PLAN_FILE).exists()
    needed = {}
    for cell in plan["cells"]:
        numbers = [int(d.name[len("trial_"):]) for d in (sweep_dir / cell["name"]).glob("trial_*")
                   if d.is_dir() and d.name[len("trial_"):].isdigit()]
        if has_plan or numbers:
            needed[cell["study_name"]] = max(numbers, default=-1) + 1
    return needed


def _study_prefix(plan: dict) -> str | None:
    """The `hydra.sweeper.study_name` a plan's studies were named with (None: not set)."""
    cell = plan["cells"][0]
    if cell["study_name"] == cell["name"]:
        return None
    return cell["study_name"][:-len(cell["name"]) - 1]


def _plain_str(values: list) -> str:
    return values[0] if len(values) == 1 else "[" + ",".join(values) + "]"


def _plain(values: tuple[str, ...]) -> str | list[str]:
    """One name, or a list of names (a multi-objective sweep), as JSON takes it."""
    return values[0] if len(values) == 1 else list(values)


def read_plan_file(sweep_dir: Path) -> dict:
    """sweep_plan.json's content; ValueError naming the file if it is not JSON."""
    return read_json(sweep_dir / PLAN_FILE)


def read_sweep_name(sweep_dir: Path) -> str:
    return read_plan_file(sweep_dir)["sweep_name"]


def read_plan(sweep_dir: Path) -> list[dict]:
    """Cells of the plan, each with `space` as Optuna distributions and its `base_config`."""
    cells = read_plan_file(sweep_dir)["cells"]
    for cell in cells:
        cell["space"] = {k: json_to_distribution(v) for k, v in cell["space"].items()}
        cell["base_config"] = OmegaConf.load(sweep_dir / cell["name"] / "base_config.yaml")
    return cells
