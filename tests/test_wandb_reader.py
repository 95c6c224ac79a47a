"""The offline-run reader reads back exactly what a real (offline) wandb run logged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.wandb_reader import find_offline_runs, read_offline_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    import wandb

    os.environ["WANDB_MODE"] = "offline"
    tmp_path = tmp_path_factory.mktemp("wandb")
    run = wandb.init(project="p", group="g", job_type="jt", name="n", tags=["a"],
                     config={"algo": {"learning_rate": 3e-4}, "param/x": 2}, dir=str(tmp_path),
                     settings=wandb.Settings(console="off", silent=True), reinit="create_new")
    for i in range(3):
        run.log({"eval/success_rate": i / 2, "env_steps": 100 * i})
    run.log({"nest": {"a": 1, "b": 2}, "flat": 3})  # several nested items in one row
    run.summary["status"] = "ok"
    run.tags = run.tags + ("complete",)
    run.finish()
    # Shut the W&B service down: it writes the .wandb file, and a busy machine once read it
    # empty right after finish() returned.
    wandb.teardown()
    [found] = find_offline_runs(tmp_path)
    return found


def test_reads_back_everything_logged(run_dir: Path):
    for source in (run_dir, next(run_dir.glob("run-*.wandb"))):
        run = read_offline_run(source)
        assert (run.project, run.group, run.job_type, run.name) == ("p", "g", "jt", "n")
        assert run.tags == ["a", "complete"]
        assert run.config == {"algo": {"learning_rate": 3e-4}, "param/x": 2}
        assert [(row["_step"], row["eval/success_rate"], row["env_steps"])
                for row in run.history[:3]] == [(0, 0.0, 0), (1, 0.5, 100), (2, 1.0, 200)]
        assert run.history[3]["nest"] == {"a": 1, "b": 2} and run.history[3]["flat"] == 3
        assert run.summary["status"] == "ok"
        assert (run.summary["eval/success_rate"], run.summary["env_steps"]) == (1.0, 200)


def test_rejects_corruption_and_tolerates_a_truncated_tail(run_dir: Path, tmp_path: Path):
    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    corrupt = tmp_path / "run-corrupt.wandb"
    corrupt.write_bytes(data[:20] + bytes([data[20] ^ 0xFF]) + data[21:])
    with pytest.raises(ValueError, match="bad CRC"):
        read_offline_run(corrupt)
    truncated = tmp_path / "run-truncated.wandb"
    truncated.write_bytes(data[:-3])  # as if the writer was killed mid-record
    assert read_offline_run(truncated).project == "p"
