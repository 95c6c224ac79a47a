"""Searches that mean something: samplers and pruners sized to the budget, every sampler
working across workers, diverged trials pruned, repeated seeds, multi-objective sweeps.

Pure functions are tested directly; sweeps run for real on the synthetic objective.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from rlsweep.config import ConfigError
from rlsweep.sweep.seeds import EvaluationLog, aggregate
from rlsweep.sweep.space import parse_sweep_request
from rlsweep.sweep.study import (SAMPLERS, Objectives, check_grid, grid_points,
                                 sized_pruner_kwargs, sized_sampler_kwargs)
from rlsweep.sweep.summary import dominates, pareto_front
from rlsweep.sweep.sweeper import trial_seeds
from tests.test_sweeper import study, summary, sweep
from tests.wandb_reader import find_offline_runs, read_offline_run

SYNTHETIC = ["hydra.sweeper.objective=rlsweep.sweep.synthetic.synthetic_objective", "logger=none",
             "trainer.total_timesteps=400", "trainer.eval_freq=100", "hydra.sweeper.n_jobs=2"]


def trial_records(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob("trial.json"))]


# ---------------------------------------------------------------- sizing (pure)

@pytest.mark.parametrize("n_trials,startup", [(4, 2), (8, 2), (24, 6), (40, 10), (400, 10)])
def test_model_based_samplers_start_after_a_quarter_of_the_budget(n_trials, startup):
    for name in ("tpe", "gp"):
        kwargs, notes = sized_sampler_kwargs(name, n_trials, 1, {})
        assert kwargs["n_startup_trials"] == startup and not notes


def test_parallel_tpe_uses_a_constant_liar_and_what_the_user_gives_wins():
    assert sized_sampler_kwargs("tpe", 8, 2, {})[0]["constant_liar"] is True
    assert sized_sampler_kwargs("tpe", 8, 1, {})[0]["constant_liar"] is False
    kwargs, notes = sized_sampler_kwargs("tpe", 8, 2, {"n_startup_trials": 8,
                                                       "constant_liar": False})
    assert kwargs["n_startup_trials"] == 8 and kwargs["constant_liar"] is False
    assert len(notes) == 1 and "random" in notes[0] and "n_startup_trials=8" in notes[0]


def test_nsga_generations_fit_the_budget():
    assert sized_sampler_kwargs("nsga2", 40, 2, {})[0]["population_size"] == 10
    kwargs, notes = sized_sampler_kwargs("nsga3", 6, 2, {})
    assert kwargs["population_size"] == 4 and "random" in notes[0]


@pytest.mark.parametrize("n_trials,total,freq,startup,warmup", [
    (8, 20_000, 2_000, 2, 6_667),      # rl-zoo3: no pruning in the first third
    (40, 100_000, 10_000, 5, 33_334),
    (6, 400, 100, 2, 134),             # first chance at 200, never at 100
    (8, 300_000, 10_000, 2, 100_000),  # the default config: from 100k
])
def test_median_pruner_is_sized_to_trials_and_env_steps(n_trials, total, freq, startup, warmup):
    kwargs, notes = sized_pruner_kwargs("median", n_trials, total, freq, {})
    assert (kwargs["n_startup_trials"], kwargs["n_warmup_steps"]) == (startup, warmup)
    assert not notes


@pytest.mark.parametrize("given,words", [
    ({"n_startup_trials": 8}, ["n_startup_trials=8", "nothing can be pruned"]),
    ({"n_warmup_steps": 20_000}, ["n_warmup_steps=20000", "nothing can be pruned"]),
])
def test_a_pruner_that_can_never_prune_is_named(given, words):
    notes = sized_pruner_kwargs("median", 8, 20_000, 2_000, given)[1]
    assert len(notes) == 1 and all(w in notes[0] for w in words)


def test_resource_pruners_count_in_env_steps():
    kwargs = sized_pruner_kwargs("hyperband", 8, 20_000, 2_000, {})[0]
    assert (kwargs["min_resource"], kwargs["max_resource"]) == (2_000, 20_000)
    assert sized_pruner_kwargs("successive_halving", 8, 20_000, 2_000, {})[0]["min_resource"] == 2_000
    assert "nothing to compare" in sized_pruner_kwargs("median", 8, 1_000, 1_000, {})[1][0]


# ---------------------------------------------------------------- grid (pure)

def test_grid_enumerates_ranges_and_short_int_intervals():
    space = {"a": IntDistribution(8, 32, step=8), "b": IntDistribution(1, 3),
             "c": FloatDistribution(0.1, 0.3, step=0.1), "d": CategoricalDistribution(["x"])}
    points = grid_points(space)
    assert len(points) == 4 * 3 * 3 * 1
    assert {p["c"] for p in points} == {0.1, 0.2, 0.3}


def test_grid_refuses_a_continuous_interval_and_a_budget_it_would_cut():
    with pytest.raises(ConfigError, match=r"cannot enumerate algo.lr .*choice\(\) or range\(\)"):
        grid_points({"algo.lr": FloatDistribution(1e-4, 1e-2, log=True)})
    with pytest.raises(ConfigError, match="n_trials=3 is invalid for sampler=grid: cell c has 4"):
        check_grid({"a": CategoricalDistribution([1, 2, 3, 4])}, 3, "c")


# ---------------------------------------------------------------- objectives, seeds (pure)

@pytest.mark.parametrize("metric,direction,words", [
    (["success_rate", "wall_time_s"], "maximize", ["direction", "one direction per metric"]),
    (["success_rate", "nosuch"], ["maximize", "minimize"], ["metric", "mean_return"]),
    ("wall_time_s", "minimize", ["wall_time_s", "alone"]),
    (["wall_time_s", "env_steps"], ["minimize", "minimize"], ["needs one of", "success_rate"]),
    (["success_rate", "success_rate"], ["maximize", "maximize"], ["twice"]),
])
def test_bad_objectives_are_named(metric, direction, words):
    with pytest.raises(ConfigError) as err:
        Objectives.from_settings({"metric": metric, "direction": direction})
    assert all(w in str(err.value) for w in words), err.value


def test_seed_lists_are_repeats_not_parameters():
    request = parse_sweep_request(["algo=ppo", "seed=3,5,7", "algo.gamma=0.9,0.99"])
    assert request.seeds == [3, 5, 7] and "seed" not in request.ranges
    assert parse_sweep_request(["seed=range(0,3)"]).seeds == [0, 1, 2]
    with pytest.raises(ConfigError, match="distinct integers"):
        parse_sweep_request(["seed=1,1"])
    assert trial_seeds(None, 3, 10) == [10, 11, 12]
    assert trial_seeds([3, 5], 1, 0) == [3, 5] == trial_seeds([3, 5], 2, 0)
    with pytest.raises(ConfigError, match="seeds_per_trial=3"):
        trial_seeds([3, 5], 3, 0)


def test_seed_aggregates_and_the_last_evaluations():
    assert aggregate([0.2, None, 0.4], "mean") == pytest.approx(0.3)
    assert aggregate([0.0, 0.5, 0.6, 1.0], "iqm") == pytest.approx(0.55)  # middle half
    assert aggregate([None], "mean") is None
    log = EvaluationLog("mean")
    for step, s in ((100, 0.0), (200, 0.5), (300, 0.7), (400, 0.9)):
        log.add(step, [{"success_rate": s, "mean_return": 10 * s}, {"success_rate": s}])
    assert log.recent(3)["success_rate"] == pytest.approx(0.7)
    assert log.recent(1) == {"success_rate": pytest.approx(0.9), "mean_return": pytest.approx(9.0)}


def test_pareto_front_keeps_only_undominated_points():
    directions = ["maximize", "minimize"]
    assert dominates([0.9, 10], [0.8, 10], directions)
    assert not dominates([0.9, 20], [0.8, 10], directions)
    points = [{"id": k, "values": v} for k, v in
              enumerate([[0.9, 20], [0.8, 10], [0.7, 15], [0.9, 25], [0.5, 5]])]
    assert [p["id"] for p in pareto_front(points, directions)] == [0, 1, 4]


# ---------------------------------------------------------------- real sweeps (synthetic)

# Every sampler runs a whole sweep in process (test_in_process.py); across two worker processes
# each claims and samples alike, so one relative sampler (CMA-ES: its search space is read from
# the study's finished trials) stands for them here. `../shared/acceptance/search` runs them all so.
@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["cmaes"])
def test_a_sampler_runs_its_trials_across_two_workers(tmp_path, sampler):
    result = sweep(tmp_path, "algo=ppo", *SYNTHETIC, "hydra.sweeper.n_trials=5",
                   f"hydra.sweeper.sampler={sampler}")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study(tmp_path, "ppo-dense").get_trials()
    assert len(trials) == 5 and not [t for t in trials if t.state == TrialState.FAIL], \
        [t.user_attrs.get("fail_reason") for t in trials]
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert len({t.params["algo.learning_rate"] for t in trials}) >= 3  # sampled, not one point


@pytest.mark.slow
def test_a_diverged_trial_is_pruned_at_its_step_and_ranked_last(tmp_path):
    # A grid, so both learning rates are trained (a random draw of 6 missed 0.5 in 1 of 64 runs).
    result = sweep(tmp_path, "algo=ppo", *SYNTHETIC, "hydra.sweeper.n_trials=6",
                   "hydra.sweeper.sampler=grid", "algo.learning_rate=choice(3e-4,0.5)",
                   "algo.n_steps=choice(128,256,512)", "algo.gamma=choice(0.99)",
                   "algo.gae_lambda=choice(0.95)", "algo.clip_range=choice(0.2)",
                   "algo.ent_coef=choice(0.0)", "hydra.sweeper.pruner=none")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study(tmp_path, "ppo-dense").get_trials()
    diverged = [t for t in trials if t.params["algo.learning_rate"] == 0.5]
    assert len(trials) == 6 and len(diverged) == 3
    assert all(t.state == TrialState.PRUNED for t in diverged)
    for t in diverged:  # the worst value at the step where it broke: samplers rank it last
        assert t.intermediate_values == {100: -math.inf}
        assert "diverged" in t.user_attrs["fail_reason"] and t.user_attrs["diverged"] is True
    assert not any(t.user_attrs["diverged"] for t in trials if t not in diverged)
    assert all(t.state == TrialState.COMPLETE for t in trials if t not in diverged)
    assert summary(tmp_path)["ppo-dense"]["n_diverged"] == len(diverged)
    # TPE learns from it: with the diverged trials in the study, it proposes the good value.
    # (On an in-memory copy: 200 proposals, so chance cannot pass or fail it: random would
    # pick each value half the time, 55% is 3 standard errors above that.)
    tpe = optuna.create_study(sampler=optuna.samplers.TPESampler(n_startup_trials=0, seed=0))
    tpe.add_trials(study(tmp_path, "ppo-dense").get_trials())
    dist = CategoricalDistribution([3e-4, 0.5])
    picks = [tpe.ask({"algo.learning_rate": dist}).params["algo.learning_rate"] for _ in range(200)]
    assert picks.count(3e-4) >= 110, picks.count(3e-4)


@pytest.mark.slow
def test_k_seed_trials_report_aggregates_and_keep_each_seed(tmp_path):
    result = sweep(tmp_path, "algo=ppo", *SYNTHETIC, "hydra.sweeper.n_trials=2",
                   "seed=4,9", "hydra.sweeper.pruner=none")
    assert result.returncode == 0, result.stderr[-3000:]
    for record in trial_records(tmp_path):
        assert record["state"] == "COMPLETE"
        assert [s["seed"] for s in record["seeds"]] == [4, 9]
        trial_dir = Path(record["seeds"][0]["run_dir"]).parent
        for seed in (4, 9):
            metrics = json.loads((trial_dir / f"seed_{seed}" / "metrics.json").read_text())
            assert metrics["seed"] == seed and metrics["env_steps"] == 400
        # one report per evaluation (the seeds' mean), and the value is the mean of the last 3
        assert sorted(map(int, record["intermediate_values"])) == [100, 200, 300, 400]
        last3 = [record["intermediate_values"][k] for k in ("200", "300", "400")]
        assert record["value"] == pytest.approx(sum(last3) / 3)
    assert summary(tmp_path)["ppo-dense"]["env_steps"] == 2 * 2 * 400  # every seed's compute


@pytest.mark.slow
def test_two_objective_sweep_has_a_pareto_front_in_summary_report_and_wandb(tmp_path):
    with_wandb = [a for a in SYNTHETIC if a != "logger=none"]  # offline: conftest's environment
    result = sweep(tmp_path, "algo=ppo,a2c", *with_wandb, "hydra.sweeper.n_trials=4",
                   "hydra.sweeper.metric=[success_rate,wall_time_s]",
                   "hydra.sweeper.direction=[maximize,minimize]")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note: pruning is off" in result.stdout
    s = summary(tmp_path)
    for cell in ("ppo-dense", "a2c-dense"):
        assert s[cell]["n_complete"] == 4 and s[cell]["pareto"]
        for point in s[cell]["pareto"]:
            assert set(point["objectives"]) == {"success_rate", "wall_time_s"}
    cells_front = [p for c in ("ppo-dense", "a2c-dense") for p in s[c]["pareto"]]
    assert s["pareto"] and len(s["pareto"]) <= len(cells_front)
    assert all(not dominates(q["values"], p["values"], ["maximize", "minimize"])
               for p in s["pareto"] for q in cells_front)
    assert "Pareto front across cells" in result.stdout
    page = (tmp_path / "report.html").read_text()
    assert f"Pareto front of {tmp_path.parent.name}_{tmp_path.name} across cells " \
           f"({len(s['pareto'])} trials)" in page
    assert page.count("ppo-dense: Pareto front") == 1
    (summary_run,) = [read_offline_run(d) for d in find_offline_runs(tmp_path / "wandb")]
    assert summary_run.summary["pareto"] == {f"{p['cell']} trial {p['trial']}": p["objectives"]
                                             for p in s["pareto"]}
    assert {"pareto_table", "ppo-dense/pareto_front"} <= {k for row in summary_run.history for k in row}


@pytest.mark.slow
@pytest.mark.parametrize("args,words", [
    (["trainer.total_timesteps=2000", "trainer.eval_freq=5000"], ["trainer.eval_freq=5000", "pruning"]),
    (["algo.n_steps=interval(8,64)", "algo=sac"], ["algo.n_steps", "sac takes", "learning_rate"]),
    (["hydra.sweeper.metric=[success_rate,wall_time_s]", "hydra.sweeper.direction=[maximize,minimize]",
      "hydra.sweeper.pruner=median"], ["pruner=median", "multi-objective", "none"]),
    (["hydra.sweeper.metric=[success_rate,wall_time_s]", "hydra.sweeper.direction=[maximize,minimize]",
      "hydra.sweeper.sampler=cmaes"], ["sampler=cmaes", "nsga2"]),
    (["hydra.sweeper.seeds_per_trial=3", "seed=1,2"], ["seeds_per_trial=3", "seed=1,2"]),
])
def test_bad_search_input_is_one_line_before_any_job(tmp_path, args, words):
    result = sweep(tmp_path, *args)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), result.stderr
    assert not list(tmp_path.rglob("trial.json"))


def test_a_single_run_may_skip_periodic_evaluations_but_not_evaluate_only_untrained():
    from rlsweep.cli import compose_config
    from rlsweep.config import validate

    validate(compose_config(["trainer.total_timesteps=1400", "algo.learning_starts=200",
                             "trainer.eval_freq=100000"]))  # only the final evaluation: fine
    with pytest.raises(ConfigError, match=r"trainer.eval_freq=5000 .*algo.learning_starts=1000"):
        validate(compose_config(["trainer.total_timesteps=100", "trainer.eval_freq=5000"]))
