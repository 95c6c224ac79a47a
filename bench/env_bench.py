"""Env speed, side by side: MuJoCo's physical limit, stock robosuite, the `fast` backend.

Everything runs in one `make bench` on one machine, and every stock/fast pair is measured in
alternating order over two rounds (stock then fast, fast then stock) so drift of a noisy
machine falls on both. Rows:
- physics limit: `mj_step` alone on Lift's model with the arm held by gravity compensation,
  substeps/s divided by the 25 substeps of an env step (no control law, no observations),
  measured at the start and at the end of the run;
- env steps/s, 1 env, random actions, episodes of 200 steps with their resets included;
- env steps/s with n_envs = cores, SB3 SubprocVecEnv (one process per env), summed;
- env steps/s per task the fast backend covers (`env=robosuite env.task=<task>`: Lift and a
  task of each other covered family), 1 env, random actions, resets included;
- training env steps/s through the user's command (`python -m rlsweep`, `env_steps_per_s`
  from metrics.json: learn time minus evaluation time), PPO and SAC, 1 env.
Targets (issue 6): fast/stock >= 3 for env steps/s, >= 2.5 for PPO training.
Issue 13: the speedup on each covered task, not only Lift.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rlsweep import run_result
from rlsweep.cli import compose_config
from rlsweep.run_result import RunResult

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("robosuite", "fast")
ENV_STEPS, VEC_STEPS_PER_ENV, PHYSICS_SUBSTEPS = 600, 300, 10_000
# The issue 6 rows keep the 7-D pose controller they were measured with.
POSE = "env.robosuite.controller=OSC_POSE"
# Issue 13: Lift and a task of each other family the fast backend covers (tests/test_fast_lift.py
# compares these with stock).
TASKS = ("Lift", "Door", "Stack", "PickPlaceCan", "NutAssemblyRound", "ToolHang")
TRAINING = {  # algo -> overrides; small budgets, but each crosses its algorithm's update phase
    "ppo": ("algo=ppo", POSE, "trainer.total_timesteps=1024"),  # 2 rollouts of 512 + 2 x 10 epochs
    "sac": ("algo=sac", POSE, "trainer.total_timesteps=1200", "algo.learning_starts=200"),
}
def physics_limit() -> dict:
    """Substeps/s of bare `mj_step` on the Lift model robosuite builds, arm held up.

    With no control the arm would fall onto the table, a different (contact) workload; here
    the arm's motors hold gravity compensation (`qfrc_bias`), refreshed every 25 substeps, so
    the physics is that of an arm at rest over the cube, with no control law computed.
    """
    import mujoco

    from rlsweep.train import make_vec_env

    venv = make_vec_env(compose_config(["env.backend=robosuite", POSE]), 1, seed=0)
    venv.reset()
    sim_env = venv.envs[0].unwrapped.sim_env
    substeps = int(sim_env.control_timestep / sim_env.model_timestep)
    robot = sim_env.robots[0]
    arm_dofs = robot.part_controllers[robot.arms[0]].qvel_index
    arm_actuators = robot._ref_actuators_indexes_dict[robot.arms[0]]
    model, data = sim_env.sim.model._model, sim_env.sim.data._data
    start = time.perf_counter()
    for _ in range(PHYSICS_SUBSTEPS // substeps):
        data.ctrl[arm_actuators] = data.qfrc_bias[arm_dofs]
        mujoco.mj_step(model, data, nstep=substeps)
    rate = PHYSICS_SUBSTEPS // substeps * substeps / (time.perf_counter() - start)
    venv.close()
    return {"substeps_per_s": rate, "substeps_per_env_step": substeps,
            "env_steps_per_s": rate / substeps}


def env_steps_per_s(backend: str, n_envs: int, overrides: tuple[str, ...] = (),
                    steps: int | None = None) -> float:
    """Random-action env steps/s summed over `n_envs` (subproc when more than one), on the
    default env (Lift) or the one `overrides` choose, `steps` per env after 20 warm-up steps."""
    from rlsweep.train import make_vec_env

    vec_env = "subproc" if n_envs > 1 else "dummy"
    venv = make_vec_env(compose_config([*overrides, f"env.backend={backend}", POSE]), n_envs,
                        seed=0, vec_env=vec_env)
    ran = venv.get_attr("backend")[0]
    if ran != backend:  # a setup fast does not cover falls back: its "fast" would be stock
        venv.close()
        raise RuntimeError(f"env.backend={backend} ran {ran} for {' '.join(overrides) or 'Lift'}")
    steps = steps or (ENV_STEPS if n_envs == 1 else VEC_STEPS_PER_ENV)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps + 20, n_envs,
                                                             *venv.action_space.shape))
    venv.reset()
    for action in actions[:20]:  # first steps pay one-off costs (caches, page faults)
        venv.step(action)
    start = time.perf_counter()
    for action in actions[20:]:
        venv.step(action)
    rate = steps * n_envs / (time.perf_counter() - start)
    venv.close()
    return rate


def task_env_steps_per_s(task: str, backend: str, steps: int = ENV_STEPS) -> float:
    """Random-action env steps/s of robosuite `task` (`env=robosuite`, OSC_POSE), 1 env."""
    return env_steps_per_s(backend, 1, ("env=robosuite", f"env.task={task}"), steps)


def tasks_side_by_side(tasks: tuple[str, ...] = TASKS, steps: int = ENV_STEPS) -> dict:
    """Per task, stock and fast env steps/s side by side (`_side_by_side`) and fast/stock."""
    return {task: _side_by_side(lambda backend, t=task: task_env_steps_per_s(t, backend, steps))
            for task in tasks}


def training_result(backend: str, overrides: tuple[str, ...]) -> RunResult:
    """The `RunResult` (metrics.json) of one real training run through the user's command."""
    with tempfile.TemporaryDirectory(prefix="rlsweep-bench-") as tmp:
        command = [sys.executable, "-m", "rlsweep", *overrides, "reward=dense",
                   f"env.backend={backend}", "env.n_envs=1", "trainer.eval_freq=100000",
                   "trainer.eval_episodes=1", "env.horizon=200", "seed=0", "logger=none",
                   f"hydra.run.dir={tmp}/run"]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True,
                       env={**os.environ, "WANDB_MODE": "disabled"})
        return run_result.load(Path(tmp) / "run")


