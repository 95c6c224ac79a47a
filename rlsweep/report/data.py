"""A finished sweep as plain data, read from its folder alone (never from its Optuna storage,
which may be a remote database): sweep_plan.json, sweep_summary.json, each trial's trial.json
and learning_curve.csv, and confirm.json if `rlsweep.confirm` ran."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import optuna
from optuna.distributions import json_to_distribution
from optuna.trial import TrialState

from rlsweep.config import first_line
from rlsweep.report.stats import FEW_SEEDS, Improvement, few_seeds_note
from rlsweep.run_result import RunStatus
from rlsweep.files import read_json
from rlsweep.sweep.plan import PLAN_FILE, read_plan_file
from rlsweep.sweep.records import TRIAL_FILE, TrialRecord, trial_dirs
from rlsweep.sweep.summary import SUMMARY_FILE

CONFIRM_FILE = "confirm.json"
FAILED = "failed"  # a confirmation seed that left no readable metrics.json (raised, killed)
Interval = tuple[float, float, float]  # (estimate, 95% CI low, 95% CI high)
SUCCESS, RETURN = "success_rate", "mean_return"  # the per-seed scores P(A > B) may compare
COMPARISON_METRICS = (SUCCESS, RETURN)


@dataclass
class ReportTrial:
    """A trial as the report shows it: from its trial.json (rlsweep.sweep.records), with its
    learning curve and where its model is."""

    number: int
    state: str
    params: dict
    value: float | list[float] | None  # a list in a multi-objective sweep
    last_step: int
    intermediate_values: dict[int, float]
    trial_dir: Path
    curve: list[dict[str, float]] = field(default_factory=list)  # learning_curve.csv rows
    # where its model is: the trial folder, or with several seeds the first seed's run
    model_dir: Path | None = None

    @property
    def first_value(self) -> float | None:
        """The value, or in a multi-objective sweep the first objective's."""
        return self.value[0] if isinstance(self.value, list) else self.value


@dataclass
class CellData:
    name: str
    summary: dict
    space: dict
    trials: list[ReportTrial]

    @property
    def reports_success(self) -> bool:
        """Whether the cell's env has a notion of success (a summary written before cells said
        so: yes, as it was shown then)."""
        return bool(self.summary.get("reports_success", True))

    def study(self, directions: str | list[str]) -> optuna.Study:
        """An in-memory Optuna study of the finished trials, for Optuna's plots."""
        directions = [directions] if isinstance(directions, str) else list(directions)
        study = optuna.create_study(directions=directions, study_name=self.name)
        for t in self.trials:
            dists = {k: self.space[k] for k in t.params if k in self.space}
            complete = t.state == "COMPLETE"
            study.add_trial(optuna.trial.create_trial(
                state=TrialState[t.state], params={k: t.params[k] for k in dists},
                distributions=dists,
                values=(t.value if isinstance(t.value, list) else [t.value]) if complete else None,
                intermediate_values={} if len(directions) > 1 else t.intermediate_values))
        return study


@dataclass
class SweepData:
    path: Path
    name: str
    direction: str       # the first objective's (the only one unless `multi`)
    metric: str
    cells: dict[str, CellData]
    confirm: ConfirmData | None
    metrics: list[str] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)
    pareto: list[dict] | None = None  # multi-objective: the front across cells

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @property
    def reports_success(self) -> bool:
        """Whether any of its cells' envs has a notion of success."""
        return any(c.reports_success for c in self.cells.values())


# ---------------------------------------------------------------- confirm.json (rlsweep.confirm)

def _field(data: Any, key: str, where: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ValueError(f"{where}: field {key!r} is missing")
    return data[key]


def _interval(value: Any, where: str) -> Interval:
    if not (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, float)) for v in value)):
        raise ValueError(f"{where}={value!r} is invalid: expected [estimate, CI low, CI high]")
    return (float(value[0]), float(value[1]), float(value[2]))


def _optional_float(value: Any, where: str, key: str = "mean_return") -> Optional[float]:
    if value is not None and not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {key}={value!r} is invalid: expected a number or null")
    return None if value is None else float(value)


