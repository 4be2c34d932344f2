"""Each adapter, through its real SDK, against the fake provider server."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import pytest

from core.providers import (
    AuthenticationFailed,
    BadRequest,
    EndpointRefused,
    GenerationResult,
    ModelNotFound,
    ProviderError,
    ProviderFactory,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    Redirected,
    UnexpectedResponse,
    adapter_class,
    base,
    redact,
)
from core.providers.egress import Allowlist
from core.providers.errors import MESSAGE_LIMIT, provider_message
from tests.fakes import IMAGE_TOKENS, AttackerServer, FakeProviderServer, count_tokens, make_reply
from tests.fakes.leak_check import assert_clean
from tests.support.adapters import Case, call

T = TypeVar("T")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def fails(case: Case, server: FakeProviderServer, **options: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call(case, server, lambda p: p.generate_content("hello there"), **options)
    return caught.value


# --- answers -------------------------------------------------------------------------------


def test_text_answer_with_the_providers_own_usage(case: Case, fake_providers) -> None:
    prompt = "Extract the job title from: Senior Data Engineer, Berlin"
    result = call(case, fake_providers, lambda p: p.generate_content(prompt))
    assert isinstance(result, GenerationResult)
    assert result.text == make_reply(prompt)
    assert result.provider_type == case.provider_type
    assert result.model_name == case.model
    assert result.input_tokens == count_tokens([prompt])
    assert result.output_tokens == count_tokens([make_reply(prompt)])
    assert result.total_tokens == result.input_tokens + result.output_tokens
    assert result.latency_ms >= 0


def test_cached_input_tokens_are_reported_within_the_input(case: Case, fake_providers) -> None:
    """Each provider says it differently (OpenAI and Gemini count cached tokens inside the
    prompt's, Anthropic apart from them); the result says it one way."""
    prompt = "Extract the job title from: Senior Data Engineer, Berlin, hybrid, Python"
    fake_providers.cached_tokens = 4
    fake_providers.cache_write_tokens = 3  # reported by Anthropic only
    fake_providers.reasoning_tokens = 2  # reported by OpenAI and Gemini
    result = call(case, fake_providers, lambda p: p.generate_content(prompt))
    assert result.input_tokens == count_tokens([prompt])
    assert result.output_tokens == count_tokens([make_reply(prompt)])
    claude = case.fake == "anthropic"
    assert (result.cached_input_tokens, result.cache_write_tokens, result.reasoning_tokens) == (
        (4, 3, 0) if claude else (4, 0, 2)
    )
    assert result.total_tokens == result.input_tokens + result.output_tokens


def test_the_system_prompt_arrives_where_the_provider_expects_it(
    case: Case, fake_providers
) -> None:
    system = "You answer in JSON only."
    call(case, fake_providers, lambda p: p.generate_content("hi", system_prompt=system))
    body = fake_providers.last_request(case.fake).body
    if case.fake == "openai":
        assert body["messages"][0] == {"role": "system", "content": system}
    elif case.fake == "anthropic":
        assert body["system"] == system
    else:
        assert body["systemInstruction"]["parts"][0]["text"] == system


def test_max_output_tokens_reaches_the_provider(case: Case, fake_providers) -> None:
    prompt = "one two three four five six seven eight nine ten eleven twelve"
    result = call(case, fake_providers, lambda p: p.generate_content(prompt, max_output_tokens=3))
    assert result.output_tokens == 3


def test_image_answer_in_each_providers_format(case: Case, fake_providers) -> None:
    result = call(
        case,
        fake_providers,
        lambda p: p.generate_content_with_image("Is this a clear photo?", PNG, "image/png"),
    )
    assert result.input_tokens == count_tokens(["Is this a clear photo?"], images=1)
    assert result.input_tokens > IMAGE_TOKENS
    body = fake_providers.last_request(case.fake).body
    if case.fake == "openai":
        parts = body["messages"][-1]["content"]
        assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")
    elif case.fake == "anthropic":
        block = body["messages"][0]["content"][0]
        assert block["source"] == {
            "type": "base64",
            "media_type": "image/png",
            "data": block["source"]["data"],
        }
        assert block["source"]["data"].startswith("iVBORw0KGgo")
    else:
        inline = body["contents"][0]["parts"][1]["inlineData"]
        assert inline["mime_type"] == "image/png"


@pytest.mark.parametrize(
    ("data", "mime", "message"),
    [
        (PNG, "image/bmp", "image type 'image/bmp' is not one of"),
        (b"", "image/png", "the image is empty"),
    ],
)
def test_bad_images_are_refused_before_any_call(
    case: Case, fake_providers, data: bytes, mime: str, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        call(case, fake_providers, lambda p: p.generate_content_with_image("x", data, mime))
    assert fake_providers.requests_for(case.fake) == []


def test_oversized_images_are_refused_before_any_call(case: Case, fake_providers) -> None:
    limit = adapter_class(case.provider_type).max_image_bytes
    with pytest.raises(BadRequest, match="accepts at most") as caught:
        call(
            case,
            fake_providers,
            lambda p: p.generate_content_with_image("x", b"\0" * (limit + 1), "image/png"),
        )
    assert caught.value.fallback is False
    assert fake_providers.requests_for(case.fake) == []


# --- failures ------------------------------------------------------------------------------


def test_a_wrong_key_is_an_authentication_failure(case: Case, fake_providers) -> None:
    error = fails(case, fake_providers, api_key="sk-wrong-WRONGKEY-999999999")
    assert isinstance(error, AuthenticationFailed)
    assert error.status in (400, 401, 403) and error.fallback


def test_rate_limit_carries_retry_after(case: Case, fake_providers) -> None:
    fake_providers.fail_next(case.fake, 429, retry_after=7)
    error = fails(case, fake_providers)
    assert isinstance(error, RateLimited) and error.status == 429
    assert error.retry_after == 7


def test_the_sdk_retries_a_429_and_then_succeeds(case: Case, fake_providers) -> None:
    fake_providers.fail_next(case.fake, 429, retry_after=0)
    result = call(case, fake_providers, lambda p: p.generate_content("again"), max_retries=1)
    assert result.text == make_reply("again")
    assert len(fake_providers.requests_for(case.fake)) == 2


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_unavailable(case: Case, fake_providers, status: int) -> None:
    fake_providers.fail_next(case.fake, status)
    error = fails(case, fake_providers)
    assert type(error) is ProviderUnavailable and error.status == status


def test_a_bad_request_is_not_for_fallback(case: Case, fake_providers) -> None:
    fake_providers.fail_next(case.fake, 400)
    error = fails(case, fake_providers)
    assert isinstance(error, BadRequest) and error.fallback is False


def test_an_unknown_model_is_model_not_found(case: Case, fake_providers) -> None:
    error = fails(case, fake_providers, model="no-such-model")
    assert isinstance(error, ModelNotFound) and error.status == 404


def test_a_slow_provider_times_out(case: Case, fake_providers) -> None:
    fake_providers.fail_next(case.fake, mode="slow", delay=3)
    error = fails(case, fake_providers, timeout_s=0.3)
    assert isinstance(error, ProviderTimeout)


@pytest.mark.parametrize("mode", ["malformed", "incomplete"])
def test_a_malformed_answer_is_unexpected(case: Case, fake_providers, mode: str) -> None:
    fake_providers.fail_next(case.fake, mode=mode)
    error = fails(case, fake_providers)
    assert isinstance(error, UnexpectedResponse)


def test_a_dropped_connection_is_unavailable(case: Case, fake_providers) -> None:
    fake_providers.fail_next(case.fake, mode="disconnect")
    error = fails(case, fake_providers)
    assert isinstance(error, ProviderUnavailable)


def test_the_key_never_leaks_into_errors_or_logs(
    case: Case, fake_providers, caplog: pytest.LogCaptureFixture
) -> None:
    """Even when the provider echoes the key back, as some do in their 401 messages."""
    caplog.set_level(logging.DEBUG)
    fake_providers.fail_next(case.fake, 401, message=f"Incorrect API key provided: {case.key}")
    error = fails(case, fake_providers)
    rendered = "".join(traceback.format_exception(error)) + repr(error) + error.message
    assert case.key not in rendered
    assert "[redacted]" in error.message
    assert error.__cause__ is None and error.__suppress_context__
    assert case.key not in caplog.text
    assert "PLANTED" not in caplog.text


# --- credential checks -----------------------------------------------------------------------


def test_validate_credentials_fetches_the_model(case: Case, fake_providers) -> None:
    check = call(case, fake_providers, lambda p: p.validate_credentials())
    assert check.ok and check and f"model {case.model} is available" in check.message
    assert "models" in fake_providers.last_request(case.fake).path


def test_validate_credentials_says_why_a_key_fails(case: Case, fake_providers) -> None:
    check = call(case, fake_providers, lambda p: p.validate_credentials(), api_key="sk-nope-000000")
    assert not check.ok and not check
    assert check.message.startswith("The key was refused: check it was copied whole")


def test_validate_credentials_says_when_the_model_is_wrong(case: Case, fake_providers) -> None:
    check = call(case, fake_providers, lambda p: p.validate_credentials(), model="gpt-9-ultra")
    assert not check.ok and "model was not found" in check.message


def test_factory_validates_a_key_without_a_model(case: Case, fake_providers) -> None:
    base_url = case.base_url(fake_providers)
    good = asyncio.run(ProviderFactory.validate_credentials(case.provider_type, case.key, base_url))
    bad = asyncio.run(
        ProviderFactory.validate_credentials(case.provider_type, "sk-bad-0000000", base_url)
    )
    assert good.ok and not bad.ok
    assert "refused" in bad.message


def test_factory_refuses_an_unknown_provider_type() -> None:
    with pytest.raises(ValueError, match="unknown provider type 'mistral': use one of gemini"):
        ProviderFactory.create_provider("mistral", "k", "m")


def test_adapter_repr_never_shows_the_client() -> None:
    provider = ProviderFactory.create_provider("openai", "sk-PLANTED-repr-000000", "gpt-4o-mini")
    assert "PLANTED" not in repr(provider)
    asyncio.run(provider.aclose())


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abc.def-ghi",
        "Incorrect API key provided: sk-proj-abcdefgh1234",
        "key sk-ant-api03-xyz12345 refused",
        "GET /v1beta/models?key=AIzaSyABCDEFGHIJKLMN",
        '{"x-goog-api-key": "whatever-value"}',
        "api_key=hunter2hunter2",
    ],
)
def test_redact_masks_key_shaped_text(text: str) -> None:
    out = redact(text)
    assert "[redacted]" in out
    for secret in ("abc.def-ghi", "abcdefgh1234", "xyz12345", "ABCDEFGHIJKLMN", "whatever-value",
                   "hunter2hunter2"):  # fmt: skip
        assert secret not in out


