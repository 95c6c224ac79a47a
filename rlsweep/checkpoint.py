"""A run's resumable checkpoint: everything needed to continue training where it stopped.

`run_dir/checkpoint/` holds the model (weights, optimizer states, env-step count), the replay
buffer of off-policy algorithms, the VecNormalize statistics if used, and `state.json` with the
learning curve so far and the time spent. It is replaced as a whole (written beside it, then
renamed), so a run killed while saving still has the previous checkpoint; one killed between
the two renames has `checkpoint.old/` and `checkpoint.tmp/`, and a resume continues from the
newer whole one (rlsweep/existing_run.py finds it). Only the latest one is kept: a Lift replay
buffer of 300k transitions is about 100 MB.

A resumed run continues with the same weights, optimizer states and replay buffer, but fresh
episodes and random streams: it is not bit-identical to a run that was never interrupted.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from rlsweep import existing_run
from rlsweep.config import ConfigError

DIRNAME = existing_run.CHECKPOINT
log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What a run had done at its checkpoint, besides the model.

    :param env_steps: env steps trained (also stored in the model)
    :param curve: the learning curve so far (rows of `learning_curve.csv`)
    :param learn_seconds: seconds spent training, evaluations excluded
    :param eval_seconds: seconds spent in periodic evaluations
    :param wall_seconds: seconds since training started (the curve's `wall_time_s` clock)
    :param resumes: how many times the run was resumed before this checkpoint
    """

    env_steps: int
    curve: list[dict[str, float]] = field(default_factory=list)
    learn_seconds: float = 0.0
    eval_seconds: float = 0.0
    wall_seconds: float = 0.0
    resumes: int = 0


def path(run_dir: Path) -> Path:
    return run_dir / DIRNAME


def exists(run_dir: Path) -> bool:
    """Whether the run dir holds a whole checkpoint (also one left by a save cut off)."""
    return existing_run.newest_checkpoint(run_dir) is not None


def save(run_dir: Path, model: BaseAlgorithm, train_env: VecEnv, progress: Progress,
         config: dict) -> None:
    """Write the checkpoint beside the old one, then swap: the old one or the new, never half.

    `config` is the run's resolved config, kept so a resume can check it trains the same thing.
    """
    final = path(run_dir)
    tmp = final.with_name(DIRNAME + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / "model.zip")
    if getattr(model, "replay_buffer", None) is not None:
        model.save_replay_buffer(tmp / "replay_buffer.pkl")
    if isinstance(train_env, VecNormalize):
        train_env.save(str(tmp / "vecnormalize.pkl"))
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    (tmp / "state.json").write_text(json.dumps(asdict(progress), indent=2))
    old = final.with_name(DIRNAME + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)  # left by a save cut off: a rename needs it gone
        final.replace(old)
    tmp.replace(final)
    shutil.rmtree(old, ignore_errors=True)


def load_progress(run_dir: Path) -> Progress:
    return Progress(**json.loads((path(run_dir) / existing_run.STATE_FILE).read_text()))


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_changes(folder: Path, cfg: DictConfig, allowed: tuple[str, ...]) -> list[str]:
    """Dotted keys whose values differ between the config of the checkpoint in `folder` and
    `cfg`, except those under the `allowed` prefixes."""
    saved = _flatten(json.loads((folder / "config.json").read_text()))
    now = _flatten(OmegaConf.to_container(cfg, resolve=True))
    keys = {k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k)}
    return sorted(k for k in keys if not any(k == a or k.startswith(a + ".") for a in allowed))


def load_model(run_dir: Path, algo_cls: type[BaseAlgorithm], train_env: VecEnv,
               **kwargs) -> BaseAlgorithm:
    """The checkpointed model, attached to `train_env`, with its replay buffer if it has one."""
    folder = path(run_dir)
    model = algo_cls.load(folder / "model.zip", env=train_env, **kwargs)
    if (folder / "replay_buffer.pkl").exists():
        model.load_replay_buffer(folder / "replay_buffer.pkl")
    return model


def load_vecnormalize(run_dir: Path, venv: VecEnv) -> VecNormalize | None:
    stats = path(run_dir) / "vecnormalize.pkl"
    return VecNormalize.load(str(stats), venv) if stats.exists() else None


def remove(run_dir: Path) -> None:
    """Drop the checkpoint once the run has saved its final model (it is then redundant)."""
    shutil.rmtree(path(run_dir), ignore_errors=True)


# Keys that may change between a checkpoint and its resume: they do not change what is learned.
RESUMABLE_CHANGES = ("trainer.resume", "trainer.checkpoint_freq", "trainer.progress_s",
                     "trainer.total_timesteps", "logger")


def resume_point(cfg: DictConfig, run_dir: Path) -> Progress | None:
    """The checkpoint to continue from with `trainer.resume=true`, or None to start afresh.

    Refuses (ConfigError, one line) to resume a run that already finished, or one whose
    checkpoint was trained with a different config. A save cut off between its two renames
    left no `checkpoint/`: the newer whole one of `checkpoint.tmp/` and `checkpoint.old/`
    becomes `checkpoint/` again, and a log line says which.
    """
    if not cfg.trainer.resume:
        return None
    existing_run.check_run_dir(run_dir, resume=True)  # a finished run is never resumed
    saved = existing_run.newest_checkpoint(run_dir)
    if saved is None:
        return None
    changed = config_changes(saved.folder, cfg, RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"trainer.resume: the checkpoint in {run_dir} was trained with other "
                          f"values of {', '.join(changed)}; resume with the same config")
    if saved.folder != path(run_dir):
        _restore(run_dir, saved)
    return load_progress(run_dir)


def _restore(run_dir: Path, saved: existing_run.SavedCheckpoint) -> None:
    """Make `saved` (a `checkpoint.tmp/` or `.old/` a cut-off save left) the run's
    `checkpoint/`; the older ones go, as the save would have done."""
    final = path(run_dir)
    log.warning("trainer.resume: resuming from %s/ at env step %d, the newest whole checkpoint "
                "(a save was cut off before it became %s/)", saved.folder.name, saved.env_steps,
                DIRNAME)
    shutil.rmtree(final, ignore_errors=True)
    saved.folder.replace(final)
    for name in existing_run.CHECKPOINT_DIRS[1:]:
        shutil.rmtree(run_dir / name, ignore_errors=True)


class Checkpoint(BaseCallback):
    """Save a resumable checkpoint every `every` env steps, at the end of a rollout.

    At a rollout's end SB3 has stored every transition collected (during `_on_step` the
    latest one is not yet in the replay buffer), and on-policy algorithms start afresh.

    :param run_dir: the run's directory (the checkpoint goes to `run_dir/checkpoint/`)
    :param every: env steps between checkpoints (summed over parallel envs)
    :param progress: returns the run's `Progress` at the moment of saving
    :param config: the run's resolved config (stored with the checkpoint)
    :param clock: measures `save_seconds` (the trainer's clock stops while JAX compiles)
    """

    def __init__(self, run_dir: Path, every: int, progress: Callable[[], Progress], config: dict,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.run_dir, self.every, self.progress, self.config = run_dir, every, progress, config
        self.clock = clock
        self.saved_at: int | None = None
        self.save_seconds = 0.0  # not training time: left out of the run's env steps/s
        self._next = every

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.every + 1) * self.every
            started = self.clock()
            save(self.run_dir, self.model, self.training_env, self.progress(), self.config)
            self.saved_at = self.num_timesteps
            self.save_seconds += self.clock() - started