@dataclass
class SeedScore:
    """One confirmation seed: how its run ended and the scores it counts with.

    A seed is never dropped: a run that diverged or failed scores success 0 and the
    confirmation's worst return (`ConfirmData.worst_return`), so a cell that often breaks
    cannot look better than one that does not. On an env with no notion of success every
    seed's success is None (never 0): it scores its return alone.

    :param seed: the training seed
    :param status: a `RunStatus` value ("ok", "diverged", ...) or "failed" (no readable
        metrics.json: the run raised, was killed or never started)
    :param detail: what happened ("" for ok), e.g. "diverged: non-finite actions"
    :param success_rate: the score: the last evaluation's success rate if ok, else 0 (None on
        an env with no notion of success)
    :param mean_return: the score: the last evaluation's mean return if ok, else the worst
        return (None only when no seed of the confirmation finished)
    """

    seed: int
    status: str
    detail: str
    success_rate: Optional[float]
    mean_return: Optional[float]

    @property
    def scored_as_failure(self) -> bool:
        return self.status != RunStatus.OK.value


@dataclass
class ConfirmedCell:
    """A cell's best configuration (or, as its baseline, the cell's defaults) retrained on
    fresh seeds.

    :param best_trial: the sweep trial whose config was retrained; None for the cell's defaults
        (its base_config.yaml: the algo's own values of every searched parameter)
    :param params: that trial's sampled parameters
    :param seeds: one score per seed, failures included
    :param iqm_success_rate: IQM of the seeds' success rates with its CI (None on an env with
        no notion of success)
    :param iqm_mean_return: IQM of the seeds' returns with its CI (None if no return is known)
    """

    best_trial: Optional[int]
    params: dict
    seeds: list[SeedScore]
    iqm_success_rate: Optional[Interval]
    iqm_mean_return: Optional[Interval]

    @property
    def success_rates(self) -> list[Optional[float]]:
        return [s.success_rate for s in self.seeds]

    @property
    def reports_success(self) -> bool:
        """Whether its seeds have success rates (not on an env with no notion of success)."""
        return self.iqm_success_rate is not None

    def scores(self, metric: str) -> list[Optional[float]]:
        """The seeds' scores of `metric` ("success_rate" or "mean_return"), in seed order."""
        return [getattr(s, metric) for s in self.seeds]

    @property
    def failures(self) -> list[SeedScore]:
        return [s for s in self.seeds if s.scored_as_failure]

    def to_json(self) -> dict[str, Any]:
        """`seeds`, `success_rate` and `mean_return` are the scores in seed order (what the
        statistics use); `runs` says per seed how it ended."""
        return {"best_trial": self.best_trial, "params": self.params,
                "seeds": [s.seed for s in self.seeds], "success_rate": self.success_rates,
                "mean_return": [s.mean_return for s in self.seeds],
                "runs": [asdict(s) for s in self.seeds],
                "iqm_success_rate": list(self.iqm_success_rate) if self.iqm_success_rate else None,
                "iqm_mean_return": list(self.iqm_mean_return) if self.iqm_mean_return else None}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "ConfirmedCell":
        if not isinstance(data, dict):
            raise ValueError(f"{where} is invalid: expected an object, got {data!r}")
        if "runs" in data:
            seeds = [SeedScore(seed=int(_field(r, "seed", f"{where}.runs")),
                               status=str(_field(r, "status", f"{where}.runs")),
                               detail=str(r.get("detail", "")),
                               success_rate=_optional_float(_field(r, "success_rate", f"{where}.runs"),
                                                            f"{where}.runs", "success_rate"),
                               mean_return=_optional_float(r.get("mean_return"), f"{where}.runs"))
                     for r in _field(data, "runs", where)]
        else:  # written before failures were scored: it holds the seeds that finished
            seeds = [SeedScore(seed=int(seed), status=RunStatus.OK.value, detail="",
                               success_rate=_optional_float(success, where, "success_rate"),
                               mean_return=mean_return)
                     for seed, success, mean_return in zip(
                         _field(data, "seeds", where), _field(data, "success_rate", where),
                         _field(data, "mean_return", where))]
        returns = _field(data, "iqm_mean_return", where)
        success = _field(data, "iqm_success_rate", where)
        best = _field(data, "best_trial", where)
        return cls(best_trial=None if best is None else int(best), params=data.get("params", {}),
                   seeds=seeds,
                   iqm_success_rate=None if success is None
                   else _interval(success, f"{where}.iqm_success_rate"),
                   iqm_mean_return=None if returns is None
                   else _interval(returns, f"{where}.iqm_mean_return"))


