"""The sweep's printed table and its budget note, as pure functions of the summary."""

from __future__ import annotations

import pytest

from rlsweep.sweep import summary


def cell(**overrides) -> dict:
    base = {"best_value": 0.5000123, "best_success_rate": 0.5, "best_mean_return": 63.25,
            "best_params": {"algo.learning_rate": 0.000312, "algo.batch_size": 128},
            "n_complete": 3, "n_pruned": 1, "n_failed": 0, "n_running": 0, "env_steps": 6000,
            "wall_time_s": 81.4}
    return {**base, **overrides}


def test_table_shows_success_and_return_not_the_blended_objective():
    table = summary.format_table({"sac-dense": cell(), "ppo-dense": cell(
        best_value=None, best_success_rate=None, best_mean_return=None, best_params={})})
    header, sac, ppo = table.splitlines()
    assert header.split()[:3] == ["cell", "success", "return"]
    assert sac.split()[:3] == ["sac-dense", "0.50", "63.2"]
    assert "0.5000123" not in table and "learning_rate=0.000312" in sac
    assert ppo.split()[:3] == ["ppo-dense", "-", "-"]


def test_progress_line_names_success_and_return():
    line = summary.progress_line("sac-dense", cell(), budget=8)
    assert line.endswith("best success 0.50, return 63.2") and "4/8 done" in line


@pytest.mark.parametrize("steps,warned", [(1_500, True), (10**9, False)])
def test_budget_note_warns_only_below_what_solving_took(steps, warned):
    note = summary.budget_note(steps)
    assert (note is not None) == warned
    if warned:
        assert f"{steps:,} env steps" in note and f"{summary.LIFT_SOLVE_STEPS:,}" in note
    assert summary.budget_note(steps, env_name="Pendulum") is None
