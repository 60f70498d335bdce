"""A real one-node Slurm cluster for tests: munged, slurmctld and slurmd
from Debian's slurm-wlm and munge (installed when missing), on loopback, with their own key,
sockets, ports, state and logs in one temporary folder. Only the daemons
started here are stopped, by the process ids they recorded."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from helpers import apt_install

DAEMONS = ("munged", "slurmctld", "slurmd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    """The node's memory for Slurm, as slurmd counts it (so the scripts' --mem fits)."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(pages / 2**20 * 0.95)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class SlurmCluster:
    def __init__(self) -> None:
        apt_install("slurm-wlm", "munge")  # Debian's; installed here when missing, as docker.io is
        missing = [name for name in (*DAEMONS, "sbatch", "scontrol", "sinfo") if shutil.which(name) is None]
        if missing:
            raise RuntimeError(f"no {', '.join(missing)} on this machine after installing slurm-wlm and munge")
        # munged wants its socket's folder searchable by all; mkdtemp makes 0700.
        self.root = Path(tempfile.mkdtemp(prefix="deconvnet-slurm-", dir="/tmp"))
        self.root.chmod(0o755)
        self.pids: dict[str, int] = {}
        self.conf = self.root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def _write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        for name in ("state", "spool", "log", "munge"):
            (self.root / name).mkdir()
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        lines = [
            "ClusterName=deconvnet-test", f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", f"AuthInfo=socket={self.root / 'munge.socket'}", "CredType=cred/munge",
            "SlurmUser=root", "SlurmdUser=root", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "ReturnToService=2", f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "MpiDefault=none", "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none", "MinJobAge=600",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory={_memory_mb()} "
            "State=UNKNOWN",
            f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _start(self, name: str, args: list[str], pid_file: Path) -> None:
        result = subprocess.run([name, *args], capture_output=True, text=True, env=self.env, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{name} did not start ({result.returncode}): {result.stderr[-2000:]}"
                               f"{self.logs()}")
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text().strip():
                self.pids[name] = int(pid_file.read_text().split()[0])
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} wrote no pid file {pid_file}{self.logs()}")

    def start(self) -> SlurmCluster:
        self._write_config()
        munge = self.root / "munge"
        self._start("munged", ["--num-threads=10", f"--socket={self.root / 'munge.socket'}",
                               f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
                               f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'seed'}"],
                    munge / "munged.pid")
        self._start("slurmctld", ["-f", str(self.conf)], self.root / "slurmctld.pid")
        self._start("slurmd", ["-f", str(self.conf)], self.root / "slurmd.pid")
        deadline = time.time() + 60
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env)
            if state.stdout.strip() == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle: {state.stdout}{state.stderr}{self.logs()}")

    def logs(self) -> str:
        parts = []
        for path in sorted(self.root.glob("log/*.log")) + sorted(self.root.glob("munge/*.log")):
            parts.append(f"\n--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "".join(parts)

    def submit(self, *args: str, cwd: Path) -> int:
        """sbatch ARGS from ``cwd``; the job id."""
        result = subprocess.run(["sbatch", "--parsable", *map(str, args)], capture_output=True, text=True,
                                env=self.env, cwd=cwd, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(map(str, args))}: {result.stderr}")
        return int(result.stdout.strip().split(";")[0])

    def wait(self, job: int, timeout: float = 900) -> list[str]:
        """The final states of a job's tasks, once none is pending or running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            shown = subprocess.run(["scontrol", "show", "job", str(job)], capture_output=True, text=True,
                                   env=self.env)
            states = re.findall(r"JobState=(\S+)", shown.stdout)
            if states and not any(s in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING") for s in states):
                return states
            time.sleep(1)
        raise TimeoutError(f"job {job} still running after {timeout} s{self.logs()}")

    def stop(self) -> list[str]:
        """Stops the daemons started here (slurmd first); the names of any
        that would not go."""
        for name in reversed(DAEMONS):
            if name in self.pids and _running(self.pids[name]):
                os.kill(self.pids[name], signal.SIGTERM)
        deadline = time.time() + 30
        while time.time() < deadline and any(_running(pid) for pid in self.pids.values()):
            time.sleep(0.2)
        left = [name for name, pid in self.pids.items() if _running(pid)]
        for name in left:
            os.kill(self.pids[name], signal.SIGKILL)
        return left
