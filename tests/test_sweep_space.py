"""Turning overrides into grid cells and Optuna distributions (no jobs run here)."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from rlsweep.config import ConfigError
from rlsweep.sweep.space import declared_space, grid_cells, parse_sweep_request


def test_group_lists_form_the_grid_and_other_sweeps_the_space():
    request = parse_sweep_request([
        "algo=ppo,sac", "reward=dense,sparse", "env.horizon=50",
        "algo.learning_rate=tag(log,interval(1e-5,1e-3))", "algo.gamma=0.98,0.99",
        "algo.n_epochs=int(interval(3,10))", "algo.batch_size=range(32,129,32)"])
    assert request.grid == {"algo": ["ppo", "sac"], "reward": ["dense", "sparse"]}
    assert request.fixed == ["env.horizon=50"]
    assert request.ranges["algo.learning_rate"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert request.ranges["algo.gamma"] == CategoricalDistribution([0.98, 0.99])
    assert request.ranges["algo.n_epochs"] == IntDistribution(3, 10)
    assert request.ranges["algo.batch_size"] == IntDistribution(32, 128, step=32)
    cells = grid_cells(request, {"algo": "sac", "reward": "dense", "policy": "medium"})
    assert [c.name for c in cells] == ["ppo-dense", "ppo-sparse", "sac-dense", "sac-sparse"]
    assert cells[1].overrides == ["algo=ppo", "reward=sparse"]


def test_cell_names_always_carry_algo_and_reward_then_other_swept_groups():
    request = parse_sweep_request(["policy=small,large"])
    cells = grid_cells(request, {"algo": "sac", "reward": "dense", "policy": "medium"})
    assert [c.name for c in cells] == ["sac-dense-small", "sac-dense-large"]


@pytest.mark.parametrize("override,message", [
    ("algo.learning_rate=interval(1e-3,1e-5)", "empty or inverted"),
    ("algo.learning_rate=interval(0.1,0.1)", "empty or inverted"),
    ("algo.learning_rate=tag(log,interval(0,1))", "log range needs low > 0"),
    ("algo.n_steps=range(10,5,1)", "is empty"),
])
def test_bad_ranges_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep_request([override])


def test_declared_search_space_uses_the_same_syntax():
    space = declared_space("algo", {"tau": "interval(0.001, 0.05)", "batch_size": "choice(64, 256)"})
    assert space == {"algo.tau": FloatDistribution(0.001, 0.05),
                     "algo.batch_size": CategoricalDistribution([64, 256])}
    with pytest.raises(ConfigError, match="not a sweep"):
        declared_space("algo", {"tau": "0.01"})
