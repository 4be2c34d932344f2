"""Outbound policy: where a provider call may connect. The one place that decides it.

A pasted API key goes only to the endpoint it was entered for, and only to a public one:
`check_base_url` refuses a base URL whose host is, or resolves to, a loopback, private,
link-local, shared (CGNAT), multicast, reserved or cloud-metadata address, unless the operator
lists it in AI_CONSOLE_BASE_URL_ALLOWLIST (host names, IPs, CIDRs). `egress_client` is the
httpx2.AsyncClient every SDK client is built on: it never follows redirects, ignores proxy
variables, and vets each new TCP connection with the same rule, resolving the host once and
connecting to the vetted address itself, so a DNS answer that changes after the save-time check
(DNS rebinding) cannot reach an internal host.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import httpcore2
import httpx2

from core.config import ALLOWLIST_VARIABLE, allowlist_entries, allowlist_entry

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Iterable[str]]
"""`resolve(host, port)` -> the host's addresses as strings; OSError when it does not resolve."""

__all__ = [
    "Allowlist",
    "EgressRefused",
    "RefusedConnection",
    "check_base_url",
    "egress_client",
    "parse_allowlist",
    "refusal_in",
    "system_resolve",
]

METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # embeds an IPv4 address (RFC 6052)
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
# inet_aton's spellings of an IPv4 address: 1 to 4 parts, each decimal, octal (0...) or hex (0x...).
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.I)
DEFAULT_LIMITS = httpx2.Limits(max_connections=100, max_keepalive_connections=20)
_HINT = f"only public {{what}} are allowed (an operator can allow it with {ALLOWLIST_VARIABLE})"
BASE_URL = "base URL"  # what a refusal names; alerts pass "webhook URL" or "SMTP server"


def _hint(subject: str) -> str:
    return _HINT.format(what="provider endpoints" if subject == BASE_URL else "hosts")


class EgressRefused(Exception):
    """A base URL (or a connection) the egress policy refuses; the message is one line for a
    person, saying what was refused and how an operator can allow it."""


class RefusedConnection(httpcore2.ConnectError):
    """What the network backend raises for a refused address: a connection error to the SDKs
    (httpx2 maps it to httpx2.ConnectError), with the EgressRefused as its cause."""


# --- the allowlist -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Allowlist:
    """Hosts and networks an operator allows although they are not public (empty by default)."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> Allowlist:
        """From AI_CONSOLE_BASE_URL_ALLOWLIST entries (Settings.base_url_allowlist)."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            normalized = allowlist_entry(entry)
            try:
                networks.append(ipaddress.ip_network(normalized, strict=False))
            except ValueError:
                names.add(normalized)
        return cls(frozenset(names), tuple(networks))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Allowlist:
        """From AI_CONSOLE_BASE_URL_ALLOWLIST in `environ` (default: os.environ)."""
        env = os.environ if environ is None else environ
        return parse_allowlist(env.get(ALLOWLIST_VARIABLE, ""))

    def allows_name(self, host: str) -> bool:
        return _normalize_host(host) in self.names

    def allows_address(self, address: IPAddress) -> bool:
        forms = {address, _unmapped(address)}
        return any(a in net for a in forms for net in self.networks if a.version == net.version)


def parse_allowlist(raw: str) -> Allowlist:
    """The Allowlist for a comma-separated AI_CONSOLE_BASE_URL_ALLOWLIST value.

    Raises ConfigError naming the variable when an entry is not a host name, IP or CIDR.
    """
    return Allowlist.from_entries(allowlist_entries(raw))


# --- the rule ----------------------------------------------------------------------------------


