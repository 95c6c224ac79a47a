"""Reports of a real sweep: W&B offline runs read back, report.html, compare, confirm, secrets."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rlsweep.report import stats
from tests.conftest import ROOT, require_installed, run_cli
from tests.wandb_reader import find_offline_runs, read_offline_run

PLANTED_KEY = "planted0secret0key0" + "0" * 21
ARTIFACTS = ROOT / "test-artifacts"


# ---------------------------------------------------------------- statistics (fast)

def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm([0, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(np.mean([2, 3, 4, 5]))


def test_probability_of_improvement_counts_pairs_and_half_ties():
    assert stats.probability_of_improvement([1, 1], [0, 0]) == 1.0
    assert stats.probability_of_improvement([0, 0], [1, 1]) == 0.0
    assert stats.probability_of_improvement([1, 0], [1, 0]) == 0.5


def test_bootstrap_intervals_bracket_the_estimate_and_shrink_with_more_seeds():
    rng = np.random.default_rng(1)
    few, many = rng.normal(0.5, 0.2, 5), rng.normal(0.5, 0.2, 100)
    est, low, high = stats.iqm_with_ci(few)
    assert low <= est <= high
    _, low_many, high_many = stats.iqm_with_ci(many)
    assert high_many - low_many < high - low
    p, p_low, p_high = stats.improvement_with_ci(many + 1.0, many)
    assert p_low <= p <= p_high and p > 0.9


# ---------------------------------------------------------------- one real sweep on Lift

@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "sweep"
    # n_steps=64: PPO updates twice within the budget, so train/ and rollout/ metrics exist.
    result = run_cli("-m", "algo=ppo", "reward=dense,sparse", "hydra.sweeper.n_trials=2",
                     "algo.n_steps=choice(64)",
                     "hydra.sweeper.n_jobs=2", "env.horizon=40", "trainer.total_timesteps=160",
                     "trainer.eval_freq=80", "trainer.eval_episodes=1", f"hydra.sweep.dir={path}",
                     env={"WANDB_API_KEY": PLANTED_KEY})
    assert result.returncode == 0, result.stderr[-3000:]
    (path.parent / "sweep.log").write_text(result.stdout + result.stderr)
    return path


@pytest.mark.slow
def test_every_trial_is_a_wandb_run_with_group_cell_tags_config_and_metrics(sweep_dir):
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    plan = json.loads((sweep_dir / "sweep_plan.json").read_text())
    trial_runs = [read_offline_run(d) for d in find_offline_runs(sweep_dir)
                  if "trial_" in str(d)]
    assert len(trial_runs) == 4
    for run in trial_runs:
        trial = json.loads(next((sweep_dir / run.job_type).glob(
            f"trial_{run.config['trial']:03d}/trial.json")).read_text())
        assert run.project == "rlsweep" and run.group == plan["sweep_name"]
        assert run.job_type in summary
        assert {"ppo", run.job_type.split("-")[1], "medium", trial["state"].lower()} <= set(run.tags)
        assert run.config["algo"]["name"] == "ppo" and run.config["env"]["horizon"] == 40
        for path, value in trial["params"].items():
            assert run.config[f"param/{path}"] == value
            assert run.config["algo"][path.split(".")[-1]] == value  # the composed config too
        evals = [row for row in run.history if "eval/success_rate" in row]
        assert [row["env_steps"] for row in evals] == [80, 160]
        assert any("train/value_loss" in row or "rollout/ep_rew_mean" in row for row in run.history)
        assert run.summary["env_steps"] == 160 and run.summary["status"] == "ok"


@pytest.mark.slow
def test_sweep_summary_run_holds_the_trials_table_and_optuna_plots(sweep_dir):
    (summary_run,) = [read_offline_run(d) for d in find_offline_runs(sweep_dir / "wandb")]
    assert summary_run.job_type == "sweep-summary"
    logged = {k for row in summary_run.history for k in row}
    assert "trials" in logged
    assert {"ppo-dense/optimization_history", "ppo-sparse/parallel_coordinate"} <= logged
    assert summary_run.summary["ppo-dense/best_value"] == json.loads(
        (sweep_dir / "sweep_summary.json").read_text())["ppo-dense"]["best_value"]


@pytest.mark.slow
def test_report_html_numbers_match_the_summary(sweep_dir):
    page = (sweep_dir / "report.html").read_text()
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    for cell, s in summary.items():
        row = re.search(rf'<tr data-cell="{cell}">(.*?)</tr>', page).group(1)
        cells = dict(re.findall(r'<td data-key="(\w+)">([^<]*)</td>', row))
        assert float(cells["best_value"]) == pytest.approx(s["best_value"], rel=1e-5)
        assert float(cells["best_success_rate"]) == pytest.approx(s["best_success_rate"], rel=1e-3)
        assert float(cells["best_mean_return"]) == pytest.approx(s["best_mean_return"], rel=1e-3)
        for key in ("n_complete", "n_pruned", "n_failed", "env_steps"):
            assert int(cells[key]) == s[key], key
    assert "<script" in page and "<script src" not in page  # plotly inlined: opens offline
    assert "optimization history" in page.lower() and "pruned here" in page


@pytest.mark.slow
def test_report_films_the_best_trial(sweep_dir):
    import imageio.v3 as iio

    strip = iio.imread(sweep_dir / "best_policy.png")
    assert strip.shape == (256, 6 * 256, 3) and strip.std() > 10  # six rendered frames, not blank
    page = (sweep_dir / "report.html").read_text()
    assert "data:image/png;base64," in page and "one episode on a fresh evaluation seed" in page


@pytest.mark.slow
def test_report_command_compares_sweeps_and_says_it_is_offline(sweep_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(sweep_dir, other)
    plan = json.loads((other / "sweep_plan.json").read_text())
    plan["sweep_name"] = "second"
    (other / "sweep_plan.json").write_text(json.dumps(plan))
    result = run_cli(str(sweep_dir), str(other), module="rlsweep.report")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote only the local report" in result.stdout and "wandb sync" in result.stdout
    page = (sweep_dir / "compare.html").read_text()
    first = json.loads((sweep_dir / "sweep_plan.json").read_text())["sweep_name"]
    assert f'data-cell="{first}/ppo-dense"' in page and 'data-cell="second/ppo-dense"' in page
    bad = run_cli(str(tmp_path / "nope"), module="rlsweep.report")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_confirm_retrains_best_configs_on_fresh_seeds_with_iqm_and_cis(sweep_dir):
    result = run_cli(str(sweep_dir), "seeds=2", module="rlsweep.confirm",
                     env={"WANDB_API_KEY": PLANTED_KEY})
    assert result.returncode == 0, result.stderr[-3000:]
    confirm = json.loads((sweep_dir / "confirm.json").read_text())
    assert set(confirm["cells"]) == {"ppo-dense", "ppo-sparse"}
    for name, cell in confirm["cells"].items():
        assert cell["seeds"] == [1000, 1001] and len(cell["success_rate"]) == 2
        metrics = json.loads((sweep_dir / "confirm" / name / "seed_1000" / "metrics.json").read_text())
        assert metrics["seed"] == 1000 and metrics["env_steps"] == 160
        est, low, high = cell["iqm_mean_return"]
        assert low <= est <= high
    assert set(confirm["improvement"]) == {"ppo-dense > ppo-sparse", "ppo-sparse > ppo-dense"}
    page = (sweep_dir / "report.html").read_text()
    assert "Interquartile mean (IQM)" in page and 'data-confirm="ppo-dense"' in page


@pytest.mark.slow
def test_wandb_report_compares_sweeps_by_their_runs(sweep_dir):
    # Saving needs the W&B cloud (not reachable here); building checks our use of the API.
    from rlsweep.report.data import load_sweep
    from rlsweep.report.wandb_report import build_wandb_report

    sweep = load_sweep(sweep_dir)
    report = build_wandb_report([sweep], {"project": "rlsweep", "entity": "team"})
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    assert len(grids) == 2
    assert all(rs.filters == f"Config('sweep') == '{sweep.name}'" for g in grids for rs in g.runsets)


@pytest.mark.slow
def test_no_planted_key_anywhere_in_outputs_logs_or_wandb_files(sweep_dir):
    for path in sweep_dir.parent.rglob("*"):
        if path.is_file():
            assert PLANTED_KEY.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_report_screenshot_in_headless_chromium(sweep_dir):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    require_installed(chromium is not None, "Debian's chromium (.ci/run installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={sweep_dir.parent / 'chromium-profile'}",
                    "--hide-scrollbars", "--window-size=1400,2400", "--virtual-time-budget=8000",
                    f"--screenshot={shot}", (sweep_dir / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:4] == b"\x89PNG" and len(data) > 50_000  # a rendered page, not a blank one
