"""One training run, top to bottom: config -> envs -> SB3 model -> learn -> evaluate -> save.

Everything a run leaves is in its run dir: `model.zip`, `vecnormalize.pkl` (if used),
`metrics.json`, `learning_curve.csv`/`.png`, and Hydra's `.hydra/config.yaml`. While it trains
with `trainer.checkpoint_freq` > 0 it also keeps `checkpoint/`, from which `trainer.resume=true`
continues a run that was cut off (see rlsweep/checkpoint.py).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.logger import KVWriter, Logger, make_output_format
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from rlsweep import checkpoint, run_result
from rlsweep.algos import (action_noise, algo_class, configure_jax, is_jax_class, jax_compile_seconds,
                           policy_kwargs, steady_clock)
from rlsweep.callbacks import (DivergenceGuard, EvalHook, PeriodicEvaluation, ProgressLine, StepBudget,
                               StopOnSuccess)
from rlsweep.config import ConfigError, algo_kwargs, first_line, option_name
from rlsweep.curves import write_learning_curve
from rlsweep.envs.build import make_env
from rlsweep.run_result import RunResult, RunStatus
from rlsweep.tracking import finish_wandb_run, start_wandb_run

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never share seeds with training episodes


class WandbWriter(KVWriter):
    """SB3 logger output that streams every numeric value (rollout/, train/, eval/) to W&B."""

    def __init__(self, run):
        self.run = run

    def write(self, key_values: dict[str, Any], key_excluded: dict, step: int = 0) -> None:
        numbers = {k: v for k, v in key_values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            self.run.log({**numbers, "env_steps": step})

    def close(self) -> None:
        pass


def make_vec_env(cfg: DictConfig, n_envs: int, seed: int, vec_env: str = "dummy",
                 render_mode: str | None = None) -> VecEnv:
    """`n_envs` copies of the configured env seeded `seed + rank`, each in SB3's `Monitor`."""
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    reward_cfg = OmegaConf.to_container(cfg.reward, resolve=True)

    def make_one(rank: int):
        env = make_env(env_cfg, reward_cfg, seed=seed + rank, render_mode=render_mode)
        return Monitor(env, info_keywords=("is_success",) if env_cfg["reports_success"] else ())

    vec_cls = SubprocVecEnv if vec_env == "subproc" else DummyVecEnv
    venv = vec_cls([functools.partial(make_one, rank) for rank in range(n_envs)])
    venv.seed(seed)  # applied at the first reset: rank i resets with seed + i
    return venv


def build_envs(cfg: DictConfig) -> tuple[VecEnv, VecEnv]:
    """Training env (n_envs copies) and a one-env evaluation env on separate seeds."""
    train_env = make_vec_env(cfg, cfg.env.n_envs, cfg.seed, cfg.env.vec_env)
    eval_env = make_vec_env(cfg, 1, cfg.seed + EVAL_SEED_OFFSET)
    if cfg.algo.normalize:
        train_env = VecNormalize(train_env, norm_obs=True, norm_reward=False)
        eval_env = VecNormalize(eval_env, norm_obs=True, norm_reward=False, training=False)
    return train_env, eval_env