def system_resolve(host: str, port: int) -> list[str]:
    """The host's TCP addresses from the system resolver (getaddrinfo), in its preferred order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_base_url(
    url: str,
    allowlist: Allowlist | None = None,
    resolve: Resolver = system_resolve,
    *,
    subject: str = BASE_URL,
    shown: str | None = None,
) -> None:
    """Raise EgressRefused unless every address `url`'s host is or resolves to is public.

    A host (exact name) or address (exact IP, or inside a CIDR) in the allowlist passes; a host
    that does not resolve is refused. `allowlist=None` reads AI_CONSOLE_BASE_URL_ALLOWLIST. This
    is the save-time check; egress_client applies the same rule again to every new connection.
    `subject` is what the refusal calls the URL (alert webhooks use the same rule), `shown` what
    it quotes of it (default: the URL; a webhook's path may hold a token).
    """
    quoted = repr(url) if shown is None else repr(shown)
    try:
        parsed = httpx2.URL(url.strip())
    except (httpx2.InvalidURL, TypeError, ValueError):
        raise EgressRefused(f"{subject} {quoted} is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise EgressRefused(f"{subject} {quoted} must be an http:// or https:// URL with a host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    allowed = Allowlist.from_env() if allowlist is None else allowlist
    vet_host(parsed.host, port, allowed, resolve, subject=subject)


def vet_host(
    host: str, port: int, allowlist: Allowlist, resolve: Resolver, *, subject: str = BASE_URL
) -> list[IPAddress]:
    """The addresses to connect to for `host`, all allowed; EgressRefused otherwise.

    An allowlisted name returns [] (connect by name: the operator trusts whatever it resolves
    to). `resolve` is called at most once.
    """
    name = _normalize_host(host)
    if name in allowlist.names:
        return []
    literal = _literal_address(name)
    if literal is not None:
        _vet(name, literal, allowlist, resolved=False, subject=subject)
        return [literal]
    if name in METADATA_NAMES:
        raise EgressRefused(f"{subject} host {name} is a cloud metadata host; {_hint(subject)}")
    if name == "localhost" or name.endswith(".localhost"):
        raise EgressRefused(f"{subject} host {name} is a loopback name; {_hint(subject)}")
    try:
        answers = list(resolve(name, port))
    except (OSError, UnicodeError):
        answers = []
    addresses = [a for a in (_parse_address(answer) for answer in answers) if a is not None]
    if not addresses or len(addresses) != len(answers):
        raise EgressRefused(
            f"{subject} host {name} could not be resolved; check the spelling and the DNS"
        )
    for address in addresses:
        _vet(name, address, allowlist, resolved=True, subject=subject)
    return addresses


def address_class(address: IPAddress) -> str | None:
    """What makes an address non-public ("a loopback address", ...), or None when it is public."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None or address in _NAT64:  # these reach the IPv4 address
            return address_class(_embedded_ipv4(address))  # type: ignore[arg-type]
        embedded = _embedded_ipv4(address)
        if embedded is not None and address_class(embedded) is not None:
            return address_class(embedded)
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address in _SHARED:
        return "a shared (CGNAT) address"
    if any(address in net for net in _PRIVATE if net.version == address.version):
        return "a private address"
    if address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255"):
        return "a reserved address"
    if address.is_private or not address.is_global:
        return "a non-public address"
    return None


def _vet(
    host: str, address: IPAddress, allowlist: Allowlist, *, resolved: bool, subject: str = BASE_URL
) -> None:
    kind = address_class(address)
    if kind is None or allowlist.allows_address(address):
        return
    if isinstance(address, ipaddress.IPv6Address):  # name the IPv4 address it reaches
        embedded = _embedded_ipv4(address)
        if embedded is not None and address_class(embedded) == kind:
            address = embedded
    if resolved:
        raise EgressRefused(
            f"{subject} host {host} resolves to {address}, {kind}; {_hint(subject)}"
        )
    shown = host if host == str(address) else f"{host} ({address})"
    raise EgressRefused(f"{subject} host {shown} is {kind}; {_hint(subject)}")


def _normalize_host(host: str) -> str:
    """Lower case, no brackets, no trailing dot, no IPv6 zone id (%eth0, or %25eth0 in a URL)."""
    name = host.strip().lower().strip("[]").rstrip(".")
    if ":" in name and "%" in name:
        name = name.split("%", 1)[0]
    return name


def _literal_address(host: str) -> IPAddress | None:
    """The address a host spells, as getaddrinfo would read it (127.1, 2130706433, 0x7f.1...)."""
    address = _parse_address(host)
    if address is not None:
        return address
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside a mapped, NAT64, 6to4, Teredo or IPv4-compatible IPv6 address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d (deprecated "compatible")
        return ipaddress.IPv4Address(int(address))
    return None


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refusal_in(exc: BaseException) -> EgressRefused | None:
    """The EgressRefused somewhere in `exc`'s cause/context chain (an SDK wraps ours), or None."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, EgressRefused):
            return current
        stack += [current.__cause__, current.__context__]
    return None


# --- the client --------------------------------------------------------------------------------


class VettingBackend(httpcore2.AsyncNetworkBackend):
    """A network backend that vets every new TCP connection, then connects to the vetted IP.

    httpcore2 still does TLS with the original host name (SNI, certificate check) and httpx2
    sends it in the Host header: only the address the socket goes to is pinned.
    """

    def __init__(
        self,
        allowlist: Allowlist,
        resolve: Resolver = system_resolve,
        inner: httpcore2.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allowlist = allowlist
        self._resolve = resolve
        self._inner = inner or httpcore2.AnyIOBackend()  # asyncio or trio

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        name = _normalize_host(host)
        try:
            if _literal_address(name) is not None or name in self._allowlist.names:
                addresses = vet_host(name, port, self._allowlist, self._resolve)
            else:  # a DNS lookup blocks: run it in a worker thread, as anyio.connect_tcp would
                with anyio.fail_after(timeout):
                    addresses = await anyio.to_thread.run_sync(
                        vet_host, name, port, self._allowlist, self._resolve, abandon_on_cancel=True
                    )
        except EgressRefused as refusal:
            raise RefusedConnection(str(refusal)) from refusal
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"resolving {name} timed out") from None
        targets: Sequence[str] = [str(a) for a in addresses] or [host]
        failure: Exception | None = None
        for target in targets:
            try:
                return await self._inner.connect_tcp(
                    target,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise RefusedConnection("unix sockets are not provider endpoints")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class EgressTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport with a VettingBackend under its pool, and no proxy."""

    def __init__(
        self,
        backend: httpcore2.AsyncNetworkBackend,
        *,
        verify: ssl.SSLContext | str | bool = True,
        limits: httpx2.Limits = DEFAULT_LIMITS,
        http2: bool = False,
    ) -> None:
        context = _tls_context() if verify is True else httpx2.create_ssl_context(verify=verify)
        super().__init__(verify=context, trust_env=False, limits=limits, http2=http2)
        # The same pool AsyncHTTPTransport builds (no proxy), with our backend under it.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=backend,
        )


