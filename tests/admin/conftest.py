"""Fixtures for the provider-config service tests: the service on the test database, and a
super-admin who typed a code a minute ago."""

from __future__ import annotations

import pytest

from core.access import Actor
from core.admin import ProviderAdmin
from core.crypto import SecretBox
from core.db import make_session_factory
from tests.fakes import FakeProviderServer
from tests.support.admin import KEY, NEW_KEY, make_actor
from tests.support.database import MigratedDatabase


@pytest.fixture
def admin(db: MigratedDatabase, fake_providers: FakeProviderServer) -> ProviderAdmin:
    fake_providers.api_keys["openai"] = {KEY, NEW_KEY}
    return ProviderAdmin(make_session_factory(db.engine), SecretBox(db.settings.fernet_keys))


@pytest.fixture
def boss(db: MigratedDatabase) -> Actor:
    return make_actor(db)
