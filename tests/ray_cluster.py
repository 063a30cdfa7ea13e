"""A real 2-node Ray cluster on loopback, started with Ray's own CLI, for the tests that join one.

`ray_cluster` (session-scoped, see conftest) runs the `ray start` commands of docs/cluster.md
(HEAD_COMMAND, WORKER_COMMAND; test_cluster_docs checks the page shows exactly these) plus
LOOPBACK_EXTRAS, which only matter when several Ray clusters share one machine (free ports
instead of the defaults, a small object store, no dashboard). Token authentication is on, as
Ray 2.60 documents it (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH), so every join is an
authenticated one.

Reuse (e.g. by other stages' tests): `ray_cluster.address` to join, `ray_cluster.env(**more)` for
the environment of a process that joins (token auth on), `cli(ray_cluster, *args)` to run the CLI
as a user would, `task_pids(name)` / `raylet_pids(node)` to inject faults; a test that kills a
node calls `start_worker()` after, so the next tests get 2 nodes again (`nodes[-1]` is the newest).

It stops only what it started: the processes whose command line names its own temp dirs, and
their children (the workers, whose command line Ray rewrites to `ray::task`). Never `ray stop`,
which ends every Ray process of the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# The commands of docs/cluster.md, with {placeholders}; `ray` is Ray's CLI.
HEAD_COMMAND = ("ray start --head --node-ip-address {head_ip} --port {port} --num-cpus {cpus} "
                "--temp-dir {temp_dir} --disable-usage-stats")
WORKER_COMMAND = ("ray start --address {head_ip}:{port} --node-ip-address {node_ip} --num-cpus {cpus} "
                  "--temp-dir {temp_dir} --disable-usage-stats")
LOOPBACK_EXTRAS = ("--object-store-memory 200000000 --dashboard-agent-listen-port {agent_port} "
                   "--metrics-export-port {metrics_port}")
HEAD_EXTRAS = " --include-dashboard false --dashboard-port {dashboard_port}"
CPUS_PER_NODE = 4
RAY_CLI = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(template: str, **values) -> list[str]:
    """A template as the argv that runs it here (`ray` -> this interpreter's Ray CLI)."""
    argv = shlex.split(template.format(**values))
    assert argv[0] == "ray"
    return RAY_CLI + argv[1:]


@dataclass
class RayCluster:
    root: Path
    port: int = field(default_factory=free_port)
    nodes: list[Path] = field(default_factory=list)  # each node's temp dir, head first

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token_path(self) -> Path:
        return self.root / "auth_token"

    def env(self, **more: str) -> dict[str, str]:
        """The environment of a process that joins the cluster (token authentication on)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path),
                   RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **more)
        return env

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        self._start_node(HEAD_COMMAND + " " + LOOPBACK_EXTRAS + HEAD_EXTRAS)
        self.start_worker()

    def start_worker(self) -> None:
        self._start_node(WORKER_COMMAND + " " + LOOPBACK_EXTRAS)

    def _start_node(self, template: str) -> None:
        temp_dir = self.root / f"node{len(self.nodes)}"
        self.nodes.append(temp_dir)
        argv = command(template, head_ip="127.0.0.1", node_ip="127.0.0.1", port=self.port, cpus=CPUS_PER_NODE,
                       temp_dir=temp_dir, agent_port=free_port(), metrics_port=free_port(),
                       dashboard_port=free_port())
        done = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=180)
        if done.returncode:
            self.stop()
            raise RuntimeError(f"`{shlex.join(argv[3:])}` failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def raylet_pids(self, node: int | None = None) -> list[int]:
        dirs = self.nodes if node is None else [self.nodes[node]]
        return [pid for pid, cmd in _processes() if "/raylet/raylet" in cmd and any(str(d) in cmd for d in dirs)]

    def task_pids(self, name: str) -> list[int]:
        """Workers of this cluster now running task `name` (Ray titles them `ray::name`)."""
        ours = set(self.raylet_pids())
        return [pid for pid, cmd in _processes() if cmd.startswith(f"ray::{name}") and _parent(pid) in ours]

    def pids(self) -> list[int]:
        """Every process of this cluster: named by a temp dir, or a child of one that is."""
        named = {pid for pid, cmd in _processes() if str(self.root) in cmd}
        return sorted(named | {pid for pid, _ in _processes() if _parent(pid) in named})

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):  # gcs_server may ignore SIGTERM
            pids = self.pids()
            for pid in pids:
                _signal(pid, sig)
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.pids():
                return


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            found.append((int(entry.name), cmd))
    return found


def _parent(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def cli(cluster: RayCluster, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run `wit-retrieval ARGS` as a user would, in a process that joins the cluster."""
    return subprocess.run([sys.executable, "-c", "from wit_retrieval.cli import main; main()", *args], env=cluster.env(**env),
                          capture_output=True, text=True, timeout=timeout)


def cli_background(cluster: RayCluster, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from wit_retrieval.cli import main; main()", *args], env=cluster.env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
