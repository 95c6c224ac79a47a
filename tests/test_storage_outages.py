"""Storage and disk faults of a running sweep (issue 31, items 12, 13, 15), with real parts: a TCP
listener that accepts and never answers, a real PostgreSQL server stopped and started again
mid-trial, a real small filesystem (tmpfs) filled mid-trial.

What the user must see in each case: a sweep that rides out what it can (a database down for
seconds), and otherwise one `error:` line naming what failed, no traceback, and every trial's
end recorded where it can be.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from bench.postgres import postgres_bindir, throwaway_postgres_server
from tests.conftest import ROOT, require_installed
from tests.test_sweeper import SYNTHETIC

PG_PASSWORD = "outage0pg0password0" + "5" * 8
POSTGRESQL = "Debian's postgresql (.ci/run installs it)"
# Trials long enough that an outage falls inside one: 8 evaluations, 0.5 s apart.
TRIAL = ["trainer.total_timesteps=4000", "trainer.eval_freq=500", "hydra.sweeper.pruner=none"]


def sweep_command(sweep_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "rlsweep", "-m", "algo=ppo", *SYNTHETIC, *args,
            f"hydra.sweep.dir={sweep_dir}"]


def wait_for(what: str, condition, timeout_s: float, process: subprocess.Popen | None = None):
    """Poll `condition()` until true (monotonic clock); fail naming `what`, or at once if
    `process` ended meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the sweep ended (rc {process.returncode}) before {what}:\n"
                                 f"{process.communicate()[0][-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte (a hung
    database host, a proxy in front of nothing); yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except (socket.timeout, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        server.close()


# ------------------------------------------------------------- 12: a storage that never answers

@pytest.mark.slow
def test_a_storage_that_accepts_connections_and_never_answers_is_one_line_at_start(tmp_path):
    """Before: the sweep hung with no output (seen at 100 s). Now: the connect timeout, then
    one line naming the masked URL and what timed out, exit 2, no job launched."""
    with silent_listener() as port:
        url = f"postgresql://rlsweep:{PG_PASSWORD}@127.0.0.1:{port}/optuna"
        started = time.monotonic()
        try:
            result = subprocess.run(
                sweep_command(tmp_path / "sweep", f"hydra.sweeper.storage={url}",
                              "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1", *TRIAL),
                cwd=ROOT, text=True, capture_output=True, timeout=180)
        except subprocess.TimeoutExpired as err:
            raise AssertionError("the sweep hung on a storage that never answers") from err
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert error_lines(output) == [
        f"error: hydra.sweeper.storage=postgresql://rlsweep:***@127.0.0.1:{port}/optuna is "
        "unreachable: connecting timed out: no answer within 10 s (a server that accepts "
        "connections but does not answer?)"], output[-3000:]
    assert "Traceback" not in output and "Launching" not in output
    assert PG_PASSWORD not in output
    assert seconds < 150


def test_a_statement_that_the_server_does_not_answer_times_out_and_is_transient(monkeypatch):
    """A connected server that holds a statement (here: a table locked by another session)
    ends it after the statement timeout, with an error the retries treat as transient (before:
    no limit, the call waited for ever)."""
    import sqlalchemy

    from rlsweep.sweep import study as study_module

    require_installed(postgres_bindir() is not None, POSTGRESQL)
    monkeypatch.setattr(study_module, "STATEMENT_TIMEOUT_S", 1)
    with throwaway_postgres_server(PG_PASSWORD) as server:
        storage = study_module.make_storage(server.url, heartbeat_interval=10, grace_period=60)
        optuna.create_study(storage=storage, study_name="held")
        holder = sqlalchemy.create_engine(server.url)
        outcome: dict[str, BaseException | None] = {}
        with holder.connect() as connection:
            connection.execute(sqlalchemy.text("BEGIN"))
            connection.execute(sqlalchemy.text("LOCK TABLE studies IN ACCESS EXCLUSIVE MODE"))

            def read() -> None:
                try:
                    optuna.get_all_study_names(storage)
                    outcome["error"] = None
                except BaseException as err:  # noqa: BLE001  what the read ended with
                    outcome["error"] = err

            reader = threading.Thread(target=read, daemon=True)
            started = time.monotonic()
            reader.start()
            reader.join(30)
            assert not reader.is_alive(), "the statement waited past 30 s: no statement timeout"
            connection.execute(sqlalchemy.text("ROLLBACK"))
        assert time.monotonic() - started < 30
        error = outcome["error"]
        assert error is not None and "statement timeout" in str(study_module.root_cause(error))
        assert study_module.is_transient(error)
        storage.engine.dispose()
        holder.dispose()


# ------------------------------------------------------------- 13: PostgreSQL down mid-trial

@pytest.fixture
def postgres_server():
    require_installed(postgres_bindir() is not None, POSTGRESQL)
    with throwaway_postgres_server(PG_PASSWORD) as server:
        yield server


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="ppo-dense", storage=url).get_trials()