def train(cfg: DictConfig, run_dir: Path, eval_hook: EvalHook | None = None,
          wandb_init: dict[str, Any] | None = None,
          progress: Callable[[str], None] | None = None) -> RunResult:
    """Train one SB3 model on Lift as `cfg` says and leave its artifacts in `run_dir`.

    `eval_hook` is called after each periodic evaluation; returning False stops the run early
    (the sweeper prunes this way); `wandb_init` adds `wandb.init` arguments (group, job_type,
    tags, extra config); `progress`, if given, receives a progress line every
    `trainer.progress_s` seconds (single runs; sweeps leave it None). Returns the run's
    `RunResult`, also written to `metrics.json`.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    wandb_run = start_wandb_run(cfg.logger, run_dir, config, **(wandb_init or {}))
    try:
        result = _train(cfg, run_dir, eval_hook, wandb_run, progress)
    except BaseException:
        finish_wandb_run(wandb_run, None)  # the run is closed and tagged failed, then re-raise
        raise
    finish_wandb_run(wandb_run, result)
    return result


def _train(cfg: DictConfig, run_dir: Path, eval_hook: EvalHook | None, wandb_run,
           progress: Callable[[str], None] | None) -> RunResult:
    started = time.perf_counter()
    torch.set_num_threads(cfg.trainer.threads)
    if is_jax_class(cfg.algo._target_):
        configure_jax(cfg.trainer.threads)
    resume = checkpoint.resume_point(cfg, run_dir)
    set_random_seed(cfg.seed + (resume.resumes + 1 if resume else 0))  # fresh streams on resume
    train_env, eval_env = build_envs(cfg)
    if resume and isinstance(train_env, VecNormalize):
        train_env = checkpoint.load_vecnormalize(run_dir, train_env.venv)
    try:
        return _learn_and_save(cfg, run_dir, eval_hook, wandb_run, train_env, eval_env, started,
                               progress, resume)
    finally:  # also when training raises: no sims or subprocess envs left in a long-lived worker
        train_env.close()
        eval_env.close()


def _learn_and_save(cfg: DictConfig, run_dir: Path, eval_hook: EvalHook | None, wandb_run,
                    train_env: VecEnv, eval_env: VecEnv, started: float,
                    progress: Callable[[str], None] | None,
                    resume: checkpoint.Progress | None) -> RunResult:
    compile_before = jax_compile_seconds()  # another run in this process may have compiled
    if resume:
        model = checkpoint.load_model(run_dir, algo_class(cfg.algo), train_env,
                                      device=cfg.trainer.device)
    else:
        model = _new_model(cfg, train_env)
    before = resume or checkpoint.Progress(env_steps=0)
    # SB3's progress.csv; a resume writes progress_resume<n>.csv beside it (nothing overwritten)
    suffix = f"_resume{before.resumes + 1}" if resume else ""
    outputs = [make_output_format("csv", str(run_dir), log_suffix=suffix)]
    if wandb_run is not None:
        outputs.append(WandbWriter(wandb_run))
    model.set_logger(Logger(str(run_dir), outputs))

    evaluation = PeriodicEvaluation(eval_env, cfg.trainer.eval_freq, cfg.trainer.eval_episodes,
                                    cfg.trainer.deterministic_eval, eval_hook, resume, steady_clock,
                                    reports_success=cfg.env.reports_success)
    guard = DivergenceGuard()
    callbacks = [evaluation, guard, StepBudget(cfg.trainer.total_timesteps)]
    solved = None
    if cfg.trainer.stop_success_rate is not None:
        solved = StopOnSuccess(evaluation, cfg.trainer.stop_success_rate,
                               cfg.trainer.stop_success_evals)
        callbacks.append(solved)
    if progress is not None and cfg.trainer.progress_s > 0:
        callbacks.append(ProgressLine(evaluation, cfg.trainer.total_timesteps,
                                      cfg.trainer.progress_s, progress,
                                      reports_success=cfg.env.reports_success))
    saving = None

    def learn_seconds() -> float:
        # Steady training only: evaluations, checkpoint saving and JAX compiling are left out.
        return (before.learn_seconds + steady_clock() - learn_started
                - (evaluation.eval_seconds - before.eval_seconds)
                - (saving.save_seconds if saving else 0.0))

    if cfg.trainer.checkpoint_freq > 0:
        saving = checkpoint.Checkpoint(run_dir, cfg.trainer.checkpoint_freq, lambda: checkpoint.Progress(
            env_steps=model.num_timesteps, curve=evaluation.curve, learn_seconds=learn_seconds(),
            eval_seconds=evaluation.eval_seconds, wall_seconds=evaluation.elapsed(),
            resumes=before.resumes + (1 if resume else 0)),
            {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"},
            steady_clock)
        callbacks.append(saving)

    learn_started = steady_clock()
    status, detail = RunStatus.OK, ""
    try:
        model.learn(cfg.trainer.total_timesteps - before.env_steps, callback=callbacks,
                    reset_num_timesteps=resume is None)
    except ValueError as err:  # torch distributions raise this when the policy outputs NaN
        if "nan" not in str(err).lower():
            raise
        status, detail = RunStatus.DIVERGED, first_line(err)
    trained_seconds = learn_seconds()
    if guard.reason:
        status, detail = RunStatus.DIVERGED, guard.reason
    elif evaluation.stopped_at is not None:
        status, detail = RunStatus.PRUNED, f"at env step {evaluation.stopped_at}"

    ended_at_eval = evaluation.curve and evaluation.curve[-1]["env_steps"] == model.num_timesteps
    if status is RunStatus.OK and not ended_at_eval:
        evaluation.record(evaluation.evaluate())
    final = _last_evaluation(evaluation)
    model.save(run_dir / "model.zip")
    if isinstance(train_env, VecNormalize):
        train_env.save(str(run_dir / "vecnormalize.pkl"))
    result = RunResult(
        status=status, detail=detail, **final,
        env_steps=int(model.num_timesteps),
        wall_time_s=before.wall_seconds + time.perf_counter() - started,
        env_steps_per_s=model.num_timesteps / max(trained_seconds, 1e-9),
        compile_s=(jax_compile_seconds() - compile_before) if is_jax_class(cfg.algo._target_) else None,
        stopped_solved_at=solved.stopped_at if solved is not None else None,
        resumes=before.resumes + (1 if resume else 0),
        algo=option_name(cfg.algo), seed=cfg.seed)
    run_result.save(run_dir, result)
    write_learning_curve(evaluation.curve, run_dir,
                         title=f"{option_name(cfg.algo)} on {env_title(cfg.env)} ({option_name(cfg.reward)})",
                         reports_success=cfg.env.reports_success)
    checkpoint.remove(run_dir)  # the final model and metrics supersede it
    return result


def env_title(env_cfg) -> str:
    """What a person calls the env: the task or gymnasium id, else the option's name."""
    return str(env_cfg.get("task") or env_cfg.get("id") or option_name(env_cfg))


def _new_model(cfg: DictConfig, train_env: VecEnv):
    """The algo option's class on `train_env`; ConfigError if it cannot act in its action space."""
    kwargs = algo_kwargs(cfg.algo)
    space = train_env.action_space
    if "action_noise" in kwargs:  # {type, sigma} -> SB3's noise object, sized to the action
        kwargs["action_noise"] = action_noise(kwargs["action_noise"], int(np.prod(space.shape)))
    try:
        return algo_class(cfg.algo)(
            "MlpPolicy", train_env, seed=cfg.seed, device=cfg.trainer.device, verbose=0,
            policy_kwargs=policy_kwargs(cfg.policy, cfg.algo._target_), **kwargs)
    except AssertionError as err:  # SB3/SBX assert the action space they support
        if "action space" not in str(err):
            raise
        raise ConfigError(f"algo={option_name(cfg.algo)!r} is invalid for env {env_title(cfg.env)}: it cannot "
                          f"act in the env's action space {space} ({first_line(err)})") from None


def _last_evaluation(evaluation: PeriodicEvaluation) -> dict[str, float]:
    """The run's last evaluation; a run stopped before its first has none (None values)."""
    if evaluation.curve:
        last = evaluation.curve[-1]
        return {k: last[k] for k in ("success_rate", "mean_return", "std_return")}
    return {"success_rate": None, "mean_return": None, "std_return": None}

