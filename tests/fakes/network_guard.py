"""Make any attempt to reach a non-loopback host fail loudly, before a DNS lookup or a packet.

Patches `socket.getaddrinfo`, `socket.create_connection` and `socket.socket.connect` /
`connect_ex`. Guards nest: each one remembers what it replaced and puts it back on uninstall.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class NetworkAccessBlocked(RuntimeError):
    """Raised instead of letting a test reach a non-loopback host."""


def is_local(host: str | bytes | None, allow: Iterable[str] = ()) -> bool:
    """True for loopback addresses, localhost names, passive lookups (None) and `allow`."""
    if host is None or host in ("", b""):
        return True
    name = (host.decode() if isinstance(host, bytes) else host).strip("[]").lower()
    if name in LOCAL_NAMES or name in allow:
        return True
    try:
        address = ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


class NetworkGuard:
    """While installed, only loopback hosts (and `allow`) can be resolved or connected to."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow = frozenset(host.lower() for host in allow)
        self.blocked: list[str] = []  # "host:port" of every refused attempt, oldest first
        self._saved: dict[str, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._saved)

    def install(self) -> None:
        """Patch the socket module; a no-op when this guard is already installed."""
        if self.installed:
            return
        self._saved = {
            "getaddrinfo": socket.getaddrinfo,
            "create_connection": socket.create_connection,
            "connect": socket.socket.connect,
            "connect_ex": socket.socket.connect_ex,
        }
        socket.getaddrinfo = self._getaddrinfo
        socket.create_connection = self._create_connection
        socket.socket.connect = self._wrap_connect(self._saved["connect"])
        socket.socket.connect_ex = self._wrap_connect(self._saved["connect_ex"])

    def uninstall(self) -> None:
        """Put back exactly what install() replaced."""
        if not self.installed:
            return
        socket.getaddrinfo = self._saved["getaddrinfo"]
        socket.create_connection = self._saved["create_connection"]
        socket.socket.connect = self._saved["connect"]
        socket.socket.connect_ex = self._saved["connect_ex"]
        self._saved = {}

    def __enter__(self) -> NetworkGuard:
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    def check(self, host: Any, port: Any) -> None:
        """Raise NetworkAccessBlocked (and note it in `blocked`) unless `host` is local/allowed."""
        if not is_local(host, self.allow):
            target = f"{host.decode() if isinstance(host, bytes) else host}:{port}"
            self.blocked.append(target)
            raise NetworkAccessBlocked(
                f"test tried to reach {target}; tests must use the fake provider server"
            )

    def _getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        self.check(host, port)
        return self._saved["getaddrinfo"](host, port, *args, **kwargs)

    def _create_connection(self, address: Any, *args: Any, **kwargs: Any) -> Any:
        self.check(*address[:2])
        return self._saved["create_connection"](address, *args, **kwargs)

    def _wrap_connect(self, connect: Any) -> Any:
        guard = self

        def guarded(sock: socket.socket, address: Any) -> Any:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard.check(*address[:2])
            return connect(sock, address)

        return guarded


_default = NetworkGuard()


def install(allow: Iterable[str] = ()) -> NetworkGuard:
    """Install the module's default guard (or just update its `allow` list) and return it."""
    _default.allow = frozenset(host.lower() for host in allow)
    _default.install()
    return _default


def uninstall() -> None:
    """Remove the default guard installed by install()."""
    _default.uninstall()


def block_network(allow: Iterable[str] = ()) -> NetworkGuard:
    """A fresh guard to use as a context manager: `with block_network(): ...`."""
    return NetworkGuard(allow)
