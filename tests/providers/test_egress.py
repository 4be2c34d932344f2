"""core.providers.egress: which base URLs and connections the policy refuses, and that the
client it builds never follows a redirect, a proxy or a rebound DNS answer.

The network guard blocks real DNS, so every name is resolved by an injected resolver.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpx2
import pytest

from core.config import ConfigError, Settings
from core.providers import EndpointRefused, ProviderError, ProviderFactory
from core.providers.egress import (
    Allowlist,
    EgressRefused,
    check_base_url,
    egress_client,
    parse_allowlist,
)
from tests.fakes import AttackerServer, FakeProviderServer
from tests.fakes.leak_check import assert_clean

NONE = Allowlist()
PUBLIC_V4, PUBLIC_V6 = "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"a literal address must not be resolved ({host})")


def dns(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    """A resolver answering from `table`; unknown names fail like getaddrinfo does."""

    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


def refused(url: str, allowlist: Allowlist = NONE, resolve: Any = no_dns) -> str:
    with pytest.raises(EgressRefused) as caught:
        check_base_url(url, allowlist, resolve=resolve)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- check_base_url: literal addresses -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8080/v1", "a loopback address"),
        ("http://127.0.0.2/", "a loopback address"),
        ("http://2130706433/", "a loopback address"),  # decimal: getaddrinfo reads 127.0.0.1
        ("http://0x7f.1/", "a loopback address"),  # hex + short form
        ("http://0x7f000001/", "a loopback address"),
        ("http://017700000001/", "a loopback address"),  # octal
        ("http://127.1/", "a loopback address"),
        ("http://127.0.0.1./", "a loopback address"),  # trailing dot
        ("http://[::1]/", "a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "a loopback address"),  # IPv4-mapped
        ("http://[::ffff:7f00:1]/", "a loopback address"),
        ("http://[::127.0.0.1]/", "a loopback address"),  # IPv4-compatible
        ("http://localhost:11434/", "a loopback name"),
        ("http://LOCALHOST./", "a loopback name"),
        ("http://api.localhost/", "a loopback name"),
        ("http://10.0.0.5/", "a private address"),
        ("http://172.16.3.4/", "a private address"),
        ("http://192.168.1.10/", "a private address"),
        ("http://[fd12:3456::1]/", "a private address"),
        ("http://[::ffff:10.1.2.3]/", "a private address"),
        ("http://[64:ff9b::a00:5]/", "a private address"),  # NAT64 to 10.0.0.5
        ("http://[2002:a00:5::]/", "a private address"),  # 6to4 of 10.0.0.5
        ("http://169.254.10.1/", "a link-local address"),
        ("http://[fe80::1]/", "a link-local address"),
        ("http://[fe80::1%25eth0]/", "a link-local address"),  # zone id
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://[fd00:ec2::254]/", "a cloud metadata address"),
        ("http://[::ffff:169.254.169.254]/", "a cloud metadata address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "a cloud metadata host"),
        ("http://Metadata.Google.Internal./", "a cloud metadata host"),
        ("http://100.64.0.1/", "a shared (CGNAT) address"),
        ("http://100.127.255.254/", "a shared (CGNAT) address"),
        ("http://224.0.0.251/", "a multicast address"),
        ("http://[ff02::1]/", "a multicast address"),
        ("http://0.0.0.0/", "an unspecified address"),
        ("http://0/", "an unspecified address"),
        ("http://[::]/", "an unspecified address"),
        ("http://255.255.255.255/", "a reserved address"),
        ("http://240.0.0.1/", "a reserved address"),
        ("http://192.0.2.10/", "a non-public address"),  # TEST-NET-1
        ("http://198.18.0.1/", "a non-public address"),  # benchmarking
    ],
)
def test_non_public_addresses_are_refused(url: str, kind: str) -> None:
    message = refused(url)
    assert kind in message
    assert "only public provider endpoints are allowed" in message
    assert "AI_CONSOLE_BASE_URL_ALLOWLIST" in message


def test_the_message_is_one_line_a_person_can_act_on() -> None:
    assert refused("https://10.0.0.5/v1") == (
        "base URL host 10.0.0.5 is a private address; only public provider endpoints are "
        "allowed (an operator can allow it with AI_CONSOLE_BASE_URL_ALLOWLIST)"
    )
    assert refused("http://2130706433/").startswith("base URL host 2130706433 (127.0.0.1) is a")


@pytest.mark.parametrize(
    "url", ["http://8.8.8.8/", "https://[2606:4700:4700::1111]/v1", "http://[::ffff:8.8.8.8]/"]
)
def test_public_literal_addresses_pass(url: str) -> None:
    check_base_url(url, NONE, resolve=no_dns)


@pytest.mark.parametrize(
    "url",
    ["ftp://api.example.com/", "not a url", "http://", "file:///etc", "http://012.0.0.5/"],
)
def test_what_is_not_an_http_url_is_refused(url: str) -> None:
    assert "base URL" in refused(url)


# --- check_base_url: names -------------------------------------------------------------------


def test_public_names_pass() -> None:
    resolve = dns({"api.openai.com": [PUBLIC_V4, PUBLIC_V6]})
    check_base_url("https://api.openai.com/v1", NONE, resolve=resolve)
    check_base_url("https://API.OpenAI.com./v1", NONE, resolve=resolve)


@pytest.mark.parametrize(
    ("answers", "kind"),
    [
        (["10.1.2.3"], "resolves to 10.1.2.3, a private address"),
        ([PUBLIC_V4, "127.0.0.1"], "resolves to 127.0.0.1, a loopback address"),  # any one
        (["::ffff:10.0.0.1"], "resolves to 10.0.0.1, a private address"),
        (["fe80::1%eth0"], "resolves to fe80::1, a link-local address"),
        (["169.254.169.254"], "a cloud metadata address"),
    ],
)
def test_names_resolving_to_non_public_addresses_are_refused(answers: list[str], kind: str) -> None:
    message = refused("https://llm.example.com/v1", resolve=dns({"llm.example.com": answers}))
    assert message.startswith("base URL host llm.example.com ") and kind in message


def test_a_name_that_does_not_resolve_is_refused() -> None:
    message = refused("https://typo.example.invalid/v1", resolve=dns({}))
    assert message.startswith("base URL host typo.example.invalid could not be resolved")


def test_the_system_resolver_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def fake_getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        seen.append((host, port))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(EgressRefused, match=r"resolves to 10\.9\.8\.7, a private address"):
        check_base_url("https://corp.example/v1", NONE)
    assert seen == [("corp.example", 443)]


# --- the allowlist ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "url", "answers"),
    [
        ("llm.internal", "http://LLM.internal.:8000/v1", ["10.0.0.7"]),  # by name
        ("10.0.0.7", "http://llm.internal/v1", ["10.0.0.7"]),  # by resolved IP
        ("10.0.0.0/8", "http://llm.internal/v1", ["10.0.0.7", "10.200.0.1"]),  # by CIDR
        ("10.0.0.7", "http://10.0.0.7/v1", []),
        ("127.0.0.1", "http://[::ffff:127.0.0.1]:8080/", []),  # the same address, mapped
        ("fd00::/8", "http://[fd12::1]/", []),
        (" 192.168.0.0/16 , 127.0.0.1 ,", "http://127.0.0.1:1234/", []),
    ],
)
def test_the_allowlist_lets_an_operator_allow_a_host(
    entries: str, url: str, answers: list[str]
) -> None:
    allowlist = parse_allowlist(entries)
    check_base_url(url, allowlist, resolve=dns({"llm.internal": answers}))
    with pytest.raises(EgressRefused):
        check_base_url(url, NONE, resolve=dns({"llm.internal": answers}))


@pytest.mark.parametrize(
    ("entries", "url"),
    [
        ("127.0.0.1", "http://127.0.0.2/"),  # an exact IP is only that IP
        ("10.0.0.0/24", "http://10.0.1.1/"),
        ("llm.internal", "http://other.internal/"),
    ],
)
def test_the_allowlist_allows_nothing_more(entries: str, url: str) -> None:
    refused(url, parse_allowlist(entries), resolve=dns({"other.internal": ["10.0.0.9"]}))


def test_a_partly_allowed_name_is_still_refused() -> None:
    resolve = dns({"llm.internal": ["10.0.0.7", "169.254.169.254"]})
    assert "169.254.169.254" in refused(
        "http://llm.internal/", parse_allowlist("10.0.0.7"), resolve
    )


@pytest.mark.parametrize("bad", ["http://llm.internal", "llm.internal:8000", "10.0.0.0/33", "a b"])
def test_a_bad_allowlist_entry_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"AI_CONSOLE_BASE_URL_ALLOWLIST: .* is not a host name"):
        parse_allowlist(f"127.0.0.1,{bad}")
    with pytest.raises(ConfigError, match="AI_CONSOLE_BASE_URL_ALLOWLIST"):
        Settings.from_env({"AI_CONSOLE_BASE_URL_ALLOWLIST": bad})


def test_settings_read_the_allowlist() -> None:
    settings = Settings.from_env({"AI_CONSOLE_BASE_URL_ALLOWLIST": "127.0.0.1, LLM.internal."})
    assert settings.base_url_allowlist == ("127.0.0.1", "llm.internal")
    assert Settings.from_env({}).base_url_allowlist == ()
    assert Allowlist.from_entries(settings.base_url_allowlist) == parse_allowlist(
        "127.0.0.1,llm.internal"
    )
    assert Allowlist.from_env({}) == NONE


def test_no_allowlist_means_the_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    check_base_url("http://127.0.0.1:9/")  # the test session allows 127.0.0.1
    monkeypatch.setenv("AI_CONSOLE_BASE_URL_ALLOWLIST", "")
    with pytest.raises(EgressRefused, match="loopback"):
        check_base_url("http://127.0.0.1:9/")


# --- the client: every connection is vetted --------------------------------------------------


class Rebinding:
    """DNS that answers `first` once (the save-time check), then `then` for ever after."""

    def __init__(self, first: Iterable[str], then: Iterable[str]) -> None:
        self.answers = [list(first), list(then)]
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers[min(len(self.calls), 2) - 1]


@pytest.fixture
def internal() -> Any:
    """An "internal service" on 127.0.0.2, which the test session's allowlist does not cover."""
    with AttackerServer("127.0.0.2") as server:
        yield server


