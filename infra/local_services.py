"""Install and run the real services onair needs on this machine: Apache Kafka and S3Proxy.

Nothing here is a fake: Kafka (KRaft, combined broker + controller) and S3Proxy (filesystem
backend) are the real servers, resolved from Maven Central with ``mvn`` into ``.cache/`` and
run as background JVMs whose state, pid files and logs live under ``.run/``.

Standard library only, so it runs with the system ``python3`` before ``.venv`` exists.
The commands ``infra/services``, ``infra/kafka`` and ``infra/s3`` call :func:`main`::

    infra/services up [--record FILE] [--no-wait] | down [--recorded FILE] | status | wait
    infra/kafka start | stop | status | restart | install | quorum
    infra/kafka cluster-start [--fresh] | cluster-stop | cluster-status
    infra/kafka node-stop N [--kill] | node-start N
    infra/s3 start | stop | status | install

Layout::

    .cache/m2/                         Maven's local repository (downloads)
    .cache/kafka-<version>/libs/       the broker's classpath; .installed is the stamp
    .cache/s3proxy-<version>/          the S3Proxy jar; .installed is the stamp
    .run/kafka/                        single broker: server.properties, data/, kafka.pid
    .run/kafka-cluster/nodeN/          3-node cluster, same layout per node
    .run/s3/                           S3Proxy's filesystem store (one directory per bucket)
    .run/logs/                         kafka.log, kafka-cluster-nodeN.log, s3.log, *.out
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CACHE = ROOT / ".cache"
RUN = ROOT / ".run"
LOGS = RUN / "logs"
M2 = CACHE / "m2"

KAFKA_VERSION = os.environ.get("ONAIR_KAFKA_VERSION", "4.4.0")
S3PROXY_VERSION = "4.1.0"
MIN_JAVA = 17
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

KAFKA_HOST = "localhost"
KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
CLUSTER_NODES = (1, 2, 3)
CLUSTER_BROKER_PORT_BASE = 19091  # node N listens on 19091 + N: 19092, 19093, 19094
CLUSTER_CONTROLLER_PORT_BASE = 19191  # node N's controller: 19192, 19193, 19194

S3_HOST = "127.0.0.1"
S3_PORT = 9000
S3_ACCESS_KEY = "onair"
S3_SECRET_KEY = "onair-secret-key"  # a fixed local-only credential, not a secret
S3_BUCKET = "onair"
S3_REGION = "us-east-1"

KAFKA_JVM_FLAGS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # room for 16 MiB GOP chunks plus batch overhead
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class InfraError(Exception):
    """A service could not be installed, started or stopped; the message says why."""


# --------------------------------------------------------------------------- helpers


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _dir_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return f"({_rel(path)} does not exist)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise start/stop/install between concurrent callers (several agents, make -j)."""
    lock_dir = RUN if name != "install" else CACHE
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f".{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def java_binary() -> str:
    """The java to run: $JAVA_HOME/bin/java if set, else the first on PATH; must be 17+."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise InfraError(
            f"Java {MIN_JAVA}+ is required to run Kafka and S3Proxy, and no `java` was found "
            f"(JAVA_HOME={home or 'unset'}). On Debian: `make system` "
            "(or apt-get install default-jre-headless)."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise InfraError(f"cannot tell the version of {java}: {out.stderr.strip()}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise InfraError(
            f"Java {MIN_JAVA}+ is required (Kafka 4 and S3Proxy 4 need it); {java} is Java "
            f"{major}. Install a newer JDK (apt-get install openjdk-17-jre-headless) and put "
            "it first on PATH or set JAVA_HOME."
        )
    return java


def _maven() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise InfraError(
            "Maven (`mvn`) is needed once to fetch Kafka and S3Proxy from Maven Central; "
            "run `make system` (or apt-get install maven)."
        )
    return mvn


def _run_maven(args: Sequence[str], what: str) -> None:
    cmd = [_maven(), "-B", "-q", f"-Dmaven.repo.local={M2}", *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        text = (out.stdout + out.stderr).strip().splitlines()
        raise InfraError(f"mvn failed to fetch {what}:\n" + "\n".join(text[-30:]))


def _install(name: str, home: Path, fetch: Sequence[str], payload: Path) -> Path:
    """Run one Maven fetch into ``payload`` unless ``home/.installed`` says it was done."""
    stamp = home / ".installed"
    if stamp.exists():
        return payload
    java_binary()
    with _locked("install"):
        if stamp.exists():
            return payload
        if payload.is_dir():
            shutil.rmtree(payload)
        home.mkdir(parents=True, exist_ok=True)
        logger.info("installing %s from Maven Central into %s ...", name, _rel(home))
        m2_before = _dir_bytes(M2)
        started = time.monotonic()
        _run_maven(fetch, name)
        seconds = time.monotonic() - started
        size = _dir_bytes(payload) if payload.is_dir() else payload.stat().st_size
        downloaded = _dir_bytes(M2) - m2_before
        files = len(list(payload.glob("*.jar"))) if payload.is_dir() else 1
        record = {
            "name": name,
            "seconds": round(seconds, 1),
            "bytes": size,
            "jars": files,
            "downloaded_bytes": downloaded,
            "installed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        stamp.write_text(json.dumps(record, indent=2) + "\n")
        logger.info(
            "installed %s: %d jar(s), %.1f MB, %.1f MB downloaded into .cache/m2, in %.1f s",
            name,
            files,
            size / 1e6,
            downloaded / 1e6,
            seconds,
        )
    return payload


def install_kafka(version: str = KAFKA_VERSION) -> Path:
    """Resolve Kafka ``version`` (4.x) and its runtime classpath; returns the libs dir."""
    if not version.startswith("4."):
        raise InfraError(f"Kafka {version} is not a 4.x release; onair runs Kafka 4 (KRaft)")
    home = CACHE / f"kafka-{version}"
    libs = home / "libs"
    fetch = [
        "-f",
        str(INFRA / "maven" / "kafka-pom.xml"),
        f"-Dkafka.version={version}",
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    return _install(f"Kafka {version}", home, fetch, libs)


def install_s3proxy(version: str = S3PROXY_VERSION) -> Path:
    """Fetch S3Proxy's jar-with-dependencies; returns the jar's path."""
    home = CACHE / f"s3proxy-{version}"
    jar = home / f"s3proxy-{version}-jar-with-dependencies.jar"
    fetch = [
        f"{DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact=org.gaul:s3proxy:{version}:jar:jar-with-dependencies",
        f"-DoutputDirectory={home}",
    ]
    return _install(f"S3Proxy {version}", home, fetch, jar)


# ----------------------------------------------------------------- processes and ports


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _pid_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and is ours (its command line contains ``marker``), not a zombie."""
    proc = Path(f"/proc/{pid}")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    if not proc.exists():  # no procfs: trust the signal check
        return True
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    # An exiting process has an empty command line while it still holds its ports.
    return state not in ("Z", "X") and (marker in cmdline or not cmdline.strip())


