"""trial.json: the worker's record of a trial reads back as written (rlsweep.sweep.records)."""

import json
import math

from rlsweep.sweep.records import SeedRecord, TrialRecord, trial_dirs


def test_a_trial_record_reads_back_as_written_with_infinities_as_null(tmp_path):
    record = TrialRecord(
        number=7, cell="ppo-dense", state="PRUNED", params={"algo.learning_rate": 0.5},
        value=None, last_step=100, status="diverged: non-finite loss", fail_reason=None,
        env_steps=100, wall_time_s=1.5, success_rate=0.0, mean_return=-3.0,
        seeds=[SeedRecord(seed=4, run_dir=str(tmp_path), status="diverged: non-finite loss")],
        intermediate_values={50: 0.25, 100: -math.inf})
    trial_dir = tmp_path / "ppo-dense" / "trial_007"
    trial_dir.mkdir(parents=True)
    record.write(trial_dir)
    raw = json.loads((trial_dir / "trial.json").read_text())
    assert raw["intermediate_values"] == {"50": 0.25, "100": None}  # JSON has no infinity
    back = TrialRecord.read(trial_dir)
    assert back.intermediate_values == {50: 0.25, 100: None}
    assert back.seeds == record.seeds and back.params == record.params
    assert (back.number, back.state, back.status) == (7, "PRUNED", "diverged: non-finite loss")
    (tmp_path / "ppo-dense" / "trial_008").mkdir()  # a trial still running: no record yet
    assert list(trial_dirs(tmp_path / "ppo-dense")) == [trial_dir]