def training_env_steps_per_s(backend: str, overrides: tuple[str, ...]) -> float:
    """`env_steps_per_s` of one real training run through the user's command."""
    return training_result(backend, overrides).env_steps_per_s


def _side_by_side(measure) -> dict:
    """Two alternating rounds of `measure(backend)`; the mean per backend and fast/stock."""
    samples = {backend: [] for backend in BACKENDS}
    for order in (BACKENDS, BACKENDS[::-1]):
        for backend in order:
            samples[backend].append(measure(backend))
    mean = {backend: float(np.mean(values)) for backend, values in samples.items()}
    return {"samples": samples, "mean": mean, "ratio": mean["fast"] / mean["robosuite"]}


def run() -> dict:
    cores = os.cpu_count() or 1
    first = physics_limit()
    results = {
        "cores": cores,
        "env_1": _side_by_side(lambda backend: env_steps_per_s(backend, 1)),
        "env_cores": _side_by_side(lambda backend: env_steps_per_s(backend, cores)),
        "tasks": tasks_side_by_side(),
        "training": {algo: _side_by_side(
            lambda backend, a=algo: training_env_steps_per_s(backend, TRAINING[a]))
            for algo in TRAINING},
    }
    last = physics_limit()  # again at the end: the mean spans the same drift as the pairs
    rate = (first["substeps_per_s"] + last["substeps_per_s"]) / 2
    substeps = first["substeps_per_env_step"]
    results["physics"] = {"substeps_per_s": rate, "substeps_per_env_step": substeps,
                          "env_steps_per_s": rate / substeps}
    return results


def markdown(results: dict) -> str:
    physics, cores = results["physics"], results["cores"]
    rows = [("env steps/s, 1 env", results["env_1"]),
            (f"env steps/s, {cores} envs (subproc, summed)", results["env_cores"])]
    rows += [(f"{algo.upper()} training env steps/s, 1 env", results["training"][algo])
             for algo in TRAINING]
    lines = ["## Lift env speed: stock robosuite vs the fast backend (issue 6)", "",
             "Panda, OSC_POSE, control_freq 20 (25 physics substeps per env step), dense reward, "
             "no rendering. Each stock/fast pair was measured twice in alternating order; the "
             "table shows the means. Targets: fast/stock >= 3 for env steps/s, >= 2.5 for PPO "
             "training.", "",
             f"Physical limit (bare `mj_step`, arm held by gravity compensation, no control law): "
             f"{physics['substeps_per_s']:,.0f} "
             f"substeps/s / {physics['substeps_per_env_step']} = "
             f"**{physics['env_steps_per_s']:,.0f} env steps/s** per core.", "",
             "| measure | stock robosuite | fast | fast / stock | fast / physics limit |",
             "|---|---|---|---|---|"]
    for name, row in rows:
        per_core = row["mean"]["fast"] / (cores if "subproc" in name else 1)
        lines.append(f"| {name} | {row['mean']['robosuite']:.0f} | {row['mean']['fast']:.0f} | "
                     f"**{row['ratio']:.2f}x** | {per_core / physics['env_steps_per_s']:.2f} |")
    lines += ["", "Training: `python -m rlsweep algo=<algo> env.backend=<backend> env.n_envs=1` "
              f"with {', '.join(f'{a.upper()}: ' + ' '.join(o[1:]) for a, o in TRAINING.items())}; "
              "`env_steps_per_s` from metrics.json counts policy inference and gradient updates, "
              "which the backend does not speed up."]
    if "tasks" in results:  # sections measured before issue 13 have no per-task rows
        lines += ["", "### Env steps/s per task (issue 13)", "",
                  "`env=robosuite env.task=<task>`, Panda, OSC_POSE, 1 env, random actions, "
                  "episodes of 200 steps with their resets included; each stock/fast pair "
                  "measured twice in alternating order, means shown.", "",
                  "| task | stock robosuite | fast | fast / stock |", "|---|---|---|---|"]
        for task, row in results["tasks"].items():
            lines.append(f"| {task} | {row['mean']['robosuite']:.0f} | {row['mean']['fast']:.0f} "
                         f"| **{row['ratio']:.2f}x** |")
    return "\n".join(lines)
