"""Learning-curve files of a run: a CSV for tools and a PNG for people."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

COLUMNS = ("env_steps", "success_rate", "mean_return", "std_return", "wall_time_s")


def curve_columns(reports_success: bool) -> tuple[str, ...]:
    """The CSV's columns: without `success_rate` on an env with no notion of success (an empty
    column, not a column of zeros)."""
    return COLUMNS if reports_success else tuple(c for c in COLUMNS if c != "success_rate")


def write_learning_curve(rows: list[dict[str, Optional[float]]], run_dir: Path, title: str,
                         reports_success: bool = True) -> None:
    """Write `learning_curve.csv` and `learning_curve.png` (success rate and return vs env
    steps; the return alone where the env reports no success)."""
    columns = curve_columns(reports_success)
    with open(run_dir / "learning_curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")  # headless: no display on trial machines
    import matplotlib.pyplot as plt

    steps = [r["env_steps"] for r in rows]
    if reports_success:
        fig, (ax_success, ax_return) = plt.subplots(1, 2, figsize=(9, 3.2))
        ax_success.plot(steps, [r["success_rate"] for r in rows], marker="o")
        ax_success.set(xlabel="env steps", ylabel="eval success rate", ylim=(-0.05, 1.05))
    else:
        fig, ax_return = plt.subplots(1, 1, figsize=(4.5, 3.2))
    mean = [r["mean_return"] for r in rows]
    std = [r["std_return"] for r in rows]
    ax_return.plot(steps, mean, marker="o")
    ax_return.fill_between(steps, [m - s for m, s in zip(mean, std)],
                           [m + s for m, s in zip(mean, std)], alpha=0.25)
    ax_return.set(xlabel="env steps", ylabel="eval return (mean ± std)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(run_dir / "learning_curve.png", dpi=100)
    plt.close(fig)
