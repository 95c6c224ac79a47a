"""`rlsweep.confirm` scores every seed: a run that diverged or failed counts as success 0 and
the confirmation's worst return, never dropped; fewer than 5 seeds draw a warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench import tuning_bench
from rlsweep import confirm, run_result
from rlsweep.report import stats
from rlsweep.report.data import FAILED, ConfirmData, load_sweep
from rlsweep.run_result import RunResult, RunStatus
from tests.conftest import run_cli

SYNTHETIC = ["hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective", "logger=none",
             "hydra.sweeper.sampler=random", "hydra.sweeper.n_jobs=1", "env.horizon=40",
             "trainer.total_timesteps=100", "trainer.eval_freq=100", "trainer.eval_episodes=1"]


def save_run(run_dir: Path, status: RunStatus = RunStatus.OK, success_rate: float | None = 0.5,
             mean_return: float | None = 10.0, detail: str = "", seed: int = 0) -> Path:
    """A seed's metrics.json as a training run leaves it (through rlsweep.run_result)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run_result.save(run_dir, RunResult(
        status=status, detail=detail, success_rate=success_rate, mean_return=mean_return,
        std_return=0.0, env_steps=100, wall_time_s=1.0, env_steps_per_s=100.0, seed=seed))
    return run_dir