@dataclass(frozen=True)
class Proc:
    """One background JVM the repo starts: where its pid, log and port are."""

    name: str
    pid_file: Path
    log_file: Path
    host: str
    port: int
    marker: str  # a string unique to this process's command line

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running_pid(self) -> int | None:
        pid = self.pid()
        if pid is not None and _pid_alive(pid, self.marker):
            return pid
        return None

    def spawn(self, cmd: Sequence[str], out_file: Path, env: dict[str, str] | None = None) -> int:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with out_file.open("ab") as out:
            out.write(f"\n--- {datetime.datetime.now().isoformat()} start {self.name}\n".encode())
            out.flush()
            child = subprocess.Popen(
                list(cmd),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.pid_file.write_text(f"{child.pid}\n")
        return child.pid

    def stop(self, timeout_s: float = STOP_TIMEOUT_S, *, kill: bool = False) -> bool:
        """SIGTERM (or SIGKILL if ``kill``), wait, SIGKILL after ``timeout_s``; True if it ran."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        while _pid_alive(pid, self.marker):
            if time.monotonic() - started > timeout_s:
                logger.warning(
                    "%s (pid %d) ignored SIGTERM for %.0f s: SIGKILL", self.name, pid, timeout_s
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                timeout_s = float("inf")
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        port_deadline = time.monotonic() + 10.0
        while port_open(self.host, self.port, 0.2) and time.monotonic() < port_deadline:
            time.sleep(0.1)
        how = "killed" if kill else "stopped"
        logger.info("%s: %s pid %d in %.1f s", self.name, how, pid, time.monotonic() - started)
        return True


def _stop_all(procs: Sequence[Proc], timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Signal every process at once, then wait: a KRaft quorum stopped one node at a time
    loses its majority and the last nodes hang in controlled shutdown."""
    pids = {p: p.running_pid() for p in procs}
    for pid in pids.values():
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    stopped = [proc.stop(timeout_s) for proc in procs]
    return any(stopped)


# ---------------------------------------------------------------------- Kafka protocol


@dataclass(frozen=True)
class KafkaMetadata:
    brokers: tuple[tuple[int, str, int], ...]  # (node id, host, port), unfenced brokers only
    cluster_id: str | None
    controller_id: int


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        size = self.take(">h")
        if size < 0:
            return None
        value = self.data[self.pos : self.pos + size].decode()
        self.pos += size
        return value


def kafka_metadata(host: str, port: int, timeout_s: float = 2.0) -> KafkaMetadata:
    """Ask a broker for cluster metadata (Metadata v4, no topics) over a raw socket."""
    client_id = b"onair-infra"
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body = struct.pack(">ib", 0, 0)  # topics: empty array; allow_auto_topic_creation: false
    request = header + body
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        reader = _Reader(_recv_exact(sock, size))
    if reader.take(">i") != 1:
        raise ConnectionError("Metadata answer has the wrong correlation id")
    reader.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.take(">i")):
        node_id = reader.take(">i")
        broker_host = reader.string() or ""
        broker_port = reader.take(">i")
        reader.string()  # rack
        brokers.append((node_id, broker_host, broker_port))
    cluster_id = reader.string()
    controller_id = reader.take(">i")
    return KafkaMetadata(tuple(sorted(brokers)), cluster_id, controller_id)


