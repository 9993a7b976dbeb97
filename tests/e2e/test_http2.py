"""HTTP/2 on the real `onair http`: h2c (prior knowledge and Upgrade) and h2 over TLS (ALPN)
serve what HTTP/1.1 serves, LL-HLS blocking reloads and preload-hinted parts included, on one
multiplexed connection, as Safari plays LL-HLS.

The gateway runs as its own process on the real Kafka, with a self-signed certificate made by
openssl for 127.0.0.1; an LL-HLS stream reaches its origin as the transcode workers send one:
parts stored, then announced on `onair.parts` (tests/llfeed.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from objectstore.local import LocalStore
from tests.harness import ROOT, Platform, free_port, wait_port
from tests.llcheck import check_ll_media
from tests.llfeed import PartFeed

pytestmark = pytest.mark.e2e


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class Gateway:
    def __init__(self, platform: Platform, https_port: int, cert: Path, feed: PartFeed) -> None:
        self.platform, self.https_port, self.cert, self.feed = platform, https_port, cert, feed

    @property
    def h2c(self) -> str:
        return f"http://127.0.0.1:{self.platform.h2c_port}"

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = Path(tmp_path_factory.mktemp("http2"))
    cert, key = self_signed(work)
    https_port = free_port()
    store_dir = work / "store"
    platform = Platform(
        work,
        ONAIR_STORAGE_URL=str(store_dir),
        ONAIR_HTTPS_PORT=str(https_port),
        ONAIR_TLS_CERT_FILE=str(cert),
        ONAIR_TLS_KEY_FILE=str(key),
    )
    platform.start("http", "http")
    try:
        platform.wait_healthy("http")
        wait_port(platform.h2c_port)
        wait_port(https_port)
        feed = PartFeed(
            LocalStore(store_dir),
            platform.env.get("ONAIR_KAFKA_BOOTSTRAP", "localhost:9092"),
            f"h2_{uuid.uuid4().hex[:6]}",
            uuid.uuid4().hex,
        )
        yield Gateway(platform, https_port, cert, feed)
    finally:
        platform.stop()


def test_every_port_answers_and_http2_is_spoken_where_offered(gateway: Gateway) -> None:
    with httpx.Client(http1=True, http2=False) as plain:
        response = plain.get(gateway.platform.url("/healthz"))
        assert (response.status_code, response.http_version) == (200, "HTTP/1.1")
    with httpx.Client(http1=False, http2=True) as prior_knowledge:  # h2c, as a CDN would
        response = prior_knowledge.get(f"{gateway.h2c}/healthz")
        assert (response.status_code, response.http_version) == (200, "HTTP/2")
    with httpx.Client(http2=True, verify=gateway.tls()) as browser:  # ALPN offers h2 first
        response = browser.get(f"{gateway.https}/watch/{gateway.feed.channel}")
        assert (response.status_code, response.http_version) == (200, "HTTP/2")
        assert b"hls" in response.content
    with httpx.Client(http2=False, verify=gateway.tls()) as old_client:  # ALPN http/1.1
        response = old_client.get(f"{gateway.https}/healthz")
        assert (response.status_code, response.http_version) == (200, "HTTP/1.1")
    upgrade = subprocess.run(  # h2c by Upgrade: curl asks for it on a clear-text URL
        ["curl", "-s", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
         f"{gateway.h2c}/healthz"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert upgrade.stdout == "2"


async def test_ll_hls_blocks_and_hints_on_one_http2_connection(gateway: Gateway) -> None:
    feed = gateway.feed
    feed.publish_upto((2, 3))
    playlist = f"{gateway.https}/live/{feed.channel}/{feed.rendition}/ll.m3u8"
    async with httpx.AsyncClient(http2=True, verify=gateway.tls(), timeout=20) as client:
        deadline = time.monotonic() + 30
        while True:
            first = await client.get(playlist)
            if first.status_code == 200 and "000002.3.m4s" in first.text:
                break
            assert time.monotonic() < deadline, f"never listed: {first.status_code} {first.text}"
            await asyncio.sleep(0.1)
        assert first.http_version == "HTTP/2"
        check_ll_media(first.text)
        assert "000002.4.m4s" in first.text.split("#EXT-X-PRELOAD-HINT", 1)[1]
        # what an LL-HLS player does next, at once and on this connection: the blocking
        # reload for the next part and the preload-hinted part itself
        reload = asyncio.create_task(client.get(playlist, params={"_HLS_msn": 2, "_HLS_part": 4}))
        hinted = asyncio.create_task(client.get(f"{gateway.https}{feed.url(2, 4)}"))
        await asyncio.sleep(0.5)
        assert not reload.done() and not hinted.done(), "answered before the part existed"
        feed.announce(feed.store_part(2, 4))
        feed.flush()
        announced = time.monotonic()  # the broker has the PartReady
        answers = await asyncio.gather(reload, hinted)
        waited_s = time.monotonic() - announced
    reloaded, part = answers
    assert [r.http_version for r in answers] == ["HTTP/2", "HTTP/2"]
    assert (reloaded.status_code, part.status_code) == (200, 200)
    assert waited_s < 1.0, f"the blocked requests took {waited_s:.2f} s after the PartReady"
    check_ll_media(reloaded.text)
    assert "000002.4.m4s" in reloaded.text.split("#EXT-X-PRELOAD-HINT", 1)[0]
    assert (
        part.content
        == LocalStore(Path(gateway.platform.env["ONAIR_STORAGE_URL"])).get(feed.key(2, 4)).body
    )
    assert "immutable" in part.headers["cache-control"]


@pytest.mark.parametrize("problem", ["missing", "not-pem", "port-taken"])
def test_a_bad_certificate_or_a_taken_port_stops_the_gateway_with_a_clear_error(
    tmp_path: Path, problem: str
) -> None:
    cert, key = self_signed(tmp_path)
    if problem == "missing":
        cert = tmp_path / "missing.pem"
    elif problem == "not-pem":
        cert.write_text("not a certificate\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    env: dict[str, Any] = {
        **os.environ,
        "ONAIR_STATE_DIR": str(tmp_path / "state"),
        "ONAIR_STORAGE_URL": str(tmp_path / "store"),
        "ONAIR_HTTP_HOST": "127.0.0.1",
        "ONAIR_HTTP_PORT": str(free_port()),
        "ONAIR_H2C_PORT": str(taken.getsockname()[1] if problem == "port-taken" else free_port()),
        "ONAIR_HTTPS_PORT": str(free_port()),
        "ONAIR_TLS_CERT_FILE": str(cert),
        "ONAIR_TLS_KEY_FILE": str(key),
        "ONAIR_GROUP_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
    }
    try:
        result = subprocess.run(
            [sys.executable, "-m", "onair.cli", "http"], env=env, cwd=ROOT,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        taken.close()
    expected = {
        "missing": "ONAIR_TLS_CERT_FILE: no such file",
        "not-pem": "ONAIR_TLS_CERT_FILE: cannot use it with ONAIR_TLS_KEY_FILE",
        "port-taken": "ONAIR_H2C_PORT/ONAIR_HTTPS_PORT: cannot listen on",
    }[problem]
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "ready (consuming)" not in result.stderr  # it never reported healthy
