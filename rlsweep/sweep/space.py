"""From command-line overrides to a grid of cells, each with an Optuna search space.

Syntax (Hydra's own sweep grammar, as in hydra-optuna-sweeper):
    algo=ppo,sac reward=dense,sparse           config-group lists: the grid of cells
    algo.learning_rate=tag(log,interval(1e-5,1e-3))   float range, log-uniform
    algo.n_steps=int(interval(64,2048))        integer range (tag(log, ...) for log scale)
    algo.batch_size=choice(64,128,256)         categorical (also `algo.batch_size=64,128,256`)
    algo.n_epochs=range(5,20,5)                integer (or float) steps, end excluded
The same strings form each algorithm's `search_space` in conf/algo/*.yaml; a range given on the
command line replaces the one declared for that key, and a value (`algo.gamma=0.9`) fixes it:
that key is then not searched.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from rlsweep.config import ConfigError

SWEEP_GROUPS = ("algo", "env", "reward", "policy", "trainer", "logger")
CELL_NAME_GROUPS = ("algo", "reward")  # always in a cell's name, e.g. sac-dense


@dataclass
class Cell:
    """One point of the grid: its group choices, overrides and (once composed) search space."""

    name: str
    choices: dict[str, str]
    overrides: list[str]
    space: dict[str, BaseDistribution] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])  # each trial trains these seeds
    # Declared search-space parameters that a command-line value fixes: path -> the override
    # as written (`algo.gamma=0.9`); they are not in `space`.
    fixed: dict[str, str] = field(default_factory=dict)


@dataclass
class SweepRequest:
    """The command line split into the grid, fixed overrides and ad-hoc parameter ranges."""

    grid: dict[str, list[str]]
    fixed: list[str]
    ranges: dict[str, BaseDistribution]
    seeds: list[int] | None = None  # `seed=0,1,2`: every trial repeats on these seeds
    # Each fixed override that sets a config key's value: key -> `key=value` as written.
    fixed_values: dict[str, str] = field(default_factory=dict)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def to_distribution(override: Override) -> BaseDistribution:
    """An Optuna distribution from one sweep override; ConfigError if the range is empty."""
    key, sweep = override.get_key_element(), override.value()
    if override.is_choice_sweep():
        choices = list(sweep.list)
        if not choices:
            raise ConfigError(f"{key}: choice() needs at least one value")
        return CategoricalDistribution(choices)
    log = "log" in sweep.tags
    if override.is_range_sweep():
        start, stop, step = sweep.start, sweep.stop, sweep.step
        if step <= 0 or stop <= start:
            raise ConfigError(f"{key}=range({start}, {stop}, {step}) is empty: needs start < stop "
                              "and step > 0")
        last = start + ((stop - start - 1e-12) // step) * step
        if all(_is_int(v) for v in (start, stop, step)):
            return IntDistribution(start, int(last), step=step)
        return FloatDistribution(float(start), float(last), step=float(step))
    if override.is_interval_sweep():
        low, high = sweep.start, sweep.end
        if not low < high:
            raise ConfigError(f"{key}=interval({low}, {high}) is empty or inverted: "
                              "needs low < high")
        if log and low <= 0:
            raise ConfigError(f"{key}: a log range needs low > 0, got {low}")
        if _is_int(low) and _is_int(high):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise ConfigError(f"{override.input_line}: not a sweep; use choice(), interval() or range()")


def parse_sweep_request(arguments: list[str]) -> SweepRequest:
    """Split sweep overrides: group lists -> grid, a list of seeds -> repeats of every trial,
    other sweeps -> ranges, the rest fixed."""
    grid, fixed, ranges, seeds, values = {}, [], {}, None, {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            if not override.is_delete() and override.package is None:
                path = override.key_or_group
                values[path] = f"{path}={override.get_value_element_as_str()}"
        elif key == "seed":
            seeds = _seed_list(override)
        elif override.key_or_group in SWEEP_GROUPS and override.package is None \
                and "." not in override.key_or_group:
            grid[key] = list(override.sweep_string_iterator())
        elif override.is_hydra_override():
            raise ConfigError(f"{override.input_line}: hydra.* settings cannot be swept")
        else:
            ranges[key] = to_distribution(override)
    return SweepRequest(grid, fixed, ranges, seeds, values)


def _seed_list(override: Override) -> list[int]:
    """`seed=0,1,2` or `seed=range(0,3)`: the seeds each trial is repeated on."""
    sweep = override.value()
    if override.is_choice_sweep():
        values = list(sweep.list)
    elif override.is_range_sweep():
        values = list(range(sweep.start, sweep.stop, sweep.step)) \
            if all(_is_int(v) for v in (sweep.start, sweep.stop, sweep.step)) else [None]
    else:
        values = [None]
    if not values or not all(_is_int(v) for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"{override.input_line} is invalid: seed takes a list of distinct "
                          "integers (seed=0,1,2 or seed=range(0,3)); each trial is repeated on them")
    return values


def grid_cells(request: SweepRequest, defaults: dict[str, str]) -> list[Cell]:
    """The product of the grid's group lists; `defaults` names the choice of unswept groups."""
    groups = list(request.grid)
    cells = []
    for combo in itertools.product(*(request.grid[g] for g in groups)):
        choices = {**defaults, **dict(zip(groups, combo))}
        named = [choices[g] for g in CELL_NAME_GROUPS]
        named += [choices[g] for g in groups if g not in CELL_NAME_GROUPS]
        cells.append(Cell(name="-".join(named), choices=choices,
                          overrides=[f"{g}={c}" for g, c in zip(groups, combo)]))
    return cells


def declared_space(section_key: str, search_space: dict) -> dict[str, BaseDistribution]:
    """Distributions from a config group's `search_space` mapping (keys relative to the group)."""
    parser = OverridesParser.create()
    space = {}
    for key, spec in search_space.items():
        path = f"{section_key}.{key}"
        override = parser.parse_override(f"{path}={spec}")
        if not override.is_sweep_override():
            raise ConfigError(f"{path}: search_space entry {spec!r} is not a sweep; use "
                              "choice(), interval() or range()")
        space[path] = to_distribution(override)
    return space