class EgressClient(httpx2.AsyncClient):
    """An AsyncClient that never follows a redirect, even when a request asks it to."""

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        kwargs["follow_redirects"] = False
        return await super().send(request, **kwargs)


def egress_client(
    allowlist: Allowlist | None = None,
    *,
    resolve: Resolver = system_resolve,
    **client_kwargs: Any,
) -> httpx2.AsyncClient:
    """An httpx2.AsyncClient for provider calls: no redirects, no proxies, every connection vetted.

    `allowlist=None` reads AI_CONSOLE_BASE_URL_ALLOWLIST. `client_kwargs` go to AsyncClient
    (timeout, headers, ...); `limits`, `verify` and `http2` shape the connection pool. Passing
    `follow_redirects=True`, `trust_env=True`, a proxy, a transport or mounts is refused.
    """
    allowlist = Allowlist.from_env() if allowlist is None else allowlist
    for name, safe in (("follow_redirects", False), ("trust_env", False)):
        if client_kwargs.pop(name, safe) is not safe:
            raise ValueError(f"egress_client does not allow {name}=True")
    for name in ("proxy", "proxies", "transport", "mounts", "app"):
        if client_kwargs.get(name) is not None:
            raise ValueError(f"egress_client does not allow {name}: connections must be vetted")
    transport = EgressTransport(
        VettingBackend(allowlist, resolve),
        verify=client_kwargs.pop("verify", True),
        limits=client_kwargs.pop("limits", DEFAULT_LIMITS),
        http2=client_kwargs.pop("http2", False),
    )
    return EgressClient(
        transport=transport, follow_redirects=False, trust_env=False, **client_kwargs
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The default verifying TLS context, built once (loading the CA store costs ~20 ms)."""
    return httpx2.create_ssl_context()
