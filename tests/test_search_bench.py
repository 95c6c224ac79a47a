"""The search bench scores: best quality of complete trials, random's theory, paired tally."""

import math
import random

import pytest

from bench import search_bench
from rlsweep.sweep.records import TrialRecord
from rlsweep.sweep.synthetic import quality, quality3


def trial(state: str, lr: float | None) -> TrialRecord:
    params = {} if lr is None else {"algo.learning_rate": lr, "algo.gamma": 0.99}
    return TrialRecord(number=0, cell="ppo-dense", state=state, params=params, value=None,
                       last_step=0, status="ok", fail_reason=None, env_steps=0, wall_time_s=0.0,
                       success_rate=None, mean_return=None)


def test_score_counts_only_complete_trials():
    trials = [trial("COMPLETE", 1e-5), trial("PRUNED", 10 ** -3.5), trial("COMPLETE", 1e-3),
              trial("FAIL", None)]
    scored = search_bench.score(trials)
    assert scored["best_params"] == {"algo.learning_rate": 1e-3}
    assert scored["best_quality"] == pytest.approx(math.exp(-0.5))
    assert scored["regret"] == pytest.approx(1 - math.exp(-0.5))
    assert (scored["n_complete"], scored["n_pruned"], scored["n_failed"]) == (2, 1, 1)
    assert scored["best_quality_any_state"] == 1.0  # the pruned trial at the optimum
    assert search_bench.score([trial("PRUNED", 1e-4)])["best_quality"] is None


def test_expected_best_random_matches_closed_form_and_sampling():
    # one draw in log10 [-5, -3], optimum -3.5: E[exp(-D)] = ((1 - e^-1.5) + (1 - e^-0.5)) / 2
    one = ((1 - math.exp(-1.5)) + (1 - math.exp(-0.5))) / 2
    assert search_bench.expected_best_random(1, 1e-5, 1e-3) == pytest.approx(one, abs=1e-6)
    rng = random.Random(0)
    draws = [max(quality(10 ** rng.uniform(-5, -3)) for _ in range(8)) for _ in range(20000)]
    assert search_bench.expected_best_random(8, 1e-5, 1e-3) == pytest.approx(
        sum(draws) / len(draws), abs=0.003)


def test_summary_pairs_samplers_by_seed():
    d, r = search_bench.DEFAULT_SAMPLER, search_bench.BASELINE
    sweeps = [{"sampler": s, "n_trials": 8, "seed": k, "best_quality": q, "n_complete": 5,
               "n_pruned": 3, "n_failed": 0, "command_s": 30.0}
              for s, k, q in ((d, 0, 0.9), (r, 0, 0.8), (d, 1, 0.7), (r, 1, 0.95),
                              (d, 2, 0.99), (r, 2, 0.5))]
    summary = search_bench.summarize(sweeps, 8, 0.9, 0.6)
    assert (summary["wins"], summary["losses"], summary["ties"]) == (2, 1, 0)
    assert summary["sign_test_p"] == pytest.approx(0.5)  # P(>= 2 of 3 fair flips)
    assert summary[d]["best_quality_mean"] == pytest.approx((0.9 + 0.7 + 0.99) / 3)
    assert summary[r]["best_quality_min"] == 0.5
    assert summary["best_not_complete"] == 0
    assert search_bench.sign_test(5, 0) == pytest.approx(1 / 32)


def test_three_parameter_quality_peaks_at_its_optimum_and_random_search_falls_short():
    assert quality3(10 ** -3.5, 0.95, 1e-5) == 1.0
    # a decade off in learning rate costs as much as the whole gae_lambda range / 2
    assert quality3(10 ** -2.5, 0.95, 1e-5) == pytest.approx(quality3(10 ** -3.5, 0.995, 1e-5))
    three = search_bench.OBJECTIVES[1]
    assert three.params == search_bench.PARAMS_3
    ranges = {"algo.learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
              "algo.gae_lambda": {"low": 0.9, "high": 0.99, "log": False},
              "algo.ent_coef": {"low": 1e-8, "high": 1e-2, "log": True}}
    one, eight, many = (search_bench.expected_best_random_of(three, ranges, n) for n in (1, 8, 24))
    assert one < eight < many < 0.8  # far below the 1-parameter case's 0.96 at 24 draws
    lr_only = search_bench.expected_best_random_of(search_bench.OBJECTIVES[0], ranges, 24)
    assert lr_only == pytest.approx(search_bench.expected_best_random(24, 1e-5, 1e-3))
    t = trial("COMPLETE", 10 ** -3.5)
    t.params.update({"algo.gae_lambda": 0.95, "algo.ent_coef": 1e-5})
    assert search_bench.score([t], three)["best_quality"] == 1.0
    assert search_bench.score([trial("COMPLETE", 1e-4)], three)["best_quality"] is None


def test_markdown_renders_both_objectives_and_the_older_single_objective_results():
    d, r = search_bench.DEFAULT_SAMPLER, search_bench.BASELINE
    sweeps = [{"sampler": s, "n_trials": 8, "seed": k, "best_quality": q, "n_complete": 5,
               "n_pruned": 3, "n_failed": 0, "command_s": 30.0}
              for s, k, q in ((d, 0, 0.9), (r, 0, 0.8))]
    budget = search_bench.summarize(sweeps, 8, 0.85, 0.5)
    ranges = {p: {"low": 0.1, "high": 1.0, "log": False} for p in search_bench.PARAMS_3}
    common = {"default_sampler": d, "baseline": r, "total_timesteps": 400}
    new = {**common, "objectives": [
        {"name": o.name, "params": list(o.params), "seeds": [0], "command": "python -m x",
         "ranges": {p: ranges[p] for p in o.params}, "sweeps": sweeps, "budgets": [budget]}
        for o in search_bench.OBJECTIVES]}
    text = search_bench.markdown(new)
    assert "### 1 parameter" in text and "### 3 parameters" in text
    assert "1 of 1 seeds (p=0.500)" in text
    old = {**common, "learning_rate_range": [1e-5, 1e-3], "seeds": [0], "command": "python",
           "sweeps": sweeps, "budgets": [budget]}
    assert "### 1 parameter" in search_bench.markdown(old)
