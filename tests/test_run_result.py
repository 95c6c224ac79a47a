"""metrics.json has one owner: a typed record whose status is an enum plus a detail."""

from __future__ import annotations

import pytest

from rlsweep import run_result
from rlsweep.run_result import RunResult, RunStatus


def _result(status: RunStatus, detail: str = "") -> RunResult:
    return RunResult(status, detail, 0.5, 12.0, 1.0, 400, 9.0, 44.0, compile_s=1.5,
                     resumes=1, algo="sac", seed=3)


@pytest.mark.parametrize("status,detail,text", [
    (RunStatus.OK, "", "ok"),
    (RunStatus.PRUNED, "at env step 400", "pruned at env step 400"),
    (RunStatus.DIVERGED, "non-finite rewards at env step 51", "diverged: non-finite rewards at env step 51"),
])
def test_saved_and_loaded_unchanged_and_described_for_people(tmp_path, status, detail, text):
    result = _result(status, detail)
    run_result.save(tmp_path, result)
    assert run_result.load(tmp_path) == result
    assert result.describe() == text and result.ok == (status is RunStatus.OK)


@pytest.mark.parametrize("legacy,status,detail", [
    ("ok", RunStatus.OK, ""),
    ("pruned at env step 80", RunStatus.PRUNED, "at env step 80"),
    ("diverged: non-finite network weights at env step 2000", RunStatus.DIVERGED,
     "non-finite network weights at env step 2000"),
])
def test_files_from_before_the_detail_field_still_read(legacy, status, detail):
    """metrics.json written by earlier versions (the committed solve-bench runs, old sweeps)."""
    old = {"status": legacy, "success_rate": 0.9, "mean_return": 150.0, "std_return": 3.0,
           "env_steps": 140000, "wall_time_s": 2700.0, "env_steps_per_s": 55.0}
    result = RunResult.from_json(old)
    assert (result.status, result.detail) == (status, detail)
    assert result.describe() == legacy


def test_objectives_implement_the_protocol():
    """train and the synthetic objective have the signature the sweeper calls."""
    import inspect

    from rlsweep.sweep.synthetic import synthetic_objective
    from rlsweep.train import train

    expected = list(inspect.signature(run_result.Objective.__call__).parameters)[1:]
    for objective in (train, synthetic_objective):
        params = list(inspect.signature(objective).parameters)
        assert params[:len(expected)] == expected, objective.__name__
        assert inspect.signature(objective).return_annotation in (RunResult, "RunResult")
