"""Optuna plumbing of a sweep: storage, sampler, pruner, one study per cell, the trial budget.

The budget of a cell is a queue: the process that creates a cell's study enqueues `n_trials`
WAITING trials, and workers claim them atomically through the storage. So n_trials holds exactly
across any number of workers and sweep processes sharing a storage, without a lock of our own.
A trial whose worker died goes stale (no heartbeat); Optuna then fails it and enqueues one retry.
Storage calls of a running sweep are retried on transient database errors (`with_retries`), so a
locked SQLite file, a dropped connection or a server down for up to `storage_outage_s` never fails
a trial; a longer outage stops the sweep (`StorageUnreachable`).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import random
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from rlsweep.config import ConfigError, first_line
from rlsweep.credentials import quote_password

log = logging.getLogger("rlsweep.sweep")

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "grid", "gp", "nsga2", "nsga3")
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "random", "qmc", "grid", "gp", "nsga2", "nsga3")
PRUNERS = ("median", "successive_halving", "hyperband", "threshold", "none")
# Measured at each evaluation (reported to the pruner, averaged over the last evaluations):
EVAL_METRICS = ("success_then_return", "success_rate", "mean_return")
# Totals of a whole trial: only as one objective of several (e.g. success vs wall time).
TRIAL_METRICS = ("wall_time_s", "env_steps")
METRICS = EVAL_METRICS + TRIAL_METRICS
DIRECTIONS = ("maximize", "minimize")
SEED_AGGREGATES = ("mean", "iqm")
DB_FILE = "optuna.db"
BUDGET_ATTR = "rlsweep_n_trials"
# Study user attribute per trial taken over while its worker still ran it (value: the reason).
# On the study, not the trial: a failed trial no longer takes attributes, and its retry may have
# finished too by the time the original worker wakes up.
TAKEN_OVER_ATTR_PREFIX = "rlsweep_taken_over_trial_"
CLAIMED_BY_ATTR = "claimed_by"  # user attr of a claimed trial: worker_identity()
# User attr of a claimed trial: the worker process that claimed it, "<host>:<pid>" (claimed_by
# names the sweep process, which a cluster's worker outlives).
WORKER_PROCESS_ATTR = "worker_process"
# Study user attribute per worker that runs as a Slurm job (value: its SLURM_JOB_ID).
WORKER_JOB_ATTR_PREFIX = "rlsweep_worker_job_"
# A worker waits this long for SQLite's write lock before the call fails. A heartbeat may wait
# it and fail, so grace_period must outlast it plus two beats (see check_settings).
SQLITE_LOCK_TIMEOUT_S = 15
# A storage call failing on transient errors (a locked SQLite file, a server restarting or
# failing over) is tried again with capped exponential backoff, 0.5, 1, 2, 4, 8, 10, 10, ... s,
# until the storage has failed it for hydra.sweeper.storage_outage_s seconds (default below).
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
STORAGE_OUTAGE_S = 90.0
# A server that accepts connections and never answers (a hung host, a firewall that drops
# packets, a wrong port on a proxy) hung the sweep with no output: connecting and each statement
# have a limit (PostgreSQL; a statement that hits it is retried like a dropped connection).
CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_S = 60
T = TypeVar("T")


def _parse_url(url: str):
    try:
        from sqlalchemy.engine import make_url

        return make_url(quote_password(url))
    except Exception:  # not an RDB URL: RDBStorage will say so
        return None


def mask_url(url: str) -> str:
    """The storage URL with its password replaced by ***, safe to print."""
    parsed = _parse_url(url)
    if parsed is not None and parsed.password is None:
        return url  # nothing to hide: show it as the user wrote it
    return parsed.render_as_string(hide_password=True) if parsed else url.split("@")[-1]


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """The configured URL, or the embedded default: SQLite in the sweep dir."""
    return storage or f"sqlite:///{Path(sweep_dir).resolve() / DB_FILE}"


CONNECTIONS_PER_PROCESS = 3  # the most a sweep or worker process opens to a server storage


def check_connection_budget(storage: RDBStorage, n_jobs: int) -> None:
    """Refuse, before any job, more workers than the PostgreSQL server has connections for:
    each process (the workers and this sweep) may hold CONNECTIONS_PER_PROCESS; the server
    keeps `superuser_reserved_connections` back, and other clients already hold some.

    :param storage: the sweep's storage (a no-op for SQLite, which has no server)
    :param n_jobs: the workers this sweep starts (`hydra.sweeper.n_jobs`)
    """
    if storage.engine.dialect.name != "postgresql":
        return
    from sqlalchemy import text

    with storage.engine.connect() as connection:
        limit = int(connection.execute(text("SHOW max_connections")).scalar())
        reserved = int(connection.execute(text("SHOW superuser_reserved_connections")).scalar())
        in_use = int(connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )).scalar())
    free = limit - reserved - in_use
    needed = (n_jobs + 1) * CONNECTIONS_PER_PROCESS
    if needed > free:
        fits = max(free // CONNECTIONS_PER_PROCESS - 1, 0)
        raise ConfigError(
            f"hydra.sweeper.n_jobs={n_jobs} is invalid for this PostgreSQL server: {n_jobs} "
            f"workers and the sweep may open {needed} connections ({CONNECTIONS_PER_PROCESS} "
            f"each), it has {free} free (max_connections={limit}, {reserved} reserved, "
            f"{in_use} in use): use n_jobs <= {fits}, or raise max_connections")


FINISHED_STATES = frozenset(s for s in TrialState if s.is_finished())


class SweepStorage(RDBStorage):
    """Optuna's RDB storage, keeping in memory the trials it has read finished.

    A finished trial never changes (Optuna refuses updates to it; the sweep writes a trial's
    totals before telling its end), yet the median pruner reads every COMPLETE trial with all
    its intermediate values at each evaluation, and TPE reads every trial at each sample:
    37 ms per pruning decision with 24 finished trials on SQLite, growing with the study. Here
    a read of finished trials asks the database only which ids are finished (one small query)
    and loads the ones not seen before; unfinished trials are always read fresh, and a cell's
    queue of WAITING trials only when asked for by state.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._finished: dict[int, dict[int, optuna.trial.FrozenTrial]] = {}
        self._studies: set[int] = set()  # ids of the studies known to exist
        self._local = threading.local()  # the reads_once snapshot of the calling thread
        self._reads = self.scoped_session
        if self.engine.dialect.name == "sqlite":
            self._reads = _sqlite_read_sessions(
                self.url, kwargs.get("engine_kwargs", {}).get("connect_args", {}))
        elif self.engine.dialect.name == "postgresql":
            # A read takes two statements (the finished ids, then the unfinished trials); at
            # PostgreSQL's default READ COMMITTED each sees its own moment, and a trial that
            # finished in between would be in neither. One snapshot per read transaction
            # (reads never fail to serialize; the pool is shared).
            from sqlalchemy import orm

            self._reads = orm.scoped_session(orm.sessionmaker(
                bind=self.engine.execution_options(isolation_level="REPEATABLE READ")))

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self._reads) as session:
            model = _rdb_models().TrialModel.find_or_raise_by_id(trial_id, session)
            return self._build_frozen_trial_from_trial_model(model)

    def set_trial_intermediate_value(self, trial_id: int, step: int,
                                     intermediate_value: float) -> None:
        """Optuna's report in two statements instead of three: the trial's state (a finished
        trial refuses it, as in Optuna), then an upsert of the step's value (a report retried
        after a lost commit overwrites its own row). Reports are a trial's most frequent
        write: one per evaluation."""
        dialect = self.engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            return super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        models = _rdb_models()
        value, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
            intermediate_value)
        with _transaction(self) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            statement = insert(models.TrialIntermediateValueModel).values(
                trial_id=trial_id, step=step, intermediate_value=value,
                intermediate_value_type=kind)
            session.execute(statement.on_conflict_do_update(
                index_elements=["trial_id", "step"],
                set_={"intermediate_value": value, "intermediate_value_type": kind}))

    @contextmanager
    def reads_once(self) -> Iterator[None]:
        """Within the block (one trial's sampling), read a study's trials from the database
        once and answer every further read of them from that, as `Study.ask` does: parallel
        TPE otherwise reads every trial twice per trial (its search space, then its model of
        the running ones, uncached with constant_liar).

        A read of every state (`states=None`) is answered without the WAITING queue: the
        queue is the rest of the cell's budget (up to n_trials trials, each loaded with its
        child rows: most of a sampling's time before), and no sampler models it; Optuna's
        readers of every state during a sampling (IntersectionSearchSpace, CMA-ES, NSGA's
        parent population) keep only finished trials. WAITING trials asked for by name are
        read, once."""
        self._local.snapshot = {}
        try:
            yield
        finally:
            self._local.snapshot = None

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Any = None) -> list[optuna.trial.FrozenTrial]:
        snapshot = getattr(self._local, "snapshot", None)
        if snapshot is None:
            trials = self._read_trials(study_id, set(TrialState) if states is None else
                                       set(states))
        else:
            wanted = set(TrialState) - {TrialState.WAITING} if states is None else set(states)
            read = snapshot.setdefault(study_id, {})  # state -> its trials, as first read
            missing = wanted - read.keys()
            if missing:
                for state in missing:
                    read[state] = []
                for trial in self._read_trials(study_id, missing):
                    read[trial.state].append(trial)
            trials = sorted((t for state in wanted for t in read[state]),
                            key=lambda t: t._trial_id)
        return copy.deepcopy(trials) if deepcopy else trials

    def _read_trials(self, study_id: int, states: set[TrialState]
                     ) -> list[optuna.trial.FrozenTrial]:
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import and_

        models = _rdb_models()
        cache = self._finished.setdefault(study_id, {})
        finished, unfinished = states & FINISHED_STATES, states - FINISHED_STATES
        with _create_scoped_session(self._reads) as session:
            trials = []
            if finished:
                ids = [row[0] for row in session.query(models.TrialModel.trial_id)
                       .filter(models.TrialModel.study_id == study_id,
                               models.TrialModel.state.in_(finished))
                       .order_by(models.TrialModel.trial_id)]
                missing = [i for i in ids if i not in cache]
                for start in range(0, len(missing), 500):  # within SQLite's bound variables
                    for trial in self._load(session, models.TrialModel.trial_id.in_(
                            missing[start:start + 500])):
                        cache[trial._trial_id] = trial  # finished: ids and rows read together
                trials = [cache[i] for i in ids]
            if unfinished:
                trials = sorted(trials + self._load(session, and_(
                    models.TrialModel.study_id == study_id,
                    models.TrialModel.state.in_(unfinished))), key=lambda t: t._trial_id)
            if study_id not in self._studies:  # as Optuna: KeyError for a study that does
                if not trials:                   # not exist (asked once: reads are hot)
                    models.StudyModel.find_or_raise_by_id(study_id, session)
                self._studies.add(study_id)
        return trials

    def _load(self, session, condition) -> list[optuna.trial.FrozenTrial]:
        """The trials matching `condition`, each with its child rows (one query per table)."""
        from sqlalchemy import orm

        models = _rdb_models()
        return [self._build_frozen_trial_from_trial_model(model) for model in (
            session.query(models.TrialModel)
            .options(orm.selectinload(models.TrialModel.params),
                     orm.selectinload(models.TrialModel.values),
                     orm.selectinload(models.TrialModel.user_attributes),
                     orm.selectinload(models.TrialModel.system_attributes),
                     orm.selectinload(models.TrialModel.intermediate_values))
            .filter(condition))]


