"""What every role's sub-command does alike: signals, /metrics + /healthz, member ids.

Shared by `onair.cli` and the sub-command modules it registers (`cli_vod`, `cli_chat`), so
none of them imports another's internals.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable
from typing import Any

from pipeline.settings import Settings


def stop_on_signals(stop: Callable[[], None]) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop())


def serve_role_metrics(
    settings: Settings, args: argparse.Namespace, registry: Any, health: Any = None
) -> None:
    """/metrics (and /healthz, given the role's `Health`) on the role's metrics port; opened
    before the role waits for Kafka, so probes see "starting" meanwhile."""
    port = args.metrics_port if args.metrics_port is not None else settings.metrics_port
    if port:
        from pipeline.metrics_server import serve_metrics

        serve_metrics(registry, settings.http_host, port, health)


def instance_id(role: str, instance: str) -> str:
    """Static consumer-group member id: host, role and the operator's instance number. Give
    each process of one role on one host its own `--instance`."""
    import socket

    return f"{socket.gethostname()}-{role}-{instance}"
