"""Issue 31, items 1, 4, 6, 8 and 21: a resume never writes over a finished sweep (a storage
without its studies, a copied dir, a shrunk budget, a changed definition of a trial's value), a
command-line value of a searched parameter fixes it, the same command and seed sample the same
parameters, and a budget past the bound is refused before anything is written.

Whole sweeps run in this process (Hydra's own sweep runner, basic launcher) on the synthetic
objective and real SQLite storages; the reproducibility test starts `python -m rlsweep` twice,
since the worker's process is what must not matter."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml

import rlsweep.config  # noqa: F401  registers rlsweep_schema, which conf/config.yaml composes
from tests.conftest import ROOT, run_cli

SYNTHETIC = ["algo=ppo", "hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective",
             "logger=none", "hydra.sweeper.sampler=random", "hydra.sweeper.pruner=none",
             "trainer.total_timesteps=400", "trainer.eval_freq=100", "trainer.eval_episodes=1",
             "hydra.sweeper.n_jobs=1", "hydra.sweeper.on_finish=null"]


def in_process_sweep(hydra_sweep_runner, sweep_dir: Path, *overrides: str):
    """`python -m rlsweep -m <overrides>` run by Hydra in this process (as tests/test_in_process
    does); Hydra leaves logging alone, which would close pytest's capture handlers."""
    return hydra_sweep_runner(
        calling_file=str(ROOT / "rlsweep" / "__main__.py"), calling_module=None,
        task_function=None, config_path="../conf", config_name="config",
        overrides=["hydra/launcher=basic", "hydra/job_logging=none", "hydra/hydra_logging=none",
                   *overrides], temp_dir=sweep_dir)


def run_sweep(hydra_sweep_runner, sweep_dir: Path, *overrides: str) -> None:
    """Run the sweep to its end and keep its dir (the runner's exit would delete it; the exit
    does nothing else here: logging is left alone)."""
    in_process_sweep(hydra_sweep_runner, sweep_dir, *SYNTHETIC, *overrides).__enter__()


