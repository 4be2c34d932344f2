"""Pytest fixtures for the fakes; enable with `pytest_plugins = ["tests.fakes.pytest_plugin"]`.

- `network_guard` (session, autouse): only loopback hosts are reachable for the whole run, and a
  test that tried to reach anything else errors at teardown, even if some code (the Anthropic
  SDK, say) caught the NetworkAccessBlocked.
- `fake_provider_server` (session): one running FakeProviderServer.
- `fake_providers` (function): that server, reset before and after the test.
- `attacker` (function): a running AttackerServer on 127.0.0.1 that records every request raw.

The fake server listens on 127.0.0.1, which the egress policy (core.providers.egress) refuses
unless allowed: AI_CONSOLE_BASE_URL_ALLOWLIST=127.0.0.1 is set for the whole session, in
os.environ at import so subprocesses (the browser tests' console, quota workers) inherit it.
Tests of the policy itself pass their own Allowlist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .attacker_server import AttackerServer
from .network_guard import NetworkGuard, block_network
from .provider_server import FakeProviderServer

TEST_ALLOWLIST = "127.0.0.1"
os.environ["AI_CONSOLE_BASE_URL_ALLOWLIST"] = TEST_ALLOWLIST


@pytest.fixture(scope="session")
def network_guard() -> Iterator[NetworkGuard]:
    with block_network() as guard:
        yield guard


@pytest.fixture(autouse=True)
def _no_network_access(network_guard: NetworkGuard) -> Iterator[None]:
    already = len(network_guard.blocked)
    yield
    if attempts := network_guard.blocked[already:]:
        pytest.fail(f"test tried to reach the network: {attempts}", pytrace=False)


@pytest.fixture(scope="session")
def fake_provider_server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as server:
        yield server


@pytest.fixture
def fake_providers(fake_provider_server: FakeProviderServer) -> Iterator[FakeProviderServer]:
    fake_provider_server.reset()
    yield fake_provider_server
    fake_provider_server.reset()


@pytest.fixture
def attacker() -> Iterator[AttackerServer]:
    with AttackerServer() as server:
        yield server
