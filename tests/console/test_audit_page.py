"""The Audit log page in AppTest: the trail with actor, action, IP and browser, filters, and the
CSV export button."""

from __future__ import annotations

import pandas as pd

from core.access import Actor
from core.audit import record
from tests.support.pages import Console


def test_the_trail_is_shown_filtered_and_exportable(console: Console) -> None:
    admin, _ = console.add_user("root")
    with console.db.session() as session, session.begin():
        root = Actor(label="root", user_id=admin, ip_address="198.51.100.7", user_agent="Firefox")
        record(
            session,
            root,
            "auth.login",
            target_type="user",
            target_id=admin,
            details={"via": "password and code"},
        )
        record(session, Actor.cli(), "keys.rotate", details={"provider_configs": 2})
        record(session, root, "provider.test", target_type="provider_config")  # not yet saved
    at = console.page("pages/audit.py", admin).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["Action"]) == ["provider.test", "keys.rotate", "auth.login"]
    assert list(table["Target"]) == ["provider_config", "", f"user {admin}"]
    login = table.iloc[2]
    assert (login["Actor"], login["IP address"], login["User agent"]) == (
        "root",
        "198.51.100.7",
        "Firefox",
    )
    assert login["Details"] == "via: password and code"
    # Who and from where first, the long details last: at 1400 px the address and browser
    # started off-screen behind them (issue 16, item 10).
    assert list(table.columns) == [
        "When (UTC)",
        "Actor",
        "Action",
        "Target",
        "IP address",
        "User agent",
        "Details",
    ]
    assert pd.isna(table.iloc[1]["IP address"])  # the CLI has none: the grid shows "—"
    assert at.markdown[0].value == "3 matching entries."

    actor_filter, action_filter = at.selectbox
    assert actor_filter.options == ["(any)", *sorted(["root", Actor.cli().label])]
    action_filter.select("auth.login").run()
    assert list(at.dataframe[0].value["Action"]) == ["auth.login"]
    assert at.get("download_button")[0].label.startswith("Export CSV")
