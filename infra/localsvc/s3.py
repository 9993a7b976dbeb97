"""S3Proxy (filesystem backend) as the local S3 server, with bucket `onair`."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

from .base import (
    CACHE,
    DEPENDENCY_PLUGIN,
    LOGS,
    RUN,
    START_TIMEOUT_S,
    InfraError,
    Proc,
    install_artifact,
    java_binary,
    locked,
    port_open,
    rel,
    tail,
)

logger = logging.getLogger(__name__)

S3PROXY_VERSION = "4.1.0"
S3_HOST = "127.0.0.1"
S3_PORT = 9000
S3_ACCESS_KEY = "onair"
S3_SECRET_KEY = "onair-secret-key"  # a fixed local-only credential, not a secret
S3_BUCKET = "onair"
S3_REGION = "us-east-1"


def install_s3proxy(version: str = S3PROXY_VERSION) -> Path:
    """Fetch S3Proxy's jar-with-dependencies; returns the jar's path."""
    home = CACHE / f"s3proxy-{version}"
    jar = home / f"s3proxy-{version}-jar-with-dependencies.jar"
    fetch = [
        f"{DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact=org.gaul:s3proxy:{version}:jar:jar-with-dependencies",
        f"-DoutputDirectory={home}",
    ]
    return install_artifact(f"S3Proxy {version}", home, fetch, jar)


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


def s3_wait(proc: Proc, started: float) -> None:
    while not s3_answers():
        if proc.running_pid() is None:
            raise InfraError(
                f"S3Proxy exited while starting; {rel(proc.log_file)}:\n{tail(proc.log_file)}"
            )
        if time.monotonic() - started > START_TIMEOUT_S:
            raise InfraError(f"S3Proxy did not answer within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.2)
    _s3_ensure_bucket()


def s3_start(*, wait: bool = True) -> bool:
    proc = s3_proc()
    with locked("s3"):
        started = time.monotonic()
        pid = proc.running_pid()
        if pid is not None:
            logger.info("s3: already running (pid %d) on http://%s:%d", pid, S3_HOST, S3_PORT)
            if wait:
                s3_wait(proc, started)
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
        started = time.monotonic()  # time the start, not the first download
        store = RUN / "s3"
        store.mkdir(parents=True, exist_ok=True)
        config = RUN / "s3proxy.properties"
        config.write_text(
            "\n".join(
                [
                    "# written by infra/localsvc; edits are overwritten",
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
            s3_wait(proc, started)
            logger.info(
                "s3: answers on http://%s:%d (bucket %s) after %.1f s; logs: %s",
                S3_HOST,
                S3_PORT,
                S3_BUCKET,
                time.monotonic() - started,
                rel(proc.log_file),
            )
        return True


def s3_stop() -> bool:
    with locked("s3"):
        return s3_proc().stop()


def s3_status() -> bool:
    proc = s3_proc()
    pid = proc.running_pid()
    if s3_answers():
        owner = f"pid {pid}, S3Proxy {S3PROXY_VERSION}" if pid else "not started by this repo"
        print(
            f"s3: running on http://{S3_HOST}:{S3_PORT} ({owner}), bucket {S3_BUCKET}, "
            f"store {rel(RUN / 's3')}; logs: {rel(proc.log_file)}"
        )
        return True
    print(f"s3: pid {pid} is up but does not answer yet" if pid else "s3: stopped")
    return False
