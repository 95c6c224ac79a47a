"""The committed solve benchmark is what the code and the README say it is.

bench/results.json's solve and tuning sections must come from the run folders committed beside
them (each seed's record recomputed from its files), those runs must have trained exactly what their
candidate composes today (so a changed default invalidates them), and the numbers quoted
elsewhere (the sweep's budget note, the README's claim) must be the measured ones.
"""

from __future__ import annotations

import json
import re
import threading
import time
import types
from pathlib import Path

import pytest

from bench import solve_bench, tuning_bench
from rlsweep.sweep.summary import LIFT_SOLVE_STEPS

ROOT = Path(__file__).resolve().parent.parent
SOLVE = json.loads((ROOT / "bench" / "results.json").read_text())["solve"]
CANDIDATES = {c.name: c for c in solve_bench.CANDIDATES}
RECORDS = SOLVE["candidates"] + SOLVE["pending"]


@pytest.mark.parametrize("record", RECORDS, ids=[r["name"] for r in RECORDS])
def test_each_seed_record_is_recomputed_from_a_current_run(record):
    candidate = CANDIDATES[record["name"]]
    assert record["overrides"] == list(candidate.overrides)
    for seed in record["seeds"]:
        assert solve_bench.finished(candidate, seed["seed"]), \
            f"{record['name']} seed {seed['seed']}: its run no longer matches the candidate's config"
        assert solve_bench.seed_result(candidate, seed["seed"]) == seed


DEFAULT = next(r for r in RECORDS if r["overrides"] == [])


def test_the_tuning_section_is_recomputed_from_the_committed_sweep_folder():
    """The night sweep and its confirmation (bench/night/) are committed with the section that
    reads them: the numbers in results.json are what that folder holds."""

    tuning = json.loads((ROOT / "bench" / "results.json").read_text())["tuning"]
    assert {k: v for k, v in tuning.items() if k not in ("date", "machine")} == \
        tuning_bench.collect_runs()


MEDIAN_FROM_20K = ("median", {"n_startup_trials": 2, "n_warmup_steps": 20000})
FINISHED = [{10000: 0.0, 20000: 0.2, 30000: 0.5, 40000: 0.8},   # medians: 0.3 at 20k,
            {10000: 0.0, 20000: 0.4, 30000: 0.7, 40000: 0.9}]   # 0.6 at 30k


@pytest.mark.parametrize("curve, stop", [
    ({10000: 0.0, 20000: 0.5, 30000: 0.9, 40000: 0.9}, None),   # ahead at every step
    ({10000: 0.0, 20000: 0.1, 30000: 0.9, 40000: 0.9}, 20000),  # behind at 20k: stopped there
    ({10000: 0.0, 20000: 0.65, 30000: 0.1, 40000: 0.0}, None),  # its best so far counts
    ({10000: 0.9, 20000: 0.0, 30000: 0.0, 40000: 0.0}, None),   # ... even before the warmup
    ({10000: 0.0, 20000: 0.4, 30000: 0.5, 40000: 0.0}, 30000),  # behind at 30k
])
def test_the_pruner_replay_stops_a_curve_where_optunas_pruner_would(curve, stop):
    from rlsweep.sweep.study import make_pruner

    pruner = make_pruner(*MEDIAN_FROM_20K)
    assert tuning_bench.pruned_at(pruner, FINISHED, [curve], budget=40000) == [stop]


def test_the_pruner_replay_judges_each_curve_against_the_finished_trials_only():
    """A replayed curve never becomes a reference for the next, and a trial ends at its
    budget rather than being pruned there."""
    from rlsweep.sweep.study import make_pruner

    high = {10000: 0.0, 20000: 0.9, 30000: 0.9, 40000: 0.9}
    mid = {10000: 0.0, 20000: 0.35, 30000: 0.65, 40000: 0.65}  # behind `high`, not the others
    assert tuning_bench.pruned_at(make_pruner(*MEDIAN_FROM_20K), FINISHED, [high, mid],
                                  budget=40000) == [None, None]
    low = {10000: 0.0, 20000: 0.0, 30000: 0.0, 40000: 0.0}
    assert tuning_bench.pruned_at(make_pruner(*MEDIAN_FROM_20K), FINISHED, [low],
                                  budget=40000) == [20000]
    assert tuning_bench.pruned_at(make_pruner(*MEDIAN_FROM_20K), FINISHED, [low],
                                  budget=20000) == [None]


