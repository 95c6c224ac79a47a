"""An env without a notion of success (env.reports_success=false: gymnasium's, Pendulum) has no
success rate: null in every file, no success column in any table, never 0 (issue 31, item 9).
And the words about a trial's numbers and the pruner's warmup say what the code does (item 10).
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest

from rlsweep.config import ConfigError, validate
from rlsweep.report.data import ConfirmData, load_sweep
from rlsweep.report.html import write_report
from rlsweep.sweep.records import TrialRecord, trial_dirs
from rlsweep.sweep.study import make_pruner, sized_pruner_kwargs
from rlsweep.sweep.summary import SUMMARY_FILE, format_table
from tests.conftest import ROOT, compose_cfg, run_cli

# The synthetic objective on a gymnasium env: its trials report no success, as Pendulum's do.
NO_SUCCESS_SWEEP = ["hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective",
                    "logger=none", "hydra.sweeper.sampler=random", "env=gym", "env.horizon=200",
                    "algo=ppo", "trainer.total_timesteps=500", "trainer.eval_freq=100",
                    "trainer.eval_episodes=1", "hydra.sweeper.n_jobs=1",
                    "hydra.sweeper.pruner=none"]
PENDULUM = ["env=gym", "env.id=Pendulum-v1", "algo=ppo", "algo.n_steps=64", "logger=none",
            "trainer.total_timesteps=128", "trainer.eval_freq=64", "trainer.eval_episodes=1",
            "trainer.progress_s=0"]


def in_process_sweep(hydra_sweep_runner, tmp_path: Path, *overrides: str) -> Path:
    """`python -m rlsweep -m <overrides>`, run by Hydra in this process (basic launcher); the
    sweep folder it left, kept (the runner removes its own temp dir)."""
    kept = tmp_path / "sweep"
    with hydra_sweep_runner(
            calling_file=str(ROOT / "rlsweep" / "__main__.py"), calling_module=None,
            task_function=None, config_path="../conf", config_name="config",
            overrides=["hydra/launcher=basic", "hydra/job_logging=none",
                       "hydra/hydra_logging=none", *overrides], temp_dir=tmp_path / "run"):
        shutil.copytree(tmp_path / "run", kept)
    return kept


def cells_table(page: str) -> str:
    """report.html's cells table (the first table of the page) with its note."""
    return page[page.index("<h2>Cells</h2>"):page.index("<h2>The best trial's policy</h2>")]


# ---------------------------------------------------------------- a single run (item 9)

@pytest.mark.slow
def test_a_pendulum_run_stores_null_success_and_no_success_column(tmp_path, monkeypatch):
    from rlsweep.train import train
    from tests.wandb_reader import find_offline_runs, read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in PENDULUM if o != "logger=none"] + ["logger=wandb"]
    result = train(compose_cfg(*overrides), tmp_path)
    assert result.success_rate is None
    assert json.loads((tmp_path / "metrics.json").read_text())["success_rate"] is None
    with open(tmp_path / "learning_curve.csv") as f:
        curve = list(csv.DictReader(f))
    assert [int(float(r["env_steps"])) for r in curve] == [64, 128]
    assert "success_rate" not in curve[0] and all(r["mean_return"] for r in curve)
    progress_header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert "eval/mean_return" in progress_header and "eval/success_rate" not in progress_header
    logged = read_offline_run(find_offline_runs(tmp_path)[0])
    assert "success_rate" in logged.summary and logged.summary["success_rate"] is None
    assert any("eval/mean_return" in row for row in logged.history)
    assert not any("eval/success_rate" in row for row in logged.history)


def test_stop_success_rate_on_an_env_without_success_is_refused_before_any_compute():
    with pytest.raises(ConfigError, match=r"trainer.stop_success_rate=0.9 is invalid: .*reports "
                                          r"no task success"):
        validate(compose_cfg(*PENDULUM, "trainer.stop_success_rate=0.9"), targets=False)


# ---------------------------------------------------------------- a sweep (item 9)