@pytest.mark.parametrize("then", [["127.0.0.2"], [PUBLIC_V4, "127.0.0.2"]])
def test_dns_rebinding_after_the_check_is_refused_at_connect(
    internal: AttackerServer, then: list[str]
) -> None:
    url = f"http://provider.example:{internal.port}/v1"
    resolve = Rebinding([PUBLIC_V4], then)
    check_base_url(url, NONE, resolve=resolve)  # what the console checks when saving

    async def call() -> None:
        async with egress_client(NONE, resolve=resolve) as client:
            await client.get(f"{url}/models", headers={"Authorization": "Bearer sk-PLANTED"})

    with pytest.raises(httpx2.ConnectError, match=r"resolves to 127\.0\.0\.2, a loopback"):
        asyncio.run(call())
    assert internal.requests == []
    assert resolve.calls == ["provider.example", "provider.example"]  # once per check


def test_the_vetted_address_is_the_one_connected_to(internal: AttackerServer) -> None:
    """Control for the test above: allowed, the request reaches 127.0.0.2 under the name."""
    resolve = Rebinding(["127.0.0.2"], ["127.0.0.2"])

    async def call() -> int:
        async with egress_client(parse_allowlist("127.0.0.2"), resolve=resolve) as client:
            response = await client.get(f"http://provider.example:{internal.port}/v1/models")
            response = await client.get(f"http://provider.example:{internal.port}/v1/models")
            return response.status_code

    assert asyncio.run(call()) == 200
    [first, _] = internal.requests
    assert first.header("Host") == f"provider.example:{internal.port}"
    assert len(resolve.calls) == 2  # one lookup per new connection (the server closes each)


