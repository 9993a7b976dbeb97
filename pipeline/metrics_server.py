"""`/metrics` for the worker processes: a small threaded HTTP server (standard library)."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.metrics import CONTENT_TYPE, Registry

logger = logging.getLogger(__name__)


def serve_metrics(registry: Registry, host: str, port: int) -> ThreadingHTTPServer:
    """Serve `registry` at http://host:port/metrics from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = registry.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
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
