"""The fast layer's sweeps: Hydra's own in-process sweep runner, no `python -m rlsweep` subprocess.

As Hydra's plugin tests do: the plugin is discovered, then whole sweeps run in this process on a
temporary SQLite storage with the synthetic objective (its trainer processes are the sweep's own),
and what they wrote is read back through the files' owners (plan, records, summary).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import optuna
import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from rlsweep.sweep.plan import PLAN_FILE, build_plan, read_plan, resume_conflict, write_plan
from rlsweep.sweep.records import TrialRecord, trial_dirs
from rlsweep.sweep.space import Cell
from rlsweep.sweep.study import SAMPLERS, Objectives, make_sampler
from tests.conftest import ROOT, compose_cfg

SYNTHETIC = ["hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective", "logger=none",
             "hydra.sweeper.sampler=random", "trainer.total_timesteps=400",
             "trainer.eval_freq=100", "trainer.eval_episodes=1"]


def test_hydra_discovers_the_sweeper_plugin():
    from hydra_plugins.rlsweep_sweeper.rlsweep_sweeper import RLSweeper

    assert RLSweeper.__name__ in [p.__name__ for p in Plugins.instance().discover(Sweeper)]


def in_process_sweep(hydra_sweep_runner, sweep_dir: Path, *overrides: str):
    """`python -m rlsweep -m <overrides>`, run by Hydra in this process (basic launcher). Hydra
    leaves logging alone (`none`): reconfiguring it would close pytest's capture handlers."""
    return hydra_sweep_runner(
        calling_file=str(ROOT / "rlsweep" / "__main__.py"), calling_module=None,
        task_function=None, config_path="../conf", config_name="config",
        overrides=["hydra/launcher=basic", "hydra/job_logging=none",
                   "hydra/hydra_logging=none", *overrides], temp_dir=sweep_dir)


def exit_code_of_in_process_sweep(hydra_sweep_runner, sweep_dir: Path, *overrides: str) -> int:
    """Run a sweep expected to end by `sys.exit` (refused input, every trial failed); its code.
    The runner's temp dir is left in place (it only removes it on a normal exit)."""
    with pytest.raises(SystemExit) as stop:
        with in_process_sweep(hydra_sweep_runner, sweep_dir, *overrides):
            pass
    return stop.value.code


def test_an_in_process_sweep_fills_each_cells_budget_and_writes_its_files(
        hydra_sweep_runner, tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    with in_process_sweep(hydra_sweep_runner, sweep_dir, "algo=ppo,a2c", *SYNTHETIC,
                          "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "hydra.sweeper.pruner=none",
                          "hydra.sweeper.on_finish=null"):
        cells = read_plan(sweep_dir)  # read before the runner removes its temp dir
        storage = f"sqlite:///{sweep_dir}/optuna.db"
        studies = {c["name"]: optuna.load_study(study_name=c["study_name"], storage=storage)
                   for c in cells}
        records = {c["name"]: [TrialRecord.read(d)
                               for d in trial_dirs(sweep_dir / c["name"])] for c in cells}
        summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert [c["name"] for c in cells] == ["ppo-dense", "a2c-dense"]
    for name, study in studies.items():
        states = [t.state for t in study.trials]
        assert states == [optuna.trial.TrialState.COMPLETE] * 3, (name, states)
        assert sorted(r.number for r in records[name]) == [0, 1, 2]
        assert all(r.env_steps == 400 for r in records[name])
        assert summary[name]["n_complete"] == 3 and summary[name]["env_steps"] == 3 * 400
    assert "ppo-dense" in capsys.readouterr().out  # the table a user reads


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "grid"])
def test_every_sampler_fills_a_cells_budget_with_distinct_points(hydra_sweep_runner, tmp_path,
                                                                 monkeypatch, sampler):
    """Each sampler built from its config option and asked through a whole sweep (grid: its own
    tests, it needs a grid of points); the worker builds the sampler the command names."""
    from rlsweep.sweep import worker

    built = []

    def recording_make_sampler(name, *args, **kwargs):
        built.append(name)
        return make_sampler(name, *args, **kwargs)

    monkeypatch.setattr(worker, "make_sampler", recording_make_sampler)
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in SYNTHETIC if not o.startswith("hydra.sweeper.sampler=")]
    with in_process_sweep(hydra_sweep_runner, sweep_dir, "algo=ppo", *overrides,
                          f"hydra.sweeper.sampler={sampler}", "hydra.sweeper.n_trials=5",
                          "hydra.sweeper.n_jobs=1", "hydra.sweeper.pruner=none",
                          "hydra.sweeper.on_finish=null"):
        (cell,) = read_plan(sweep_dir)
        trials = optuna.load_study(study_name=cell["study_name"],
                                   storage=f"sqlite:///{sweep_dir}/optuna.db").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 5, \
        [t.user_attrs.get("fail_reason") for t in trials]
    assert len({t.params["algo.learning_rate"] for t in trials}) >= 3  # sampled, not one point
    assert built and set(built) == {sampler}  # the cell's, then each seeded trial's own