def kafka_answers(host: str, port: int, brokers: int = 1) -> bool:
    try:
        return len(kafka_metadata(host, port).brokers) >= brokers
    except (OSError, struct.error, UnicodeDecodeError):
        return False


# ------------------------------------------------------------------------------ Kafka


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node (broker + controller in one JVM)."""

    name: str
    node_id: int
    port: int
    controller_port: int
    home: Path  # holds server.properties, cluster.id, data/, kafka.pid
    voters: str
    cluster_size: int
    heap: str

    @property
    def proc(self) -> Proc:
        return Proc(
            name=self.name,
            pid_file=self.home / "kafka.pid",
            log_file=LOGS / f"{self.name}.log",
            host=KAFKA_HOST,
            port=self.port,
            marker=str(self.home / "server.properties"),
        )

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def properties(self) -> dict[str, str]:
        replication = min(3, self.cluster_size)
        min_isr = 2 if self.cluster_size >= 3 else 1
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": (
                f"PLAINTEXT://{KAFKA_HOST}:{self.port},CONTROLLER://{KAFKA_HOST}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{KAFKA_HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": str(replication),
            "min.insync.replicas": str(min_isr),
            "offsets.topic.replication.factor": str(replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": str(replication),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(MAX_MESSAGE_BYTES),
            "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
            "socket.request.max.bytes": str(128 * 1024 * 1024),
            "log.retention.hours": "168",
            "log.segment.bytes": str(256 * 1024 * 1024),
            "num.recovery.threads.per.data.dir": "1",
        }
        if self.cluster_size > 1:
            # Notice a dead node in 4 s, not 9 s: fault tests wait on this, and a node that
            # restarts is refused (DuplicateBrokerRegistration) until its old session expires.
            props["broker.heartbeat.interval.ms"] = "1000"
            props["broker.session.timeout.ms"] = "4000"
        return props

    def write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "server.properties"
        lines = [f"# written by infra/local_services.py for {self.name}; edits are overwritten"]
        lines += [f"{key}={value}" for key, value in self.properties().items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def cluster_id(self, shared: Path) -> str:
        """The cluster id, made once and kept in ``shared``: 16 random bytes, base64url."""
        if shared.exists():
            return shared.read_text().strip()
        shared.parent.mkdir(parents=True, exist_ok=True)
        value = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        shared.write_text(value + "\n")
        return value

    def format_command(self, libs: Path, cluster_id: str) -> list[str] | None:
        """Kafka's StorageTool command that formats this node's storage, None if done."""
        if (self.data_dir / "meta.properties").exists():
            return None
        return [
            java_binary(),
            f"-Dlog4j2.configurationFile={INFRA / 'tools-log4j2.xml'}",
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.write_config()),
            "--ignore-formatted",
        ]

    def spawn(self, libs: Path) -> int:
        config = self.write_config()
        proc = self.proc
        cmd = [
            java_binary(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            *KAFKA_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={INFRA / 'kafka-log4j2.xml'}",
            f"-Donair.log.file={proc.log_file}",
            f"-Dkafka.logs.dir={LOGS}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(config),
        ]
        return proc.spawn(cmd, LOGS / f"{self.name}.out")


def _format(nodes: Sequence[KafkaNode], libs: Path, cluster_id: str) -> None:
    """Format the storage of the nodes that need it, all at once (a JVM start each)."""
    running = []
    for node in nodes:
        cmd = node.format_command(libs, cluster_id)
        if cmd is not None:
            child = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            running.append((node, child))
    failed = []
    for node, child in running:
        output, _ = child.communicate()
        if child.returncode != 0:
            failed.append(f"formatting {node.name}'s storage failed:\n{output}")
    if failed:
        raise InfraError("\n".join(failed))


def single_node() -> KafkaNode:
    return KafkaNode(
        name="kafka",
        node_id=1,
        port=KAFKA_PORT,
        controller_port=KAFKA_CONTROLLER_PORT,
        home=RUN / "kafka",
        voters=f"1@{KAFKA_HOST}:{KAFKA_CONTROLLER_PORT}",
        cluster_size=1,
        heap=os.environ.get("ONAIR_KAFKA_HEAP", "1g"),
    )


def cluster_node(node_id: int) -> KafkaNode:
    if node_id not in CLUSTER_NODES:
        raise InfraError(f"the cluster has nodes {CLUSTER_NODES}, not {node_id}")
    voters = ",".join(f"{n}@{KAFKA_HOST}:{CLUSTER_CONTROLLER_PORT_BASE + n}" for n in CLUSTER_NODES)
    return KafkaNode(
        name=f"kafka-cluster-node{node_id}",
        node_id=node_id,
        port=CLUSTER_BROKER_PORT_BASE + node_id,
        controller_port=CLUSTER_CONTROLLER_PORT_BASE + node_id,
        home=RUN / "kafka-cluster" / f"node{node_id}",
        voters=voters,
        cluster_size=len(CLUSTER_NODES),
        heap=os.environ.get("ONAIR_KAFKA_CLUSTER_HEAP", "512m"),
    )


CLUSTER_BOOTSTRAP = ",".join(f"{KAFKA_HOST}:{CLUSTER_BROKER_PORT_BASE + n}" for n in CLUSTER_NODES)
CLUSTER_ID_FILE = RUN / "kafka-cluster" / "cluster.id"


def _wait_kafka(nodes: Sequence[KafkaNode], brokers: int, started: float) -> None:
    """Wait until every node answers Metadata listing at least ``brokers`` live brokers."""
    pending = list(nodes)
    while pending:
        for node in list(pending):
            if kafka_answers(KAFKA_HOST, node.port, brokers):
                pending.remove(node)
            elif node.proc.running_pid() is None:
                raise InfraError(
                    f"{node.name} exited while starting; last lines of {_rel(node.proc.log_file)}"
                    f":\n{_tail(node.proc.log_file)}\n{_tail(LOGS / f'{node.name}.out', 10)}"
                )
        if not pending:
            break
        if time.monotonic() - started > START_TIMEOUT_S:
            names = ", ".join(n.name for n in pending)
            raise InfraError(
                f"{names} did not answer within {START_TIMEOUT_S:.0f} s; see "
                f"{_rel(pending[0].proc.log_file)}:\n{_tail(pending[0].proc.log_file)}"
            )
        time.sleep(0.3)


def _running_version(node: KafkaNode) -> str:
    try:
        return (node.home / "version").read_text().strip()
    except OSError:
        return "unknown version"


def _start_nodes(
    nodes: Sequence[KafkaNode], brokers: int, cluster_id_file: Path, *, wait: bool
) -> bool:
    """Start the nodes that are not running; True if any was started."""
    started = time.monotonic()
    libs = install_kafka()
    to_start = []
    for node in nodes:
        pid = node.proc.running_pid()
        if pid is not None:
            logger.info(
                "%s: already running (pid %d) on %s:%d", node.name, pid, KAFKA_HOST, node.port
            )
            continue
        if port_open(KAFKA_HOST, node.port) or port_open(KAFKA_HOST, node.controller_port):
            if node.cluster_size == 1 and kafka_answers(KAFKA_HOST, node.port):
                logger.info(
                    "%s: a Kafka broker not started by this repo answers on %s:%d; reusing it",
                    node.name,
                    KAFKA_HOST,
                    node.port,
                )
                continue
            raise InfraError(
                f"{node.name}: port {node.port} or {node.controller_port} is taken by another "
                "process; stop it first"
            )
        to_start.append(node)
    if not to_start:
        return False
    cluster_id = nodes[0].cluster_id(cluster_id_file)
    _format(to_start, libs, cluster_id)
    for node in to_start:
        pid = node.spawn(libs)
        (node.home / "version").write_text(KAFKA_VERSION + "\n")
        logger.info("%s: started pid %d (Kafka %s, KRaft)", node.name, pid, KAFKA_VERSION)
    if wait:
        _wait_kafka(to_start, brokers, started)
        for node in to_start:
            logger.info(
                "%s: answers on %s:%d after %.1f s; logs: %s",
                node.name,
                KAFKA_HOST,
                node.port,
                time.monotonic() - started,
                _rel(node.proc.log_file),
            )
    return True


def kafka_start(*, wait: bool = True) -> bool:
    node = single_node()
    with _locked("kafka"):
        return _start_nodes([node], 1, node.home / "cluster.id", wait=wait)


def kafka_stop() -> bool:
    with _locked("kafka"):
        return single_node().proc.stop()


def kafka_wait() -> None:
    node = single_node()
    if node.proc.running_pid() is None and not kafka_answers(KAFKA_HOST, node.port):
        raise InfraError("kafka is not running: run `make services` (or infra/kafka start)")
    _wait_kafka([node], 1, time.monotonic())


def kafka_status() -> bool:
    node = single_node()
    return _status_line(node, 1)


def _status_line(node: KafkaNode, brokers: int) -> bool:
    pid = node.proc.running_pid()
    try:
        meta: KafkaMetadata | None = kafka_metadata(KAFKA_HOST, node.port)
    except (OSError, struct.error):
        meta = None
    where = f"{KAFKA_HOST}:{node.port}"
    if meta is not None:
        owner = f"pid {pid}, Kafka {_running_version(node)}" if pid else "not started by this repo"
        ids = ",".join(str(b[0]) for b in meta.brokers)
        print(
            f"{node.name}: running on {where} ({owner}, KRaft cluster {meta.cluster_id}, "
            f"live brokers [{ids}]); logs: {_rel(node.proc.log_file)}"
        )
        return len(meta.brokers) >= brokers
    if pid is not None:
        print(f"{node.name}: pid {pid} is up but {where} does not answer yet")
        return False
    print(f"{node.name}: stopped")
    return False


def kafka_restart() -> None:
    node = single_node()
    with _locked("kafka"):
        if node.proc.running_pid() is None and kafka_answers(KAFKA_HOST, node.port):
            raise InfraError(
                f"the broker on {KAFKA_HOST}:{node.port} was not started by this repo; "
                "cannot restart it"
            )
        node.proc.stop()
        _start_nodes([node], 1, node.home / "cluster.id", wait=True)


def cluster_start(*, fresh: bool = False) -> bool:
    nodes = [cluster_node(n) for n in CLUSTER_NODES]
    with _locked("kafka-cluster"):
        if fresh and all(node.proc.running_pid() is None for node in nodes):
            shutil.rmtree(RUN / "kafka-cluster", ignore_errors=True)
        started = _start_nodes(nodes, len(nodes), CLUSTER_ID_FILE, wait=True)
        _wait_cluster_consistent()
        return started


def cluster_stop() -> bool:
    with _locked("kafka-cluster"):
        return _stop_all([cluster_node(n).proc for n in CLUSTER_NODES])


def cluster_status() -> bool:
    ok = True
    for n in CLUSTER_NODES:
        ok = _status_line(cluster_node(n), len(CLUSTER_NODES)) and ok
    return ok


def _wait_cluster_consistent(timeout_s: float = START_TIMEOUT_S) -> set[int]:
    """Wait until every running node lists exactly the running nodes as live brokers."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = [cluster_node(n) for n in CLUSTER_NODES]
        running = {n.node_id for n in nodes if n.proc.running_pid() is not None}
        views: dict[int, set[int] | str] = {}
        for node in nodes:
            if node.node_id in running:
                try:
                    meta = kafka_metadata(KAFKA_HOST, node.port)
                    views[node.node_id] = {b[0] for b in meta.brokers}
                except (OSError, struct.error) as err:
                    views[node.node_id] = f"no answer ({err})"
        if running and all(view == running for view in views.values()):
            return running
        if time.monotonic() > deadline:
            raise InfraError(
                f"the cluster did not settle in {timeout_s:.0f} s: running nodes "
                f"{sorted(running)}, live brokers seen by each: {views}"
            )
        time.sleep(0.3)


