"""Conversations: generate(task, messages=[...]) and stream(...) send the turns in order, in
each provider's own format, on SQLite and PostgreSQL; bad messages are refused first."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from core.quota.ledger import reservation_size
from core.routing import ProviderCallError, QuotaExceeded, Router
from tests.fakes import FakeProviderServer, count_tokens, make_reply
from tests.support.database import MigratedDatabase
from tests.support.quota import holds
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


# --- images inside messages ------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
JPEG = b"\xff\xd8\xff\xe0" + bytes(24)
PNG_PART = {"type": "image", "data": PNG, "mime_type": "image/png"}
WITH_IMAGES: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Here is my current CV photo."},
            PNG_PART,
        ],
    },
    {"role": "assistant", "content": "Thanks: what would you like to know?"},
    {
        "role": "user",
        "content": [
            {"type": "image", "data": JPEG, "mime_type": "IMAGE/JPEG"},
            {"type": "text", "text": "Is this new one better for a cover letter?"},
        ],
    },
]
IMAGE_TEXTS = [
    "Here is my current CV photo.",
    "Thanks: what would you like to know?",
    "Is this new one better for a cover letter?",
]


def data_url(mime_type: str, data: bytes) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


def openai_part(part: dict[str, Any]) -> tuple[str, str]:
    if part["type"] == "text":
        return ("text", part["text"])
    return ("image", part["image_url"]["url"])


def anthropic_part(part: dict[str, Any]) -> tuple[str, str]:
    if part["type"] == "text":
        return ("text", part["text"])
    source = part["source"]
    assert source["type"] == "base64"
    return ("image", f"data:{source['media_type']};base64,{source['data']}")


def gemini_part(part: dict[str, Any]) -> tuple[str, str]:
    if "text" in part:
        return ("text", part["text"])
    inline = part["inlineData"]
    mime_type = inline.get("mimeType") or inline["mime_type"]
    return ("image", data_url(mime_type, base64.urlsafe_b64decode(inline["data"])))  # URL-safe


def parts_of(content: Any, read: Any) -> list[tuple[str, str]]:
    return [("text", content)] if isinstance(content, str) else [read(p) for p in content]


# Each provider's request as (role, [(kind, text or data URL), ...]) per turn.
PARTS_SENT: dict[str, Any] = {
    "openai": lambda body: [
        (m["role"], parts_of(m["content"], openai_part)) for m in body["messages"]
    ],
    "claude": lambda body: [
        (m["role"], parts_of(m["content"], anthropic_part)) for m in body["messages"]
    ],
    "gemini": lambda body: [
        (c["role"], [gemini_part(p) for p in c["parts"]]) for c in body["contents"]
    ],
}


def expected_parts(provider: str) -> list[tuple[str, list[tuple[str, str]]]]:
    roles = ROLES_SENT[provider]
    return [
        (roles[0], [("text", IMAGE_TEXTS[0]), ("image", data_url("image/png", PNG))]),
        (roles[1], [("text", IMAGE_TEXTS[1])]),
        (roles[2], [("image", data_url("image/jpeg", JPEG)), ("text", IMAGE_TEXTS[2])]),
    ]


async def streamed(router: Router, **arguments: Any) -> str:
    async with router.stream("cover_letter", **arguments) as stream:
        return "".join([text async for text in stream])


@pytest.mark.parametrize("form", ["generate", "stream"])
@pytest.mark.parametrize("provider", sorted(PARTS_SENT))
def test_images_in_earlier_and_last_turns_reach_the_provider_in_order(
    db: MigratedDatabase, fake: FakeProviderServer, provider: str, form: str
) -> None:
    add_config(db, fake, provider, tasks=["cover_letter"], daily_token_limit=1_000_000)

    async def scenario(router: Router) -> str:
        if form == "stream":
            return await streamed(router, messages=WITH_IMAGES)
        return (await router.generate("cover_letter", messages=WITH_IMAGES)).text

    assert run(make_router(db), scenario) == make_reply(IMAGE_TEXTS[-1])
    body = fake.last_request(FAKE_NAME[provider]).body
    assert PARTS_SENT[provider](body) == expected_parts(provider)
    [row] = usage_rows(db)
    assert row.input_tokens == count_tokens(IMAGE_TEXTS, images=2)  # both images are input


def test_the_images_of_every_turn_count_towards_the_reservation(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    """A limit that covers the conversation's text but not its two images refuses the call."""
    history = tuple((m["role"], m["content"]) for m in MESSAGES[:-1])
    text_only = reservation_size(TEXTS[-1], None, 100, history=history)
    with_images = reservation_size(TEXTS[-1], None, 100, history=history, images=2)
    add_config(db, fake, "openai", tasks=["cover_letter"], daily_token_limit=with_images - 1)
    pictured = [
        {
            "role": m["role"],
            "content": [{"type": "text", "text": m["content"]}]
            + (
                [{"type": "image", "data": PNG, "mime_type": "image/png"}]
                if m["role"] == "user"
                else []
            ),
        }
        for m in MESSAGES
    ]
    router = make_router(db, lease_calls=1)
    with pytest.raises(QuotaExceeded):
        run(router, lambda r: r.generate("cover_letter", messages=pictured, max_output_tokens=100))
    assert fake.requests == [] and text_only < with_images
    text_router = make_router(db, lease_calls=1)
    run(text_router, lambda r: r.generate("cover_letter", messages=MESSAGES, max_output_tokens=100))