def test_a_presets_sweeper_settings_reach_the_workers(hydra_sweep_runner, tmp_path):
    """A preset that sets hydra.sweeper.* (as +hparams_search=lift_sbx_sac sets its pruner):
    the workers prune with it. Hydra composes a job's config from the hydra overrides and the
    job's own list only, so the sweeper hands each job the command line's fixed overrides; a
    worker that missed them would prune with the defaults (median: nothing here)."""
    presets = tmp_path / "conf" / "experiment"
    presets.mkdir(parents=True)
    (presets / "prune_everything.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    pruner: threshold\n"
        "    pruner_kwargs:\n      lower: 1.0e9\n")
    sweep_dir = tmp_path / "sweep"
    with in_process_sweep(hydra_sweep_runner, sweep_dir, "algo=ppo", *SYNTHETIC,
                          "+experiment=prune_everything",
                          f"hydra.searchpath=[file://{presets.parent}]",
                          "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
                          "hydra.sweeper.on_finish=null"):
        records = [TrialRecord.read(d) for d in trial_dirs(sweep_dir / "ppo-dense")]
    assert [(r.state, r.last_step) for r in records] == [("PRUNED", 100)] * 2  # first evaluation


def test_an_in_process_sweep_refuses_bad_input_before_writing(hydra_sweep_runner, tmp_path,
                                                              capsys):
    sweep_dir = tmp_path / "bad"
    assert exit_code_of_in_process_sweep(hydra_sweep_runner, sweep_dir, "algo=ppo", *SYNTHETIC,
                                         "hydra.sweeper.pruner=nosuch") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hydra.sweeper.pruner" in err[0] and "median" in err[0]
    assert not (sweep_dir / PLAN_FILE).exists()


def test_the_plan_round_trips_and_an_unchanged_plan_resumes(tmp_path):
    from optuna.distributions import FloatDistribution

    cfg = compose_cfg("algo=ppo")
    cell = Cell(name="ppo-dense", choices={"algo": "ppo", "reward": "dense"}, overrides=[],
                seeds=[0, 1], space={"algo.learning_rate": FloatDistribution(1e-4, 1e-2, log=True)})
    objectives = Objectives(metrics=("success_rate", "wall_time_s"),
                            directions=("maximize", "minimize"))
    plan = build_plan([cell], {"ppo-dense": "night-ppo-dense"}, "night", objectives, 5, "joblib")
    write_plan(tmp_path, plan, {"ppo-dense": cfg})
    (read,) = read_plan(tmp_path)
    assert read["study_name"] == "night-ppo-dense" and read["seeds"] == [0, 1]
    assert read["space"] == cell.space
    assert OmegaConf.to_container(read["base_config"]) == OmegaConf.to_container(cfg, resolve=True)
    assert resume_conflict(tmp_path, plan, {"ppo-dense": cfg}) is None
    changed = build_plan([cell], {"ppo-dense": "night-ppo-dense"}, "night", objectives, 5, "joblib")
    changed["cells"][0]["space"]["algo.learning_rate"] = \
        '{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.001, "high": 0.01, "log": true}}'
    assert "algo.learning_rate" in resume_conflict(tmp_path, changed, {"ppo-dense": cfg})


