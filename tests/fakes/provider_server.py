"""A local fake of the OpenAI, Anthropic and Gemini HTTP APIs, for driving the real SDKs in tests.

Each provider lives under its own path prefix (`/openai`, `/anthropic`, `/gemini`) because all
three use `/v1/models`; the `*_base_url` properties already include it. Replies are
deterministic: the text is `make_reply(last user text)` (for a request for JSON, the schema's
object: tests/fakes/structured.py) and usage comes from `count_tokens`, so tests can predict
both. Faults are queued per provider with `fail_next` and consumed one per
request, in order. Streamed answers speak each provider's server-sent events
(tests/fakes/streams.py), sent a piece at a time in chunks.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.streams import (
    Event,
    anthropic_events,
    anthropic_usage,
    gemini_events,
    gemini_usage,
    openai_events,
    openai_usage,
)
from tests.fakes.structured import answer_text

PROVIDERS = ("openai", "anthropic", "gemini")
DEFAULT_API_KEYS: dict[str, frozenset[str]] = {
    "openai": frozenset({"sk-test-openai"}),
    "anthropic": frozenset({"sk-ant-test"}),
    "gemini": frozenset({"gemini-test-key"}),
}
DEFAULT_MODELS: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"),
    "anthropic": ("claude-3-5-haiku-latest", "claude-sonnet-4-5"),
    "gemini": ("gemini-2.5-flash", "gemini-2.5-pro"),
}
IMAGE_TOKENS = 85
"""Fake input-token cost of one image (or any other inline file)."""
FAULT_MODES = (
    "status",
    "slow",
    "malformed",
    "incomplete",
    "disconnect",
    "cut",
    "invalid_json",
    "wrong_type",
)
STRUCTURED_FAULTS = ("invalid_json", "wrong_type")  # bad answers to a request for JSON
REDACTED = "REDACTED"
_SECRET_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")
_MESSAGES = {
    400: "Invalid request.",
    401: "Invalid API key.",
    403: "Permission denied.",
    404: "Not found.",
    429: "Rate limit reached. Please try again later.",
    500: "The server had an error while processing your request.",
    503: "The service is temporarily overloaded. Please try again later.",
}


# --- the fake model --------------------------------------------------------------------------


def count_tokens(texts: Iterable[str], images: int = 0) -> int:
    """Fake token count: whitespace-separated words in `texts`, plus IMAGE_TOKENS per image."""
    return sum(len(text.split()) for text in texts) + images * IMAGE_TOKENS


def make_reply(user_text: str, max_tokens: int | None = None) -> str:
    """The fake model's answer: "echo: " + the first 40 characters, cut to `max_tokens` words."""
    words = f"echo: {user_text[:40]}".split()
    return " ".join(words if max_tokens is None else words[:max_tokens])


@dataclass
class Prompt:
    """What the fake model read from one request, whichever provider's format it came in."""

    texts: list[str] = field(default_factory=list)  # every text part, system prompt included
    images: int = 0
    last_user_text: str = ""
    max_tokens: int | None = None
    schema: dict[str, Any] | None = None  # the request asked for JSON of this schema

    def add(self, text: str, *, from_user: bool) -> None:
        self.texts.append(text)
        if from_user:
            self.last_user_text = text


@dataclass(frozen=True)
class Completion:
    """One generated answer, in provider-neutral form."""

    serial: int
    model: str
    text: str
    input_tokens: int  # all of it, cached or not
    output_tokens: int
    truncated: bool
    cached_tokens: int = 0  # of input_tokens, read from the provider's prompt cache
    cache_write_tokens: int = 0  # of input_tokens, written to it (Anthropic reports these)
    reasoning_tokens: int = 0  # of output_tokens, thinking (OpenAI and Gemini report these)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: `path` is provider-relative (e.g. `/v1/messages`)."""

    provider: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names, API keys replaced by REDACTED
    body: Any  # parsed JSON, the raw text if it was not JSON, None if empty