def node_stop(node_id: int, *, kill: bool = False) -> None:
    """Stop one cluster node; returns once the other nodes no longer list it."""
    node = cluster_node(node_id)
    with _locked("kafka-cluster"):
        if not node.proc.stop(kill=kill):
            logger.info("%s: was not running", node.name)
        started = time.monotonic()
        live = _wait_cluster_consistent()
        logger.info(
            "cluster: live brokers %s (settled in %.1f s)", sorted(live), time.monotonic() - started
        )


def node_start(node_id: int) -> None:
    """Start one cluster node; returns once every running node lists every running node."""
    node = cluster_node(node_id)
    with _locked("kafka-cluster"):
        _start_nodes([node], 1, CLUSTER_ID_FILE, wait=True)
        live = _wait_cluster_consistent()
        logger.info("cluster: live brokers %s", sorted(live))


def kafka_tool(args: Sequence[str]) -> int:
    """Run one of Kafka's own tool classes (``org.apache.kafka.tools.X``) on the classpath."""
    libs = install_kafka()
    main_class = args[0] if "." in args[0] else f"org.apache.kafka.tools.{args[0]}"
    cmd = [
        java_binary(),
        f"-Dlog4j2.configurationFile={INFRA / 'tools-log4j2.xml'}",
        "-cp",
        f"{libs}/*",
        main_class,
        *args[1:],
    ]
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