@pytest.mark.slow  # real (tiny) training
def test_the_added_algorithms_train_inside_a_sweep(hydra_sweep_runner, tmp_path):
    # One per family not swept elsewhere: sb3-contrib, SBX with action noise, CrossQ (sac,
    # sbx_sac, ppo, a2c sweep in other tests; td3, sbx_tqc and dqn train in test_registries
    # and in the acceptance check).
    algos = ["tqc", "sbx_td3", "crossq"]
    sweep_dir = tmp_path / "sweep"
    with in_process_sweep(hydra_sweep_runner, sweep_dir, f"algo={','.join(algos)}",
                          "env=gym", "env.id=Pendulum-v1", "logger=none",
                          "trainer.total_timesteps=300", "trainer.eval_freq=300",
                          "trainer.eval_episodes=1", "algo.learning_starts=100",
                          "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1",
                          "hydra.sweeper.pruner=none", "hydra.sweeper.on_finish=null"):
        summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
        models = {name: (sweep_dir / name / "trial_000" / "model.zip").exists() for name in summary}
    assert sorted(summary) == sorted(f"{a}-dense" for a in algos)
    assert {name: s["n_complete"] for name, s in summary.items()} == {n: 1 for n in summary}
    assert all(s["best_success_rate"] is None for s in summary.values())  # Pendulum: return only
    assert all(models.values()), models


