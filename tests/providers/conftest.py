"""The `case` fixture: each provider in turn, its planted key accepted by the fake server."""

from __future__ import annotations

import pytest

from tests.fakes import FakeProviderServer
from tests.support.adapters import CASES, Case


@pytest.fixture(params=CASES, ids=[c.provider_type for c in CASES])
def case(request: pytest.FixtureRequest, fake_providers: FakeProviderServer) -> Case:
    case: Case = request.param
    fake_providers.api_keys[case.fake] = {case.key}
    return case