def _sqlite_read_sessions(url: str, connect_args: Mapping[str, Any]):
    """Sessions for SweepStorage's reads on SQLite: plain deferred transactions, which in WAL
    mode read one consistent snapshot without the write lock that every transaction of the
    storage's own engine takes (_serialize_sqlite_transactions). Reads then never wait for
    another worker's write, nor hold up a claim."""
    from sqlalchemy import create_engine, event, orm

    engine = create_engine(url, connect_args=dict(connect_args))

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # BEGIN below, so all reads share a snapshot

    @event.listens_for(engine, "begin")
    def _begin_deferred(connection):
        connection.exec_driver_sql("BEGIN")

    return orm.scoped_session(orm.sessionmaker(bind=engine))


def make_storage(url: str, heartbeat_interval: int, grace_period: int) -> RDBStorage:
    """An RDB storage with heartbeats (so dead workers' trials are failed and retried once)."""
    engine_kwargs: dict[str, Any] = {}
    parsed = _parse_url(url)
    if url.startswith("sqlite"):
        if parsed is None or parsed.database in (None, "", ":memory:"):
            raise ConfigError(f"hydra.sweeper.storage={mask_url(url)} is invalid: workers are "
                              "separate processes and cannot share an in-memory database; use "
                              "a file (sqlite:///path/optuna.db, the default) or PostgreSQL")
        # Several processes write one file: wait for the lock instead of failing at once, but
        # less than a heartbeat's grace period, so a waiting worker's trial never goes stale.
        engine_kwargs["connect_args"] = {"timeout": SQLITE_LOCK_TIMEOUT_S}
    else:
        # Pooled and bounded: a process uses at most its main thread's and its heartbeat's (or
        # progress printer's) connections, plus one spare; n_jobs workers x 15 (SQLAlchemy's
        # default 5 + 10 overflow) could exhaust the server (see check_connection_budget).
        engine_kwargs.update(pool_pre_ping=True, pool_size=CONNECTIONS_PER_PROCESS - 1,
                             max_overflow=1)
        if parsed is not None and parsed.get_backend_name() == "postgresql":
            # What the URL sets itself (?connect_timeout=...&options=...) wins.
            limits = {"connect_timeout": CONNECT_TIMEOUT_S,
                      "options": f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"}
            engine_kwargs["connect_args"] = {k: v for k, v in limits.items()
                                             if k not in parsed.query}
    for attempt in range(5):
        try:
            if url.startswith("sqlite"):
                _use_wal(url)  # fails here on a file that is not a database
            storage = SweepStorage(quote_password(url), engine_kwargs=engine_kwargs,
                                   heartbeat_interval=heartbeat_interval,
                                   grace_period=grace_period,
                                   heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                       max_retry=1))
            if url.startswith("sqlite"):
                _sync_sqlite_at_checkpoints(storage.engine)
                _serialize_sqlite_transactions(storage.engine)
            return storage
        except Exception as err:  # driver errors vary; say which storage, never its password
            text = str(err)
            if ("duplicate key" in text or "already exists" in text) and attempt < 4:
                # Another sweep process is creating Optuna's tables in this database right
                # now (PostgreSQL does not serialise concurrent CREATE TABLE): try again.
                time.sleep(1.0 + attempt)
                continue
            reason = first_line(text) or type(err).__name__
            if "timeout expired" in text:  # psycopg's words for the connect timeout
                reason = (f"connecting timed out: no answer within {CONNECT_TIMEOUT_S} s "
                          "(a server that accepts connections but does not answer?)")
            password = parsed.password if parsed else None
            if password:
                reason = reason.replace(password, "***")
            raise ConfigError(f"hydra.sweeper.storage={mask_url(url)} is unreachable: "
                              f"{reason[:300]}") from None
    raise AssertionError("not reached: the last attempt returns or raises")


