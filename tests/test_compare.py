"""`python -m rlsweep.report A B`: P(A > B) between cells of different sweeps, from the per-seed
scores of each sweep's confirm.json, and a plain instruction when a sweep has none."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from rlsweep import confirm
from rlsweep.report import stats
from rlsweep.report.build import cross_sweep_improvements
from rlsweep.report.data import ConfirmData, SeedScore, SweepData
from rlsweep.report.html import write_report
from rlsweep.run_result import RunStatus
from tests.conftest import run_cli
from tests.test_confirm import save_run, synthetic_sweep


def confirmed_sweep(path: Path, name: str, success: dict[str, list[float]]) -> SweepData:
    """A sweep as load_sweep reads it, with confirmation scores per cell (no trials needed)."""
    cells = {cell: confirm.score_cell(0, {}, [SeedScore(1000 + k, "ok", "", s, 10 * s)
                                              for k, s in enumerate(scores)])
             for cell, scores in success.items()}
    return SweepData(path=path, name=name, direction="maximize", metric="success_then_return",
                     cells={}, confirm=ConfirmData(method=stats.METHOD, cells=cells, improvement=[]))


def unconfirmed_sweep(path: Path, name: str) -> SweepData:
    return SweepData(path=path, name=name, direction="maximize", metric="success_then_return",
                     cells={}, confirm=None)


# ---------------------------------------------------------------- statistics (fast)

def test_bootstraps_draw_the_same_resamples_as_one_choice_per_resample():
    """The vectorized bootstraps give exactly the CIs of the loop they replaced."""
    def iqm_loop(scores, seed=0):
        rng = np.random.default_rng(seed)
        boot = [stats.iqm(rng.choice(scores, size=len(scores), replace=True))
                for _ in range(stats.RESAMPLES)]
        return (stats.iqm(scores), *np.percentile(boot, [2.5, 97.5]))

    def improvement_loop(a, b, seed=0):
        rng = np.random.default_rng(seed)
        boot = [stats.probability_of_improvement(rng.choice(a, len(a)), rng.choice(b, len(b)))
                for _ in range(stats.RESAMPLES)]
        return (stats.probability_of_improvement(a, b), *np.percentile(boot, [2.5, 97.5]))

    rng = np.random.default_rng(3)
    for n_a, n_b in ((2, 5), (7, 4)):  # the loop takes ~2 s a cell
        a = np.round(rng.random(n_a), 1)  # rounded: ties, as success rates have
        b = np.round(rng.random(n_b), 1)
        assert stats.iqm_with_ci(a) == iqm_loop(a)  # exactly
        assert stats.improvement_with_ci(a, b) == improvement_loop(a, b)


def test_reversed_improvement_mirrors_the_estimate_and_its_interval():
    forward = stats.improvement("A", [0.2, 0.5, 0.9, 0.9], "B", [0.1, 0.5, 0.6])
    backward = forward.reversed()
    assert (backward.a, backward.b) == ("B", "A")
    assert backward.probability == pytest.approx(
        stats.probability_of_improvement([0.1, 0.5, 0.6], [0.2, 0.5, 0.9, 0.9]))
    assert (backward.low, backward.high) == pytest.approx((1 - forward.high, 1 - forward.low))
    with pytest.raises(ValueError, match="^B: no per-seed score"):
        stats.improvement("A", [1.0], "B", [])


# ---------------------------------------------------------------- cross-sweep pairs (fast)

def test_every_cell_of_one_sweep_meets_every_cell_of_the_other_labelled_by_sweep(tmp_path):
    first = confirmed_sweep(tmp_path / "a", "first", {"ppo-dense": [0.0, 0.2, 0.0],
                                                      "sac-dense": [0.5, 0.5, 0.6]})
    second = confirmed_sweep(tmp_path / "b", "second", {"ppo-dense": [1.0, 0.9, 1.0]})
    pairs = {(p.a, p.b): p for p in cross_sweep_improvements([first, second])}
    assert set(pairs) == {("first/ppo-dense", "second/ppo-dense"), ("second/ppo-dense", "first/ppo-dense"),
                          ("first/sac-dense", "second/ppo-dense"), ("second/ppo-dense", "first/sac-dense")}
    better = pairs[("second/ppo-dense", "first/ppo-dense")]
    assert (better.probability, better.low, better.high) == (1.0, 1.0, 1.0)
    assert pairs[("first/ppo-dense", "second/ppo-dense")].probability == 0.0
    # the same numbers the stats module gives for these per-seed scores
    assert pairs[("first/sac-dense", "second/ppo-dense")].probability == pytest.approx(
        stats.probability_of_improvement([0.5, 0.5, 0.6], [1.0, 0.9, 1.0]))


def test_a_sweep_without_confirmation_adds_no_pair_and_the_report_says_what_to_run(tmp_path):
    first = confirmed_sweep(tmp_path / "a", "first", {"ppo-dense": [0.0, 1.0]})
    third = unconfirmed_sweep(tmp_path / "c", "third")
    assert cross_sweep_improvements([first, third]) == []
    page = write_report([first, third], tmp_path / "compare.html",
                        cross_sweep=cross_sweep_improvements([first, third])).read_text()
    assert (f"third has no confirmation results (confirm.json), so P(A &gt; B) against its cells "
            f"needs <code>python -m rlsweep.confirm {tmp_path / 'c'} seeds=5</code> first") in page
    assert 'data-confirm="first/ppo-dense"' in page


def test_sweeps_with_the_same_name_are_told_apart_by_their_dir(tmp_path):
    one = confirmed_sweep(tmp_path / "one", "lift", {"ppo-dense": [0.0, 0.5]})
    two = confirmed_sweep(tmp_path / "two", "lift", {"ppo-dense": [1.0, 1.0]})
    labels = {(p.a, p.b) for p in cross_sweep_improvements([one, two])}
    assert (f"lift ({tmp_path / 'two'})/ppo-dense", f"lift ({tmp_path / 'one'})/ppo-dense") in labels


def test_report_matrix_holds_pairs_within_and_between_sweeps(tmp_path):
    first = confirmed_sweep(tmp_path / "a", "first", {"ppo-dense": [0.0, 0.2], "ppo-sparse": [0.1, 0.1]})
    within = stats.improvement("ppo-dense", [0.0, 0.2], "ppo-sparse", [0.1, 0.1])
    first.confirm.improvement = [within, within.reversed()]
    second = confirmed_sweep(tmp_path / "b", "second", {"ppo-dense": [1.0, 1.0]})
    page = write_report([first, second], tmp_path / "compare.html",
                        cross_sweep=cross_sweep_improvements([first, second])).read_text()
    shown = re.findall(r'<td data-a="([^"]+)" data-b="([^"]+)">([^<]+)</td>', page)
    assert ("second/ppo-dense", "first/ppo-dense", "1.00 [1.00, 1.00]") in shown
    assert ("first/ppo-dense", "first/ppo-sparse", "0.50 [0.00, 1.00]") in shown  # within a sweep
    assert len(shown) == 3 * 2  # every ordered pair of the three cells
    assert ('<li data-same-cell="ppo-dense">P(first/ppo-dense &gt; second/ppo-dense) = '
            "0.00 [0.00, 0.00]</li>") in page


# ---------------------------------------------------------------- two real sweeps (slow)

@pytest.fixture(scope="module")
def two_confirmed_sweeps(tmp_path_factory):
    """Sweeps "first" (ppo dense and sparse) and "second" (ppo dense), each confirmed on 5 seeds.

    The seeds' metrics.json stand for finished training runs (confirm retrains only seeds
    without one); second's ppo-dense succeeds on every seed, first's on none.
    """
    root = tmp_path_factory.mktemp("compare")
    first = synthetic_sweep(root / "first", "reward=dense,sparse", "hydra.sweeper.n_trials=1",
                            "hydra.sweeper.study_name=first")
    second = synthetic_sweep(root / "second", "reward=dense", "hydra.sweeper.n_trials=1",
                             "hydra.sweeper.study_name=second")
    for k in range(5):
        seed = 1000 + k
        save_run(first / "confirm" / "ppo-dense" / f"seed_{seed}", success_rate=0.0,
                 mean_return=1.0 + k, seed=seed)
        if k == 4:  # one diverged seed: it scores success 0 in the comparison too
            save_run(first / "confirm" / "ppo-sparse" / f"seed_{seed}", RunStatus.DIVERGED,
                     success_rate=None, mean_return=None, detail="non-finite rewards", seed=seed)
        else:
            save_run(first / "confirm" / "ppo-sparse" / f"seed_{seed}", success_rate=0.5,
                     mean_return=3.0, seed=seed)
        save_run(second / "confirm" / "ppo-dense" / f"seed_{seed}", success_rate=1.0,
                 mean_return=20.0, seed=seed)
    for sweep in (first, second):
        result = run_cli(str(sweep), "seeds=5", module="rlsweep.confirm")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "warning" not in result.stderr  # 5 seeds: no few-seeds warning
    return first, second


@pytest.mark.slow
def test_compare_report_shows_p_a_greater_b_between_the_sweeps(two_confirmed_sweeps, tmp_path):
    first, second = two_confirmed_sweeps
    out = tmp_path / "compare.html"
    result = run_cli(str(first), str(second), f"out={out}", module="rlsweep.report")
    assert result.returncode == 0, result.stderr[-3000:]
    page = out.read_text()
    shown = {(a, b): v for a, b, v in
             re.findall(r'<td data-a="([^"]+)" data-b="([^"]+)">([^<]+)</td>', page)}
    assert shown[("second/ppo-dense", "first/ppo-dense")] == "1.00 [1.00, 1.00]"
    assert shown[("first/ppo-dense", "second/ppo-dense")] == "0.00 [0.00, 0.00]"
    assert shown[("second/ppo-dense", "first/ppo-sparse")] == "1.00 [1.00, 1.00]"
    assert ("first/ppo-sparse", "first/ppo-dense") in shown  # within first, from its confirm.json
    assert len(shown) == 3 * 2
    assert '<li data-same-cell="ppo-dense">P(first/ppo-dense &gt; second/ppo-dense)' in page
    written = json.loads((first / "confirm.json").read_text())
    assert [r["status"] for r in written["cells"]["ppo-sparse"]["runs"]] == ["ok"] * 4 + ["diverged"]
    assert written["cells"]["ppo-sparse"]["success_rate"] == [0.5] * 4 + [0.0]
    assert 'data-confirm="first/ppo-sparse"' in page and "seed 1004 diverged</span>" in page


@pytest.mark.slow
def test_compare_report_names_the_sweep_that_needs_confirm_first(two_confirmed_sweeps, tmp_path):
    first, second = two_confirmed_sweeps
    third = tmp_path / "third"
    shutil.copytree(second, third, ignore=shutil.ignore_patterns("confirm", "confirm.json"))
    plan = json.loads((third / "sweep_plan.json").read_text())
    plan["sweep_name"] = "third"
    (third / "sweep_plan.json").write_text(json.dumps(plan))
    out = tmp_path / "compare.html"
    result = run_cli(str(first), str(third), f"out={out}", module="rlsweep.report")
    assert result.returncode == 0, result.stderr[-3000:]
    page = out.read_text()
    assert (f"third has no confirmation results (confirm.json), so P(A &gt; B) against its cells "
            f"needs <code>python -m rlsweep.confirm {third} seeds=5</code> first") in page
    assert not any(a.startswith("third/") or b.startswith("third/") for a, b in
                   re.findall(r'<td data-a="([^"]+)" data-b="([^"]+)">', page))