@pytest.mark.parametrize("provider_type", ["openai", "claude", "gemini"])
def test_an_adapter_reports_a_refused_connection_as_refused_by_policy(
    internal: AttackerServer, provider_type: str
) -> None:
    base_url = f"http://provider.example:{internal.port}/v1"
    key = "sk-PLANTED-rebinding-0123456789"

    async def call() -> ProviderError:
        http = egress_client(NONE, resolve=Rebinding(["127.0.0.2"], ["127.0.0.2"]))
        provider = ProviderFactory.create_provider(
            provider_type, key, "some-model", base_url, max_retries=0, http_client=http
        )
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.generate_content("hello")
            return caught.value
        finally:
            await provider.aclose()
            await http.aclose()

    error = asyncio.run(call())
    assert isinstance(error, EndpointRefused) and error.fallback
    assert "the address was refused by policy" in error.message
    assert "127.0.0.2, a loopback address" in error.message
    assert internal.requests == []
    assert_clean(error, [key])


def test_loopback_is_refused_unless_allowed(fake_providers: FakeProviderServer) -> None:
    async def call(allowlist: Allowlist) -> int:
        async with egress_client(allowlist) as client:
            return (await client.get(f"{fake_providers.openai_base_url}/models")).status_code

    with pytest.raises(httpx2.ConnectError, match=r"127\.0\.0\.1 is a loopback address"):
        asyncio.run(call(NONE))
    assert fake_providers.requests == []
    assert asyncio.run(call(parse_allowlist("127.0.0.1"))) == 401  # reached: no key sent