def _sync_sqlite_at_checkpoints(engine) -> None:
    """Let SQLite fsync its write-ahead log at checkpoints, not at every commit.

    A commit's fsync was 4-5 ms here, and a trial commits a dozen times (claim, parameters,
    every evaluation, totals, end): most of the sweeper's own time per trial. In WAL mode,
    synchronous=NORMAL keeps the database consistent through any crash and every commit
    durable through a killed process; only a power loss or OS crash can drop the last commits,
    and then the trial folders written beside them (model.zip, metrics.json: not fsynced by
    SB3 or by us) are at the same risk. Such a trial comes back RUNNING without heartbeat and
    is retried on resume, as after any dead worker.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _synchronous_normal(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")  # per connection, not stored


def _serialize_sqlite_transactions(engine) -> None:
    """Make every SQLite transaction take the write lock at BEGIN.

    Optuna claims a WAITING trial by reading its state and then writing RUNNING, relying on
    SELECT ... FOR UPDATE, which SQLite ignores; and Python's sqlite3 only begins a transaction
    at the first write. Two workers could then both read WAITING and both run the trial (our
    load test caught it). BEGIN IMMEDIATE makes read-then-write atomic across processes.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while creating the tables lack the hooks


def _use_wal(url: str) -> None:
    """Put a local SQLite file in WAL mode (persistent in the file): a commit costs one sync,
    not three. WAL needs a local disk; on a shared filesystem use PostgreSQL (docs/cluster.md)."""
    import sqlite3

    parsed = _parse_url(url)
    path = parsed.database if parsed else None
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path, timeout=60) as connection:
            connection.execute("PRAGMA journal_mode=WAL")


# OperationalError covers what the database could not do right now (locked, busy, deadlock,
# connection lost), but also a few conditions no retry cures:
PERMANENT_OPERATIONAL_ERRORS = ("no such table", "no such column", "readonly", "read-only",
                                "disk is full", "no space left", "not a database", "malformed",
                                "authentication failed", "does not exist")


def is_transient(err: BaseException) -> bool:
    """Whether a storage error may pass if the call is tried again: a locked or busy database,
    a lost or timed-out connection. Optuna wraps SQLAlchemy's errors (StorageInternalError),
    so the whole chain of causes is searched."""
    from sqlalchemy import exc

    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, (exc.DisconnectionError, exc.TimeoutError)):  # pool exhausted
            return True
        if isinstance(cause, exc.OperationalError):
            text = str(cause.orig if cause.orig is not None else cause).lower()
            return not any(marker in text for marker in PERMANENT_OPERATIONAL_ERRORS)
        cause = cause.__cause__ or cause.__context__
    return False


class StorageUnreachable(Exception):
    """A storage call failed on transient errors for the whole outage budget
    (`hydra.sweeper.storage_outage_s`): the database is down, not the trial at fault. Workers
    stop (their running trials are retried on resume) and the sweep says so in one line."""


_outage_budget_s = STORAGE_OUTAGE_S
# monotonic time of this process's latest transient storage error (a failed call or heartbeat):
# other workers' heartbeats failed in the same outage, and must not be judged stale before they
# have had time to beat again (`recently_unreachable`).
_last_storage_error = -math.inf


def set_storage_outage(seconds: float) -> None:
    """How long this process's storage calls ride out a storage that fails them
    (`hydra.sweeper.storage_outage_s`), before `StorageUnreachable`."""
    global _outage_budget_s
    _outage_budget_s = float(seconds)


def note_storage_error() -> None:
    """Record that a storage call of this process just failed on a transient error."""
    global _last_storage_error
    _last_storage_error = time.monotonic()


def recently_unreachable(within_s: float) -> bool:
    """Whether this process saw a transient storage error in the last `within_s` seconds."""
    return time.monotonic() - _last_storage_error < within_s


def root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def with_retries(call: Callable[[], T], what: str, outage_s: float | None = None) -> T:
    """`call()`, tried again after transient storage errors with capped exponential backoff
    (0.5, 1, 2, 4, 8, then every 10 s, jittered so workers do not retry in step) until the
    storage has failed it for `outage_s` seconds (default: `set_storage_outage`'s): then
    `StorageUnreachable`. Any other error is raised at once: a trial fails only for its own
    errors. One warning when the trouble starts and one when it ends, not one per attempt.

    :param call: the storage call
    :param what: what it does, for the messages ("claiming a trial of ppo-dense")
    :param outage_s: seconds of failures to ride out (None: this process's budget)
    """
    budget = _outage_budget_s if outage_s is None else outage_s
    first_error_at, attempt = None, 0
    while True:
        attempt += 1
        try:
            result = call()
        except Exception as err:
            if not is_transient(err):
                raise
            note_storage_error()
            now = time.monotonic()
            first_error_at = now if first_error_at is None else first_error_at
            left = first_error_at + budget - now
            if left <= 0:
                raise StorageUnreachable(
                    f"it failed every call for {now - first_error_at:.0f} s "
                    f"(hydra.sweeper.storage_outage_s={budget:g}) while {what}: "
                    f"{first_line(root_cause(err))}") from err
            if attempt == 1:
                log.warning("storage error while %s: %s (retrying for up to %g s, "
                            "hydra.sweeper.storage_outage_s)", what,
                            first_line(root_cause(err)), budget)
            delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempt - 1))
            time.sleep(min(delay * random.uniform(1.0, 1.5), left))
            continue
        if first_error_at is not None and attempt > 2:  # a blip of one retry needs no word
            log.warning("storage answered again after %.0f s (%s)",
                        time.monotonic() - first_error_at, what)
        return result


@contextmanager
def _transaction(storage: RDBStorage) -> Iterator[Any]:
    """One transaction on Optuna's tables, committed at the end or rolled back on any error."""
    session = storage.scoped_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@dataclass(frozen=True)
