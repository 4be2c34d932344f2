"""The fake provider server, driven by the real OpenAI, Anthropic and Gemini SDKs."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.fakes import (
    DEFAULT_API_KEYS,
    DEFAULT_MODELS,
    IMAGE_TOKENS,
    PROVIDERS,
    REDACTED,
    FakeProviderServer,
    NetworkAccessBlocked,
    block_network,
    count_tokens,
    make_reply,
)

pytest_plugins = ["pytester"]

KEYS = {provider: min(keys) for provider, keys in DEFAULT_API_KEYS.items()}
MODELS = {provider: models[0] for provider, models in DEFAULT_MODELS.items()}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()
QUESTION = "What is the capital of France, and why is it called that?"


@dataclass
class Call:
    """One chat call, in the same terms for every provider."""

    prompt: str = QUESTION
    system: str | None = None
    image: bytes | None = None
    key: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    timeout: float = 10.0
    retries: int = 0


@dataclass
class Answer:
    """The reply text and token usage, as each SDK reported them."""

    text: str
    input_tokens: int
    output_tokens: int


async def call_openai(server: FakeProviderServer, call: Call) -> Answer:
    content: Any = call.prompt
    if call.image:
        image_url = {"url": f"data:image/png;base64,{base64.b64encode(call.image).decode()}"}
        content = [
            {"type": "text", "text": call.prompt},
            {"type": "image_url", "image_url": image_url},
        ]
    system = [{"role": "system", "content": call.system}] if call.system else []
    limit = {"max_completion_tokens": call.max_tokens} if call.max_tokens else {}
    async with openai.AsyncOpenAI(
        api_key=call.key or KEYS["openai"],
        base_url=server.openai_base_url,
        max_retries=call.retries,
        timeout=call.timeout,
    ) as client:
        reply = await client.chat.completions.create(
            model=call.model or MODELS["openai"],
            messages=[*system, {"role": "user", "content": content}],
            **limit,
        )
    usage = reply.usage
    return Answer(reply.choices[0].message.content, usage.prompt_tokens, usage.completion_tokens)


async def call_anthropic(server: FakeProviderServer, call: Call) -> Answer:
    content: Any = call.prompt
    if call.image:
        data = base64.b64encode(call.image).decode()
        source = {"type": "base64", "media_type": "image/png", "data": data}
        content = [{"type": "text", "text": call.prompt}, {"type": "image", "source": source}]
    system = {"system": call.system} if call.system else {}
    async with anthropic.AsyncAnthropic(
        api_key=call.key or KEYS["anthropic"],
        base_url=server.anthropic_base_url,
        max_retries=call.retries,
        timeout=call.timeout,
    ) as client:
        reply = await client.messages.create(
            model=call.model or MODELS["anthropic"],
            max_tokens=call.max_tokens or 1024,
            messages=[{"role": "user", "content": content}],
            **system,
        )
    usage = reply.usage
    return Answer(reply.content[0].text, usage.input_tokens, usage.output_tokens)


async def call_gemini(server: FakeProviderServer, call: Call) -> Answer:
    retry = genai_types.HttpRetryOptions(attempts=call.retries + 1, initial_delay=0.05, jitter=0)
    options = genai_types.HttpOptions(
        base_url=server.gemini_base_url,
        api_version="v1beta",
        timeout=int(call.timeout * 1000),  # milliseconds
        retry_options=retry if call.retries else None,
    )
    contents: list[Any] = [call.prompt]
    if call.image:
        contents.append(genai_types.Part.from_bytes(data=call.image, mime_type="image/png"))
    config = genai_types.GenerateContentConfig(
        system_instruction=call.system, max_output_tokens=call.max_tokens
    )
    client = genai.Client(api_key=call.key or KEYS["gemini"], http_options=options).aio
    try:
        reply = await client.models.generate_content(
            model=call.model or MODELS["gemini"], contents=contents, config=config
        )
    finally:
        await client.aclose()
    usage = reply.usage_metadata
    return Answer(reply.text, usage.prompt_token_count, usage.candidates_token_count)


CALLERS: dict[str, Callable[[FakeProviderServer, Call], Coroutine[Any, Any, Answer]]] = {
    "openai": call_openai,
    "anthropic": call_anthropic,
    "gemini": call_gemini,
}


def ask(server: FakeProviderServer, provider: str, **options: Any) -> Answer:
    return asyncio.run(CALLERS[provider](server, Call(**options)))


# What each SDK raises, by situation.
ERRORS: dict[str, dict[str, type[BaseException]]] = {
    "openai": {
        "auth": openai.AuthenticationError,
        "not_found": openai.NotFoundError,
        "rate_limit": openai.RateLimitError,
        "server": openai.InternalServerError,
        "timeout": openai.APITimeoutError,
        "disconnect": openai.APIConnectionError,
    },
    "anthropic": {
        "auth": anthropic.AuthenticationError,
        "not_found": anthropic.NotFoundError,
        "rate_limit": anthropic.RateLimitError,
        "server": anthropic.InternalServerError,
        "timeout": anthropic.APITimeoutError,
        "disconnect": anthropic.APIConnectionError,
    },
    "gemini": {  # one class per status family; transport errors come through raw
        "auth": genai_errors.ClientError,
        "not_found": genai_errors.ClientError,
        "rate_limit": genai_errors.ClientError,
        "server": genai_errors.ServerError,
        "timeout": httpx2.TimeoutException,
        "disconnect": httpx2.RemoteProtocolError,
    },
}

SYSTEM_PROMPT_OF: dict[str, Callable[[dict[str, Any]], Any]] = {
    "openai": lambda body: body["messages"][0],
    "anthropic": lambda body: body["system"],
    "gemini": lambda body: body["systemInstruction"]["parts"],
}
SYSTEM = "You are terse and answer in French."
SYSTEM_PROMPT_SENT = {
    "openai": {"role": "system", "content": SYSTEM},
    "anthropic": SYSTEM,
    "gemini": [{"text": SYSTEM}],
}

IMAGE_PART_OF: dict[str, Callable[[dict[str, Any]], Any]] = {
    "openai": lambda body: body["messages"][-1]["content"][1],
    "anthropic": lambda body: body["messages"][-1]["content"][1],
    "gemini": lambda body: body["contents"][-1]["parts"][1],
}
IMAGE_PART_SENT = {
    "openai": {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    "anthropic": {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
    },
    # sic: google-genai sends URL-safe base64 and a snake_case key inside a camelCase one
    "gemini": {
        "inlineData": {"data": base64.urlsafe_b64encode(PNG).decode(), "mime_type": "image/png"}
    },
}
# anthropic 2.x sends its api_key as `Authorization: Bearer`, not `x-api-key`
KEY_HEADER = {"openai": "authorization", "anthropic": "authorization", "gemini": "x-goog-api-key"}

all_providers = pytest.mark.parametrize("provider", PROVIDERS)


@pytest.fixture
def server(fake_providers: FakeProviderServer) -> FakeProviderServer:
    return fake_providers


# --- successful calls ------------------------------------------------------------------------


@all_providers
def test_text_call_echoes_the_prompt_with_predictable_usage(
    server: FakeProviderServer, provider: str
) -> None:
    answer = ask(server, provider, system=SYSTEM)

    expected = make_reply(QUESTION)
    assert answer == Answer(expected, count_tokens([SYSTEM, QUESTION]), count_tokens([expected]))
    assert answer.text == "echo: What is the capital of France, and why i"  # 40 characters


@all_providers
def test_system_prompt_arrives_where_the_provider_expects_it(
    server: FakeProviderServer, provider: str
) -> None:
    ask(server, provider, system=SYSTEM)

    body = server.last_request(provider).body
    assert SYSTEM_PROMPT_OF[provider](body) == SYSTEM_PROMPT_SENT[provider]


@all_providers
def test_image_arrives_in_the_provider_format_and_costs_tokens(
    server: FakeProviderServer, provider: str
) -> None:
    answer = ask(server, provider, prompt="Describe this picture", image=PNG)

    assert IMAGE_PART_OF[provider](server.last_request(provider).body) == IMAGE_PART_SENT[provider]
    assert answer.input_tokens == count_tokens(["Describe this picture"], images=1)
    assert answer.input_tokens == 3 + IMAGE_TOKENS


@all_providers
def test_max_tokens_cuts_the_reply(server: FakeProviderServer, provider: str) -> None:
    answer = ask(server, provider, max_tokens=3)

    assert answer.text == make_reply(QUESTION, max_tokens=3) == "echo: What is"
    assert answer.output_tokens == 3


@all_providers
def test_requests_are_recorded_with_the_api_key_redacted(
    server: FakeProviderServer, provider: str
) -> None:
    ask(server, provider)

    recorded = server.last_request(provider)
    assert recorded.method == "POST"
    assert REDACTED in recorded.headers[KEY_HEADER[provider]]
    assert KEYS[provider] not in repr(server.requests)


def test_paths_are_the_providers_own(server: FakeProviderServer) -> None:
    for provider in PROVIDERS:
        ask(server, provider)

    assert [r.path for r in server.requests] == [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1beta/models/gemini-2.5-flash:generateContent",
    ]


def test_keys_are_also_accepted_where_raw_http_clients_put_them(
    server: FakeProviderServer,
) -> None:
    gemini = f"{server.gemini_base_url}/v1beta/models?key={KEYS['gemini']}"
    anthropic_models = urllib.request.Request(
        f"{server.anthropic_base_url}/v1/models", headers={"x-api-key": KEYS["anthropic"]}
    )

    for request in (gemini, anthropic_models):
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    assert server.last_request("gemini").query == {"key": [REDACTED]}
    assert server.last_request("anthropic").headers["x-api-key"] == REDACTED


async def list_and_get_models(server: FakeProviderServer, provider: str) -> tuple[list[str], str]:
    model = MODELS[provider]
    if provider == "openai":
        async with openai.AsyncOpenAI(api_key=KEYS[provider], base_url=server.openai_base_url) as c:
            return [m.id async for m in c.models.list()], (await c.models.retrieve(model)).id
    if provider == "anthropic":
        async with anthropic.AsyncAnthropic(
            api_key=KEYS[provider], base_url=server.anthropic_base_url
        ) as c:
            return [m.id async for m in c.models.list()], (await c.models.retrieve(model)).id
    options = genai_types.HttpOptions(base_url=server.gemini_base_url)
    client = genai.Client(api_key=KEYS[provider], http_options=options).aio
    try:
        names = [m.name async for m in await client.models.list()]
        return names, (await client.models.get(model=model)).name
    finally:
        await client.aclose()


@all_providers
def test_models_can_be_listed_and_retrieved(server: FakeProviderServer, provider: str) -> None:
    names, retrieved = asyncio.run(list_and_get_models(server, provider))

    prefix = "models/" if provider == "gemini" else ""
    assert names == [prefix + m for m in DEFAULT_MODELS[provider]]
    assert retrieved == prefix + MODELS[provider]


# --- errors ----------------------------------------------------------------------------------


@all_providers
def test_bad_key_raises_the_sdks_auth_error(server: FakeProviderServer, provider: str) -> None:
    with pytest.raises(ERRORS[provider]["auth"]) as caught:
        ask(server, provider, key="not-a-valid-key")

    if provider == "gemini":  # like Google: 400 INVALID_ARGUMENT, reason API_KEY_INVALID
        assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
        assert caught.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    else:
        assert caught.value.status_code == 401


@all_providers
def test_unknown_model_is_the_providers_not_found(
    server: FakeProviderServer, provider: str
) -> None:
    with pytest.raises(ERRORS[provider]["not_found"]) as caught:
        ask(server, provider, model="no-such-model")

    assert getattr(caught.value, "status_code", getattr(caught.value, "code", None)) == 404


@all_providers
def test_rate_limit_then_success(server: FakeProviderServer, provider: str) -> None:
    # google-genai ignores Retry-After (its own backoff applies): an hour's Retry-After would
    # hang the test until the suite's timeout if it did not. OpenAI's and Anthropic's SDKs
    # wait what it says (their own backoff is < 1 s), which only a lower bound can show.
    ignored = provider == "gemini"
    server.fail_next(provider, 429, retry_after=3600 if ignored else 1)
    started = time.monotonic()

    answer = ask(server, provider, retries=1)

    assert answer.text == make_reply(QUESTION)
    assert len(server.requests_for(provider)) == 2
    if not ignored:
        assert time.monotonic() - started >= 1


@all_providers
def test_rate_limit_raises_with_retry_after_when_retries_are_off(
    server: FakeProviderServer, provider: str
) -> None:
    server.fail_next(provider, 429, retry_after=7)

    with pytest.raises(ERRORS[provider]["rate_limit"]) as caught:
        ask(server, provider)

    assert caught.value.response.headers["retry-after"] == "7"


@all_providers
@pytest.mark.parametrize("status", [500, 503])
def test_server_error_raises_the_sdks_server_error(
    server: FakeProviderServer, provider: str, status: int
) -> None:
    server.fail_next(provider, status)

    with pytest.raises(ERRORS[provider]["server"]):
        ask(server, provider)
    assert len(server.requests_for(provider)) == 1


@all_providers
def test_slow_response_hits_the_client_timeout(server: FakeProviderServer, provider: str) -> None:
    server.fail_next(provider, mode="slow", delay=30)

    with pytest.raises(ERRORS[provider]["timeout"]):  # the answer would come, 30 s later
        ask(server, provider, timeout=0.3)


@all_providers
def test_malformed_body_raises_a_json_error(server: FakeProviderServer, provider: str) -> None:
    server.fail_next(provider, mode="malformed")

    with pytest.raises(json.JSONDecodeError):  # none of the SDKs wraps it
        ask(server, provider)


@all_providers
def test_incomplete_body_is_accepted_by_the_sdk_with_fields_missing(
    server: FakeProviderServer, provider: str
) -> None:
    server.fail_next(provider, mode="incomplete")

    with pytest.raises((TypeError, AttributeError)):  # raised by our reading of the reply
        ask(server, provider)


@all_providers
def test_disconnect_raises_a_connection_error(server: FakeProviderServer, provider: str) -> None:
    server.fail_next(provider, mode="disconnect")

    with pytest.raises(ERRORS[provider]["disconnect"]):
        ask(server, provider)


def test_faults_are_consumed_in_order_per_provider(server: FakeProviderServer) -> None:
    server.fail_next("openai", 500)
    server.fail_next("openai", 401, times=2)

    with pytest.raises(openai.InternalServerError):
        ask(server, "openai")
    assert ask(server, "anthropic").text == make_reply(QUESTION)
    for _ in range(2):
        with pytest.raises(openai.AuthenticationError):
            ask(server, "openai")
    assert ask(server, "openai").text == make_reply(QUESTION)


def test_fail_next_rejects_nonsense(server: FakeProviderServer) -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        server.fail_next("mistral", 500)
    with pytest.raises(ValueError, match="give a status"):
        server.fail_next("openai")
    with pytest.raises(ValueError, match="give a status"):
        server.fail_next("openai", mode="explode")


def test_reset_forgets_requests_and_faults_and_restores_defaults(
    server: FakeProviderServer,
) -> None:
    server.api_keys["openai"] = {"another-key"}
    server.models["openai"].append("gpt-5")
    server.fail_next("openai", 500)
    ask(server, "gemini")

    server.reset()

    assert server.requests == []
    assert ask(server, "openai").text == make_reply(QUESTION)
    assert server.models["openai"] == list(DEFAULT_MODELS["openai"])
    with pytest.raises(LookupError, match="no anthropic request"):
        server.last_request("anthropic")


def test_keys_and_models_can_be_changed_per_test(server: FakeProviderServer) -> None:
    server.api_keys["anthropic"].add("sk-ant-second")
    server.models["anthropic"].append("claude-opus-9")

    answer = ask(server, "anthropic", key="sk-ant-second", model="claude-opus-9")

    assert answer.text == make_reply(QUESTION)


def test_stop_does_not_wait_for_a_sleeping_slow_request() -> None:
    # Were stop to wait for the sleeping handler, this would hang until the suite's timeout.
    with FakeProviderServer() as own:
        own.fail_next("openai", mode="slow", delay=3600)
        with pytest.raises(openai.APITimeoutError):
            ask(own, "openai", timeout=0.2)


# --- the network guard -----------------------------------------------------------------------


def refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"the guard let a real network call through: {args}")


def test_guard_blocks_non_local_hosts_before_any_lookup_or_packet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Whatever the guard would fall through to refuses loudly, so nothing can leave the machine.
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)

    with block_network():
        with pytest.raises(NetworkAccessBlocked, match=r"reach api\.openai\.com:443; tests must"):
            socket.create_connection(("api.openai.com", 443))
        with pytest.raises(NetworkAccessBlocked, match="generativelanguage"):
            socket.getaddrinfo("generativelanguage.googleapis.com", 443)
        with socket.socket() as sock:
            with pytest.raises(NetworkAccessBlocked, match=r"203\.0\.113\.1:443"):
                sock.connect(("203.0.113.1", 443))
            with pytest.raises(NetworkAccessBlocked):
                sock.connect_ex(("203.0.113.1", 443))


def test_guard_lets_loopback_through(server: FakeProviderServer) -> None:
    with block_network():
        assert socket.getaddrinfo("localhost", 80)
        assert ask(server, "openai").text == make_reply(QUESTION)


def test_guard_is_removed_on_exit_and_can_allow_extra_hosts() -> None:
    before = socket.getaddrinfo
    with block_network(allow=["db.internal"]) as guard:
        guard.check("db.internal", 5432)
        with pytest.raises(NetworkAccessBlocked):
            guard.check("db.external", 5432)
    assert socket.getaddrinfo is before


def test_sdk_left_on_its_real_url_fails_loudly() -> None:
    async def list_models() -> None:
        async with openai.AsyncOpenAI(api_key="sk-real", max_retries=0) as client:
            await client.models.list()

    with block_network(), pytest.raises(NetworkAccessBlocked, match=r"api\.openai\.com:443"):
        asyncio.run(list_models())


def test_plugin_fails_a_test_whose_network_attempt_was_swallowed(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.fakes.pytest_plugin"]')
    pytester.makepyfile(
        """
        import socket

        def test_swallows():
            try:
                socket.create_connection(("example.com", 80))
            except Exception:
                pass
        """
    )

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1, errors=1)
    assert "test tried to reach the network: ['example.com:80']" in result.stdout.str()