@pytest.mark.parametrize("provider_type", ["openai", "claude", "gemini"])
def test_the_factory_uses_the_allowlist_it_is_given(
    fake_providers: FakeProviderServer, provider_type: str
) -> None:
    fake = {"claude": "anthropic"}.get(provider_type, provider_type)
    base_url = getattr(fake_providers, f"{fake}_base_url")
    check = asyncio.run(
        ProviderFactory.validate_credentials(
            provider_type, "sk-PLANTED-000000000", base_url, "m", allowlist=NONE
        )
    )
    assert not check.ok
    assert check.message.startswith("Not tested, the key was not sent: base URL host 127.0.0.1")

    async def generate() -> ProviderError:
        provider = ProviderFactory.create_provider(
            provider_type, "sk-PLANTED-000000000", "m", base_url, max_retries=0, allowlist=NONE
        )
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.generate_content("hello")
            return caught.value
        finally:
            await provider.aclose()

    assert isinstance(asyncio.run(generate()), EndpointRefused)
    assert fake_providers.requests == []


def test_redirects_are_not_followed_even_when_asked(
    fake_providers: FakeProviderServer, attacker: AttackerServer
) -> None:
    fake_providers.fail_next("openai", 307, location=f"{attacker.url}/steal")

    async def call() -> httpx2.Response:
        async with egress_client() as client:
            return await client.get(
                f"{fake_providers.openai_base_url}/models",
                headers={"Authorization": "Bearer sk-PLANTED"},
                follow_redirects=True,
            )

    response = asyncio.run(call())
    assert response.status_code == 307 and response.headers["location"].startswith(attacker.url)
    assert attacker.requests == []


def test_proxy_variables_are_ignored(
    fake_providers: FakeProviderServer, attacker: AttackerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, attacker.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async def call() -> int:
        async with egress_client() as client:
            return (await client.get(f"{fake_providers.openai_base_url}/models")).status_code

    assert asyncio.run(call()) == 401
    assert attacker.requests == [] and len(fake_providers.requests) == 1


@pytest.mark.parametrize(
    "option",
    [
        {"follow_redirects": True},
        {"trust_env": True},
        {"proxy": "http://127.0.0.1:3128"},
        {"transport": httpx2.AsyncHTTPTransport()},
    ],
)
def test_the_client_cannot_be_loosened(option: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="egress_client does not allow"):
        egress_client(NONE, **option)


def test_pool_limits_are_configurable() -> None:
    client = egress_client(
        NONE, limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50)
    )
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert (pool._max_connections, pool._max_keepalive_connections) == (200, 50)
    assert client.follow_redirects is False and client.trust_env is False
    asyncio.run(client.aclose())
