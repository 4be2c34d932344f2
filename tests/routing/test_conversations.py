"""Conversations: generate(task, messages=[...]) and stream(...) send the turns in order, in
each provider's own format, on SQLite and PostgreSQL; bad messages are refused first."""

from __future__ import annotations

from typing import Any

import pytest

from core.quota.ledger import reservation_size
from core.routing import Router
from tests.fakes import FakeProviderServer, count_tokens, make_reply
from tests.support.database import MigratedDatabase
from tests.support.routing import FAKE_NAME, add_config, make_router, run, usage_rows

MESSAGES = [
    {"role": "user", "content": "I am applying for a data engineering role in Berlin."},
    {"role": "assistant", "content": "Great: what should the cover letter stress?"},
    {"role": "user", "content": "My five years of Python and SQL, and that I lead a team."},
]
TEXTS = [m["content"] for m in MESSAGES]

# Where each provider's request carries the turns, as (role, text) in the provider's terms.
TURNS_SENT: dict[str, Any] = {
    "openai": lambda body: [(m["role"], m["content"]) for m in body["messages"]],
    "claude": lambda body: [
        (m["role"], m["content"] if isinstance(m["content"], str) else m["content"][-1]["text"])
        for m in body["messages"]
    ],
    "gemini": lambda body: [(c["role"], c["parts"][0]["text"]) for c in body["contents"]],
}
ROLES_SENT = {
    "openai": ["user", "assistant", "user"],
    "claude": ["user", "assistant", "user"],
    "gemini": ["user", "model", "user"],
}


@pytest.mark.parametrize("provider", sorted(TURNS_SENT))
def test_a_conversation_reaches_the_provider_in_order(
    db: MigratedDatabase, fake: FakeProviderServer, provider: str
) -> None:
    add_config(db, fake, provider, tasks=["cover_letter"], daily_token_limit=1_000_000)
    result = run(
        make_router(db), lambda r: r.generate("cover_letter", messages=MESSAGES, user_id=3)
    )
    body = fake.last_request(FAKE_NAME[provider]).body
    assert TURNS_SENT[provider](body) == list(zip(ROLES_SENT[provider], TEXTS, strict=True))
    assert result.text == make_reply(TEXTS[-1])  # the last user turn is the one answered
    assert result.input_tokens == count_tokens(TEXTS)  # every turn is input
    [row] = usage_rows(db)
    assert (row.input_tokens, row.user_id) == (result.input_tokens, 3)


def test_a_conversation_streams_too(db: MigratedDatabase, fake: FakeProviderServer) -> None:
    add_config(db, fake, "claude", tasks=["cover_letter"])

    async def scenario(router: Router) -> str:
        async with router.stream("cover_letter", messages=MESSAGES) as stream:
            return "".join([text async for text in stream])

    assert run(make_router(db), scenario) == make_reply(TEXTS[-1])
    assert TURNS_SENT["claude"](fake.last_request("anthropic").body) == list(
        zip(ROLES_SENT["claude"], TEXTS, strict=True)
    )


@pytest.mark.parametrize(
    ("arguments", "error", "says"),
    [
        ({"messages": []}, ValueError, "messages is empty"),
        ({"messages": MESSAGES[:2]}, ValueError, "last message must be the user's"),
        ({"messages": [{"role": "system", "content": "x"}]}, ValueError, "'user' or 'assistant'"),
        ({"messages": [{"role": "user"}]}, TypeError, "exactly 'role' and 'content'"),
        ({"messages": [{"role": "user", "content": 7}]}, TypeError, "must be a str"),
        ({"messages": [{"role": "user", "content": "  "}]}, ValueError, "is empty"),
        ({"messages": "hello"}, TypeError, "must be a list"),
        ({"prompt": "hi", "messages": MESSAGES}, TypeError, "not both"),
        ({}, TypeError, "prompt must be a str"),
    ],
)
def test_bad_messages_are_refused_before_anything_is_sent(
    db: MigratedDatabase,
    fake: FakeProviderServer,
    arguments: dict[str, Any],
    error: type[Exception],
    says: str,
) -> None:
    add_config(db, fake, "openai", tasks=["cover_letter"])
    router = make_router(db)
    try:
        with pytest.raises(error, match=says):
            router.generate_sync("cover_letter", **arguments)
        with pytest.raises(error, match=says):
            router.stream("cover_letter", **arguments)
    finally:
        router.close()
    assert fake.requests == [] and usage_rows(db) == []


def test_the_reservation_covers_every_turn() -> None:
    """A limit holds for the whole conversation, not only its last turn."""
    alone = reservation_size(TEXTS[-1], None, 100)
    history = tuple((m["role"], m["content"]) for m in MESSAGES[:-1])
    whole = reservation_size(TEXTS[-1], None, 100, history=history)
    assert whole >= alone + sum(len(text.encode()) for text in TEXTS[:-1])