def comparison_metric(cells: Iterable[ConfirmedCell]) -> str:
    """What P(A > B) compares for these cells: the success rate, or the return when a cell's
    env has no notion of success (what a sweep ranks such a cell by)."""
    return SUCCESS if all(c.reports_success for c in cells) else RETURN


@dataclass
class ConfirmData:
    """What `python -m rlsweep.confirm` found (confirm.json).

    :param method: how the statistics are computed (for the report)
    :param cells: the confirmed cells by name
    :param improvement: P(A > B) for every ordered pair of these cells, on
        `improvement_metric`
    :param seeds_per_cell: seeds each cell was scored on (None: an older file, not recorded)
    :param worst_return: the return a diverged or failed seed scores
    :param worst_return_rule: how `worst_return` was chosen
    :param few_seeds_note: what the IQM is worth with this few seeds (None from 5 seeds on)
    :param skipped: cells not confirmed and why (no complete trial, ...)
    :param scores_failures: False for a file written before failed and diverged seeds were
        scored: those seeds were dropped, which biases its cells upward
    :param improvement_metric: what P(A > B) compares (`comparison_metric`): success_rate, or
        mean_return when a cell's env has no notion of success
    """

    method: str
    cells: dict[str, ConfirmedCell]
    improvement: list[Improvement]
    seeds_per_cell: Optional[int] = None
    worst_return: Optional[float] = None
    worst_return_rule: str = ""
    few_seeds_note: Optional[str] = None
    skipped: dict[str, str] = field(default_factory=dict)
    scores_failures: bool = True
    improvement_metric: str = SUCCESS

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "seeds_per_cell": self.seeds_per_cell,
                "few_seeds_note": self.few_seeds_note, "worst_return": self.worst_return,
                "worst_return_rule": self.worst_return_rule,
                "cells": {name: c.to_json() for name, c in self.cells.items()},
                "skipped": self.skipped, "improvement_metric": self.improvement_metric,
                "improvement": {f"{i.a} > {i.b}": [i.probability, i.low, i.high]
                                for i in self.improvement}}

    @classmethod
    def from_json(cls, data: Any, where: str = CONFIRM_FILE) -> "ConfirmData":
        if not isinstance(data, dict) or not isinstance(data.get("cells"), dict):
            raise ValueError(f"{where}: field 'cells' is missing or not an object")
        cells = {name: ConfirmedCell.from_json(c, f"{where} cells.{name}")
                 for name, c in data["cells"].items()}
        if not isinstance(data.get("improvement", {}), dict):
            raise ValueError(f"{where}: field 'improvement' is not an object")
        improvement = []
        metric = data.get("improvement_metric", SUCCESS)  # older files compared success only
        if metric not in COMPARISON_METRICS:
            raise ValueError(f"{where}: improvement_metric={metric!r} is invalid: allowed values "
                             "are " + ", ".join(COMPARISON_METRICS))
        for key, value in data.get("improvement", {}).items():
            a, sep, b = key.partition(" > ")
            if not sep:
                raise ValueError(f"{where} improvement: key {key!r} is invalid: expected 'A > B'")
            improvement.append(Improvement(a, b, *_interval(value, f"{where} improvement.{key}"),
                                           metric=metric))
        return cls(method=str(data.get("method", "")), cells=cells, improvement=improvement,
                   seeds_per_cell=data.get("seeds_per_cell"),
                   worst_return=data.get("worst_return"),
                   worst_return_rule=str(data.get("worst_return_rule", "")),
                   # an older file has no note: say what its seed count is worth all the same
                   few_seeds_note=data["few_seeds_note"] if "few_seeds_note" in data else
                   few_seeds_note(min((len(c.seeds) for c in cells.values()), default=FEW_SEEDS)),
                   skipped=data.get("skipped", {}),
                   scores_failures=all("runs" in c for c in data["cells"].values()),
                   improvement_metric=metric)

    @classmethod
    def read(cls, path: Path) -> Optional["ConfirmData"]:
        """The confirm.json at `path` (None if there is none); ValueError naming a bad field."""
        if not path.exists():
            return None
        return cls.from_json(read_json(path), str(path))


