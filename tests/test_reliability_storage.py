"""A sweep and its storage under stress (issue 15): a RUNNING trial without any heartbeat, a
live trial taken over after a long pause, transient database errors."""

from __future__ import annotations

import time
from dataclasses import asdict

from hydra_plugins.rlsweep_sweeper.rlsweep_sweeper import RLSweeperConf
from rlsweep.periodic import Periodic
from rlsweep.sweep.study import SQLITE_LOCK_TIMEOUT_S, check_settings


# ---------------------------------------------------------------- 4: a live trial taken over

def test_default_grace_period_outlasts_a_failed_heartbeat():
    # A beat can wait SQLITE_LOCK_TIMEOUT_S for the lock and fail; the next is due an interval
    # later. A healthy worker must survive that without being taken over.
    defaults = RLSweeperConf()
    assert defaults.grace_period > 2 * defaults.heartbeat_interval + SQLITE_LOCK_TIMEOUT_S


def test_grace_period_below_two_beats_and_the_lock_timeout_warns_naming_the_field(caplog):
    settings = {**asdict(RLSweeperConf()), "on_finish": None, "heartbeat_interval": 5,
                "grace_period": 2 * 5 + SQLITE_LOCK_TIMEOUT_S - 1,
                "objective": "rlsweep.sweep.synthetic.synthetic_objective"}
    with caplog.at_level("WARNING", logger="rlsweep.sweep"):
        check_settings(settings)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"hydra.sweeper.grace_period={settings['grace_period']} ")
    assert "heartbeat_interval=5" in warning and "taken over" in warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="rlsweep.sweep"):
        check_settings({**settings, "grace_period": 2 * 5 + SQLITE_LOCK_TIMEOUT_S + 1})
    assert not caplog.records


def test_a_slow_heartbeat_does_not_push_the_next_one_back():
    starts = []

    def slow_beat() -> None:  # the first beat waits for a lock, longer than the interval
        starts.append(time.monotonic())
        time.sleep(0.6 if len(starts) == 1 else 0)

    with Periodic(0.4, slow_beat):
        time.sleep(1.5)
    # The second beat follows the slow one at once, not an interval (0.4 s) after it ended.
    assert starts[1] - starts[0] < 0.6 + 0.2