def _reported(url: str) -> bool:
    """Whether a trial has reported an evaluation (training is under way)."""
    try:
        return any(t.intermediate_values for t in _trials(url))
    except KeyError:  # the study does not exist yet
        return False


@pytest.mark.slow
def test_a_postgresql_outage_mid_trial_is_ridden_out(postgres_server, tmp_path):
    """Before: retries ran out after ~4 s, the worker crashed, the summary in `finally` failed
    too (335 lines, 6 tracebacks), trials left RUNNING. Now: the server stopped for 18 s
    mid-trial and started again, the sweep finishes every trial COMPLETE, exit 0."""
    url = postgres_server.url
    sweep = subprocess.Popen(
        sweep_command(tmp_path / "sweep", f"hydra.sweeper.storage={url}",
                      "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", *TRIAL),
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for("a trial's first evaluation", lambda: _reported(url), 240, sweep)
        postgres_server.stop()
        down = time.monotonic()
        while time.monotonic() - down < 18:  # the outage; the sweep has no other timeout
            assert sweep.poll() is None, sweep.communicate()[0][-3000:]
            time.sleep(0.5)
        postgres_server.start()
        output = sweep.communicate(timeout=400)[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 0, output[-4000:]
    assert "Traceback" not in output and not error_lines(output), output[-4000:]
    assert "retrying for up to 90 s, hydra.sweeper.storage_outage_s" in output  # it was hit
    assert "storage answered again after" in output
    trials = _trials(url)
    assert sorted(t.number for t in trials) == [0, 1, 2]  # no retry: nothing failed
    assert all(t.state == TrialState.COMPLETE for t in trials)
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert summary["ppo-dense"]["n_complete"] == 3
    assert PG_PASSWORD not in output


@pytest.mark.slow
def test_a_storage_down_longer_than_the_outage_budget_stops_the_sweep_in_one_line(
        postgres_server, tmp_path):
    """hydra.sweeper.storage_outage_s=5 and a server that stays down: the workers stop after
    riding out 5 s, the sweep says so in one line (masked URL, what failed, the setting), no
    traceback; each running trial's trial.json says why, and the storage, once back, still
    holds them RUNNING (retried on resume), nothing recorded FAIL for the outage."""
    url = postgres_server.url
    sweep = subprocess.Popen(
        sweep_command(tmp_path / "sweep", f"hydra.sweeper.storage={url}",
                      "hydra.sweeper.storage_outage_s=5", "hydra.sweeper.n_trials=3",
                      "hydra.sweeper.n_jobs=2", *TRIAL),
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for("a trial's first evaluation", lambda: _reported(url), 240, sweep)
        running = [t.number for t in _trials(url) if t.state == TrialState.RUNNING]
        postgres_server.stop()
        stopped = time.monotonic()
        output = sweep.communicate(timeout=300)[0]
        gave_up_after = time.monotonic() - stopped
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    errors = error_lines(output)
    assert len(errors) == 1, output[-4000:]
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert errors[0].startswith(f"error: hydra.sweeper.storage=postgresql://rlsweep:***@"
                                f"127.0.0.1:{port}/optuna is unreachable: it failed every call "
                                "for 5 s (hydra.sweeper.storage_outage_s=5) while ")
    assert "rerun the same command" in errors[0] and "no summary was written" in errors[0]
    assert gave_up_after < 120
    assert PG_PASSWORD not in output
    records = {int(p.parent.name.split("_")[1]): json.loads(p.read_text())
               for p in (tmp_path / "sweep").rglob("trial.json")}
    for number in running:
        assert records[number]["state"] == "FAIL"
        assert records[number]["fail_reason"].startswith("the storage was unreachable: ")
    postgres_server.start()
    assert {t.number for t in _trials(url) if t.state == TrialState.RUNNING} >= set(running)
    assert not [t for t in _trials(url) if t.state == TrialState.FAIL]


def test_the_outage_budget_is_checked_and_bounds_the_retries(tmp_path):
    """`storage_outage_s` must be a positive number (one line naming it); with_retries rides out
    transient errors until that budget is spent, then raises StorageUnreachable."""
    from sqlalchemy.exc import OperationalError

    from rlsweep.config import ConfigError
    from rlsweep.sweep.study import StorageUnreachable, check_settings, with_retries

    settings = {"sampler": "tpe", "pruner": "median", "seed_aggregate": "mean",
                "metric": "success_then_return", "direction": "maximize", "n_trials": 2,
                "n_jobs": 1, "heartbeat_interval": 10, "grace_period": 60, "seeds_per_trial": 1,
                "value_last_evals": 3, "objective": "rlsweep.train.train", "on_finish": None,
                "pruner_kwargs": {}}
    for bad in (0, -1, "x", True, float("inf")):
        with pytest.raises(ConfigError) as err:
            check_settings({**settings, "storage_outage_s": bad})
        assert str(err.value).startswith(f"hydra.sweeper.storage_outage_s={bad!r} is invalid")
    check_settings({**settings, "storage_outage_s": 60})

    calls = []

    def down():
        calls.append(time.monotonic())
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    started = time.monotonic()
    with pytest.raises(StorageUnreachable) as err:
        with_retries(down, "testing", outage_s=3)
    assert 3 <= time.monotonic() - started < 6
    assert len(calls) >= 3  # 0.5, 1, 2 s apart (jittered), cut at the budget
    message = str(err.value)
    assert "(hydra.sweeper.storage_outage_s=3) while testing: " in message
    assert message.endswith("connection refused") and "\n" not in message

    answers = iter([OperationalError("SELECT 1", {}, Exception("connection refused"))] * 2)

    def back_soon():
        error = next(answers, None)
        if error is not None:
            raise error
        return "answered"

    assert with_retries(back_soon, "testing", outage_s=30) == "answered"


# ------------------------------------------------------------- 15: the disk fills mid-trial

@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs) for the sweep dir, the storage staying on /tmp."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                             capture_output=True).returncode == 0
    require_installed(mounted, "permission to mount a tmpfs (root; CI runs as root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> None:
    """Write zeros until the filesystem is full to its last byte: a real ENOSPC."""
    subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=4k"],
                   capture_output=True)
    assert os.statvfs(disk).f_bavail == 0


@pytest.mark.slow
def test_a_disk_filling_mid_trial_fails_the_trial_with_the_reason_and_stops_in_one_line(
        small_disk, tmp_path):
    """Before: 2 tracebacks, no summary, an empty error.log, the trial left RUNNING without a
    reason. Now: the storage (elsewhere) records the trial FAIL "disk full: ..." and queues its
    retry for free; one error line names the full disk; no traceback, no empty error.log."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep_dir = small_disk / "sweep"
    sweep = subprocess.Popen(
        sweep_command(sweep_dir, f"hydra.sweeper.storage={storage}", "hydra.sweeper.n_trials=3",
                      "hydra.sweeper.n_jobs=1", *TRIAL),
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for("the first trial to start", lambda: bool(list(
            sweep_dir.rglob("trial_000/config.yaml"))), 240, sweep)
        fill(small_disk)
        output = sweep.communicate(timeout=300)[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 1, output[-4000:]
    assert "Traceback" not in output and "Logging error" not in output, output[-4000:]
    errors = error_lines(output)
    assert len(errors) == 1, output[-4000:]
    assert errors[0].startswith(f"error: the disk of {sweep_dir} is full: trial 0 of ppo-dense "
                                "failed writing its files ([Errno 28] No space left on device")
    assert "rerun the same command" in errors[0]
    trials = optuna.load_study(study_name="ppo-dense", storage=storage).get_trials()
    first = next(t for t in trials if t.number == 0)
    assert first.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"].startswith(
        "disk full: OSError: [Errno 28] No space left on device")
    # its retry waits, with the rest of the budget, for the rerun
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert [t.state for t in retries] == [TrialState.WAITING]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert not [p for p in sweep_dir.rglob("error.log") if p.stat().st_size == 0]
