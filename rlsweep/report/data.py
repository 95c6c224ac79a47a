"""A finished sweep as plain data, read from its folder alone (never from its Optuna storage,
which may be a remote database): sweep_plan.json, sweep_summary.json, each trial's trial.json
and learning_curve.csv, and confirm.json if `rlsweep.confirm` ran."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.distributions import json_to_distribution
from optuna.trial import TrialState

from rlsweep.sweep.plan import read_plan_file
from rlsweep.sweep.summary import SUMMARY_FILE

CONFIRM_FILE = "confirm.json"


@dataclass
class TrialRecord:
    number: int
    state: str
    params: dict
    value: float | None
    last_step: int
    intermediate_values: dict[int, float]
    trial_dir: Path
    curve: list[dict[str, float]] = field(default_factory=list)  # learning_curve.csv rows


@dataclass
class CellData:
    name: str
    summary: dict
    space: dict
    trials: list[TrialRecord]

    def study(self, direction: str) -> optuna.Study:
        """An in-memory Optuna study of the finished trials, for Optuna's plots."""
        study = optuna.create_study(direction=direction, study_name=self.name)
        for t in self.trials:
            dists = {k: self.space[k] for k in t.params if k in self.space}
            study.add_trial(optuna.trial.create_trial(
                state=TrialState[t.state], params={k: t.params[k] for k in dists},
                distributions=dists, value=t.value if t.state == "COMPLETE" else None,
                intermediate_values=t.intermediate_values))
        return study


@dataclass
class SweepData:
    path: Path
    name: str
    direction: str
    metric: str
    cells: dict[str, CellData]
    confirm: dict | None


def _curve(trial_dir: Path) -> list[dict[str, float]]:
    path = trial_dir / "learning_curve.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def load_sweep(path: Path) -> SweepData:
    """Read a sweep folder; ValueError naming the missing file if it is not a finished sweep."""
    for needed in ("sweep_plan.json", SUMMARY_FILE):
        if not (path / needed).exists():
            raise ValueError(f"{path} is not a finished sweep: it has no {needed}")
    plan = read_plan_file(path)
    summary = json.loads((path / SUMMARY_FILE).read_text())
    cells = {}
    for cell in plan["cells"]:
        trials = []
        for trial_json in sorted((path / cell["name"]).glob("trial_*/trial.json")):
            t = json.loads(trial_json.read_text())
            trials.append(TrialRecord(
                number=t["number"], state=t["state"], params=t["params"], value=t["value"],
                last_step=t["last_step"], trial_dir=trial_json.parent,
                intermediate_values={int(k): v for k, v in t.get("intermediate_values", {}).items()},
                curve=_curve(trial_json.parent)))
        cells[cell["name"]] = CellData(
            name=cell["name"], summary=summary.get(cell["name"], {}), trials=trials,
            space={k: json_to_distribution(v) for k, v in cell["space"].items()})
    confirm = json.loads((path / CONFIRM_FILE).read_text()) if (path / CONFIRM_FILE).exists() else None
    return SweepData(path=path, name=plan["sweep_name"], direction=plan["direction"],
                     metric=plan["metric"], cells=cells, confirm=confirm)