def test_a_sweep_on_an_env_without_success_records_null_and_leaves_the_column_out(
        hydra_sweep_runner, tmp_path, capsys):
    sweep_dir = in_process_sweep(hydra_sweep_runner, tmp_path, *NO_SUCCESS_SWEEP,
                                 "hydra.sweeper.n_trials=2")
    out = capsys.readouterr().out
    records = [TrialRecord.read(d) for d in trial_dirs(sweep_dir / "ppo-dense")]
    assert [r.state for r in records] == ["COMPLETE", "COMPLETE"]
    for trial_dir in trial_dirs(sweep_dir / "ppo-dense"):
        raw = json.loads((trial_dir / "trial.json").read_text())
        assert raw["success_rate"] is None and raw["mean_return"] > 0
        assert raw["seeds"] and all(s["success_rate"] is None for s in raw["seeds"])
        assert json.loads((trial_dir / "metrics.json").read_text())["success_rate"] is None
    summary = json.loads((sweep_dir / SUMMARY_FILE).read_text())["ppo-dense"]
    assert summary["reports_success"] is False and summary["best_success_rate"] is None
    assert summary["best_mean_return"] > 0
    # the printed table and the progress lines: no success at all
    table_header = next(line for line in out.splitlines() if line.startswith("cell "))
    assert "success" not in table_header and "return" in table_header
    progress = [line for line in out.splitlines() if line.startswith("[ppo-dense]")]
    assert progress and not any("success" in line for line in progress)
    assert "best return" in progress[-1]
    # report.html: no success column, no success curve
    page = (sweep_dir / "report.html").read_text()
    assert "success rate" not in cells_table(page) and 'data-key="best_mean_return"' in page
    assert "Eval success rate" not in page and "Eval return" in page


def test_a_sweep_folder_written_before_still_renders_its_zeros(hydra_sweep_runner, tmp_path):
    """A sweep folder from before: no `reports_success` in its summary, 0.0 in its files."""
    sweep_dir = in_process_sweep(hydra_sweep_runner, tmp_path, *NO_SUCCESS_SWEEP,
                                 "hydra.sweeper.n_trials=1")
    summary = json.loads((sweep_dir / SUMMARY_FILE).read_text())
    del summary["ppo-dense"]["reports_success"]
    summary["ppo-dense"]["best_success_rate"] = 0.0
    (sweep_dir / SUMMARY_FILE).write_text(json.dumps(summary))
    for trial_dir in trial_dirs(sweep_dir / "ppo-dense"):
        record = json.loads((trial_dir / "trial.json").read_text())
        (trial_dir / "trial.json").write_text(json.dumps({**record, "success_rate": 0.0}))
    assert "0.00" in format_table(summary)
    write_report([load_sweep(sweep_dir)], tmp_path / "old.html")
    table = cells_table((tmp_path / "old.html").read_text())
    assert "success rate" in table and '<td data-key="best_success_rate">0</td>' in table


def test_an_old_confirm_json_with_success_zeros_still_reads():
    old = {"method": "m", "cells": {"ppo-dense": {
        "best_trial": 0, "params": {}, "seeds": [1000, 1001], "success_rate": [0.0, 0.0],
        "mean_return": [-900.0, -800.0],
        "runs": [{"seed": 1000, "status": "ok", "detail": "", "success_rate": 0.0,
                  "mean_return": -900.0},
                 {"seed": 1001, "status": "ok", "detail": "", "success_rate": 0.0,
                  "mean_return": -800.0}],
        "iqm_success_rate": [0.0, 0.0, 0.0], "iqm_mean_return": [-850.0, -900.0, -800.0]}},
        "improvement": {}}
    confirm = ConfirmData.from_json(old)
    assert confirm.cells["ppo-dense"].iqm_success_rate == (0.0, 0.0, 0.0)
    assert confirm.improvement_metric == "success_rate"