# --------------------------------------------------------------------------------- S3


def s3_proc() -> Proc:
    return Proc(
        name="s3",
        pid_file=RUN / "s3proxy.pid",
        log_file=LOGS / "s3.log",
        host=S3_HOST,
        port=S3_PORT,
        marker=str(RUN / "s3proxy.properties"),
    )


def s3_request(method: str, path: str, timeout_s: float = 5.0) -> int:
    """One AWS SigV4-signed request with an empty body to the local S3; returns the status."""
    host = f"{S3_HOST}:{S3_PORT}"
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{S3_REGION}/s3/aws4_request"
    payload_hash = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            path,
            "",
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            payload_hash,
        ]
    )
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{S3_SECRET_KEY}".encode()
    for part in (amz_date[:8], S3_REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"http://{host}{path}",
        method=method,
        data=b"" if method == "PUT" else None,
        headers={
            "x-amz-content-sha256": payload_hash,
            "x-amz-date": amz_date,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={S3_ACCESS_KEY}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}"
            ),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def s3_answers() -> bool:
    """True if the server on the S3 port accepts our credentials (ListBuckets is 200)."""
    try:
        return s3_request("GET", "/", timeout_s=2.0) == 200
    except OSError:
        return False


def _s3_ensure_bucket() -> None:
    status = s3_request("HEAD", f"/{S3_BUCKET}")
    if status == 404:
        status = s3_request("PUT", f"/{S3_BUCKET}")
        if status != 200:
            raise InfraError(f"creating bucket {S3_BUCKET} failed: HTTP {status}")
        logger.info("s3: created bucket %s", S3_BUCKET)
    elif status != 200:
        raise InfraError(f"bucket {S3_BUCKET}: HEAD answered HTTP {status}")


