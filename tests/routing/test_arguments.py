"""A caller's bad arguments are refused before anything is held, called or logged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from core.models import QuotaReservation
from core.routing import Router
from core.routing.arguments import MAX_OUTPUT_TOKENS_CAP
from tests.fakes import FakeProviderServer
from tests.support.database import MigratedDatabase
from tests.support.routing import add_config, allow_planted_keys, make_router, usage_rows

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 32
WEBP = b"RIFF\x24\0\0\0WEBPVP8 " + b"\0" * 32
GIF = b"GIF89a" + b"\0" * 32

BAD_CALLS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"prompt": None}, TypeError, "prompt must be a str, not NoneType"),
    ({"prompt": b"bytes"}, TypeError, "prompt must be a str, not bytes"),
    ({"prompt": "   \n"}, ValueError, "prompt is empty"),
    ({"system_prompt": 3}, TypeError, "system_prompt must be a str or None, not int"),
    ({"user_id": "abc"}, TypeError, "user_id must be an int or None, not str"),
    ({"user_id": True}, TypeError, "user_id must be an int or None, not bool"),
    ({"user_id": 2**63}, ValueError, "user_id is out of range"),
    ({"user_id": -(2**63) - 1}, ValueError, "user_id is out of range"),
    ({"max_output_tokens": "100"}, TypeError, "max_output_tokens must be an int, not str"),
    ({"max_output_tokens": 1.5}, TypeError, "max_output_tokens must be an int, not float"),
    ({"max_output_tokens": 0}, ValueError, "max_output_tokens must be between 1 and 128,000"),
    ({"max_output_tokens": MAX_OUTPUT_TOKENS_CAP + 1}, ValueError, "between 1 and 128,000"),
    ({"service": 42}, TypeError, "service must be a str or None, not int"),
    ({"service": "billing api"}, ValueError, "service must be 1 to 64 letters"),
    ({"service": "x" * 65}, ValueError, "service must be 1 to 64 letters"),
    ({"service": "-api"}, ValueError, "starting with a letter or digit"),
    ({"tags": ["feature"]}, TypeError, "tags must be a dict of str to str or None, not list"),
    ({"tags": {"feature": 3}}, TypeError, "tags must map str to str, not str to int"),
    ({"tags": {"feature": "a,b"}}, ValueError, "the value of tag 'feature' must be"),
    ({"tags": {"feature": "a=b"}}, ValueError, "no spaces, commas or '='"),
    ({"tags": {"": "cv"}}, ValueError, "tag name '' must be 1 to 32"),
    ({"tags": {"a b": "cv"}}, ValueError, "tag name 'a b' must be"),
    ({"tags": {f"k{n}": "v" for n in range(9)}}, ValueError, "at most 8 entries (got 9)"),
]


@pytest.fixture
def limited(db: MigratedDatabase, fake_providers: FakeProviderServer) -> Router:
    allow_planted_keys(fake_providers)
    add_config(db, fake_providers, "openai", tasks=["extraction"], daily_token_limit=1_000_000)
    return make_router(db)


def held(db: MigratedDatabase) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(QuotaReservation)) or 0


def call(router: Router, method: str, *args: Any, **kwargs: Any) -> Exception | None:
    async def main() -> Exception | None:
        try:
            await getattr(router, method)(*args, **kwargs)
        except Exception as exc:
            return exc
        finally:
            await router.aclose()
        return None

    return asyncio.run(main())


@pytest.mark.parametrize(("bad", "kind", "message"), BAD_CALLS)
def test_bad_arguments_raise_before_any_hold_call_or_row(
    db: MigratedDatabase,
    fake_providers: FakeProviderServer,
    limited: Router,
    bad: dict[str, Any],
    kind: type[Exception],
    message: str,
) -> None:
    arguments = {"prompt": "Extract the job title", "user_id": 7} | bad
    prompt = arguments.pop("prompt")
    error = call(limited, "generate", "extraction", prompt, **arguments)
    assert type(error) is kind and message in str(error)
    assert fake_providers.requests == [] and usage_rows(db) == [] and held(db) == 0


@pytest.mark.parametrize(
    ("data", "mime_type", "message"),
    [
        (PNG, "image/jpeg", "the image's bytes are not image/jpeg"),
        (JPEG, "image/png", "the image's bytes are not image/png"),
        (b"<svg></svg>", "image/webp", "the image's bytes are not image/webp"),
        (b"GIF80a", "image/gif", "the image's bytes are not image/gif"),
        (b"", "image/png", "the image is empty"),
        ("a string", "image/png", "image_bytes must be bytes, not str"),
    ],
)
def test_images_that_are_not_what_they_claim_are_refused_before_any_call(
    db: MigratedDatabase,
    fake_providers: FakeProviderServer,
    limited: Router,
    data: Any,
    mime_type: str,
    message: str,
) -> None:
    error = call(limited, "generate_with_image", "extraction", "What is it?", data, mime_type)
    assert isinstance(error, TypeError | ValueError) and message in str(error)
    assert fake_providers.requests == [] and usage_rows(db) == [] and held(db) == 0


@pytest.mark.parametrize(
    ("data", "mime_type"),
    [(PNG, "image/png"), (JPEG, "IMAGE/JPEG"), (WEBP, "image/webp"), (GIF, "image/gif")],
)
def test_images_whose_bytes_match_their_type_are_sent(
    db: MigratedDatabase,
    fake_providers: FakeProviderServer,
    limited: Router,
    data: bytes,
    mime_type: str,
) -> None:
    assert (
        call(limited, "generate_with_image", "extraction", "What is it?", data, mime_type) is None
    )
    assert [row.status for row in usage_rows(db)] == ["success"]


def test_the_largest_user_id_and_output_cap_are_accepted(
    db: MigratedDatabase, limited: Router
) -> None:
    error = call(
        limited,
        "generate",
        "extraction",
        "Extract the job title",
        user_id=2**63 - 1,
        max_output_tokens=MAX_OUTPUT_TOKENS_CAP,
    )
    assert error is None
    assert [row.user_id for row in usage_rows(db)] == [2**63 - 1]