class Objectives:
    """What a sweep optimizes: one metric and direction each (several: a Pareto front)."""

    metrics: tuple[str, ...]
    directions: tuple[str, ...]

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "Objectives":
        """Read `hydra.sweeper.metric`/`direction` (a name or a list each); ConfigError naming
        the field and the allowed values if they do not pair up."""
        def as_tuple(field: str) -> tuple[str, ...]:
            value = settings[field]
            if isinstance(value, str):
                return (value,)
            if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ConfigError(f"hydra.sweeper.{field}={value!r} is invalid: a name or a list "
                              "of names")

        metrics, directions = as_tuple("metric"), as_tuple("direction")
        for field, values, allowed in (("metric", metrics, METRICS),
                                       ("direction", directions, DIRECTIONS)):
            for value in values:
                if value not in allowed:
                    raise ConfigError(f"hydra.sweeper.{field}={value!r} is invalid: allowed "
                                      "values are " + ", ".join(allowed))
        if len(metrics) != len(directions):
            raise ConfigError(f"hydra.sweeper.direction={list(directions)} is invalid: needs one "
                              f"direction per metric of hydra.sweeper.metric={list(metrics)}")
        if len(set(metrics)) != len(metrics):
            raise ConfigError(f"hydra.sweeper.metric={list(metrics)} is invalid: a metric "
                              "appears twice")
        if len(metrics) == 1 and metrics[0] in TRIAL_METRICS:
            raise ConfigError(f"hydra.sweeper.metric={metrics[0]} is invalid alone: it is a "
                              "trial total, not a measure of the policy; allowed alone are "
                              + ", ".join(EVAL_METRICS) + " (or a list, e.g. "
                              "[success_rate,wall_time_s])")
        if not any(m in EVAL_METRICS for m in metrics):
            raise ConfigError(f"hydra.sweeper.metric={list(metrics)} is invalid: needs one of "
                              + ", ".join(EVAL_METRICS))
        return cls(metrics, directions)


# Budget sizing. Optuna's defaults assume hundreds of trials: TPE and GP sample the first 10
# at random and the median pruner waits for 5 finished trials, so at 8 trials per cell the
# search would be random and pruning nearly impossible. These follow rl-zoo3's choices, scaled.
MAX_STARTUP_TRIALS = 10   # Optuna's default for TPE and GP: a ceiling at large budgets
MAX_PRUNER_STARTUP = 5    # the median pruner's default


