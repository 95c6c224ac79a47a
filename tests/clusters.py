"""Throwaway clusters on 127.0.0.1 for the scale-out tests: a single-node Slurm (Debian's
slurm-wlm + munge, which .ci/run installs) and a Ray head node (the `[ray]` extra).

Each runs from a temp dir with its own config, sockets and ports, so it touches nothing of the
machine's own setup, and is torn down when the context ends. docs/cluster.md shows the same
commands for trying a launcher by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, condition, timeout_s: float = 180, logs: Sequence[Path] = ()) -> Any:
    """Poll `condition()` until it returns something true and return that; after `timeout_s`
    raise, naming `what` and showing the tails of `logs`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")


def slurm_installed() -> bool:
    return all(shutil.which(b) for b in ("munged", "slurmctld", "slurmd", "sbatch"))


@dataclass(frozen=True)
class SlurmCluster:
    """A running throwaway cluster: `env` makes sbatch/squeue/scancel (and submitit) use it."""

    env: dict[str, str]
    partition: str
    root: Path

    def run(self, *cmd: str) -> str:
        return subprocess.run(cmd, env=self.env, check=True, capture_output=True, text=True,
                              timeout=60).stdout


SLURM_CONF = """\
ClusterName=rlsweep-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=10
# The node may promise more CPUs than the machine has: worker jobs mostly wait on each other.
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=8000 State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def throwaway_slurm(partition: str = "debug") -> Iterator[SlurmCluster]:
    """munged + slurmctld + slurmd as root (SlurmUser=root) on 127.0.0.1, with a fresh munge
    key; yields once the node is idle. Slurm has no accounting daemon here (no slurmdbd), so
    `sacct` fails: the path the sweeper must survive (submitit cannot learn a dead job's state)."""
    root = Path(tempfile.mkdtemp(prefix="rlsweep-slurm-"))
    procs: list[subprocess.Popen] = []
    try:
        munge = root / "munge"
        munge.mkdir(mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for d in ("state", "spool"):
            (root / d).mkdir()
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={munge}/munge.socket",
                        f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                        f"--seed-file={munge}/munged.seed"], check=True, capture_output=True,
                       timeout=30)
        host = socket.gethostname()
        conf = root / "slurm.conf"
        conf.write_text(SLURM_CONF.format(host=host, root=root, partition=partition,
                                          ctld_port=free_port(), d_port=free_port()))
        env = {**os.environ, "SLURM_CONF": str(conf)}
        logs = [root / "slurmctld.log", root / "slurmd.log", munge / "munged.log"]
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["slurmd", "-D"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                 text=True, timeout=30).stdout.split()
            return out == ["idle"]

        wait_until("the Slurm node to be idle", idle, 60, logs)
        yield SlurmCluster(env=env, partition=partition, root=root)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        pid = root / "munge" / "munged.pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid.read_text().strip()), 15)
        shutil.rmtree(root, ignore_errors=True)


def ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class RayCluster:
    """A running head node: `address` for RAY_ADDRESS."""

    address: str
    root: Path


@contextlib.contextmanager
def throwaway_ray(env: Optional[dict[str, str]] = None, num_cpus: int = 4) -> Iterator[RayCluster]:
    """`ray start --head --block` on 127.0.0.1 with its own temp dir and port; yields its address
    once the head answers and stops its processes (only its own: not `ray stop`, which ends every
    Ray on the machine) on exit. Ray's workers inherit the environment of `ray start` (not the
    driver's): `env` is that environment, e.g. the database password the storage URL reads.

    :param env: the head node's environment (default: this process's)
    :param num_cpus: CPUs the node offers Ray's scheduler (worker jobs mostly wait on each other)
    """
    # Short path: Ray's unix sockets live under it (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = free_port()
    address = f"127.0.0.1:{port}"
    node_env = {**(env or os.environ), "RAY_USAGE_STATS_ENABLED": "0"}
    log = root / "ray-start.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
             "--include-dashboard=false", f"--temp-dir={root}", "--disable-usage-stats"],
            env=node_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answers() -> bool:
            if head.poll() is not None:
                raise RuntimeError(f"ray start exited {head.returncode}: {log.read_text()[-2000:]}")
            return subprocess.run([ray_bin, "status", f"--address={address}"], env=node_env,
                                  capture_output=True, timeout=60).returncode == 0

        wait_until("the Ray head node to answer", answers, 120, [log])
        yield RayCluster(address=address, root=root)
    finally:
        # --block: ray start stops the processes it started on SIGTERM; the group kill is for
        # any that outlive it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