def refused_line(hydra_sweep_runner, capsys, sweep_dir: Path, *overrides: str) -> str:
    """Run a sweep that must be refused: exit 2 and one `error:` line on stderr, returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_sweep(hydra_sweep_runner, sweep_dir, *overrides)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def fingerprint(folder: Path) -> dict[str, object]:
    """Every file under `folder` by content hash, and what its optuna.db holds: whether it
    exists, is empty, or which trials in which state (its bytes move with SQLite's WAL
    checkpoints, which connections left open by the earlier in-process sweeps may run)."""
    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.rglob("*"))
             if p.is_file() and not p.name.startswith("optuna.db")}
    db = folder / "optuna.db"
    if not db.exists() or db.stat().st_size == 0:
        return {**files, "optuna.db": db.exists()}
    storage = f"sqlite:///{db}"
    return {**files, "optuna.db": {
        name: [(t.number, t.state.name, t.params) for t in
               optuna.load_study(study_name=name, storage=storage).get_trials()]
        for name in optuna.get_all_study_names(storage)}}


def trial_params(sweep_dir: Path) -> dict[int, dict]:
    return {json.loads(t.read_text())["number"]: json.loads(t.read_text())["params"]
            for t in sweep_dir.rglob("trial.json")}


@pytest.fixture
def finished_sweep(hydra_sweep_runner, tmp_path) -> Path:
    """A finished two-trial sweep with its default storage, optuna.db in the sweep dir."""
    sweep_dir = tmp_path / "sweep"
    run_sweep(hydra_sweep_runner, sweep_dir, "hydra.sweeper.n_trials=2")
    assert sorted(trial_params(sweep_dir)) == [0, 1]
    return sweep_dir


def _delete_db(sweep_dir: Path, tmp_path: Path) -> list[str]:
    for path in sweep_dir.glob("optuna.db*"):
        path.unlink()
    return []


def _truncate_db(sweep_dir: Path, tmp_path: Path) -> list[str]:
    (sweep_dir / "optuna.db").write_bytes(b"")
    return []


def _other_url(sweep_dir: Path, tmp_path: Path) -> list[str]:
    return [f"hydra.sweeper.storage=sqlite:///{tmp_path}/other.db"]


def _other_database(sweep_dir: Path, tmp_path: Path) -> list[str]:
    storage = f"sqlite:///{tmp_path}/other.db"
    optuna.create_study(storage=storage, study_name="sac-dense")
    return [f"hydra.sweeper.storage={storage}"]


@pytest.mark.parametrize("storage_without_the_studies,lacks", [
    (_delete_db, "does not exist"), (_truncate_db, "is empty"),
    (_other_url, "does not exist"), (_other_database, "studies ppo-dense")])
def test_a_resume_whose_storage_lacks_the_sweeps_studies_is_refused_and_writes_nothing(
        hydra_sweep_runner, finished_sweep, tmp_path, capsys, storage_without_the_studies, lacks):
    # Before: the storage had no study ppo-dense, so a new one started at trial 0 and rewrote
    # trial_000's files and sweep_plan.json (rc 0, no word).
    overrides = storage_without_the_studies(finished_sweep, tmp_path)
    before = fingerprint(finished_sweep)
    other = tmp_path / "other.db"
    other_existed = other.exists()
    line = refused_line(hydra_sweep_runner, capsys, finished_sweep, "hydra.sweeper.n_trials=2",
                        *overrides)
    assert "lacks" in line and lacks in line and "nothing was written" in line, line
    assert ("other.db" if overrides else f"{finished_sweep}/optuna.db") in line, line
    assert fingerprint(finished_sweep) == before  # no file changed, no optuna.db created
    assert other.exists() == other_existed  # no other.db created either
    if other_existed:  # and no study created in it
        assert optuna.get_all_study_names(f"sqlite:///{other}") == ["sac-dense"]


def test_a_resume_on_an_older_copy_of_the_storage_is_refused_and_writes_nothing(
        hydra_sweep_runner, finished_sweep, tmp_path, capsys):
    with sqlite3.connect(finished_sweep / "optuna.db") as db, \
            sqlite3.connect(tmp_path / "older.db") as older:
        db.backup(older)  # a copy holding 2 trials (its WAL included)
    run_sweep(hydra_sweep_runner, finished_sweep, "hydra.sweeper.n_trials=4")
    before = fingerprint(finished_sweep)
    line = refused_line(hydra_sweep_runner, capsys, finished_sweep, "hydra.sweeper.n_trials=4",
                        f"hydra.sweeper.storage=sqlite:///{tmp_path}/older.db")
    assert "study ppo-dense: it holds 2" in line and "trial_003" in line, line
    assert fingerprint(finished_sweep) == before


def test_a_copied_sweep_dir_resumes_under_its_name_and_study_name_is_not_a_trap(
        hydra_sweep_runner, finished_sweep, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished_sweep, copy)
    name = json.loads((finished_sweep / "sweep_plan.json").read_text())["sweep_name"]
    before = fingerprint(copy)
    # Before: the dir's name refused the copy and said to set study_name; doing so renamed
    # the studies (name-ppo-dense), which the copied storage lacks: trial_000 was overwritten.
    line = refused_line(hydra_sweep_runner, capsys, copy, "hydra.sweeper.n_trials=2",
                        f"hydra.sweeper.study_name={name}")
    assert "without hydra.sweeper.study_name" in line and "nothing was written" in line, line
    assert fingerprint(copy) == before
    run_sweep(hydra_sweep_runner, copy, "hydra.sweeper.n_trials=3")
    assert sorted(trial_params(copy)) == [0, 1, 2]
    after = fingerprint(copy)
    for trial in ("trial_000", "trial_001"):
        kept = {k: v for k, v in before.items() if f"/{trial}/" in k}
        assert kept and all(after[k] == v for k, v in kept.items()), trial
    assert json.loads((copy / "sweep_plan.json").read_text())["sweep_name"] == name


@pytest.mark.parametrize("change,words", [
    (["hydra.sweeper.n_trials=1"], ["hydra.sweeper.n_trials: 2 -> 1", "n_trials >= 2"]),
    (["hydra.sweeper.value_last_evals=1"], ["hydra.sweeper.value_last_evals: 3 -> 1"]),
    (["hydra.sweeper.seed_aggregate=iqm"], ["hydra.sweeper.seed_aggregate: mean -> iqm"]),
    (["hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective_3"],
     ["hydra.sweeper.objective", "synthetic_objective_3"]),
])
def test_a_resume_that_shrinks_the_budget_or_changes_a_trials_value_is_refused(
        hydra_sweep_runner, finished_sweep, capsys, change, words):
    # Before: each was accepted; n_trials=1 even ran on ("2/1 done") and rewrote the plan's
    # n_trials, and the others mixed two definitions of a trial's value in one study.
    before = fingerprint(finished_sweep)
    line = refused_line(hydra_sweep_runner, capsys, finished_sweep, "hydra.sweeper.n_trials=2",
                        *change)
    assert all(w in line for w in words) and "nothing was written" in line, line
    assert fingerprint(finished_sweep) == before


def test_a_larger_budget_extends_the_queue_and_new_trials_are_new_samples(
        hydra_sweep_runner, finished_sweep):
    run_sweep(hydra_sweep_runner, finished_sweep, "hydra.sweeper.n_trials=4")
    params = trial_params(finished_sweep)
    assert sorted(params) == [0, 1, 2, 3]
    assert json.loads((finished_sweep / "sweep_plan.json").read_text())["n_trials"] == 4
    # Before: the resumed worker's sampler restarted the first run's stream (same seed,
    # worker, cell and, in one process, pid): trials 2 and 3 repeated trials 0 and 1.
    firsts = [tuple(sorted(params[n].items())) for n in (0, 1)]
    assert all(tuple(sorted(params[n].items())) not in firsts for n in (2, 3)), params


def test_a_command_line_value_fixes_a_searched_parameter(hydra_sweep_runner, tmp_path, capsys):
    # Before: ppo's search_space samples gamma from choice(0.95, 0.98, 0.99) whatever the
    # command line said.
    sweep_dir = tmp_path / "fixed"
    capsys.readouterr()
    run_sweep(hydra_sweep_runner, sweep_dir, "algo.gamma=0.9", "hydra.sweeper.n_trials=3")
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes and notes[0] == "note: algo.gamma=0.9 is fixed on the command line: not searched"
    params = trial_params(sweep_dir)
    assert len(params) == 3 and all("algo.gamma" not in p and "algo.learning_rate" in p
                                    for p in params.values()), params
    for config in sweep_dir.glob("ppo-dense/trial_*/config.yaml"):
        assert yaml.safe_load(config.read_text())["algo"]["gamma"] == 0.9, config
    (cell,) = json.loads((sweep_dir / "sweep_plan.json").read_text())["cells"]
    assert "algo.gamma" not in cell["space"] and "algo.gae_lambda" in cell["space"]


def test_a_budget_past_the_bound_is_refused_before_anything_is_written(
        hydra_sweep_runner, tmp_path, capsys):
    # Before: 100 million trials per cell were queued at about 200 a second, for days.
    sweep_dir = tmp_path / "huge"
    line = refused_line(hydra_sweep_runner, capsys, sweep_dir, "hydra.sweeper.n_trials=100000000")
    assert "hydra.sweeper.n_trials=100000000" in line and "1..10000" in line, line
    assert not [p for p in sweep_dir.rglob("*") if p.is_file()]


@pytest.mark.slow  # the worker runs in a joblib pool process: its pid must not matter
def test_the_same_command_and_seed_sample_the_same_parameters(tmp_path):
    def params_of(name: str, *extra: str) -> dict[int, dict]:
        result = run_cli("-m", *SYNTHETIC, "hydra.sweeper.seed=42", "hydra.sweeper.n_trials=4",
                         f"hydra.sweep.dir={tmp_path / name}", *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        return trial_params(tmp_path / name)

    first, again = params_of("a"), params_of("b")
    assert sorted(first) == [0, 1, 2, 3] and first == again  # before: different every run
    assert len({json.dumps(p, sort_keys=True) for p in first.values()}) == 4
    # The random sampler's trial N is seeded from (seed, cell, N): whichever worker takes it.
    assert params_of("two_workers", "hydra.sweeper.n_jobs=2") == first
    assert params_of("other_seed", "hydra.sweeper.seed=43") != first