# --- redirects, error bodies, and what an error may carry ----------------------------------


def test_a_redirect_is_an_error_that_names_it_and_is_not_followed(
    case: Case, fake_providers: FakeProviderServer, attacker: AttackerServer
) -> None:
    fake_providers.fail_next(case.fake, 302, location=f"{attacker.url}/steal?key=1")
    error = fails(case, fake_providers)
    assert isinstance(error, Redirected) and error.status == 302 and error.fallback
    assert str(error) == (
        f"{case.provider_type} answered 302: the endpoint redirected (to 127.0.0.1); "
        "redirects are not followed — set the base URL to the final address"
    )
    assert attacker.requests == []
    assert len(fake_providers.requests_for(case.fake)) == 1


@pytest.mark.parametrize("model", [None, "the-model"])
def test_a_credential_test_does_not_follow_a_redirect(
    case: Case, fake_providers: FakeProviderServer, attacker: AttackerServer, model: str | None
) -> None:
    fake_providers.fail_next(case.fake, 302, location=f"{attacker.url}/v1/models")
    check = asyncio.run(
        ProviderFactory.validate_credentials(
            case.provider_type, case.key, case.base_url(fake_providers), model
        )
    )
    assert not check.ok
    assert f"{case.provider_type} answered 302: the endpoint redirected" in check.message
    assert attacker.requests == []


