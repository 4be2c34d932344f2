"""A stand-in for a host that must never hear from us: it records every request, raw.

Tests point a redirect (or a rebound DNS answer) at it and then assert `requests == []`: had a
client followed, the recorded headers would show the API key it carried. Unlike the fake
provider server, nothing here is redacted, so a leak is visible.

    with AttackerServer() as attacker:
        attacker.answer(200, body=b"thanks")
        ...
        assert attacker.requests == []
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawRequest:
    """One request exactly as received (header names as sent, values unredacted)."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"recorded"


class AttackerServer:
    """Listens on `host` (a loopback address) and a free port, in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._lock = threading.Lock()
        self._requests: list[RawRequest] = []
        self._answer = Answer()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> AttackerServer:
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="attacker-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> AttackerServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("AttackerServer is not running; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The origin, e.g. http://127.0.0.1:54321."""
        return f"http://{self.host}:{self.port}"

    def answer(
        self, status: int = 200, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> None:
        """What every following request is answered with."""
        with self._lock:
            self._answer = Answer(status, dict(headers or {}), body)

    @property
    def requests(self) -> list[RawRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def _handle(self, handler: BaseHTTPRequestHandler) -> Answer:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        parts = urlsplit(handler.path)
        request = RawRequest(
            handler.command, parts.path, parts.query, list(handler.headers.items()), raw
        )
        with self._lock:
            self._requests.append(request)
            return self._answer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def _any(self) -> None:
        answer = self.server.attacker._handle(self)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `requests`."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5: a burst of concurrent clients (a router's
    # gather of 20 calls) overflows it and loopback answers the extra ones with a reset.
    request_queue_size = 128

    def __init__(self, attacker: AttackerServer) -> None:
        self.attacker = attacker
        super().__init__((attacker.host, 0), _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup of the host name."""
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.attacker.host, self.server_address[1]
