"""`fake`: the fake provider server, accepting the planted keys of tests/support/routing.py."""

from __future__ import annotations

import pytest

from tests.fakes import FakeProviderServer
from tests.support.routing import allow_planted_keys


@pytest.fixture
def fake(fake_providers: FakeProviderServer) -> FakeProviderServer:
    allow_planted_keys(fake_providers)
    return fake_providers
