"""What a training run ends with, and the one owner of its file, `metrics.json`.

Every objective (`rlsweep.train.train`, the synthetic one, test fakes) returns a `RunResult`
and writes it with `save`; the sweep worker, W&B tracking, `confirm` and the benches read the
status as a `RunStatus`, never by parsing its text.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

FILE = "metrics.json"


class RunStatus(str, Enum):
    """How a run ended. A run that raised has no result: its caller records the exception."""

    OK = "ok"              # trained its budget, or stopped early because it solved the task
    PRUNED = "pruned"      # stopped by its evaluation hook (the sweeper's pruner)
    DIVERGED = "diverged"  # non-finite rewards, observations, weights or actions


@dataclass
class RunResult:
    """A run's outcome: its status (and `detail`: where or why), last evaluation and speed.

    :param status: how the run ended
    :param detail: pruned: "at env step N"; diverged: what went non-finite; ok: ""
    :param success_rate: the last evaluation's success rate (None if it had none)
    :param mean_return: the last evaluation's mean return
    :param std_return: the last evaluation's return standard deviation
    :param env_steps: env steps trained
    :param wall_time_s: seconds from start to end (across resumes)
    :param env_steps_per_s: steady training speed (no evaluations, saving or JAX compile)
    :param compile_s: seconds JAX spent compiling during the run (model, training, evaluations;
        a resumed run: in its last process)
        (SBX; None for torch): one-time costs, left out of `env_steps_per_s`
    :param stopped_solved_at: env step where `trainer.stop_success_rate` stopped the run
    :param resumes: times the run was resumed from its checkpoint
    :param algo: the algo option's name
    :param seed: the run's seed
    """

    status: RunStatus
    detail: str
    success_rate: Optional[float]
    mean_return: Optional[float]
    std_return: Optional[float]
    env_steps: int
    wall_time_s: float
    env_steps_per_s: float
    compile_s: Optional[float] = None
    stopped_solved_at: Optional[int] = None
    resumes: int = 0
    algo: str = ""
    seed: int = 0

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.OK

    def describe(self) -> str:
        """The status for people: "ok", "pruned at env step 500", "diverged: non-finite ..."."""
        if self.status is RunStatus.PRUNED:
            return f"pruned {self.detail}".strip()
        return f"{self.status.value}: {self.detail}" if self.detail else self.status.value

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunResult":
        """Read a `metrics.json` dict, also one written before statuses had a `detail`
        ("pruned at env step N", "diverged: ...")."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        status, detail = str(values.get("status", "")), values.get("detail")
        if detail is None:  # an older file: the detail was part of the status text
            for kind in RunStatus:
                if status.startswith(kind.value):
                    status, detail = kind.value, status[len(kind.value):].lstrip(": ").strip()
                    break
        values.update(status=RunStatus(status), detail=detail or "")
        return cls(**values)


def save(run_dir: Path, result: RunResult) -> Path:
    """Write metrics.json atomically: its presence means the run finished (confirm and the
    benches skip such runs), so it must never exist half-written."""
    from rlsweep.files import write_json_atomic

    return write_json_atomic(run_dir / FILE, result.to_json())


def load(run_dir: Path) -> RunResult:
    return RunResult.from_json(json.loads((run_dir / FILE).read_text()))


class Objective(Protocol):
    """What a sweep trial runs (`hydra.sweeper.objective`): `rlsweep.train.train` or anything
    with its signature that leaves its run in `run_dir` and returns its `RunResult`.

    `eval_hook(env_steps, eval_result)` is called after each periodic evaluation; False stops
    the run (pruned). `wandb_init` adds `wandb.init` arguments (group, job_type, tags, ...).
    """

    def __call__(self, cfg: Any, run_dir: Path, eval_hook: Optional[Callable] = None,
                 wandb_init: Optional[dict] = None) -> RunResult: ...
