"""SAC-family training speed on Lift, side by side (issue 12): SB3 SAC on stock robosuite, the
reference, against SB3 SAC, SBX SAC and SBX TQC on the fast backend.

Each run is the user's command (`python -m rlsweep algo=<algo> env.backend=<backend> ...`) with
each algo option's own defaults and the default controller. All rows take one gradient step per
env step. SB3 SAC: batch 256, one update per call, actor every update. SBX TQC: batch 128, one
update per call, actor every 2nd. SBX SAC (the default): batch 128, 4 updates per call, actor
every 4th; it is also run with SB3 SAC's batch and one update per call, to show what its
settings add. `env_steps_per_s` from metrics.json counts env steps, policy inference and
gradient updates, not evaluations nor JAX compiling (SBX compiles its update once per static
variant, once per process: `compile_s`, shown apart; torch compiles nothing, so the SB3 rows
leave nothing out). Two rounds in alternating order, so a machine's drift falls on every row.
Target: SAC family on the fast backend >= 3x SB3 SAC on stock robosuite.
"""

from __future__ import annotations

import numpy as np

from bench.env_bench import training_result

# (label, backend, overrides); the first row is the reference.
ROWS = (("SB3 SAC, stock robosuite", "robosuite", ("algo=sac",)),
        ("SB3 SAC, fast", "fast", ("algo=sac",)),
        ("SBX SAC, fast", "fast", ("algo=sbx_sac",)),
        ("SBX SAC, fast, batch 256, 1 update a call", "fast",
         ("algo=sbx_sac", "algo.batch_size=256", "algo.train_freq=1", "algo.gradient_steps=1")),
        ("SBX TQC, fast", "fast", ("algo=sbx_tqc",)))
STEPS = ("trainer.total_timesteps=3000", "algo.learning_starts=1000")


def run() -> dict:
    samples = {label: [] for label, _, _ in ROWS}
    compile_s = {label: [] for label, _, _ in ROWS}
    for order in (ROWS, ROWS[::-1]):
        for label, backend, overrides in order:
            result = training_result(backend, (*overrides, *STEPS))
            samples[label].append(result.env_steps_per_s)
            compile_s[label].append(result.compile_s)
    mean = {label: float(np.mean(values)) for label, values in samples.items()}
    reference = mean[ROWS[0][0]]
    return {"samples": samples, "mean": mean,
            "compile_s": {label: float(np.mean(v)) if None not in v else None
                          for label, v in compile_s.items()},
            "ratio": {label: value / reference for label, value in mean.items()}}


def markdown(results: dict) -> str:
    lines = ["## SAC-family training speed on Lift (issue 12)", "",
             f"`python -m rlsweep algo=<algo> env.backend=<backend> {' '.join(STEPS)}`, each algo "
             "option's defaults, default controller (OSC_POSITION), 1 env, 1 thread, one gradient "
             "step per env step. SB3 SAC: batch 256, one update per call. SBX SAC (the default): "
             "batch 128, 4 updates per call, actor every 4th; the row with SB3 SAC's batch and "
             "one update per call shows what those settings add. Two rounds in alternating "
             "order, means shown. Target: the SAC family on the fast backend >= 3x SB3 SAC on "
             "stock robosuite. "
             "JAX's compiling (SBX: its update once per static variant, its action functions; "
             "once per process) is timed apart and not in the rate.", "",
             "| run | training env steps/s (rounds) | / SB3 SAC on stock | JAX compile (s) |",
             "|---|---|---|---|"]
    for label, value in results["mean"].items():
        rounds = ", ".join(f"{v:.0f}" for v in results["samples"][label])
        compile_s = results["compile_s"][label]
        lines.append(f"| {label} | {value:.0f} ({rounds}) | **{results['ratio'][label]:.2f}x** | "
                     + (f"{compile_s:.2f} |" if compile_s is not None else "- |"))
    return "\n".join(lines)
