"""SAC-family training speed on Lift, side by side (issue 12): SB3 SAC on stock robosuite, the
reference, against SB3 SAC, SBX SAC and SBX TQC on the fast backend.

Each run is the user's command (`python -m rlsweep algo=<algo> env.backend=<backend> ...`) with
each algo option's own defaults (SBX SAC/TQC: batch 128, actor every 2nd update; SB3 SAC: batch
256, actor every update) and the default controller; `env_steps_per_s` from metrics.json counts
env steps, policy inference and gradient updates (the JAX compile of the first update included),
not evaluations. Two rounds in alternating order, so a machine's drift falls on every row.
Target: SAC family on the fast backend >= 3x SB3 SAC on stock robosuite.
"""

from __future__ import annotations

import numpy as np

from bench.env_bench import training_env_steps_per_s

# (label, algo option, backend); the first row is the reference.
ROWS = (("SB3 SAC, stock robosuite", "sac", "robosuite"), ("SB3 SAC, fast", "sac", "fast"),
        ("SBX SAC, fast", "sbx_sac", "fast"), ("SBX TQC, fast", "sbx_tqc", "fast"))
STEPS = ("trainer.total_timesteps=3000", "algo.learning_starts=1000")


def run() -> dict:
    samples = {label: [] for label, _, _ in ROWS}
    for order in (ROWS, ROWS[::-1]):
        for label, algo, backend in order:
            samples[label].append(training_env_steps_per_s(backend, (f"algo={algo}", *STEPS)))
    mean = {label: float(np.mean(values)) for label, values in samples.items()}
    reference = mean[ROWS[0][0]]
    return {"samples": samples, "mean": mean,
            "ratio": {label: value / reference for label, value in mean.items()}}


def markdown(results: dict) -> str:
    lines = ["## SAC-family training speed on Lift (issue 12)", "",
             f"`python -m rlsweep algo=<algo> env.backend=<backend> {' '.join(STEPS)}`, each algo "
             "option's defaults, default controller (OSC_POSITION), 1 env, 1 thread; two rounds "
             "in alternating order, means shown. Target: the SAC family on the fast backend >= 3x "
             "SB3 SAC on stock robosuite.", "",
             "| run | training env steps/s (rounds) | / SB3 SAC on stock |", "|---|---|---|"]
    for label, value in results["mean"].items():
        rounds = ", ".join(f"{v:.0f}" for v in results["samples"][label])
        lines.append(f"| {label} | {value:.0f} ({rounds}) | **{results['ratio'][label]:.2f}x** |")
    return "\n".join(lines)
