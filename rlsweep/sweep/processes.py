"""Processes of this machine as a sweep needs to know them, read from Linux's /proc.

Whether the process that held a trial is still alive (a resumed sweep requeues the trials of a
sweep that is gone), and which processes a sweep process started (it passes SIGTERM on to its
pool). Without /proc (not Linux) nothing is known: every process counts as alive and none as a
child, which leaves trials to their heartbeats as before.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

PROC = Path("/proc")
# /proc/stat's boot time has whole seconds: a start time read from it may be off by one.
START_TIME_SLACK = timedelta(seconds=2)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces), None if
    there is no such process."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        return None
    return text[text.rindex(")") + 2:].split()


def _boot_time() -> float:
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def process_start(pid: int) -> datetime | None:
    """When process `pid` of this machine started (local time), None if it is gone (a zombie,
    which has exited and waits for its parent, is gone too)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):  # field 3 of stat: the state
        return None
    ticks = int(fields[19])  # field 22: start time in clock ticks after boot
    return datetime.fromtimestamp(_boot_time() + ticks / os.sysconf("SC_CLK_TCK"))


def process_gone(pid: int, since: datetime | None) -> bool:
    """Whether the process `pid` of this machine that was running at `since` has ended: no such
    process, or one started after `since` (its pid reused). False when /proc cannot tell.

    :param pid: the process id
    :param since: a moment the process was known to run (e.g. when it claimed a trial), in
        local time; None: any process with this pid counts as it
    """
    if not PROC.is_dir():
        return False
    try:
        started = process_start(pid)
    except (OSError, ValueError, IndexError):
        return False
    if started is None:
        return True
    return since is not None and started > since + START_TIME_SLACK


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (empty without /proc)."""
    if not PROC.is_dir():
        return []
    children = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[1] == str(pid):  # field 4 of stat: the parent
            children.append(int(entry.name))
    return children
