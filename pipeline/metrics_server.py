"""`/metrics` and `/healthz` for the worker processes: a small threaded HTTP server (standard
library)."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.health import Health
from pipeline.metrics import CONTENT_TYPE, Registry

logger = logging.getLogger(__name__)


def serve_metrics(
    registry: Registry, host: str, port: int, health: Health | None = None
) -> ThreadingHTTPServer:
    """Serve `registry` at http://host:port/metrics (and `health` at /healthz) from a daemon
    thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                status, body, content_type = 200, registry.render().encode(), CONTENT_TYPE
            elif path == "/healthz" and health is not None:
                status, text = health.render()
                body, content_type = text.encode(), "text/plain; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics at http://%s:%d/metrics", host, server.server_address[1])
    return server