@dataclass(frozen=True)
class Fault:
    """A scripted misbehaviour for one request (see FakeProviderServer.fail_next)."""

    mode: str
    status: int = 200
    retry_after: float | None = None
    delay: float = 0.0
    message: str | None = None
    location: str | None = None
    body: str | None = None
    pieces: int = 0


@dataclass
class Reply:
    """What the HTTP handler writes back; `disconnect` means close without answering. A
    streamed reply has `events` instead of a body; `cut_after` pieces of text it hangs up."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    disconnect: bool = False
    events: list[Event] | None = None
    cut_after: int | None = None


def json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


# --- the three wire formats ------------------------------------------------------------------


def _text_parts(content: Any) -> Iterable[tuple[str, Any]]:
    """Yield (type, part) for OpenAI/Anthropic content: a string or a list of typed parts."""
    if isinstance(content, str):
        yield "text", {"text": content}
    elif isinstance(content, list):
        for part in content:
            yield part.get("type", ""), part


def _bearer_token(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None


class OpenAIFormat:
    """Chat Completions: `Authorization: Bearer KEY`, system prompt as a system/developer turn."""

    name = "openai"
    routes = (
        ("POST", re.compile(r"/v1/chat/completions"), "generate"),
        ("GET", re.compile(r"/v1/models"), "list_models"),
        ("GET", re.compile(r"/v1/models/(?P<model>[^/]+)"), "get_model"),
    )

    def api_key(self, headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
        return _bearer_token(headers)

    def model(self, body: Any, params: dict[str, str]) -> str:
        return params.get("model") or body.get("model", "")

    def prompt(self, body: dict[str, Any]) -> Prompt:
        prompt = Prompt(max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"))
        for message in body.get("messages", []):
            for kind, part in _text_parts(message.get("content")):
                if kind == "text":
                    prompt.add(part["text"], from_user=message.get("role") == "user")
                elif kind in ("image_url", "input_audio", "file"):
                    prompt.images += 1
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            prompt.schema = response_format["json_schema"]["schema"]
        return prompt

    def completion(self, done: Completion) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake{done.serial:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": done.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length" if done.truncated else "stop",
                }
            ],
            "usage": openai_usage(done),
            "system_fingerprint": "fp_fake",
        }

    def events(self, done: Completion, body: dict[str, Any]) -> list[Event]:
        return openai_events(done, bool((body.get("stream_options") or {}).get("include_usage")))

    def model_info(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "openai"}

    def model_list(self, models: Iterable[str]) -> dict[str, Any]:
        return {"object": "list", "data": [self.model_info(m) for m in models]}

    def error(self, status: int, message: str, code: str | None = None) -> Reply:
        kind = "invalid_request_error"
        if status == 429:
            kind, code = "requests", code or "rate_limit_exceeded"
        elif status >= 500:
            kind = "server_error"
        error = {"message": message, "type": kind, "param": None, "code": code}
        return json_reply(status, {"error": error})

    def bad_key(self, key: str | None) -> Reply:
        if key is None:
            return self.error(401, "You didn't provide an API key.", "invalid_api_key")
        shown = f"{key[:3]}...{key[-4:]}" if len(key) > 8 else key
        return self.error(401, f"Incorrect API key provided: {shown}.", "invalid_api_key")

    def unknown_model(self, model: str) -> Reply:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return self.error(404, message, "model_not_found")


class AnthropicFormat:
    """Messages API: `x-api-key` (this SDK sends `Authorization: Bearer`), top-level `system`."""

    name = "anthropic"
    routes = (
        ("POST", re.compile(r"/v1/messages"), "generate"),
        ("GET", re.compile(r"/v1/models"), "list_models"),
        ("GET", re.compile(r"/v1/models/(?P<model>[^/]+)"), "get_model"),
    )
    error_types = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }

    def api_key(self, headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
        return headers.get("x-api-key") or _bearer_token(headers)

    def model(self, body: Any, params: dict[str, str]) -> str:
        return params.get("model") or body.get("model", "")

    def prompt(self, body: dict[str, Any]) -> Prompt:
        prompt = Prompt(max_tokens=body.get("max_tokens"))
        for _, part in _text_parts(body.get("system")):
            prompt.add(part["text"], from_user=False)
        for message in body.get("messages", []):
            for kind, part in _text_parts(message.get("content")):
                if kind == "text":
                    prompt.add(part["text"], from_user=message.get("role") == "user")
                elif kind in ("image", "document"):
                    prompt.images += 1
        output_format = (body.get("output_config") or {}).get("format") or {}
        if output_format.get("type") == "json_schema":
            prompt.schema = output_format["schema"]
        return prompt

    def completion(self, done: Completion) -> dict[str, Any]:
        return {
            "id": f"msg_fake{done.serial:06d}",
            "type": "message",
            "role": "assistant",
            "model": done.model,
            "content": [{"type": "text", "text": done.text}],
            "stop_reason": "max_tokens" if done.truncated else "end_turn",
            "stop_sequence": None,
            "usage": anthropic_usage(done, done.output_tokens),
        }

    def events(self, done: Completion, body: dict[str, Any]) -> list[Event]:
        return anthropic_events(done)

    def model_info(self, model: str) -> dict[str, Any]:
        return {
            "type": "model",
            "id": model,
            "display_name": model.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z",
            "lifecycle": "active",
        }

    def model_list(self, models: Iterable[str]) -> dict[str, Any]:
        data = [self.model_info(m) for m in models]
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    def error(self, status: int, message: str) -> Reply:
        kind = self.error_types.get(status, "api_error")
        payload = {"type": "error", "error": {"type": kind, "message": message}}
        return json_reply(status, payload)

    def bad_key(self, key: str | None) -> Reply:
        return self.error(401, "invalid x-api-key")

    def unknown_model(self, model: str) -> Reply:
        return self.error(404, f"model: {model}")


class GeminiFormat:
    """Gemini API: `x-goog-api-key` or `?key=`, `systemInstruction`, any `v1*` API version."""

    name = "gemini"
    routes = (
        ("POST", re.compile(r"/v1\w*/models/(?P<model>[^/:]+):generateContent"), "generate"),
        ("POST", re.compile(r"/v1\w*/models/(?P<model>[^/:]+):streamGenerateContent"), "stream"),
        ("GET", re.compile(r"/v1\w*/models"), "list_models"),
        ("GET", re.compile(r"/v1\w*/models/(?P<model>[^/:]+)"), "get_model"),
    )
    statuses = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    def api_key(self, headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
        return headers.get("x-goog-api-key") or next(iter(query.get("key", [])), None)

    def model(self, body: Any, params: dict[str, str]) -> str:
        return params.get("model", "")

    def prompt(self, body: dict[str, Any]) -> Prompt:
        config = body.get("generationConfig") or {}
        prompt = Prompt(max_tokens=config.get("maxOutputTokens"))
        for part in (body.get("systemInstruction") or {}).get("parts", []):
            prompt.add(part.get("text", ""), from_user=False)
        for content in body.get("contents", []):
            for part in content.get("parts", []):
                if "text" in part:
                    prompt.add(part["text"], from_user=content.get("role", "user") == "user")
                elif "inlineData" in part or "fileData" in part:
                    prompt.images += 1
        if config.get("responseMimeType") == "application/json":
            prompt.schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
        return prompt

    def completion(self, done: Completion) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": done.text}]},
                    "finishReason": "MAX_TOKENS" if done.truncated else "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": gemini_usage(done, final=True),
            "modelVersion": done.model,
            "responseId": f"fake{done.serial:06d}",
        }

    def events(self, done: Completion, body: dict[str, Any]) -> list[Event]:
        return gemini_events(done)

    def model_info(self, model: str) -> dict[str, Any]:
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model.replace("-", " ").title(),
            "description": f"Fake {model}",
            "inputTokenLimit": 1_048_576,
            "outputTokenLimit": 65_536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }

    def model_list(self, models: Iterable[str]) -> dict[str, Any]:
        return {"models": [self.model_info(m) for m in models]}

    def error(self, status: int, message: str, details: list[Any] | None = None) -> Reply:
        error = {"code": status, "message": message, "status": self.statuses.get(status, "UNKNOWN")}
        return json_reply(status, {"error": {**error, **({"details": details} if details else {})}})

    def bad_key(self, key: str | None) -> Reply:
        """Like Google: 400 INVALID_ARGUMENT / API_KEY_INVALID, or 403 when no key is sent."""
        if key is None:
            return self.error(403, "Method doesn't allow unregistered callers. Use an API key.")
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        return self.error(400, "API key not valid. Please pass a valid API key.", [info])

    def unknown_model(self, model: str) -> Reply:
        message = f"models/{model} is not found for API version v1beta, or is not supported."
        return self.error(404, message)


Format = OpenAIFormat | AnthropicFormat | GeminiFormat
FORMATS: dict[str, Format] = {
    "openai": OpenAIFormat(),
    "anthropic": AnthropicFormat(),
    "gemini": GeminiFormat(),
}


# --- the server ------------------------------------------------------------------------------


class FakeProviderServer:
    """Serves all three providers on 127.0.0.1 from a daemon thread; use as a context manager.

    `api_keys[provider]` and `models[provider]` are the accepted keys and known model names;
    tests may replace them, and `reset()` restores the defaults.
    """

    def __init__(self, *, keep_alive: bool = False) -> None:
        # Tests get a fresh connection per request (nothing carries over between them); the
        # benches keep connections open, as real providers do.
        self.keep_alive = keep_alive
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._serial = itertools.count(1)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[RecordedRequest] = []
        self._faults: dict[str, deque[Fault]] = {p: deque() for p in PROVIDERS}
        self.api_keys: dict[str, set[str]] = {}
        self.models: dict[str, list[str]] = {}
        # How many of each request's input tokens the fake says it read from its prompt cache
        # and wrote to it, and of its output tokens were thinking (each capped at what there
        # is), reported in each provider's own usage fields.
        self.cached_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.reset()

    # lifecycle

    def start(self) -> FakeProviderServer:
        """Bind a free port and serve in a daemon thread; returns self."""
        self._stopping.clear()
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # so stop() returns quickly
            name="fake-provider-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests still sleeping in a slow fault are woken and dropped."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # URLs

    @property
    def url(self) -> str:
        """The bare origin, e.g. http://127.0.0.1:54321."""
        if self._httpd is None:
            raise RuntimeError("FakeProviderServer is not running; call start() first")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def openai_base_url(self) -> str:
        """For `AsyncOpenAI(base_url=...)`; ends in /v1 as that SDK expects."""
        return f"{self.url}/openai/v1"

    @property
    def anthropic_base_url(self) -> str:
        """For `AsyncAnthropic(base_url=...)`; the SDK appends /v1/..."""
        return f"{self.url}/anthropic"

    @property
    def gemini_base_url(self) -> str:
        """For `genai.Client(http_options=HttpOptions(base_url=...))`; the SDK appends /v1/..."""
        return f"{self.url}/gemini"

    # scripting and inspection

    def reset(self) -> None:
        """Forget recorded requests and queued faults; restore default keys and models."""
        with self._lock:
            self._requests.clear()
            for queue in self._faults.values():
                queue.clear()
            self.api_keys = {p: set(keys) for p, keys in DEFAULT_API_KEYS.items()}
            self.models = {p: list(models) for p, models in DEFAULT_MODELS.items()}
            self.cached_tokens = self.cache_write_tokens = self.reasoning_tokens = 0

    def fail_next(
        self,
        provider: str,
        status: int | None = None,
        *,
        mode: str | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        times: int = 1,
        message: str | None = None,
        location: str | None = None,
        body: str | None = None,
        pieces: int = 0,
    ) -> None:
        """Queue `times` faults for the provider's next requests (after any already queued).

        mode "status" (the default when `status` is given): answer `status` with the provider's
        own error JSON; a 429 carries `Retry-After: retry_after` (default 1 s).
        mode "slow": wait `delay` seconds, then answer normally.
        mode "malformed": 200 whose body is not valid JSON.
        mode "incomplete": 200 with valid JSON that lacks every expected field.
        mode "disconnect": close the connection without any response.
        mode "cut": answer, but hang up after `pieces` pieces of a streamed answer (or halfway
        through a blocking one's body): a stream that breaks off mid-answer.
        mode "invalid_json" / "wrong_type": a request for JSON of a schema (OpenAI
        response_format json_schema, Anthropic output_config.format, Gemini responseMimeType
        application/json) is answered with prose, or with the schema's object whose integers,
        numbers and booleans are words (tests/fakes/structured.py); other requests as usual.
        `delay` also postpones the other modes. `message` replaces the error text (to plant a
        key in it, say, as some providers echo part of the key they refused).
        A 3xx `status` answers a redirect: `Location: location` and a small HTML page.
        `body` replaces the whole error body with that text (sent as text/markdown), for
        providers or proxies that answer an error with a page instead of JSON.
        """
        _check_provider(provider)
        mode = mode or ("status" if status is not None else None)
        if mode not in FAULT_MODES or (mode == "status" and status is None):
            raise ValueError(f"give a status or one of modes {FAULT_MODES}, not {mode!r}")
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = Fault(mode, status or 200, retry_after, delay, message, location, body, pieces)
        with self._lock:
            self._faults[provider].extend([fault] * times)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, provider: str) -> list[RecordedRequest]:
        """The requests received for one provider, oldest first."""
        _check_provider(provider)
        return [r for r in self.requests if r.provider == provider]

    def last_request(self, provider: str) -> RecordedRequest:
        """The newest request for `provider`; LookupError if there is none."""
        found = self.requests_for(provider)
        if not found:
            raise LookupError(f"no {provider} request was recorded")
        return found[-1]

    # request handling (called from the HTTP handler threads)

    def handle(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Record one request and compute the reply, applying the provider's next fault."""
        parts = urlsplit(url)
        provider, _, rest = parts.path.lstrip("/").partition("/")
        if provider not in FORMATS:
            return json_reply(404, {"error": f"no fake provider at {parts.path}"})
        fmt, path, query = FORMATS[provider], f"/{rest}", parse_qs(parts.query)
        body = _parse_body(raw)
        redacted = _redact_headers(headers)
        self._record(RecordedRequest(provider, method, path, _redact_query(query), redacted, body))
        fault = self._pop_fault(provider)
        if fault is not None:
            reply = self._apply_fault(fmt, fault)
            if reply is not None:
                return reply
        key = fmt.api_key(headers, query)
        if key not in self.api_keys[provider]:
            return fmt.bad_key(key)
        structured = fault.mode if fault is not None and fault.mode in STRUCTURED_FAULTS else None
        reply = self._route(fmt, method, path, body if isinstance(body, dict) else {}, structured)
        if fault is not None and fault.mode == "cut":
            reply.cut_after = fault.pieces
        return reply

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _pop_fault(self, provider: str) -> Fault | None:
        with self._lock:
            queue = self._faults[provider]
            return queue.popleft() if queue else None

    def _apply_fault(self, fmt: Format, fault: Fault) -> Reply | None:
        """The reply a fault forces, or None when the request should then be served normally."""
        if fault.delay and self._stopping.wait(fault.delay):
            return Reply(0, disconnect=True)
        if fault.mode == "status":
            text = fault.message or _MESSAGES.get(fault.status, "Fake error.")
            if fault.body is not None:
                reply = Reply(fault.status, fault.body.encode(), {"Content-Type": "text/markdown"})
            elif 300 <= fault.status < 400:
                page = f'<html><body><a href="{fault.location}">{text}</a></body></html>'
                reply = Reply(fault.status, page.encode(), {"Content-Type": "text/html"})
            else:
                reply = fmt.error(fault.status, text)
            if fault.location is not None:
                reply.headers["Location"] = fault.location
            if fault.retry_after is not None:
                reply.headers["Retry-After"] = f"{fault.retry_after:g}"
            return reply
        if fault.mode == "malformed":
            return Reply(200, b'{"id": "fake", "truncated', {"Content-Type": "application/json"})
        if fault.mode == "incomplete":
            return json_reply(200, {"unexpected": True})
        if fault.mode == "disconnect":
            return Reply(0, disconnect=True)
        return None

    def _route(
        self, fmt: Format, method: str, path: str, body: dict[str, Any], structured: str | None
    ) -> Reply:
        for route_method, pattern, action in fmt.routes:
            match = pattern.fullmatch(path)
            if route_method == method and match:
                model = fmt.model(body, match.groupdict())
                return self._act(fmt, action, model, body, structured)
        return fmt.error(404, f"No fake route for {method} {path}.")

    def _act(
        self, fmt: Format, action: str, model: str, body: dict[str, Any], structured: str | None
    ) -> Reply:
        known = self.models[fmt.name]
        if action == "list_models":
            return json_reply(200, fmt.model_list(known))
        if model.removeprefix("models/") not in known:
            return fmt.unknown_model(model)
        if action == "get_model":
            return json_reply(200, fmt.model_info(model.removeprefix("models/")))
        done = self._complete(model, fmt.prompt(body), structured)
        if action == "stream" or body.get("stream") is True:
            return Reply(
                200, headers={"Content-Type": "text/event-stream"}, events=fmt.events(done, body)
            )
        return json_reply(200, fmt.completion(done))

    def _complete(self, model: str, prompt: Prompt, structured: str | None = None) -> Completion:
        """The answer: make_reply's echo, or for a request for JSON the schema's object
        (tests/fakes/structured.py, spoiled by a `structured` fault), cut to max_tokens words."""
        if prompt.schema is None:
            whole = make_reply(prompt.last_user_text)
        else:
            whole = answer_text(prompt.schema, prompt.last_user_text, structured)
        words = whole.split(" ")
        text = whole if prompt.max_tokens is None else " ".join(words[: prompt.max_tokens])
        input_tokens = count_tokens(prompt.texts, prompt.images)
        output_tokens = count_tokens([text])
        cached = min(self.cached_tokens, input_tokens)
        return Completion(
            serial=next(self._serial),
            model=model,
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            truncated=text != whole,
            cached_tokens=cached,
            cache_write_tokens=min(self.cache_write_tokens, input_tokens - cached),
            reasoning_tokens=min(self.reasoning_tokens, max(output_tokens - 1, 0)),
        )


def _check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _redact_headers(headers: dict[str, str]) -> dict[str, str]:
    redacted = {}
    for name, value in headers.items():
        if name in _SECRET_HEADERS:
            scheme, _, secret = value.partition(" ")
            value = f"{scheme} {REDACTED}" if secret else REDACTED
        redacted[name] = value
    return redacted


def _redact_query(query: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: [REDACTED] if name == "key" else values for name, values in query.items()}


# --- HTTP plumbing ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: on a kept-alive connection Nagle's algorithm
    # held the body until the client's delayed ACK, 40 ms later.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.fake.handle(self.command, self.path, headers, raw)
        if reply.disconnect:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.events is None:
            self.send_header("Content-Length", str(len(reply.body)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        if not self.server.fake.keep_alive:
            self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = not self.server.fake.keep_alive
        if reply.events is not None:
            self._stream(reply.events, reply.cut_after)
        elif reply.cut_after is not None:
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(reply.body)

    def _stream(self, events: list[Event], cut_after: int | None) -> None:
        """Each event in a chunk of its own, flushed as it is written (as providers stream)."""
        sent = 0
        for data, piece in events:
            if piece and cut_after is not None and sent == cut_after:
                self.close_connection = True  # no last chunk: the client sees the cut
                return
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            sent += piece
        self.wfile.write(b"0\r\n\r\n")

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read `server.requests` instead."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5: a burst of concurrent clients (a router's
    # gather of 20 calls) overflows it and loopback answers the extra ones with a reset.
    request_queue_size = 128

    def __init__(self, fake: FakeProviderServer) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup of the host name."""
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hung up (timeouts, disconnect faults); report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