def startup_trials(n_trials: int) -> int:
    """Random trials before a model-based sampler takes over: a quarter of the budget, 2-10."""
    return max(2, min(MAX_STARTUP_TRIALS, n_trials // 4))


def population_size(n_trials: int) -> int:
    """NSGA-II/III generation size: at least 2 generations within the budget, 4-50."""
    return max(4, min(50, n_trials // 4))


def sized_sampler_kwargs(name: str, n_trials: int, n_jobs: int, given: Mapping[str, Any]
                         ) -> tuple[dict[str, Any], list[str]]:
    """The sampler's keyword arguments sized to the budget, and notes on settings that make
    the search random. What the user gave (`hydra.sweeper.sampler_kwargs`) always wins."""
    kwargs, notes = dict(given), []
    if name in ("tpe", "gp"):
        kwargs.setdefault("n_startup_trials", startup_trials(n_trials))
        if kwargs["n_startup_trials"] >= n_trials:
            notes.append(f"hydra.sweeper.sampler_kwargs.n_startup_trials="
                         f"{kwargs['n_startup_trials']} >= n_trials={n_trials}: every trial is "
                         f"sampled at random; {name} never models the results")
    if name == "tpe":
        kwargs.setdefault("multivariate", True)  # rl-zoo3's choice: joint, not per-parameter
        # Parallel workers: count running trials as bad guesses, so workers spread out instead
        # of sampling the same promising region at once.
        kwargs.setdefault("constant_liar", n_jobs > 1)
    if name in ("nsga2", "nsga3"):
        kwargs.setdefault("population_size", population_size(n_trials))
        if kwargs["population_size"] * 2 > n_trials:
            notes.append(f"{name} population_size={kwargs['population_size']} with n_trials="
                         f"{n_trials}: fewer than 2 generations, the search is random")
    if name == "cmaes" and n_trials < 10:
        notes.append(f"cmaes with n_trials={n_trials}: CMA-ES needs a few generations (of about "
                     "4 + 3 ln(parameters) trials each) before it leaves its start point")
    return kwargs, notes


def sized_pruner_kwargs(name: str, n_trials: int, total_timesteps: int, eval_freq: int,
                        given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The pruner's keyword arguments sized to the budget (trials, env steps and evaluation
    period of a cell), and notes on settings under which it can never prune."""
    kwargs, notes = dict(given), []
    n_evals = max(total_timesteps // eval_freq, 1)
    if name == "median":
        kwargs.setdefault("n_startup_trials", max(2, min(MAX_PRUNER_STARTUP, n_trials // 4)))
        # rl-zoo3: no pruning in the first third of training, when every curve is noise.
        # Optuna's earliest prune is at step == n_warmup_steps, so a third of the env steps
        # rounded up: the first evaluation that can prune is the first at or past a third (a
        # third rounded down to whole evaluations let a 400-step trial with 100-step
        # evaluations be pruned at step 100).
        kwargs.setdefault("n_warmup_steps", -(-total_timesteps // 3))
        if kwargs["n_startup_trials"] >= n_trials:
            notes.append(f"hydra.sweeper.pruner_kwargs.n_startup_trials="
                         f"{kwargs['n_startup_trials']} >= n_trials={n_trials}: nothing can be "
                         "pruned")
        # the last evaluation before the end (the one at total_timesteps finishes the trial)
        last_prunable = (total_timesteps - 1) // eval_freq * eval_freq
        if n_evals >= 2 and kwargs["n_warmup_steps"] > last_prunable:
            notes.append(f"hydra.sweeper.pruner_kwargs.n_warmup_steps={kwargs['n_warmup_steps']}"
                         f" leaves no evaluation before the end of trainer.total_timesteps="
                         f"{total_timesteps}: nothing can be pruned")
    if name == "successive_halving":
        kwargs.setdefault("min_resource", eval_freq)
        kwargs.setdefault("reduction_factor", 3)
    if name == "hyperband":
        kwargs.setdefault("min_resource", eval_freq)
        kwargs.setdefault("max_resource", total_timesteps)
        kwargs.setdefault("reduction_factor", 3)
    if name != "none" and n_evals < 2:
        notes.append(f"trainer.eval_freq={eval_freq} gives one evaluation in trainer."
                     f"total_timesteps={total_timesteps}: the {name} pruner has nothing to compare")
    return kwargs, notes


def make_sampler(name: str, seed: int | None, kwargs: Mapping[str, Any],
                 space: Mapping[str, optuna.distributions.BaseDistribution]):
    """The named sampler with `kwargs` (already sized). For grid it is only checked: the queue
    holds the grid's points (`open_cell_study`), so a worker's trial arrives with every
    parameter fixed."""
    samplers = optuna.samplers
    kwargs = dict(kwargs)
    if name == "grid":
        return samplers.GridSampler({k: list(v) for k, v in grid_values(space).items()},
                                    seed=seed, **kwargs)
    classes = {"tpe": samplers.TPESampler, "random": samplers.RandomSampler,
               "cmaes": samplers.CmaEsSampler, "qmc": samplers.QMCSampler,
               "gp": samplers.GPSampler, "nsga2": samplers.NSGAIISampler,
               "nsga3": samplers.NSGAIIISampler}
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  Optuna imports it only at the second trial
        except ImportError:
            raise ConfigError("hydra.sweeper.sampler=cmaes needs the cmaes package: "
                              "pip install cmaes") from None
    return classes[name](seed=seed, **kwargs)


def make_pruner(name: str, kwargs: Mapping[str, Any]):
    pruners = optuna.pruners
    classes = {"median": pruners.MedianPruner, "successive_halving": pruners.SuccessiveHalvingPruner,
               "hyperband": pruners.HyperbandPruner, "threshold": pruners.ThresholdPruner,
               "none": pruners.NopPruner}
    return classes[name](**kwargs)


# The budget is queued whole when a cell's study is created (about 200 trials a second on
# SQLite): 100 million would queue for days before a trial ran. Searches here run tens to
# hundreds of trials per cell, the fault bench 1,000.
MAX_TRIALS_PER_CELL = 10_000


def check_settings(settings: Mapping[str, Any]) -> Objectives:
    """Reject bad sweeper settings with one line naming the field and allowed values; return
    what the sweep optimizes."""
    def choice(field: str, allowed: tuple) -> None:
        if settings[field] not in allowed:
            raise ConfigError(f"hydra.sweeper.{field}={settings[field]!r} is invalid: allowed "
                              "values are " + ", ".join(allowed))

    choice("sampler", SAMPLERS)
    choice("pruner", PRUNERS)
    choice("seed_aggregate", SEED_AGGREGATES)
    objectives = Objectives.from_settings(settings)
    if objectives.multi and settings["sampler"] not in MULTI_OBJECTIVE_SAMPLERS:
        raise ConfigError(f"hydra.sweeper.sampler={settings['sampler']} is invalid with several "
                          "metrics: allowed values are " + ", ".join(MULTI_OBJECTIVE_SAMPLERS))
    for field in ("n_trials", "n_jobs", "heartbeat_interval", "grace_period", "seeds_per_trial",
                  "value_last_evals"):
        value = settings[field]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"hydra.sweeper.{field}={value!r} is invalid: must be an integer >= 1")
    if settings["n_trials"] > MAX_TRIALS_PER_CELL:
        raise ConfigError(f"hydra.sweeper.n_trials={settings['n_trials']} is invalid: allowed "
                          f"range is 1..{MAX_TRIALS_PER_CELL} trials per cell (each is queued "
                          "in the storage before the first one runs)")
    timeout = settings.get("trial_timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout < math.inf):
        raise ConfigError(f"hydra.sweeper.trial_timeout_s={timeout!r} is invalid: must be a "
                          "number of seconds > 0, or null (no limit)")
    outage = settings.get("storage_outage_s", STORAGE_OUTAGE_S)
    if isinstance(outage, bool) or not isinstance(outage, (int, float)) \
            or not 0 < outage < math.inf:
        raise ConfigError(f"hydra.sweeper.storage_outage_s={outage!r} is invalid: must be a "
                          "number of seconds > 0 (how long a storage outage is ridden out)")
    interval, grace = settings["heartbeat_interval"], settings["grace_period"]
    if grace <= interval:
        raise ConfigError(f"hydra.sweeper.grace_period={grace!r} is invalid: must exceed "
                          f"hydra.sweeper.heartbeat_interval={interval}")
    # One beat stuck on the storage's lock and failing, then the next one an interval later:
    # below that, a healthy worker's trial is failed and retried while it still runs.
    floor = 2 * interval + SQLITE_LOCK_TIMEOUT_S
    if grace < floor:
        log.warning("hydra.sweeper.grace_period=%s is below 2 x hydra.sweeper.heartbeat_interval="
                    "%s + the SQLite lock timeout %s s = %s s: a worker pausing that long (one "
                    "heartbeat stuck on a busy storage, a suspended process) has its live trial "
                    "failed, retried and taken over; use grace_period >= %s",
                    grace, interval, SQLITE_LOCK_TIMEOUT_S, floor, floor)
    try:
        from hydra.utils import get_method

        get_method(settings["objective"])
    except Exception:
        raise ConfigError(f"hydra.sweeper.objective={settings['objective']!r} is invalid: "
                          "needs an importable function like rlsweep.train.train") from None
    if settings.get("on_finish"):
        try:
            get_method(settings["on_finish"])
        except Exception:
            raise ConfigError(f"hydra.sweeper.on_finish={settings['on_finish']!r} is invalid: needs "
                              "an importable function like rlsweep.report.build.finish_sweep, "
                              "or null") from None
    try:
        make_pruner(settings["pruner"], settings["pruner_kwargs"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"hydra.sweeper.pruner_kwargs is invalid for {settings['pruner']}: "
                          f"{err}") from None
    return objectives


def study_name(prefix: str | None, cell: str) -> str:
    return f"{prefix}-{cell}" if prefix else cell


MAX_GRID_INTERVAL_VALUES = 32  # an int interval up to this many values is a grid axis


def grid_values(space: Mapping[str, optuna.distributions.BaseDistribution]) -> dict[str, list]:
    """Each parameter's grid axis: choice() values, range() steps, or the integers of a short
    int interval. ConfigError naming the parameter for a float interval (no grid in it)."""
    dists = optuna.distributions
    axes: dict[str, list] = {}
    for name, d in space.items():
        if isinstance(d, dists.CategoricalDistribution):
            axes[name] = list(d.choices)
        elif isinstance(d, dists.IntDistribution) and not d.log and \
                (d.step > 1 or (d.high - d.low) < MAX_GRID_INTERVAL_VALUES):
            axes[name] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, dists.FloatDistribution) and d.step is not None:
            n = int(round((d.high - d.low) / d.step))
            axes[name] = [round(d.low + k * d.step, 12) for k in range(n + 1)]
        else:
            raise ConfigError(f"hydra.sweeper.sampler=grid cannot enumerate {name} (a continuous "
                              f"{'log ' if getattr(d, 'log', False) else ''}interval "
                              f"{d.low}..{d.high}): give it as choice() or range(), or "
                              "use another sampler")
    return axes


def grid_points(space: Mapping[str, optuna.distributions.BaseDistribution]) -> list[dict]:
    """Every combination of the grid's axes, in a fixed order."""
    axes = grid_values(space)
    names = sorted(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]


def check_grid(space: Mapping[str, optuna.distributions.BaseDistribution], n_trials: int,
               cell: str) -> list[dict]:
    """The grid's points; ConfigError if the budget cannot run them all (a grid is never
    silently cut to its first points)."""
    points = grid_points(space)
    if len(points) > n_trials:
        raise ConfigError(f"hydra.sweeper.n_trials={n_trials} is invalid for sampler=grid: "
                          f"cell {cell} has {len(points)} grid points; set n_trials="
                          f"{len(points)} or fewer values")
    return points


def check_existing_study(storage: RDBStorage, name: str, directions: Sequence[str]) -> None:
    """ConfigError if the storage holds study `name` with other directions (nothing if it
    holds no such study)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no such study yet
        return
    stored = [d.name.lower() for d in study.directions]
    if stored != list(directions):
        shown = lambda ds: ds[0] if len(ds) == 1 else "[" + ",".join(ds) + "]"  # noqa: E731
        raise ConfigError(f"hydra.sweeper.direction={shown(list(directions))} is invalid: study "
                          f"{name} in this storage was created with direction={shown(stored)}")


def sqlite_file_missing(url: str) -> str | None:
    """Why a SQLite URL's file holds no database (it does not exist, or is empty: opening it
    would make a new one there), else None (a database file, or not a SQLite file URL)."""
    parsed = _parse_url(url)
    if not url.startswith("sqlite") or parsed is None or \
            parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    if not path.exists():
        return f"its file {path} does not exist"
    if path.is_file() and path.stat().st_size == 0:
        return f"its file {path} is empty"
    return None


def storage_lacks(url: str, sweep_dir: Path, what: str) -> ConfigError:
    """The one-line refusal of a resume whose storage does not hold the sweep dir's studies."""
    return ConfigError(
        f"resume of hydra.sweep.dir={sweep_dir} refused: the storage {mask_url(url)} lacks "
        f"{what}, so new trials would be numbered from 0 again and overwrite its trial "
        "folders; nothing was written (resume with the storage the sweep ran on: the same "
        "hydra.sweeper.storage, or its own optuna.db, the default)")


def check_storage_holds(storage: RDBStorage, url: str, sweep_dir: Path,
                        needed: Mapping[str, int]) -> None:
    """ConfigError (`storage_lacks`) if the storage lacks a study whose trials the sweep dir
    holds, or has fewer trials than its folders (an older copy of the database): the sweep
    would queue new trials under the numbers of finished ones.

    :param storage: the storage this command opened
    :param url: its URL (printed masked)
    :param sweep_dir: the sweep dir
    :param needed: study name -> trials it must have at least (plan.studies_on_disk)
    """
    if not needed:
        return
    held = set(optuna.get_all_study_names(storage))
    missing = [name for name in needed if name not in held]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                          else "")
        raise storage_lacks(url, sweep_dir, f"the sweep's studies {shown}")
    for name, at_least in needed.items():
        count = len(optuna.load_study(study_name=name, storage=storage).get_trials(
            deepcopy=False))
        if count < at_least:
            raise storage_lacks(url, sweep_dir, f"trials of study {name}: it holds {count}, the "
                                f"sweep dir has trial_{at_least - 1:03d} (an older copy of "
                                "the database?)")


def open_cell_study(storage: RDBStorage, name: str, directions: Sequence[str], n_trials: int,
                    grid: list[dict] | None = None) -> optuna.Study:
    """Create a cell's study and queue its budget of n_trials, or load it if it exists.

    With `grid` (sampler=grid) the queue holds the grid points themselves, at most n_trials.
    Several sweep processes may start at once on one storage: only the one whose
    `create_study` succeeds queues the budget; the others wait for its budget record while the
    queue grows. A rerun with a larger n_trials tops the queue up (one process at a time).
    """
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=list(directions))
        _queue(study, n_trials, already=0, grid=grid)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    check_existing_study(storage, name, directions)
    seen, last_growth = -1, time.monotonic()
    while BUDGET_ATTR not in study.user_attrs:  # its creator is queueing the budget right now
        count = len(study.get_trials(deepcopy=False))
        if count != seen:
            seen, last_growth = count, time.monotonic()
        elif time.monotonic() - last_growth > 15:  # the creator died mid-queue: finish its job
            break
        time.sleep(0.5)
    queued = study.user_attrs.get(BUDGET_ATTR, len(study.get_trials(deepcopy=False)))
    if n_trials > queued:
        _queue(study, n_trials, already=queued, grid=grid)
    return study


def _queue(study: optuna.Study, n_trials: int, already: int, grid: list[dict] | None) -> None:
    points = grid[already:n_trials] if grid is not None else [{}] * (n_trials - already)
    for params in points:
        study.enqueue_trial(params, skip_if_exists=False)
    study.set_user_attr(BUDGET_ATTR, n_trials)  # last: present means the queue is complete


def count_trials(studies, *states: TrialState) -> int:
    """How many trials of these studies are in any of `states`."""
    return sum(len(s.get_trials(deepcopy=False, states=states)) for s in studies)


def _rdb_models():
    """Optuna's table models (as of Optuna 5.0): the claim and the heartbeat-less check need
    transactions Optuna's storage API does not offer."""
    from optuna.storages._rdb import models

    return models


# Set by the sweep process for the workers it launches (Slurm jobs inherit them from sbatch).
SWEEP_PID_ENV = "RLSWEEP_SWEEP_PID"
SWEEP_HOST_ENV = "RLSWEEP_SWEEP_HOST"


def worker_identity(sweep_host: str, sweep_pid: int, job_num: int) -> str:
    """Who holds a claimed trial (`claimed_by`): the sweep process that launched the worker
    (its host and pid) and the worker's Hydra job number. The same on whichever machine the
    worker runs, so the sweep process can tell which RUNNING trials were its dead workers'
    (requeue_orphans), and a worker started again under its job number (a requeued Slurm job)
    which were its own."""
    return f"{sweep_host}:{sweep_pid}:{job_num}"


def claim_trial(study: optuna.Study, storage: RDBStorage, claimed_by: str
                ) -> optuna.Trial | None:
    """Atomically take the first WAITING trial of `study` (None when its budget is used up).

    Like `Study.ask` popping its queue (minus its fallback of creating trials beyond the
    budget), exactly one claimant gets each trial; and the trial's first heartbeat and its
    `claimed_by` attribute are written in the same transaction, so no trial is ever RUNNING
    without them (Optuna never finds a trial without heartbeat stale: a worker killed between
    two commits, or a first beat failing, would leave the sweep waiting forever). Transient
    storage errors are retried.
    """
    from sqlalchemy.exc import IntegrityError

    for _ in range(3):
        try:
            trial_id = with_retries(
                lambda: _claim_first_waiting(storage, study._study_id, claimed_by),
                f"claiming a trial of {study.study_name}")
        except IntegrityError:  # a concurrent claimant's heartbeat row won: look again
            continue
        return None if trial_id is None else optuna.Trial(study, trial_id)
    return None


def _claim_first_waiting(storage: RDBStorage, study_id: int, claimed_by: str) -> int | None:
    """In one transaction: find the study's first WAITING trial and make it RUNNING with its
    start time, first heartbeat and claimant; return its id (None if none waits).

    One indexed query, not a read of every waiting trial (a 1,000-trial budget made each claim
    load 1,000 trials). SQLite: BEGIN IMMEDIATE serializes the whole transaction; PostgreSQL:
    FOR UPDATE SKIP LOCKED hands concurrent claimants different rows. A lost race (another
    claimant's commit in between) finds no row and looks again, and so never returns None
    while trials still wait."""
    import sqlalchemy

    models = _rdb_models()
    with _transaction(storage) as session:
        trial = (session.query(models.TrialModel)
                 .filter(models.TrialModel.study_id == study_id,
                         models.TrialModel.state == TrialState.WAITING)
                 .order_by(models.TrialModel.trial_id)
                 .with_for_update(skip_locked=True).first())
        if trial is None:
            return None
        trial_id = trial.trial_id
        trial.state = TrialState.RUNNING
        trial.datetime_start = datetime.now()  # as Optuna's own claim does
        beat = models.TrialHeartbeatModel.where_trial_id(trial_id, session, for_update=True)
        if beat is None:  # the row's default is the database's current time
            session.add(models.TrialHeartbeatModel(trial_id=trial_id))
        else:
            beat.heartbeat = session.execute(sqlalchemy.func.now()).scalar()
        owners = {CLAIMED_BY_ATTR: claimed_by,
                  WORKER_PROCESS_ATTR: f"{socket.gethostname()}:{os.getpid()}"}
        for key, value in owners.items():
            attr = models.TrialUserAttributeModel.find_by_trial_and_key(
                trial, key, session)  # a retry inherits its original's
            if attr is None:
                session.add(models.TrialUserAttributeModel(
                    trial_id=trial_id, key=key, value_json=json.dumps(value)))
            else:
                attr.value_json = json.dumps(value)
    return trial_id


class ParamBuffer:
    """Stands in for a trial's storage (`trial.storage`) while its parameters are sampled:
    Optuna's suggest logic (fixed, relative and independent parameters) runs unchanged, and
    the parameter rows it would commit one by one (one transaction and one lookup query each)
    are written by `flush` in one transaction, with one lookup of the trial. Every other
    storage call goes through."""

    def __init__(self, storage: RDBStorage):
        self.storage = storage
        self._rows: list[tuple[int, str, float, Any]] = []

    def set_trial_param(self, trial_id: int, name: str, value_internal: float,
                        distribution: Any) -> None:
        self._rows.append((trial_id, name, value_internal, distribution))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def flush(self) -> None:
        """Write the buffered parameters in one transaction (UpdateFinishedTrialError if the
        trial has finished meanwhile). Each is its own previous distribution: a cell's space is
        fixed for the life of its study (a changed plan is refused at resume), so Optuna's
        compatibility lookup per parameter has nothing to find."""
        models = _rdb_models()
        with _transaction(self.storage) as session:
            checked = set()  # one lookup per trial, not one per parameter
            for trial_id, name, value, distribution in self._rows:
                if trial_id not in checked:
                    trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                    self.storage.check_trial_is_updatable(trial_id, trial.state)
                    checked.add(trial_id)
                session.add(models.TrialParamModel(
                    trial_id=trial_id, param_name=name, param_value=value,
                    distribution_json=optuna.distributions.distribution_to_json(distribution)))
        self._rows.clear()


def set_user_attrs(storage: RDBStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Set several user attributes of a RUNNING trial in one transaction (Optuna's
    `set_trial_user_attr` commits one per call, and each commit takes the storage's write lock).
    UpdateFinishedTrialError if the trial has finished (e.g. another worker failed it)."""
    models = _rdb_models()
    with _transaction(storage) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        if trial.state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"trial {trial.number} has already finished ({trial.state.name})")
        rows = {row.key: row for row in session.query(models.TrialUserAttributeModel)
                .filter(models.TrialUserAttributeModel.trial_id == trial_id)}  # one query
        for key, value in attrs.items():
            row = rows.get(key)
            if row is None:
                session.add(models.TrialUserAttributeModel(
                    trial_id=trial_id, key=key, value_json=json.dumps(value)))
            else:
                row.value_json = json.dumps(value)


# A trial requeued this often without spending its retry (its worker preempted or its batch
# aborted each time) is left FAIL: it cannot finish where it is being run.
FREE_RETRIES_ATTR, MAX_FREE_RETRIES = "free_retries", 3
# System attr of a retry queued for free: the trial it retries. `failed_trial` names the first
# of a chain of retries (as in Optuna's retry), this one the trial just before.
REQUEUED_ATTR = "requeued_trial"


def retried_trials(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """The numbers of the trials some other trial retries (a retry counts in their place)."""
    retried: set[int] = set()
    for t in trials:
        retried.update(t.system_attrs.get("retry_history", []))
        for key in ("failed_trial", REQUEUED_ATTR):
            if t.system_attrs.get(key) is not None:
                retried.add(t.system_attrs[key])
    return retried


def requeue_orphans(studies: Mapping[str, optuna.Study], storage: RDBStorage,
                    claimants: set[str], reason: str) -> list[int]:
    """Fail the RUNNING trials held by `claimants` (workers known dead) and queue each a retry
    that does not count against its one retry: the worker died with its launcher's batch (joblib
    kills every pool process when one dies), not because of the trial. Returns their numbers.

    Done by the sweep process at once, instead of waiting for their heartbeats to go stale.
    """
    return _requeue(studies, storage, lambda trial: reason
                    if trial.user_attrs.get(CLAIMED_BY_ATTR) in claimants else None)


DEAD_SWEEP_REASON = ("its sweep process {owner} and its worker are gone (killed, or Ctrl-C); "
                     "retried without spending its retry")


def dead_sweep_owner(trial: optuna.trial.FrozenTrial, host: str) -> str | None:
    """The sweep process ("<host>:<pid>") that held RUNNING `trial` if it and the trial's worker
    process both ran on `host` (this machine) and both are gone; else None: alive, on another
    machine (its heartbeat tells), or claimed before workers noted their process.

    A pid counts as gone too if the process now holding it started after the trial's claim."""
    from rlsweep.sweep.processes import process_gone

    claimed_by = trial.user_attrs.get(CLAIMED_BY_ATTR)
    worker = trial.user_attrs.get(WORKER_PROCESS_ATTR)
    if not isinstance(claimed_by, str) or not isinstance(worker, str):
        return None
    try:
        sweep_host, sweep_pid, _job = claimed_by.rsplit(":", 2)
        worker_host, worker_pid = worker.rsplit(":", 1)
        pids = int(sweep_pid), int(worker_pid)
    except ValueError:  # not written by this version's claim
        return None
    if sweep_host != host or worker_host != host:
        return None
    if all(process_gone(pid, trial.datetime_start) for pid in pids):
        return f"{sweep_host}:{sweep_pid}"
    return None


def requeue_dead_sweeps_trials(studies: Mapping[str, optuna.Study], storage: RDBStorage
                               ) -> list[int]:
    """Fail the RUNNING trials whose sweep process and worker process on this machine are gone
    (the sweep was SIGKILLed or interrupted as a whole) and queue each a retry that does not
    spend its one retry, as a preempted worker's; return their numbers. A resumed sweep calls
    this before its workers start, so it finds them at once instead of after their grace
    period. Trials of a live sweep process, or held on another machine, are left alone."""
    host = socket.gethostname()

    def reason(trial: optuna.trial.FrozenTrial) -> str | None:
        owner = dead_sweep_owner(trial, host)
        return None if owner is None else DEAD_SWEEP_REASON.format(owner=owner)

    return _requeue(studies, storage, reason)


def _requeue(studies: Mapping[str, optuna.Study], storage: RDBStorage,
             reason_if_orphaned: Callable[[optuna.trial.FrozenTrial], str | None]) -> list[int]:
    """Fail each RUNNING trial whose worker `reason_if_orphaned(trial)` says is dead (the
    reason; None: leave it), and queue its retry for free (at most MAX_FREE_RETRIES times per
    trial: else it stays FAIL, saying so). Returns the numbers of the trials requeued."""
    requeued = []
    for study in studies.values():
        running = with_retries(
            lambda: study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
            "listing running trials")
        for trial in running:
            text = reason_if_orphaned(trial)
            if text is None:
                continue
            free = trial.system_attrs.get(FREE_RETRIES_ATTR, 0)
            why = text if free < MAX_FREE_RETRIES else (
                f"{text.split(';')[0]}; not retried: requeued {free} times already (a trial "
                "longer than its job's time limit?)")
            try:
                with_retries(lambda: storage.set_trial_user_attr(
                    trial._trial_id, "fail_reason", why), "saving why")
                with_retries(lambda: storage.set_trial_state_values(
                    trial._trial_id, state=TrialState.FAIL), f"failing trial {trial.number}")
            except optuna.exceptions.UpdateFinishedTrialError:  # it ended meanwhile
                continue
            if free >= MAX_FREE_RETRIES:  # else requeued for free forever: FAIL stays
                continue
            system_attrs = {"failed_trial": trial.number, "retry_history": [],
                            **trial.system_attrs,  # history not extended: the retry is free
                            FREE_RETRIES_ATTR: free + 1, REQUEUED_ATTR: trial.number}
            with_retries(lambda: study.add_trial(optuna.trial.create_trial(
                state=TrialState.WAITING, params=trial.params,
                distributions=trial.distributions, system_attrs=system_attrs)),
                f"queueing the retry of trial {trial.number}")
            requeued.append(trial.number)
    return requeued


def adopt_heartbeatless_trials(study: optuna.Study, storage: RDBStorage) -> list[int]:
    """Give every RUNNING trial of `study` without a heartbeat row one, dated now; return their
    ids.

    Optuna's stale check skips such trials forever, and workers wait while any trial runs, so
    one (left by a worker killed mid-claim before claim and beat were one transaction, or by
    another client) would hang the sweep and every resume of it. Once adopted, it goes stale
    `grace_period` later unless its owner beats. Why not age it by its `datetime_start`: that is
    the claiming machine's local time (`datetime.now()`), heartbeats are the database's clock
    (SQLite: UTC); on a machine west of UTC a just-claimed trial would look hours old.
    """
    from sqlalchemy.exc import IntegrityError

    models = _rdb_models()
    trials, beats = models.TrialModel, models.TrialHeartbeatModel
    try:
        with _transaction(storage) as session:
            orphans = [row[0] for row in (
                session.query(trials.trial_id)
                .outerjoin(beats, beats.trial_id == trials.trial_id)
                .filter(trials.study_id == study._study_id, trials.state == TrialState.RUNNING,
                        beats.trial_heartbeat_id.is_(None)).all())]
            for trial_id in orphans:
                session.add(beats(trial_id=trial_id))
    except IntegrityError:  # another worker adopted them at the same moment
        return []
    return orphans


def fail_stale_trials(study: optuna.Study, storage: RDBStorage) -> None:
    """Fail the trials of `study` whose worker stopped beating for `grace_period` and queue one
    retry each (Optuna's `fail_stale_trials`, with heartbeat-less trials adopted first and each
    storage call retried on transient errors, so a failed trial never loses its retry).

    Not within two heartbeat intervals of a storage error seen by this process: after an
    outage every worker's last beat is as old as the outage, and a live worker needs up to an
    interval to beat again; judged at once, an outage longer than grace_period would fail and
    retry every running trial."""
    interval = storage.get_heartbeat_interval() or 0
    if recently_unreachable(2 * interval):
        return
    with_retries(lambda: adopt_heartbeatless_trials(study, storage),
                 f"checking {study.study_name} for trials without heartbeat")
    stale = with_retries(lambda: storage._get_stale_trial_ids(study._study_id),
                         f"checking {study.study_name} for stale trials")
    for trial_id in stale:
        try:
            trial = with_retries(lambda: storage.get_trial(trial_id), "reading a stale trial")
            # Optuna retries a trial once: a retry that goes stale stays FAIL (say so)
            retry = "not retried: it was a retry already" \
                if trial.system_attrs.get("retry_history") else "retried once"
            with_retries(lambda: storage.set_trial_user_attr(trial_id, "fail_reason", (
                f"no heartbeat for hydra.sweeper.grace_period={storage.grace_period} s (its "
                f"worker died, or paused); {retry}")), "saving why")
            failed = with_retries(
                lambda: storage.set_trial_state_values(trial_id, state=TrialState.FAIL),
                f"failing stale trial id {trial_id}")
        except optuna.exceptions.UpdateFinishedTrialError:  # it finished, or another worker
            continue                                         # failed it first
        if failed:
            queue_retry(study, storage, trial_id)


def queue_retry(study: optuna.Study, storage: RDBStorage, trial_id: int) -> None:
    """Queue the one retry of a FAILED trial whose worker or training process died (Optuna's
    retry callback: none if the trial is itself a retry)."""
    retry = storage.get_heartbeat_stale_trial_callback()
    if retry is None:
        return
    frozen = with_retries(lambda: storage.get_trial(trial_id), "reading a failed trial")
    with_retries(lambda: retry(study, copy.deepcopy(frozen)),
                 f"queueing the retry of trial {frozen.number}")


def record_worker_job(study: optuna.Study, worker: str, job_id: str) -> None:
    """Note on the study which cluster job runs the worker named `worker` (its
    worker_identity: unique per sweep process, so a resumed sweep or a second one on the same
    study never reads another's), so the sweep process can ask the cluster whether its worker
    jobs still exist (a requeued job keeps its id and notes it again)."""
    with_retries(lambda: study.set_user_attr(f"{WORKER_JOB_ATTR_PREFIX}{worker}", job_id),
                 f"noting worker {worker}'s job")


def worker_jobs(study: optuna.Study, workers: Sequence[str]) -> dict[str, str | None]:
    """The cluster job id each of `workers` (identities) noted (None: not started yet)."""
    attrs = study.user_attrs
    return {w: attrs.get(f"{WORKER_JOB_ATTR_PREFIX}{w}") for w in workers}


def record_takeover(study: optuna.Study, number: int, reason: str) -> None:
    """Note on the study that trial `number` was taken over while its worker still ran it."""
    with_retries(lambda: study.set_user_attr(f"{TAKEN_OVER_ATTR_PREFIX}{number}", reason),
                 f"recording that trial {number} was taken over")


def taken_over_trials(study: optuna.Study) -> dict[int, str]:
    """The trials of `study` taken over while their worker still ran them, with the reason."""
    return {int(key[len(TAKEN_OVER_ATTR_PREFIX):]): value
            for key, value in study.user_attrs.items() if key.startswith(TAKEN_OVER_ATTR_PREFIX)}


def objective_value(metrics: Mapping[str, Any], metric: str, horizon: int | None,
                    reports_success: bool = True) -> float:
    """The number a trial reports. `success_then_return`: success rate, ties broken by return
    (mean return per env step, squashed into [0, 1) and scaled by 1e-3, so it never outranks
    a difference in success rate, which moves in steps of 1/eval_episodes). On an env that
    reports no success (env.reports_success=false) it is the mean return itself."""
    if metric == "success_rate":
        return float(metrics["success_rate"])
    if metric == "mean_return" or not reports_success:
        return float(metrics["mean_return"])
    per_step = max(0.0, float(metrics["mean_return"]) / horizon)
    return float(metrics["success_rate"]) + 1e-3 * per_step / (1.0 + per_step)