def test_the_budget_note_quotes_the_default_setups_fastest_seed():
    reached = [s["steps_to_0_9"] for s in DEFAULT["seeds"] if s["steps_to_0_9"] is not None]
    assert LIFT_SOLVE_STEPS == (min(reached) if reached else None)


def test_readme_claim_matches_the_benchmark():
    claim = next(line for line in (ROOT / "README.md").read_text().splitlines()
                 if line.startswith("**Lift solved"))
    steps = sorted(s["steps_to_0_9"] for s in DEFAULT["seeds"] if s["steps_to_0_9"] is not None)
    assert re.findall(r"\d+ of \d+ seeds", claim) == [f"{len(steps)} of {len(DEFAULT['seeds'])} seeds"]
    assert f"{steps[0] // 1000}k" in claim and f"{steps[-1] // 1000}k" in claim, claim
    if DEFAULT["pending_seeds"]:
        assert "pending" in claim or "in progress" in claim, claim


def test_runs_trained_before_a_key_was_added_count_only_if_today_reproduces_them():
    """A stored run config lacking a key added later (env._target_, reward._target_, ...) still
    matches today's config if today's value is what the run trained, and only then."""
    from omegaconf import OmegaConf

    from bench.solve_bench import ADDED_SINCE, same_training
    from rlsweep.cli import compose_config

    today = compose_config([])
    old = OmegaConf.to_container(today, resolve=True)
    for key in ADDED_SINCE:
        group, leaf = key.split(".")
        del old[group][leaf]
    assert same_training(OmegaConf.create(old), today)
    assert not same_training(OmegaConf.create(old), compose_config(["env.task=Door"]))
    assert not same_training(OmegaConf.create(old), compose_config(["reward=sparse"]))
    assert same_training(today, today)


def test_a_bench_run_replaces_only_its_section_even_if_another_run_wrote_meanwhile(
        tmp_path, monkeypatch):
    import types

    import bench.__main__ as bench_main

    path = tmp_path / "results.json"
    machine = {"cores": 2, "python": "3.11"}
    path.write_text(json.dumps({"sweeper": {"date": "old", "machine": machine},
                                "search": {"date": "old", "machine": machine}}))

    def measure_search():  # meanwhile another `python -m bench sweeper` finished
        path.write_text(json.dumps({"sweeper": {"date": "newer", "machine": machine},
                                    "search": {"date": "old", "machine": machine}}))
        return {"found": 1}

    def section(run):
        return types.SimpleNamespace(run=run, markdown=lambda results: "")

    monkeypatch.setattr(bench_main, "RESULTS", tmp_path)
    monkeypatch.setattr(bench_main, "SECTIONS", {"sweeper": section(dict),
                                                 "search": section(measure_search)})
    bench_main.main(["search"])
    results = json.loads(path.read_text())
    assert results["sweeper"]["date"] == "newer"  # the other run's section is kept
    assert results["search"]["found"] == 1 and results["search"]["date"] != "old"
    assert list(results) == ["sweeper", "search"]


def test_two_bench_runs_finishing_at_once_keep_both_sections(tmp_path, monkeypatch):
    # Each run reads results.json, adds its section and writes the file back: without a lock,
    # the second to read would write back the file without the first one's section.
    import threading

    import bench.__main__ as bench_main

    write = bench_main.write_json_atomic

    def slow_write(path, data):  # widens the window between a run's read and its write
        time.sleep(0.3)
        return write(path, data)

    def section(value):
        return types.SimpleNamespace(run=lambda: {"value": value}, markdown=lambda results: "")

    monkeypatch.setattr(bench_main, "RESULTS", tmp_path)
    monkeypatch.setattr(bench_main, "write_json_atomic", slow_write)
    monkeypatch.setattr(bench_main, "SECTIONS", {"sweeper": section(1), "search": section(2)})
    runs = [threading.Thread(target=bench_main.main, args=([name],))
            for name in ("sweeper", "search")]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["sweeper"]["value"] == 1 and results["search"]["value"] == 2


