"""A chat server process for tests and benchmarks: a Starlette app with `ChatService` routes
(plus `/healthz`), served by uvicorn on the given port.

    python -m tests.integration.chat_server --port 18081 --bootstrap localhost:9092 \
        --token-secret S --admin-token A [--fanout local] [--rate 1 --burst 3]

Ready when `/healthz` answers (the service has started: moderation caught up, topics seen).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.chat.fanout import OutboxLimits
from gateway.chat.service import ChatConfig, ChatService
from pipeline.chat import ChatLimits
from topics.admin import ensure_topics
from topics.specs import all_topics

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


def spawn(
    port: int,
    bootstrap: str,
    token_secret: str,
    admin_token: str,
    log_path: Path,
    *options: str,
    timeout_s: float = 60.0,
) -> subprocess.Popen[bytes]:
    """Start a chat server process (output to `log_path`) and return once `/healthz` answers."""
    command = [
        sys.executable, "-m", "tests.integration.chat_server", f"--port={port}",
        f"--bootstrap={bootstrap}", f"--token-secret={token_secret}",
        f"--admin-token={admin_token}", *options,
    ]  # fmt: skip
    with log_path.open("ab") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chat server exited; see {log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).is_success:
                return proc
        time.sleep(0.2)
    raise RuntimeError(f"chat server did not start in {timeout_s:.0f} s; see {log_path}")


def build_app(args: argparse.Namespace) -> Starlette:
    limits = ChatLimits(rate_per_s=args.rate, burst=args.burst)
    config = ChatConfig(
        limits=limits,
        fanout=args.fanout,
        coalesce_ms=args.coalesce_ms,
        outbox=replace(OutboxLimits(), max_queued_messages=args.max_queued),
    )
    chat = ChatService(
        kafka_bootstrap=args.bootstrap,
        token_secret=args.token_secret,
        admin_token=args.admin_token,
        config=config,
        server_id=args.server_id or f"chat-{args.port}",
    )

    async def health(request: Request) -> PlainTextResponse:
        del request
        return PlainTextResponse("ok")

    routes = [*chat.routes(), Route("/healthz", health)]
    return Starlette(routes=routes, lifespan=chat.lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--bootstrap", default="localhost:9092")
    parser.add_argument("--token-secret", required=True)
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--server-id", default="")
    parser.add_argument("--fanout", choices=["kafka", "local"], default="kafka")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--burst", type=float, default=3.0)
    parser.add_argument("--coalesce-ms", type=int, default=50)
    parser.add_argument("--max-queued", type=int, default=500)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if args.fanout == "kafka":
        ensure_topics(args.bootstrap, all_topics())
    uvicorn.run(
        build_app(args),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        ws_max_size=64 * 1024,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