@pytest.mark.slow
def test_confirm_on_pendulum_prints_and_stores_no_success_and_compares_returns(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = run_cli("-m", *PENDULUM, "algo=ppo,a2c", "algo.n_steps=64", "hydra.sweeper.n_trials=1",
                   "hydra.sweeper.n_jobs=1", "hydra.sweeper.pruner=none",
                   f"hydra.sweep.dir={sweep_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    for cell in ("ppo-dense", "a2c-dense"):
        trial = json.loads((sweep_dir / cell / "trial_000" / "trial.json").read_text())
        assert trial["state"] == "COMPLETE" and trial["success_rate"] is None
    confirmed = run_cli(str(sweep_dir), "seeds=2", module="rlsweep.confirm")
    assert confirmed.returncode == 0, confirmed.stderr[-2000:]
    lines = [line for line in confirmed.stdout.splitlines() if line.startswith(("ppo", "a2c"))]
    assert len(lines) == 2
    for line in lines:
        assert "success" not in line and re.search(r"IQM return -?[\d.e+]+ \[", line), line
    data = json.loads((sweep_dir / "confirm.json").read_text())
    assert data["improvement_metric"] == "mean_return"
    for cell in data["cells"].values():
        assert cell["iqm_success_rate"] is None and cell["success_rate"] == [None, None]
        assert all(run["success_rate"] is None for run in cell["runs"])
    pair = data["improvement"]["ppo-dense > a2c-dense"]
    returns = {name: c["mean_return"] for name, c in data["cells"].items()}
    a, b = np.array(returns["ppo-dense"])[:, None], np.array(returns["a2c-dense"])[None, :]
    assert pair[0] == pytest.approx(float(np.mean((a > b) + 0.5 * (a == b))))
    page = (sweep_dir / "report.html").read_text()
    confirm_part = page[page.index("<h2>Confirmation on fresh seeds</h2>"):]
    assert "IQM success rate" not in confirm_part and "IQM return" in confirm_part
    assert "P(row &gt; column), return" in confirm_part


# ---------------------------------------------------------------- the words (item 10)

def test_the_reports_success_and_return_are_the_mean_of_the_last_value_last_evals(
        hydra_sweep_runner, tmp_path):
    """What report.html says the numbers are is what they are: the mean of the best trial's
    last value_last_evals evaluations (here its value too: return on an env without success)."""
    sweep_dir = in_process_sweep(hydra_sweep_runner, tmp_path, *NO_SUCCESS_SWEEP,
                                 "hydra.sweeper.n_trials=1", "hydra.sweeper.value_last_evals=2")
    record = TrialRecord.read(sweep_dir / "ppo-dense" / "trial_000")
    evaluations = [record.intermediate_values[s] for s in sorted(record.intermediate_values)]
    assert len(evaluations) == 5 and evaluations[-1] != evaluations[-2]  # a rising curve
    summary = json.loads((sweep_dir / SUMMARY_FILE).read_text())["ppo-dense"]
    assert summary["best_mean_return"] == pytest.approx(np.mean(evaluations[-2:]))
    assert summary["best_value"] == pytest.approx(np.mean(evaluations[-2:]))
    note = cells_table((sweep_dir / "report.html").read_text())
    assert "last evaluation." not in note
    assert "the mean of its last <code>value_last_evals</code> evaluations" in note


def earliest_prune(total_timesteps: int, eval_freq: int) -> int | None:
    """The first evaluation step at which the default-sized median pruner stops a trial that is
    far behind two complete trials at every evaluation (None: never)."""
    kwargs, _ = sized_pruner_kwargs("median", 8, total_timesteps, eval_freq, {})
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", kwargs))
    steps = list(range(eval_freq, total_timesteps, eval_freq))  # the last one ends the trial
    for _ in range(2):
        trial = study.ask()
        for step in steps:
            trial.report(1.0, step)
        study.tell(trial, 1.0)
    behind = study.ask()
    for step in steps:
        behind.report(0.0, step)
        if behind.should_prune():
            return step
    return None


@pytest.mark.parametrize("total_timesteps,eval_freq,first_chance", [
    (400, 100, 200),             # the case: pruned at 100 before
    (20_000, 2_000, 8_000),      # before: at 6,000, under a third (6,667)
    (100_000, 10_000, 40_000),   # before: at 30,000
    (300_000, 10_000, 100_000),  # the default config: a third exactly, as before
    (60_000, 10_000, 20_000),    # the lift_sbx_sac preset
])
def test_the_median_pruner_never_prunes_in_a_trials_first_third(total_timesteps, eval_freq,
                                                                  first_chance):
    """README: the median pruner "never prunes in a trial's first third of env steps"; its
    first chance is the first evaluation at or past a third."""
    step = earliest_prune(total_timesteps, eval_freq)
    assert step == first_chance and step >= total_timesteps / 3
    assert math.ceil(total_timesteps / 3) > step - eval_freq  # no earlier evaluation could