def test_a_cut_run_without_its_checkpoint_is_set_aside_not_overwritten(tmp_path):
    run_dir = tmp_path / "seed_0"
    assert solve_bench.set_aside_cut_run(run_dir) is None  # nothing there yet
    run_dir.mkdir()
    assert solve_bench.set_aside_cut_run(run_dir) is None  # empty: nothing to keep
    (run_dir / "checkpoint").mkdir()
    (run_dir / "checkpoint" / "state.json").write_text('{"env_steps": 240000}')  # as save() writes it
    (run_dir / "progress.csv").write_text("cut at 240k\n")
    assert solve_bench.set_aside_cut_run(run_dir) is None  # it resumes from its checkpoint
    (run_dir / "checkpoint" / "state.json").unlink()  # a checkpoint never completed: no resume
    kept = solve_bench.set_aside_cut_run(run_dir)
    assert kept == tmp_path / "seed_0.cut1" and not run_dir.exists()
    assert (kept / "progress.csv").read_text() == "cut at 240k\n"
    run_dir.mkdir()
    (run_dir / "progress.csv").write_text("cut again\n")
    assert solve_bench.set_aside_cut_run(run_dir) == tmp_path / "seed_0.cut2"
    assert (tmp_path / "seed_0.cut1" / "progress.csv").read_text() == "cut at 240k\n"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text("{}")  # finished, but not what the candidate trains now
    assert solve_bench.set_aside_cut_run(run_dir) == tmp_path / "seed_0.stale1"


def test_readme_and_preset_quote_the_pruner_replay():
    """The reason the preset no longer prunes is a measurement: the README and the preset's
    comment quote the replay in results.json."""
    tuning = json.loads((ROOT / "bench" / "results.json").read_text())["tuning"]
    replay = next(cell["pruner_replay"] for run in tuning["runs"] for cell in run["cells"]
                  if cell.get("pruner_replay"))
    measured = (sum(s is not None for s in replay["best"]), len(replay["best"]))
    readme = " ".join((ROOT / "README.md").read_text().split())
    preset = " ".join((ROOT / "conf" / "hparams_search" / "lift_sbx_sac.yaml").read_text()
                      .replace("#", " ").split())
    for text in (readme, preset):
        quoted = re.search(r"stopped (?:its|the) winner on (\d+) of (\d+)", text)
        assert quoted and tuple(map(int, quoted.groups())) == measured


@pytest.mark.parametrize("night", tuning_bench.RUNS, ids=lambda night: night.folder)
def test_each_night_run_is_reproduced_from_todays_preset_by_its_overrides(night):
    """The overrides a run is reported with compose the pruner its replay judges by."""
    from rlsweep.cli import compose_config

    command = tuning_bench.sweep_command(night.sweep_dir, 2, night.preset_overrides)
    overrides = command[command.index("rlsweep") + 2:]  # after `python -m rlsweep -m`
    sweeper = compose_config(overrides, return_hydra_config=True).hydra.sweeper
    if night.pruner is None:
        assert sweeper.pruner == "none"
    else:
        name, kwargs = night.pruner
        assert sweeper.pruner == name and dict(sweeper.pruner_kwargs) == kwargs


def test_a_seed_that_uses_several_cores_trains_alone():
    one_core = solve_bench.Candidate("sac", ())
    two_cores = solve_bench.Candidate("ppo", ("env.n_envs=2",), cores=2)
    running, overlaps, lock = set(), [], threading.Lock()

    def train(candidate, seed):
        with lock:
            running.add((candidate.name, seed))
            overlaps.append(frozenset(running))
        time.sleep(0.05)
        with lock:
            running.discard((candidate.name, seed))

    todo = [(two_cores, 0), (one_core, 0), (one_core, 1), (two_cores, 1), (one_core, 2)]
    solve_bench.train_all(todo, jobs=2, train=train)
    trained = set().union(*overlaps)
    assert trained == {(c.name, s) for c, s in todo}
    assert any(len(o) == 2 for o in overlaps)  # one-core seeds share the 2 jobs
    assert all(o == {job} for o in overlaps for job in o if job[0] == "ppo")