def planted(key: str) -> str:
    """Text a hostile endpoint might send back: a link, the key, its URL-encoded forms and a
    10-character piece of it."""
    return (
        f"# Sorry\n[click](http://evil.example) to fix {key}, or {quote(key, safe='')}, "
        f"or {quote_plus(key)}; yours starts {key[4:14]}"
    )


def leaks(key: str, text: str) -> list[str]:
    pieces = [key, quote(key, safe=""), quote_plus(key), key[4:14]]
    return [piece for piece in pieces if piece in text]


@pytest.fixture
def odd_key(case: Case, fake_providers: FakeProviderServer) -> str:
    """A valid key with characters that URL-encoding changes."""
    key = f"{case.key}/k+y="
    fake_providers.api_keys[case.fake] = {key}
    return key


def test_a_non_json_error_body_keeps_only_the_status(
    case: Case, fake_providers: FakeProviderServer, odd_key: str
) -> None:
    fake_providers.fail_next(case.fake, 404, body=planted(odd_key))
    error = fails(case, fake_providers, api_key=odd_key)
    assert error.status == 404 and error.message == "HTTP 404 (the body was not JSON)"
    assert str(error) == f"{case.provider_type} answered 404: HTTP 404 (the body was not JSON)"
    assert "evil.example" not in repr(error) and not leaks(odd_key, repr(error))


def test_a_json_error_message_loses_every_copy_of_the_key(
    case: Case, fake_providers: FakeProviderServer, odd_key: str
) -> None:
    fake_providers.fail_next(case.fake, 403, message=planted(odd_key))
    error = fails(case, fake_providers, api_key=odd_key)
    assert isinstance(error, AuthenticationFailed)
    assert "[redacted]" in error.message and "\n" not in error.message
    assert leaks(odd_key, error.message + str(error) + repr(error)) == []
    assert_clean(error, [odd_key, quote(odd_key, safe=""), odd_key[4:14]])