def _s3_wait(proc: Proc, started: float) -> None:
    while not s3_answers():
        if proc.running_pid() is None:
            raise InfraError(
                f"S3Proxy exited while starting; {_rel(proc.log_file)}:\n{_tail(proc.log_file)}"
            )
        if time.monotonic() - started > START_TIMEOUT_S:
            raise InfraError(f"S3Proxy did not answer within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.2)
    _s3_ensure_bucket()


def s3_start(*, wait: bool = True) -> bool:
    proc = s3_proc()
    with _locked("s3"):
        started = time.monotonic()
        pid = proc.running_pid()
        if pid is not None:
            logger.info("s3: already running (pid %d) on http://%s:%d", pid, S3_HOST, S3_PORT)
            if wait:
                _s3_wait(proc, started)
            return False
        if port_open(S3_HOST, S3_PORT):
            if s3_answers():
                logger.info(
                    "s3: an S3 server not started by this repo answers on port %d; reusing it",
                    S3_PORT,
                )
                _s3_ensure_bucket()
                return False
            raise InfraError(f"s3: port {S3_PORT} is taken by another process; stop it first")
        jar = install_s3proxy()
        store = RUN / "s3"
        store.mkdir(parents=True, exist_ok=True)
        config = RUN / "s3proxy.properties"
        config.write_text(
            "\n".join(
                [
                    "# written by infra/local_services.py; edits are overwritten",
                    f"s3proxy.endpoint=http://{S3_HOST}:{S3_PORT}",
                    "s3proxy.authorization=aws-v2-or-v4",
                    f"s3proxy.identity={S3_ACCESS_KEY}",
                    f"s3proxy.credential={S3_SECRET_KEY}",
                    "jclouds.provider=filesystem",
                    f"jclouds.identity={S3_ACCESS_KEY}",
                    f"jclouds.credential={S3_SECRET_KEY}",
                    f"jclouds.filesystem.basedir={store}",
                    f"jclouds.regions={S3_REGION}",
                ]
            )
            + "\n"
        )
        cmd = [java_binary(), "-Xmx512m", "-jar", str(jar), "--properties", str(config)]
        pid = proc.spawn(cmd, proc.log_file, env={"LOG_LEVEL": "info"})
        logger.info("s3: started S3Proxy %s pid %d", S3PROXY_VERSION, pid)
        if wait:
            _s3_wait(proc, started)
            logger.info(
                "s3: answers on http://%s:%d (bucket %s) after %.1f s; logs: %s",
                S3_HOST,
                S3_PORT,
                S3_BUCKET,
                time.monotonic() - started,
                _rel(proc.log_file),
            )
        return True


def s3_stop() -> bool:
    with _locked("s3"):
        return s3_proc().stop()


def s3_status() -> bool:
    proc = s3_proc()
    pid = proc.running_pid()
    if s3_answers():
        owner = f"pid {pid}, S3Proxy {S3PROXY_VERSION}" if pid else "not started by this repo"
        print(
            f"s3: running on http://{S3_HOST}:{S3_PORT} ({owner}), bucket {S3_BUCKET}, "
            f"store {_rel(RUN / 's3')}; logs: {_rel(proc.log_file)}"
        )
        return True
    print(f"s3: pid {pid} is up but does not answer yet" if pid else "s3: stopped")
    return False


# ------------------------------------------------------------------------- services


SERVICES = ("kafka", "s3")


def services_up(record: Path | None, *, wait: bool) -> None:
    """Start Kafka and S3 unless running; add the ones this call started to ``record``."""
    for name, start in (("kafka", kafka_start), ("s3", s3_start)):
        if start(wait=wait) and record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
            known = set(record.read_text().split()) if record.exists() else set()
            record.write_text("".join(f"{n}\n" for n in sorted(known | {name})))
    if wait:
        services_summary()
    else:
        logger.info("starting in the background; `infra/services wait` waits for them")


def services_wait() -> None:
    kafka_wait()
    started = time.monotonic()
    proc = s3_proc()
    if proc.running_pid() is None and not s3_answers():
        raise InfraError("s3 is not running: run `make services` (or infra/s3 start)")
    _s3_wait(proc, started)
    services_summary()


def services_summary() -> None:
    print(
        f"Kafka: {KAFKA_HOST}:{KAFKA_PORT} (logs {_rel(LOGS / 'kafka.log')}); "
        f"S3: http://{S3_HOST}:{S3_PORT} bucket {S3_BUCKET} key {S3_ACCESS_KEY} "
        f"(logs {_rel(LOGS / 's3.log')})"
    )


def services_down(recorded: Path | None) -> None:
    if recorded is not None:
        names = recorded.read_text().split() if recorded.exists() else []
        recorded.unlink(missing_ok=True)
        if not names:
            logger.info("nothing to stop: the services were running before")
    else:
        names = [*SERVICES, "kafka-cluster"]
    stoppers = {"kafka": kafka_stop, "s3": s3_stop, "kafka-cluster": cluster_stop}
    for name in names:
        if name in stoppers and not stoppers[name]():
            logger.info("%s: not running", name)


# ------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infra", description=__doc__.split("\n\n")[0])
    groups = parser.add_subparsers(dest="group", required=True)

    services = groups.add_parser("services").add_subparsers(dest="cmd", required=True)
    up = services.add_parser("up", help="start Kafka and S3 unless running")
    up.add_argument("--record", type=Path, help="add the services this call started to FILE")
    up.add_argument("--no-wait", action="store_true", help="return without waiting (see wait)")
    down = services.add_parser("down", help="stop what the repo started")
    down.add_argument("--recorded", type=Path, help="stop only the services listed in FILE")
    services.add_parser("status")
    services.add_parser("wait", help="wait until Kafka and S3 answer")

    kafka = groups.add_parser("kafka").add_subparsers(dest="cmd", required=True)
    for name in ("start", "stop", "status", "restart", "install", "cluster-stop", "cluster-status"):
        kafka.add_parser(name)
    cluster = kafka.add_parser("cluster-start")
    cluster.add_argument("--fresh", action="store_true", help="wipe the cluster's data first")
    stop = kafka.add_parser("node-stop")
    stop.add_argument("node", type=int, choices=CLUSTER_NODES)
    stop.add_argument("--kill", action="store_true", help="SIGKILL (a crash), not SIGTERM")
    start = kafka.add_parser("node-start")
    start.add_argument("node", type=int, choices=CLUSTER_NODES)
    tool = kafka.add_parser("tool", help="run a Kafka tool class, e.g. TopicCommand --help")
    tool.add_argument("args", nargs=argparse.REMAINDER)
    kafka.add_parser("version")

    s3 = groups.add_parser("s3").add_subparsers(dest="cmd", required=True)
    for name in ("start", "stop", "status", "install"):
        s3.add_parser(name)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    group, cmd = args.group, args.cmd
    if group == "services":
        if cmd == "up":
            services_up(args.record, wait=not args.no_wait)
        elif cmd == "down":
            services_down(args.recorded)
        elif cmd == "status":
            return 0 if all([kafka_status(), s3_status()]) else 3
        elif cmd == "wait":
            services_wait()
    elif group == "kafka":
        if cmd == "start":
            kafka_start()
        elif cmd == "stop":
            if not kafka_stop():
                logger.info("kafka: not running")
        elif cmd == "status":
            return 0 if kafka_status() else 3
        elif cmd == "restart":
            kafka_restart()
        elif cmd == "install":
            install_kafka()
        elif cmd == "cluster-start":
            cluster_start(fresh=args.fresh)
            print(f"cluster bootstrap: {CLUSTER_BOOTSTRAP}")
        elif cmd == "cluster-stop":
            cluster_stop()
        elif cmd == "cluster-status":
            return 0 if cluster_status() else 3
        elif cmd == "node-stop":
            node_stop(args.node, kill=args.kill)
        elif cmd == "node-start":
            node_start(args.node)
        elif cmd == "tool":
            if not args.args:
                raise InfraError("usage: infra/kafka tool CLASS [ARGS...]")
            return kafka_tool(args.args)
        elif cmd == "version":
            print(KAFKA_VERSION)
    elif group == "s3":
        if cmd == "start":
            s3_start()
        elif cmd == "stop":
            if not s3_stop():
                logger.info("s3: not running")
        elif cmd == "status":
            return 0 if s3_status() else 3
        elif cmd == "install":
            install_s3proxy()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[infra] %(message)s", stream=sys.stdout)
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except InfraError as err:
        logger.error("error: %s", err)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
