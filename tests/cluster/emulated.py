"""A real Slurm cluster of emulated nodes on this machine, for the cluster tests and for people.

Each node -- the login node that runs ``slurmctld`` and ``munged``, and ``node1..nodeN``
that each run one ``slurmd`` -- is a long-lived *holder* process with its own network,
UTS (hostname) and mount namespace: a private ``/dev/shm`` tmpfs, its own
``/proc/sys/kernel/random/boot_id`` (Dragon tells hosts apart by it) and an ``/etc/hosts``
naming every node. Everything a node's daemons start (job steps, worker pools, Dragon's
back end) inherits those namespaces. The login node holds the bridge that the nodes'
veth links join, so the cluster's network lives entirely inside namespaces made here:
no address is added to the machine's own network, and nothing outside can reach it.
The file system is shared, as a cluster's parallel file system is.

Commands run on a node through ``nsenter`` into its holder. Tear-down kills every process
inside each node's network namespace (so leaked job processes go too), which releases the
namespaces, their tmpfs and the bridge, then removes the state directory: nothing is left.

``python -m tests.cluster.emulated up|down|status [--nodes N] [--dir DIR]`` does the same
for people (``make cluster-up`` / ``make cluster-down``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The cluster's private subnet; it exists only inside the namespaces made here.
SUBNET = "10.77.0"
LOGIN = "sfc-login"
PARTITION = "debug"
#: Daemons and tools the cluster needs, from the Debian packages slurmctld, slurmd,
#: slurm-client and munge (and util-linux / iproute2 for the namespaces).
TOOLS = ("slurmctld", "slurmd", "sbatch", "srun", "munged", "ip", "unshare", "nsenter", "runuser")
DEFAULT_DIR = Path("/tmp/simferry-cluster")


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "the emulated Slurm cluster needs root (network namespaces, mounts, slurmd)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (
            f"the emulated Slurm cluster needs {', '.join(missing)}; install the Debian "
            "packages slurmctld slurmd slurm-client munge"
        )
    return None


@dataclass
class Node:
    name: str
    address: str
    holder: int = 0
    #: The holder's network namespace (``net:[inode]``): what belongs to this node.
    netns: str = ""


@dataclass
class Cluster:
    """One cluster's state; ``to_json``/``from_json`` let ``down`` find what ``up`` made."""

    root: Path
    size: int = 2
    login: Node = field(default_factory=lambda: Node(LOGIN, f"{SUBNET}.1"))
    nodes: list[Node] = field(default_factory=list)
    #: The holders this process started, reaped on tear-down (none after ``load``).
    holders: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # -- paths and environment -------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment a user of this cluster has: its ``SLURM_CONF``, no outer job."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PBS_"))}
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra or {})
        return env

    def all_nodes(self) -> list[Node]:
        return [self.login, *self.nodes]

    def node(self, name: str) -> Node:
        for n in self.all_nodes():
            if n.name == name:
                return n
        raise KeyError(name)

    # -- running things on nodes -----------------------------------------------------

    def prefix(self, name: str = LOGIN, cwd: Path | None = None) -> list[str]:
        """The command prefix that runs a program inside node ``name``'s namespaces.

        Entering a mount namespace moves to the holder's working directory (``/``), so
        the one wanted is given again (``cwd``, default this process's).
        """
        holder = self.node(name).holder
        wd = f"--wd={cwd or Path.cwd()}"
        return ["nsenter", "-t", str(holder), "-n", "-u", "-m", wd, "--"]

    def run(
        self,
        args: Sequence[str],
        node: str = LOGIN,
        *,
        timeout: float = 60,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.prefix(node, cwd), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(env),
            cwd=cwd,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} on {node} failed ({proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def popen(
        self,
        args: Sequence[str],
        node: str = LOGIN,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        **kwargs: object,
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(  # type: ignore[call-overload]
            [*self.prefix(node, cwd), *args], env=self.env(env), cwd=cwd, text=True, **kwargs
        )

    def processes(self, node: str) -> list[tuple[int, str]]:
        """(pid, command line) of every process in ``node``'s network namespace."""
        want = self.node(node).netns
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "net") != want:
                    continue
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            found.append((int(entry.name), cmd))
        return found

    def shm(self, node: str) -> list[str]:
        """The entries of ``node``'s private ``/dev/shm``."""
        out = self.run(["ls", "-A", "/dev/shm"], node=node).stdout
        return sorted(out.split())

    def wait_idle(self, timeout: float = 60) -> None:
        """Until every node is idle (no job holds one) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout
            states = dict(line.split() for line in out.splitlines() if line.strip())
            if len(states) == self.size and all(s == "idle" for s in states.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes not idle after {timeout:.0f} s: {states}")
            time.sleep(0.5)

    # -- bringing it up ----------------------------------------------------------------

    def up(self) -> Cluster:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.root.mkdir(parents=True, exist_ok=False)
        self.root.chmod(0o755)
        try:
            self.nodes = [Node(f"node{i}", f"{SUBNET}.{10 + i}") for i in range(1, self.size + 1)]
            self._write_files()
            for node in self.all_nodes():
                self._hold(node)
            self.save()
            self._network()
            self._munge()
            self.run(["slurmctld", "-f", str(self.conf)])
            for node in self.nodes:
                self.run(["slurmd", "-f", str(self.conf), "-N", node.name], node=node.name)
            self.wait_idle(timeout=60)
        except BaseException:
            self.down()
            raise
        return self

    def _write_files(self) -> None:
        for sub in ("etc", "ctld", "slurmd", "log", "munge", "nodes"):
            (self.root / sub).mkdir(mode=0o755)
        hosts = ["127.0.0.1 localhost"] + [f"{n.address} {n.name}" for n in self.all_nodes()]
        (self.root / "etc" / "hosts").write_text("\n".join(hosts) + "\n")
        for node in self.all_nodes():
            (self.root / "nodes" / f"{node.name}.boot_id").write_text(f"{uuid.uuid4()}\n")
        (self.root / "etc" / "cgroup.conf").write_text(
            "CgroupPlugin=cgroup/v1\nCgroupAutomount=no\n"
        )
        self.conf.write_text(slurm_conf(self))

    def _hold(self, node: Node) -> None:
        """Start ``node``'s holder: new namespaces, hostname, mounts, then sleep."""
        ready = self.root / "nodes" / f"{node.name}.ready"
        boot_id = self.root / "nodes" / f"{node.name}.boot_id"
        script = "; ".join(
            [
                "set -e",
                f"hostname {node.name}",
                # Dragon's default pool is 4 GiB per node; tmpfs is sparse, so this is free.
                "mount -t tmpfs -o size=10g,mode=1777 simferry-shm /dev/shm",
                f"mount --bind {self.root / 'etc' / 'hosts'} /etc/hosts",
                f"mount --bind {boot_id} /proc/sys/kernel/random/boot_id",
                "ip link set lo up",
                f"touch {ready}",
                "exec sleep infinity",
            ]
        )
        proc = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--uts",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        node.holder = proc.pid
        self.holders[node.name] = proc
        deadline = time.monotonic() + 20
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the namespaces of {node.name} could not be set up")
            time.sleep(0.05)
        node.netns = os.readlink(f"/proc/{proc.pid}/ns/net")

    def _network(self) -> None:
        """A bridge in the login node; one veth per node into it; addresses; routes."""
        ip = ["ip"]
        self.run([*ip, "link", "add", "bridge0", "type", "bridge"])
        self.run([*ip, "addr", "add", f"{self.login.address}/24", "dev", "bridge0"])
        self.run([*ip, "link", "set", "bridge0", "up"])
        for node in self.nodes:
            peer = f"v{node.name}"
            self.run(
                [
                    *ip,
                    "link",
                    "add",
                    peer,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    str(node.holder),
                ]
            )
            self.run([*ip, "link", "set", peer, "master", "bridge0", "up"])
            self.run([*ip, "addr", "add", f"{node.address}/24", "dev", "eth0"], node=node.name)
            self.run([*ip, "link", "set", "eth0", "up"], node=node.name)

    def _munge(self) -> None:
        """munged on the login node, as the munge user, with a fresh key; socket shared."""
        mdir = self.root / "munge"
        key = mdir / "munge.key"
        key.write_bytes(os.urandom(1024))
        shutil.chown(mdir, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        self.run(
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "munged",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={mdir / 'munged.pid'}",
                f"--log-file={mdir / 'munged.log'}",
                f"--seed-file={mdir / 'munged.seed'}",
                "--force",
            ]
        )

    # -- tearing it down -----------------------------------------------------------------

    def down(self) -> None:
        """Stop everything this cluster started and remove its files; safe to repeat."""
        for node in reversed(self.all_nodes()):
            if node.holder and node.netns:
                kill_namespace(node.netns, node.holder)
            if node.name in self.holders:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.holders.pop(node.name).wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def save(self) -> None:
        data = {
            "size": self.size,
            "nodes": [n.__dict__ for n in self.all_nodes()],
        }
        (self.root / "cluster.json").write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, root: Path) -> Cluster:
        data = json.loads((root / "cluster.json").read_text())
        nodes = [Node(**n) for n in data["nodes"]]
        return cls(root=root, size=data["size"], login=nodes[0], nodes=nodes[1:])


def kill_namespace(netns: str, holder: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, every process in network namespace ``netns``; holder last."""

    def members() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "ns" / "net") == netns:
                        pids.append(int(entry.name))
        return pids

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in members():
            if pid != holder:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while [p for p in members() if p != holder and _alive(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(holder, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while [p for p in members() if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return status != "Z"


def slurm_conf(cluster: Cluster) -> str:
    """slurm.conf for ``cluster``; each line is one of CLUSTER.md's checked facts."""
    root = cluster.root
    lines = [
        "ClusterName=simferry",
        # Must be the login node's own hostname, with its address.
        f"SlurmctldHost={LOGIN}({cluster.login.address})",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={cluster.munge_socket}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={root / 'ctld'}",
        f"SlurmdSpoolDir={root / 'slurmd' / '%n'}",
        f"SlurmctldPidFile={root / 'ctld' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd' / '%n.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd-%n.log'}",
        "ProctrackType=proctrack/linuxproc",
        # Dragon refuses task/none ("lacks support for cpu binding").
        "TaskPlugin=task/affinity",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        # A stopped slurmd is noticed in seconds, not minutes.
        "SlurmdTimeout=10",
        "InactiveLimit=0",
        "KillWait=5",
        "MinJobAge=30",
        "MessageTimeout=10",
    ]
    for node in cluster.nodes:
        lines.append(
            f"NodeName={node.name} NodeAddr={node.address} CPUs={os.cpu_count() or 2} "
            "RealMemory=2000 State=UNKNOWN"
        )
    # Parsl's two executors each hold every node: they must be able to share them.
    lines.append(
        f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP "
        "OverSubscribe=FORCE:8"
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.emulated", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--nodes", type=int, default=2, help="compute nodes (default: 2)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory")
    args = parser.parse_args(argv)
    if args.action == "up":
        cluster = Cluster(root=args.dir, size=args.nodes).up()
        print(f"cluster up: {LOGIN} + {', '.join(n.name for n in cluster.nodes)}")
        print(f"login shell: {' '.join(cluster.prefix())} env SLURM_CONF={cluster.conf} bash")
        return 0
    if not (args.dir / "cluster.json").exists():
        print(f"no cluster in {args.dir}", file=sys.stderr)
        return 0 if args.action == "down" else 1
    cluster = Cluster.load(args.dir)
    if args.action == "down":
        cluster.down()
        print("cluster down")
        return 0
    print(cluster.run(["sinfo", "-N"]).stdout, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