def test_a_trial_past_its_wall_clock_limit_is_stopped_failed_and_frees_its_worker(
        hydra_sweep_runner, tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    # every trial failed: the sweep says so, non-zero
    assert exit_code_of_in_process_sweep(
        hydra_sweep_runner, sweep_dir, "algo=ppo", *SYNTHETIC, "trainer.total_timesteps=60000",
        "trainer.eval_freq=1000", "hydra.sweeper.trial_timeout_s=2", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1", "hydra.sweeper.pruner=none", "hydra.sweeper.on_finish=null") != 0
    study = optuna.load_study(study_name="ppo-dense", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2  # no retries
    for trial in study.trials:
        assert trial.user_attrs["fail_reason"].startswith(
            "TrialTimeout: the trial trained longer than hydra.sweeper.trial_timeout_s=2 s")
        # stopped mid-run (60,000 synthetic steps take 60 s), the worker then took the next
        assert TrialRecord.read(sweep_dir / "ppo-dense" / f"trial_{trial.number:03d}").env_steps \
            < 60000


SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
RAY = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
LOCAL = ["hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
         "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
         "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"]
SQLITE, POSTGRES = "sqlite:////s/optuna.db", "postgresql://u:${oc.env:P}@db/optuna"


@pytest.mark.parametrize("url,launcher,single_node,refused", [
    (SQLITE, SLURM, False, True), (SQLITE, RAY, False, True),
    (SQLITE, SLURM, True, False),  # the opt-in: a one-node cluster
    (POSTGRES, SLURM, False, False), (POSTGRES, RAY, False, False),
    *[(SQLITE, local, False, False) for local in LOCAL],
])
def test_sqlite_is_refused_with_launchers_that_reach_other_machines(url, launcher, single_node,
                                                                     refused):
    from rlsweep.config import ConfigError
    from rlsweep.sweep.sweeper import check_storage_reachable

    if not refused:
        check_storage_reachable(url, launcher, single_node)
        return
    with pytest.raises(ConfigError) as err:
        check_storage_reachable(url, launcher, single_node)
    message = str(err.value)
    assert "\n" not in message and "hydra.sweeper.storage" in message
    assert "postgresql://" in message and "hydra.sweeper.single_node=true" in message


def test_a_slurm_sweep_on_the_default_sqlite_is_refused_before_any_job(hydra_sweep_runner,
                                                                      tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    assert exit_code_of_in_process_sweep(hydra_sweep_runner, sweep_dir, "algo=ppo", *SYNTHETIC,
                                         "hydra/launcher=submitit_slurm") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: hydra.sweeper.storage is SQLite") and "SlurmLauncher" in line
    assert not (sweep_dir / PLAN_FILE).exists() and not (sweep_dir / ".submitit").exists()


class _BlockedLaunch:
    """Stands in for submitit's launcher waiting on a job Slurm no longer reports (the case the
    watch exists for; the real one needs a cluster without accounting)."""

    def __init__(self, returns=None, error=None, block: bool = True):
        self.returns, self.error, self.release = returns, error, threading.Event()
        if not block:
            self.release.set()

    def launch(self, jobs, initial_job_idx):
        self.release.wait()
        if self.error:
            raise self.error
        return self.returns


def test_a_launcher_still_waiting_after_the_storage_says_done_is_left_behind():
    from rlsweep.sweep.sweeper import LauncherStillWaiting, launch_watching_the_storage

    work = {"left": True}
    launcher = _BlockedLaunch()
    threading.Timer(0.3, lambda: work.update(left=False)).start()  # the last trial finishes
    with pytest.raises(LauncherStillWaiting, match="still waits for its jobs after 0.5 s"):
        launch_watching_the_storage(launcher, [[]], 0, lambda: work["left"], grace_s=0.5,
                                    poll_s=0.05)
    launcher.release.set()


def test_a_launch_whose_jobs_all_left_the_queue_with_work_left_is_given_up_on():
    from rlsweep.sweep.sweeper import LaunchedJobsGone, launch_watching_the_storage

    answers = iter([False, True, False, True, True])  # a blip alone is not believed
    asked = []

    def jobs_gone() -> bool:
        asked.append(1)
        return next(answers)

    launcher = _BlockedLaunch()
    with pytest.raises(LaunchedJobsGone, match="every worker job of this launch has left"):
        launch_watching_the_storage(launcher, [[]], 0, lambda: True, poll_s=0.01,
                                    jobs_gone=jobs_gone, jobs_poll_s=0.02)
    assert len(asked) == 5
    # No work left: the cluster is not asked (the grace period for a done storage runs).
    with pytest.raises(Exception, match="still waits"):
        launch_watching_the_storage(launcher, [[]], 0, lambda: False, grace_s=0.1,
                                    poll_s=0.01, jobs_gone=lambda: asked.append(1) or True,
                                    jobs_poll_s=0.0)
    assert len(asked) == 5
    launcher.release.set()


def test_a_launcher_that_ends_is_waited_for_and_its_result_or_error_kept():
    from rlsweep.sweep.sweeper import launch_watching_the_storage

    done = _BlockedLaunch(returns=["r0", "r1"], block=False)
    assert launch_watching_the_storage(done, [[], []], 0, lambda: True, poll_s=0.05) == ["r0", "r1"]
    with pytest.raises(RuntimeError, match="job died"):
        launch_watching_the_storage(_BlockedLaunch(error=RuntimeError("job died"), block=False),
                                    [[]], 0, lambda: True, poll_s=0.05)
    still_working = _BlockedLaunch(returns="late")  # work left: no grace period runs
    threading.Timer(0.4, still_working.release.set).start()
    assert launch_watching_the_storage(still_working, [[]], 0, lambda: True, grace_s=0.1,
                                       poll_s=0.05) == "late"


def test_a_worker_started_again_retries_its_earlier_runs_trial_at_once_for_free(
        hydra_sweep_runner, tmp_path, monkeypatch):
    """A Slurm job SIGKILLed and requeued runs its worker again under the same identity (the
    sweep's host and pid, the same job number): the trial its first run left RUNNING, with a
    fresh heartbeat, is failed and retried at once without spending its one retry."""
    import os
    import socket

    from optuna.trial import TrialState

    from rlsweep.sweep.study import claim_trial, make_storage, worker_identity

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    url = f"sqlite:///{sweep_dir}/optuna.db"
    storage = make_storage(url, 10, 60)
    study = optuna.create_study(study_name="ppo-dense", storage=storage, direction="maximize")
    study.enqueue_trial({}, skip_if_exists=False)
    # What the killed first run left: its claim and fresh heartbeat, as this sweep's worker 0.
    planted = claim_trial(study, storage, worker_identity(socket.gethostname(), os.getpid(), 0))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # as Slurm tells a requeued job
    with in_process_sweep(hydra_sweep_runner, sweep_dir, "algo=ppo", *SYNTHETIC,
                          "hydra.sweeper.n_jobs=1", "hydra.sweeper.pruner=none",
                          "hydra.sweeper.on_finish=null", "hydra.sweeper.n_trials=2"):
        trials = {t.number: t for t in optuna.load_study(study_name="ppo-dense",
                                                         storage=url).trials}
    assert trials[planted.number].state == TrialState.FAIL
    assert trials[planted.number].user_attrs["fail_reason"].startswith(
        "its worker died and was started again")
    (retry,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == planted.number]
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["retry_history"] == []
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) == 2  # the budget
