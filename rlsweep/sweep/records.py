"""trial.json, the record of how one trial of a sweep ended: its one owner.

The worker writes it when the trial ends (whatever the end: complete, pruned, failed, taken
over); the report, confirm and people read it. With the sweep plan and summary it makes a sweep
folder readable without its Optuna storage (which may be a remote database).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from rlsweep.files import read_json, write_json_atomic

TRIAL_FILE = "trial.json"


@dataclass
class SeedRecord:
    """How one seed's run of the trial ended (a trial of one seed has one, its run the trial
    folder itself)."""

    seed: int
    run_dir: str
    status: Optional[str]              # "ok", "pruned at env step N", "diverged: ...", an error
    success_rate: Optional[float] = None
    mean_return: Optional[float] = None


@dataclass
class TrialRecord:
    """A trial's end, as trial.json holds it.

    :param value: the objective's value if COMPLETE, a list with several objectives, else None
    :param status: "ok" or why not (pruned, diverged, the failure, the takeover)
    :param success_rate: mean of its last evaluations (None on an env without success)
    :param intermediate_values: the evaluations reported to the pruner by env step (a diverged
        trial's -inf is None: JSON has no infinity)
    """

    number: int
    cell: str
    state: str                          # an Optuna TrialState name
    params: dict[str, Any]
    value: float | list[float] | None
    last_step: int
    status: str
    fail_reason: Optional[str]
    env_steps: int
    wall_time_s: float
    success_rate: Optional[float]
    mean_return: Optional[float]
    taken_over: bool = False
    taken_over_reason: Optional[str] = None
    seeds: list[SeedRecord] = field(default_factory=list)
    intermediate_values: dict[int, Optional[float]] = field(default_factory=dict)

    def write(self, trial_dir: Path) -> None:
        record = asdict(self)
        record["intermediate_values"] = {
            str(k): (v if v is not None and math.isfinite(v) else None)
            for k, v in self.intermediate_values.items()}
        write_json_atomic(trial_dir / TRIAL_FILE, record)

    @classmethod
    def read(cls, trial_dir: Path) -> "TrialRecord":
        """The trial.json of `trial_dir`; ValueError naming it if it is not JSON."""
        return cls.from_json(read_json(trial_dir / TRIAL_FILE))

    @classmethod
    def from_json(cls, data: dict) -> "TrialRecord":
        """A record from trial.json's parsed content (KeyError/TypeError if malformed)."""
        data = dict(data)
        data["seeds"] = [SeedRecord(**s) for s in data.get("seeds", [])]
        data["intermediate_values"] = {int(k): v for k, v in
                                       data.get("intermediate_values", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def trial_dirs(cell_dir: Path) -> Iterator[Path]:
    """A cell's trial folders that hold a record, in trial order."""
    for path in sorted(cell_dir.glob(f"trial_*/{TRIAL_FILE}")):
        yield path.parent