def synthetic_sweep(sweep_dir: Path, *overrides: str) -> Path:
    """A real sweep (Hydra, Optuna, the sweeper) whose trials are the synthetic objective."""
    result = run_cli("-m", "algo=ppo", *SYNTHETIC, *overrides, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


# ---------------------------------------------------------------- scoring seeds (fast)

def test_a_finished_seed_scores_its_last_evaluation(tmp_path):
    run = confirm.read_seed_run(save_run(tmp_path / "seed_1000", success_rate=0.7,
                                         mean_return=12.5), 1000)
    assert run.finished
    score = confirm.score_seed(run, worst=-3.0)
    assert (score.status, score.success_rate, score.mean_return) == ("ok", 0.7, 12.5)
    assert not score.scored_as_failure


def test_a_diverged_seed_scores_success_zero_and_the_worst_return(tmp_path):
    run_dir = save_run(tmp_path / "seed_1001", RunStatus.DIVERGED, success_rate=0.9,
                       mean_return=50.0, detail="non-finite actions at env step 96")
    score = confirm.score_seed(confirm.read_seed_run(run_dir, 1001), worst=-3.0)
    # its last evaluation before diverging (0.9, 50) does not count
    assert (score.status, score.success_rate, score.mean_return) == ("diverged", 0.0, -3.0)
    assert score.detail == "diverged: non-finite actions at env step 96"
    assert score.scored_as_failure


def test_a_seed_without_metrics_scores_as_failed(tmp_path):
    (tmp_path / "seed_1002").mkdir()  # the run raised before writing its metrics.json
    score = confirm.score_seed(confirm.read_seed_run(tmp_path / "seed_1002", 1002), worst=-3.0)
    assert (score.status, score.success_rate, score.mean_return) == (FAILED, 0.0, -3.0)
    assert "no metrics.json" in score.detail and str(tmp_path / "seed_1002") in score.detail
    never_started = confirm.read_seed_run(tmp_path / "seed_1003", 1003)
    assert confirm.score_seed(never_started, worst=-3.0).status == FAILED


def test_an_unreadable_metrics_file_scores_as_failed_naming_the_problem(tmp_path):
    (tmp_path / "seed_1").mkdir()
    (tmp_path / "seed_1" / run_result.FILE).write_text('{"status": "exploded"}')
    score = confirm.score_seed(confirm.read_seed_run(tmp_path / "seed_1", 1), worst=0.0)
    assert score.status == FAILED and score.detail.startswith("unreadable metrics.json: ")
    (tmp_path / "seed_2").mkdir()
    (tmp_path / "seed_2" / run_result.FILE).write_text('{"status": "ok", "det')  # cut short
    assert confirm.read_seed_run(tmp_path / "seed_2", 2).result is None


def test_worst_return_is_the_lowest_finished_return_of_any_cell(tmp_path):
    runs = [confirm.read_seed_run(save_run(tmp_path / "a" / str(k), mean_return=r), k)
            for k, r in enumerate([5.0, 2.0])]
    runs += [confirm.read_seed_run(save_run(tmp_path / "b" / "0", mean_return=-1.5), 0),
             # a diverged run's earlier return, however low, is not a finished run's return
             confirm.read_seed_run(save_run(tmp_path / "b" / "1", RunStatus.DIVERGED,
                                            mean_return=-99.0), 1),
             confirm.read_seed_run(tmp_path / "b" / "missing", 2)]
    assert confirm.worst_return(runs) == -1.5
    assert confirm.worst_return(runs[3:]) is None  # nothing finished: no return is known


def test_failures_lower_a_cell_instead_of_vanishing(tmp_path):
    finished = [confirm.read_seed_run(save_run(tmp_path / str(k), success_rate=1.0,
                                               mean_return=20.0), k) for k in range(3)]
    broken = [confirm.read_seed_run(save_run(tmp_path / "3", RunStatus.DIVERGED), 3),
              confirm.read_seed_run(tmp_path / "4", 4)]
    worst = confirm.worst_return(finished + broken)
    cell = confirm.score_cell(7, {"algo.learning_rate": 1e-3},
                              [confirm.score_seed(r, worst) for r in finished + broken])
    assert [s.seed for s in cell.seeds] == [0, 1, 2, 3, 4]
    assert cell.success_rates == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert [s.status for s in cell.failures] == ["diverged", FAILED]
    # dropping the two failures would claim 1.0; the IQM of all five is that of [0, 1, 1]
    assert cell.iqm_success_rate[0] == pytest.approx(2 / 3)
    assert cell.iqm_mean_return[0] == pytest.approx(20.0)  # worst return = 20: all finished at 20
    all_failed = confirm.score_cell(1, {}, [confirm.score_seed(r, None) for r in broken])
    assert all_failed.success_rates == [0.0, 0.0] and all_failed.iqm_mean_return is None


def test_few_seeds_note_says_what_the_iqm_really_is():
    # scipy's trim_mean drops int(n/4) scores from each end
    for n in (1, 2, 3):
        scores = np.array([0.0, 1.0, 100.0])[:n]
        assert stats.iqm(scores) == pytest.approx(scores.mean())
        assert "plain mean" in stats.few_seeds_note(n) and f"{n} seed" in stats.few_seeds_note(n)
    four = np.array([0.0, 1.0, 2.0, 100.0])
    assert stats.iqm(four) == pytest.approx(np.median(four)) and np.median(four) != four.mean()
    assert "middle two (the median)" in stats.few_seeds_note(4)
    assert stats.few_seeds_note(5) is None and stats.few_seeds_note(20) is None


def test_confirm_json_round_trips_and_reads_older_files(tmp_path):
    runs = [confirm.read_seed_run(save_run(tmp_path / "0", success_rate=0.4, mean_return=3.0), 0),
            confirm.read_seed_run(tmp_path / "1", 1)]
    cell = confirm.score_cell(2, {}, [confirm.score_seed(r, 3.0) for r in runs])
    data = ConfirmData(method=stats.METHOD, cells={"ppo-dense": cell}, improvement=[],
                       seeds_per_cell=2, worst_return=3.0, worst_return_rule=confirm.WORST_RETURN_RULE,
                       few_seeds_note=stats.few_seeds_note(2))
    written = json.loads(json.dumps(data.to_json()))
    assert written["cells"]["ppo-dense"]["seeds"] == [0, 1]
    assert [r["status"] for r in written["cells"]["ppo-dense"]["runs"]] == ["ok", FAILED]
    assert ConfirmData.from_json(written) == data
    # written before failures were scored: parallel lists of the seeds that finished only
    older = {"method": "m", "cells": {"ppo-dense": {
        "best_trial": 1, "params": {}, "seeds": [1000, 1001], "success_rate": [0.5, 1.0],
        "mean_return": [2.0, 4.0], "iqm_success_rate": [0.75, 0.5, 1.0],
        "iqm_mean_return": [3.0, 2.0, 4.0]}}, "improvement": {}}
    read = ConfirmData.from_json(older)
    assert not read.scores_failures and read.cells["ppo-dense"].success_rates == [0.5, 1.0]
    assert "plain mean" in read.few_seeds_note  # 2 seeds, whatever the file says


def test_a_bad_confirm_json_is_one_line_naming_the_field(tmp_path):
    path = tmp_path / "confirm.json"
    path.write_text(json.dumps({"cells": {"ppo-dense": {"best_trial": 1, "runs": [],
                                                        "iqm_mean_return": None}}}))
    with pytest.raises(ValueError, match=r"cells.ppo-dense: field 'iqm_success_rate' is missing"):
        ConfirmData.read(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        ConfirmData.read(path)


def test_bad_arguments_are_one_line_naming_the_field(capsys):
    assert confirm.main(["some_dir", "seeds=0"]) == 2
    assert capsys.readouterr().err.startswith("error: seeds='0' is invalid: expected an integer >= 1")
    assert confirm.main(["some_dir", "seed=3"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown argument 'seed'")
    assert confirm.main(["seeds=3"]) == 2
    assert "one sweep dir is required" in capsys.readouterr().err


# ---------------------------------------------------------------- a real sweep (slow)

@pytest.mark.slow
def test_confirm_scores_diverged_and_failed_seeds_and_warns_about_few_seeds(tmp_path):
    sweep_dir = synthetic_sweep(tmp_path / "sweep", "reward=dense,sparse",
                                "hydra.sweeper.n_trials=1")
    dense, sparse = sweep_dir / "confirm" / "ppo-dense", sweep_dir / "confirm" / "ppo-sparse"
    # Seeds that left a metrics.json are not retrained: these stand for finished runs.
    save_run(dense / "seed_1000", success_rate=0.5, mean_return=8.0, seed=1000)
    save_run(dense / "seed_1001", RunStatus.DIVERGED, success_rate=None, mean_return=None,
             detail="non-finite actions at env step 96", seed=1001)
    save_run(sparse / "seed_1000", success_rate=0.3, mean_return=2.0, seed=1000)
    # seed 1001 of ppo-sparse really runs and really fails: its run dir is taken by a file
    sparse.mkdir(parents=True, exist_ok=True)
    (sparse / "seed_1001").write_text("not a directory")

    result = run_cli(str(sweep_dir), "seeds=2", module="rlsweep.confirm")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {stats.few_seeds_note(2)}"]
    assert "ppo-sparse: seed 1001 scores as a failure (success 0, return 2)" in result.stderr
    assert "ppo-dense: IQM success rate 0.25 [0.00, 0.50]" in result.stdout
    assert "(1 scored as failures: seed 1001 diverged)" in result.stdout

    written = json.loads((sweep_dir / "confirm.json").read_text())
    assert written["worst_return"] == 2.0 and "lowest mean return" in written["worst_return_rule"]
    assert written["few_seeds_note"] == stats.few_seeds_note(2)
    runs = {name: [(r["seed"], r["status"], r["success_rate"], r["mean_return"]) for r in c["runs"]]
            for name, c in written["cells"].items()}
    assert runs == {"ppo-dense": [(1000, "ok", 0.5, 8.0), (1001, "diverged", 0.0, 2.0)],
                    "ppo-sparse": [(1000, "ok", 0.3, 2.0), (1001, FAILED, 0.0, 2.0)]}
    assert written["cells"]["ppo-dense"]["success_rate"] == [0.5, 0.0]  # what the stats use
    assert set(written["improvement"]) == {"ppo-dense > ppo-sparse", "ppo-sparse > ppo-dense"}

    page = (sweep_dir / "report.html").read_text()
    assert "seed 1001 diverged</span>" in page and f"seed 1001 {FAILED}</span>" in page
    assert "Few seeds." in page and "count with success 0 and return 2" in page
    assert load_sweep(sweep_dir).confirm.cells["ppo-sparse"].failures[0].seed == 1001

    # once every seed has finished (a rerun reads them all again), none scores as a failure
    (sparse / "seed_1001").unlink()
    shutil.rmtree(dense / "seed_1001")
    save_run(dense / "seed_1001", success_rate=1.0, mean_return=9.0, seed=1001)
    save_run(sparse / "seed_1001", success_rate=0.1, mean_return=1.0, seed=1001)
    rerun = run_cli(str(sweep_dir), "seeds=2", module="rlsweep.confirm")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    again = json.loads((sweep_dir / "confirm.json").read_text())
    assert again["worst_return"] == 1.0
    assert all(r["status"] == "ok" for c in again["cells"].values() for r in c["runs"])


@pytest.mark.slow
def test_baseline_trains_each_cells_defaults_on_the_same_seeds(tmp_path):
    from omegaconf import OmegaConf

    sweep_dir = synthetic_sweep(tmp_path / "sweep", "hydra.sweeper.n_trials=2")
    # the best config's seed stands for a finished run; the defaults' one really trains
    save_run(sweep_dir / "confirm" / "ppo-dense" / "seed_1000", success_rate=0.5,
             mean_return=8.0, seed=1000)

    result = run_cli(str(sweep_dir), "seeds=2", "baseline=true", module="rlsweep.confirm")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ppo-dense (defaults): IQM success rate" in result.stdout
    # the seeds left to train, of both configs, went to the launcher as one multirun
    launched = OmegaConf.load(sweep_dir / "confirm" / "multirun.yaml").hydra.overrides.task
    assert list(launched) == [f"{confirm.JOB_GROUP}=ppo-dense/seed_1001,"
                              "ppo-dense.defaults/seed_1000,ppo-dense.defaults/seed_1001"]
    written = json.loads((sweep_dir / "confirm.json").read_text())
    assert written["cells"]["ppo-dense"]["seeds"] == [1000, 1001]
    assert written["cells"]["ppo-dense"]["runs"][0]["mean_return"] == 8.0  # not retrained
    defaults = written["cells"]["ppo-dense (defaults)"]
    assert defaults["best_trial"] is None and defaults["seeds"] == [1000, 1001]
    assert set(written["improvement"]) == {"ppo-dense > ppo-dense (defaults)",
                                           "ppo-dense (defaults) > ppo-dense"}
    base = OmegaConf.load(sweep_dir / "ppo-dense" / "base_config.yaml")
    run = sweep_dir / "confirm" / "ppo-dense.defaults" / "seed_1000"
    assert json.loads((run / "metrics.json").read_text())["seed"] == 1000
    trained = OmegaConf.load(run / ".hydra" / "config.yaml")  # the algo's own values
    assert trained.algo.learning_rate == base.algo.learning_rate
    assert trained.trainer.total_timesteps == base.trainer.total_timesteps
    page = (sweep_dir / "report.html").read_text()
    assert 'data-confirm="ppo-dense (defaults)"' in page and "<td>defaults</td>" in page
    assert load_sweep(sweep_dir).confirm.cells["ppo-dense (defaults)"].best_trial is None
    # bench's tuning section reads this folder the same way
    tuning = tuning_bench.collect(sweep_dir)["cells"][0]
    assert (tuning["cell"], sum(tuning["trials"].values()), tuning["n_trials"]) == ("ppo-dense", 2, 2)
    assert tuning["best"]["trial"] == tuning["confirm"]["best"]["trial"] == \
        written["cells"]["ppo-dense"]["best_trial"]
    assert tuning["confirm"]["defaults"]["trial"] is None
    assert tuning["confirm"]["p_best_over_defaults"] == \
        written["improvement"]["ppo-dense > ppo-dense (defaults)"]
    assert [s["seed"] for s in tuning["confirm"]["defaults"]["seeds"]] == [1000, 1001]
    page = "\n".join(tuning_bench.run_markdown(tuning_bench.collect(sweep_dir)))
    assert "| defaults |" in page and f"Best: trial {tuning['best']['trial']}," in page


def test_baseline_must_be_true_or_false(capsys):
    assert confirm.main(["some_dir", "baseline=maybe"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: baseline='maybe' is invalid: expected true or false")
