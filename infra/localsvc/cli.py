"""Install and run the real services onair needs on this machine: Apache Kafka and S3Proxy.

Nothing here is a fake: Kafka (KRaft, combined broker + controller) and S3Proxy (filesystem
backend) are the real servers, resolved from Maven Central with ``mvn`` into ``.cache/`` and
run as background JVMs whose state, pid files and logs live under ``.run/``.

Standard library only, so it runs with the system ``python3`` before ``.venv`` exists.
The commands ``infra/services``, ``infra/kafka`` and ``infra/s3`` call :func:`main`::

    infra/services up [--record FILE] [--no-wait] | down [--recorded FILE] | status | wait
    infra/kafka start | stop | status | restart | install | version
    infra/kafka tool CLASS [ARGS]   (Kafka's own tools, e.g. TopicCommand, MetadataQuorumCommand)
    infra/kafka cluster-start [--fresh] | cluster-stop | cluster-status
    infra/kafka node-stop N [--kill] | node-start N
    infra/kafka scratch-start DIR --port P --controller-port C | scratch-stop DIR
    infra/s3 start | stop | status | install

Layout::

    .cache/m2/                         Maven's local repository (downloads)
    .cache/kafka-<version>/libs/       the broker's classpath; .installed is the stamp
    .cache/s3proxy-<version>/          the S3Proxy jar; .installed is the stamp
    .run/kafka/                        single broker: server.properties, data/, kafka.pid
    .run/kafka-cluster/nodeN/          3-node cluster, same layout per node
    .run/s3/                           S3Proxy's filesystem store (one directory per bucket)
    .run/logs/                         kafka.log, kafka-cluster-nodeN.log, s3.log, *.out

Modules: base (paths, Java/Maven, processes), kafka_protocol (a Metadata request), kafka
(single broker and cluster), s3 (S3Proxy), cli (this file: commands).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .base import LOGS, InfraError, rel
from .kafka import (
    CLUSTER_BOOTSTRAP,
    CLUSTER_NODES,
    KAFKA_HOST,
    KAFKA_PORT,
    KAFKA_VERSION,
    cluster_start,
    cluster_status,
    cluster_stop,
    install_kafka,
    kafka_restart,
    kafka_start,
    kafka_status,
    kafka_stop,
    kafka_tool,
    kafka_wait,
    node_start,
    node_stop,
    scratch_start,
    scratch_stop,
)
from .s3 import (
    S3_ACCESS_KEY,
    S3_BUCKET,
    S3_HOST,
    S3_PORT,
    install_s3proxy,
    s3_answers,
    s3_proc,
    s3_start,
    s3_status,
    s3_stop,
    s3_wait,
)

logger = logging.getLogger(__name__)

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
    s3_wait(proc, started)
    services_summary()


def services_summary() -> None:
    print(
        f"Kafka: {KAFKA_HOST}:{KAFKA_PORT} (logs {rel(LOGS / 'kafka.log')}); "
        f"S3: http://{S3_HOST}:{S3_PORT} bucket {S3_BUCKET} key {S3_ACCESS_KEY} "
        f"(logs {rel(LOGS / 's3.log')})"
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
    scratch = kafka.add_parser(
        "scratch-start", help="a broker of its own in DIR, formatted anew (for tests)"
    )
    scratch.add_argument("dir", type=Path)
    scratch.add_argument("--port", type=int, required=True)
    scratch.add_argument("--controller-port", type=int, required=True)
    scratch_stop_cmd = kafka.add_parser("scratch-stop", help="stop the broker of DIR")
    scratch_stop_cmd.add_argument("dir", type=Path)
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
        elif cmd == "scratch-start":
            scratch_start(args.dir.resolve(), args.port, args.controller_port)
        elif cmd == "scratch-stop":
            if not scratch_stop(args.dir.resolve()):
                logger.info("no scratch broker runs from %s", args.dir)
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
