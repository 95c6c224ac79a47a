"""What a run dir already holds: a finished run, a checkpoint to resume, or nothing to keep.

A single run (`python -m rlsweep ... hydra.run.dir=D`) must never train over a finished run or
start afresh over a cut-off run's checkpoint; the command line's preflight asks `check_run_dir`
before Hydra writes anything into D. Light on purpose (no SB3): the preflight runs before the
heavy imports. `rlsweep/checkpoint.py` writes the checkpoint folders named here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rlsweep import run_result
from rlsweep.config import ConfigError

CHECKPOINT = "checkpoint"
# checkpoint.save writes checkpoint.tmp/, renames checkpoint/ to checkpoint.old/ and .tmp/ to
# checkpoint/, then deletes .old/: a kill between the two renames leaves .old/ and .tmp/ only.
# In this order a tie in env steps is broken (the live name first).
CHECKPOINT_DIRS = (CHECKPOINT, CHECKPOINT + ".tmp", CHECKPOINT + ".old")
STATE_FILE = "state.json"  # written last into a checkpoint folder: with it, the folder is whole
MODEL_FILE = "model.zip"


@dataclass(frozen=True)
class SavedCheckpoint:
    """A whole checkpoint folder of a run dir.

    :param folder: `checkpoint/`, `checkpoint.tmp/` or `checkpoint.old/`
    :param env_steps: the env steps it was saved at
    """

    folder: Path
    env_steps: int


def newest_checkpoint(run_dir: Path) -> SavedCheckpoint | None:
    """The whole checkpoint with the most env steps among `CHECKPOINT_DIRS`, or None.

    A folder cut off while being written has no readable `state.json` and is not whole.
    """
    found = []
    for rank, name in enumerate(CHECKPOINT_DIRS):
        try:
            steps = int(json.loads((run_dir / name / STATE_FILE).read_text())["env_steps"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found.append((steps, -rank, name))
    if not found:
        return None
    steps, _, name = max(found)
    return SavedCheckpoint(run_dir / name, steps)


def finished_files(run_dir: Path) -> list[str]:
    """The files that show a run finished there: its `metrics.json`, or a final `model.zip`
    with no checkpoint beside it (a run killed between saving the two)."""
    if (run_dir / run_result.FILE).exists():
        return [run_result.FILE]
    if (run_dir / MODEL_FILE).exists() and newest_checkpoint(run_dir) is None:
        return [MODEL_FILE]
    return []


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """ConfigError (one line) unless a single run may train in `run_dir`: never over a finished
    run; over a cut-off run's checkpoint only to resume it (`trainer.resume=true`).

    :param run_dir: the run's `hydra.run.dir`
    :param resume: `trainer.resume`
    """
    finished = finished_files(run_dir)
    if finished:
        raise ConfigError(f"hydra.run.dir={run_dir} holds a finished run ({finished[0]})"
                          f"{'; nothing to resume' if resume else ''}, and it is not "
                          "overwritten: choose another hydra.run.dir")
    saved = newest_checkpoint(run_dir)
    if saved is not None and not resume:
        raise ConfigError(f"hydra.run.dir={run_dir} holds the checkpoint of an unfinished run "
                          f"({saved.folder.name}/ at env step {saved.env_steps}), which a new run "
                          "would replace: add trainer.resume=true to continue it, or choose "
                          "another hydra.run.dir")