def test_a_long_error_message_is_cut(case: Case, fake_providers: FakeProviderServer) -> None:
    fake_providers.fail_next(case.fake, 400, message="word " * 200)
    error = fails(case, fake_providers)
    assert len(error.message) <= MESSAGE_LIMIT and error.message.endswith("…")
    assert error.message.startswith("word word")


FAILURES: list[dict[str, Any]] = [
    {"status": 401, "message": "Incorrect API key provided: {key}"},
    {"status": 500},
    {"status": 302, "location": "http://127.0.0.1:9/steal"},
    {"status": 404, "body": "<html>{key}</html>"},
    {"mode": "disconnect"},
    {"mode": "malformed"},
    {"mode": "incomplete"},
    {"mode": "slow", "delay": 2},
]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda f: str(f.get("status") or f["mode"]))
def test_errors_carry_no_sdk_exception_and_no_key(
    case: Case, fake_providers: FakeProviderServer, failure: dict[str, Any]
) -> None:
    fault = {k: v.format(key=case.key) if isinstance(v, str) else v for k, v in failure.items()}
    fake_providers.fail_next(case.fake, **fault)
    error = fails(case, fake_providers, timeout_s=0.5)
    assert error.__cause__ is None and error.__context__ is None
    assert_clean(error, [case.key])


def test_a_refused_address_carries_no_sdk_exception(case: Case, fake_providers) -> None:
    error = fails(case, fake_providers, allowlist=Allowlist())
    assert isinstance(error, EndpointRefused)
    assert_clean(error, [case.key])


@pytest.mark.parametrize("failure", FAILURES[:4], ids=lambda f: str(f.get("status")))
def test_credential_checks_see_clean_errors_too(
    case: Case,
    fake_providers: FakeProviderServer,
    failure: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[ProviderError] = []
    explain = base._explain
    monkeypatch.setattr(base, "_explain", lambda exc: seen.append(exc) or explain(exc))
    for check in ("validate_credentials", "validate_key"):
        fault = {k: v.format(key=case.key) if isinstance(v, str) else v for k, v in failure.items()}
        fake_providers.fail_next(case.fake, **fault)
        result = call(case, fake_providers, lambda p, name=check: getattr(p, name)())
        assert not result.ok and case.key not in result.message
    assert len(seen) == 2
    for error in seen:
        assert_clean(error, [case.key])


# --- redaction -------------------------------------------------------------------------------

KEY = "sk-proj-PLANTEDadminKEY01+x/y=zQ"


@pytest.mark.parametrize(
    "text",
    [
        f"key {KEY} refused",
        "quoting ...PLANTEDadminKEY01... of your key",
        f"url-encoded {quote(KEY, safe='')} and {quote_plus(KEY)}",
        f"encoded piece {quote(KEY, safe='')[18:30]}",
        f"two pieces {KEY[:12]} and {KEY[14:26]}",
    ],
)
def test_redact_removes_copies_encodings_and_runs_of_8_characters(text: str) -> None:
    out = redact(text, [KEY])
    assert "[redacted]" in out
    assert "PLANTED" not in out and "adminKEY" not in out and "%2F" not in out


def test_redact_keeps_what_is_not_the_key() -> None:
    assert redact("model gpt-4o-mini not found", [KEY]) == "model gpt-4o-mini not found"
    assert redact("sk-proj is a prefix", [KEY]) == "sk-proj is a prefix"  # 7 characters
    assert redact(f"a {KEY} b {KEY}", [KEY]) == "a [redacted] b [redacted]"
    assert redact(f"{KEY}{KEY}", [KEY]) == "[redacted]"


def test_redact_finds_a_long_run_of_a_long_key_in_a_long_message() -> None:
    """(Its speed is measured by bench/redaction.py, not here.)"""
    key = "".join(f"{chr(65 + i % 26)}{i}" for i in range(70))[:200]
    text = (key[5:120] + " x ") * 2
    assert key[5:120] not in redact(text, [key])


def test_provider_message_keeps_only_the_json_error_message() -> None:
    assert provider_message(404, b"<html>nope</html>") == "HTTP 404 (the body was not JSON)"
    assert provider_message(500, b"") == "HTTP 500 (no body)"
    assert provider_message(400, b'{"detail": "x"}') == "HTTP 400 (no error message in the body)"
    assert provider_message(400, b'{"error": {"message": "Bad\\n  thing"}}') == "Bad thing"
    assert provider_message(400, b'{"message": "top level"}') == "top level"
    cut = provider_message(400, json.dumps({"error": {"message": "x" * 1000}}).encode())
    assert len(cut) == MESSAGE_LIMIT and cut.endswith("…")