def test_an_image_type_the_provider_does_not_take_is_refused_before_it_is_sent(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    """HEIC has no signature of ours to check, but OpenAI's adapter does not accept it."""
    add_config(db, fake, "openai", tasks=["cover_letter"])
    heic = [{"type": "image", "data": b"....ftypheic", "mime_type": "image/heic"}]
    messages = [{"role": "user", "content": heic}, *WITH_IMAGES[1:]]
    with pytest.raises(ProviderCallError, match="image type 'image/heic' is not one of"):
        run(make_router(db), lambda r: r.generate("cover_letter", messages=messages))
    assert fake.requests == []


def user_turn(*parts: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


TEXT = {"type": "text", "text": "What is in it?"}


@pytest.mark.parametrize(
    ("messages", "error", "says"),
    [
        (user_turn({"type": "audio", "data": b"x"}), ValueError, "must be 'text' or 'image'"),
        (user_turn("just a string"), TypeError, r"\[0\] must be a dict with a 'type'"),
        (user_turn({"type": "text", "text": " "}), ValueError, r"\['text'\] is empty"),
        (user_turn({"type": "text", "text": "x", "cache": True}), TypeError, "exactly 'text'"),
        (user_turn(), ValueError, r"messages\[0\]\['content'\] is empty"),
        (
            user_turn(TEXT, {"type": "image", "data": JPEG, "mime_type": "image/png"}),
            ValueError,
            r"messages\[0\]\['content'\]\[1\]: the image's bytes are not image/png",
        ),
        (
            user_turn({"type": "image", "data": "iVBORw0KGgo=", "mime_type": "image/png"}),
            TypeError,
            "image_bytes must be bytes",
        ),
        (
            user_turn({"type": "image", "data": PNG}),
            TypeError,
            "exactly 'data', 'mime_type', 'type'",
        ),
        (
            [
                *user_turn(TEXT),
                {
                    "role": "assistant",
                    "content": [{"type": "image", "data": PNG, "mime_type": "image/png"}],
                },
                *user_turn(TEXT),
            ],
            ValueError,
            "images go in the user's turns only, not the assistant's",
        ),
        ([{"role": "user", "content": {"type": "text"}}], TypeError, "a str or a list of parts"),
    ],
)
def test_bad_parts_are_refused_before_anything_is_sent(
    db: MigratedDatabase,
    fake: FakeProviderServer,
    messages: list[dict[str, Any]],
    error: type[Exception],
    says: str,
) -> None:
    add_config(db, fake, "gemini", tasks=["cover_letter"], daily_token_limit=1_000_000)
    router = make_router(db, lease_calls=1)
    try:
        with pytest.raises(error, match=says):
            router.generate_sync("cover_letter", messages=messages)
        with pytest.raises(error, match=says):
            router.stream("cover_letter", messages=messages)
    finally:
        router.close()
    assert fake.requests == [] and usage_rows(db) == [] and holds(db) == []