def _curve(trial_dir: Path) -> list[dict[str, float]]:
    path = trial_dir / "learning_curve.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _seed_dirs(trial_dir: Path) -> list[Path]:
    """A trial of several seeds keeps each seed's run in `seed_<s>/` (rlsweep.sweep.seeds)."""
    return sorted(p for p in trial_dir.glob("seed_*") if p.is_dir())


def _trial_curve(trial_dir: Path) -> list[dict[str, float]]:
    """The trial's learning curve; with several seeds, their mean at each env step."""
    if (trial_dir / "learning_curve.csv").exists() or not _seed_dirs(trial_dir):
        return _curve(trial_dir)
    by_step: dict[float, list[dict[str, float]]] = {}
    for seed_dir in _seed_dirs(trial_dir):
        for row in _curve(seed_dir):
            by_step.setdefault(row["env_steps"], []).append(row)
    return [{k: sum(r[k] for r in rows if k in r) / sum(1 for r in rows if k in r)
             for k in rows[0]} for _, rows in sorted(by_step.items())]


def _model_dir(trial_dir: Path) -> Path | None:
    for run_dir in [trial_dir, *_seed_dirs(trial_dir)]:
        if (run_dir / "model.zip").exists():
            return run_dir
    return None


def load_sweep(path: Path) -> SweepData:
    """Read a sweep folder; ValueError naming the missing file if it is not a finished sweep."""
    for needed in ("sweep_plan.json", SUMMARY_FILE):
        if not (path / needed).exists():
            raise ValueError(f"{path} is not a finished sweep: it has no {needed}")
    plan = read_plan_file(path)
    summary = read_json(path / SUMMARY_FILE)
    if not isinstance(summary, dict):
        raise ValueError(f"{path / SUMMARY_FILE} is malformed: expected an object")
    try:  # the plan's fields, before any trial is read
        cell_spaces = {cell["name"]: {k: json_to_distribution(v)
                                      for k, v in cell["space"].items()}
                       for cell in plan["cells"]}
        metrics = plan.get("metrics") or [plan["metric"]]
        directions = plan.get("directions") or [plan["direction"]]
        name = plan["sweep_name"]
    except _MALFORMED as err:
        raise ValueError(f"{path / PLAN_FILE} is malformed ({type(err).__name__}: "
                         f"{first_line(err)}); was it edited?") from None
    cells = {}
    for cell, space in cell_spaces.items():
        trials = []
        for trial_dir in trial_dirs(path / cell):
            t = _trial_record(trial_dir)
            trials.append(ReportTrial(
                number=t.number, state=t.state, params=t.params, value=t.value,
                last_step=t.last_step, trial_dir=trial_dir,
                intermediate_values={k: v for k, v in t.intermediate_values.items()
                                     if v is not None},  # a diverged trial's -inf
                curve=_trial_curve(trial_dir), model_dir=_model_dir(trial_dir)))
        cells[cell] = CellData(name=cell, summary=summary.get(cell, {}), trials=trials,
                               space=space)
    return SweepData(path=path, name=name, direction=directions[0],
                     metric=" vs ".join(metrics), cells=cells,
                     confirm=ConfirmData.read(path / CONFIRM_FILE), metrics=metrics,
                     directions=directions, pareto=summary.get("pareto"))


# What reading a field of a parsed JSON file of the wrong shape raises.
_MALFORMED = (KeyError, TypeError, AttributeError, IndexError, ValueError)


def _trial_record(trial_dir: Path) -> TrialRecord:
    """The trial.json of `trial_dir`; ValueError naming it if it is damaged."""
    path = trial_dir / TRIAL_FILE
    data = read_json(path)  # a file cut short: said with its name
    try:
        return TrialRecord.from_json(data)
    except _MALFORMED as err:
        raise ValueError(f"{path} is malformed ({type(err).__name__}: {first_line(err)})") from None
