"""Streamed calls: `router.stream(...)` and its synchronous form.

    async with router.stream("cv_draft", prompt, user_id=42, max_output_tokens=1024) as stream:
        async for text in stream:        # str pieces, as the provider sends them
            ...
    result = stream.result               # GenerationResult once the stream has ended

Candidates are tried as for `generate`, each with its limits reserved first, up to the first
piece: a provider that fails before it falls back to the next. Once a piece has reached the
caller a failure raises ProviderCallError with what came on `partial_text`. Every attempt is one
usage row: the whole answer's (tokens as the provider reported them, priced like `generate`),
or, for a stream cut off or left early (leaving the `async with`, or a cancellation), what it
had cost so far: tokens the provider had reported, else an upper bound (the reservation's
estimate of the prompt and the bytes of text received), said so on the row. Its hold is
settled at once.

The synchronous form runs the same stream on the router's event-loop thread, a piece at a time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from core.models import UsageStatus
from core.providers.base import GenerationResult
from core.providers.errors import ProviderError, ProviderTimeout
from core.providers.streaming import ProviderStream
from core.routing.errors import ProviderCallError

if TYPE_CHECKING:
    from core.routing.attempts import Attempt, Trial

ESTIMATED = "; tokens estimated (the provider had not reported them)"


@dataclass
class Opened:
    """A provider stream that has sent its first piece (None: it ended without any)."""

    stream: ProviderStream
    first: str | None
    started: float


async def open_stream(stream: ProviderStream) -> Opened:
    """Read up to the first piece: until then a failure may still fall back."""
    started = time.perf_counter()
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        return Opened(stream, None, started)
    except BaseException:
        await stream.aclose()
        raise
    return Opened(stream, first, started)


class RoutedStream:
    """One streamed answer being read; see the module docstring."""

    def __init__(
        self, trial: Trial, opened: Opened, attempts: list[Attempt], prompt_estimate: int
    ) -> None:
        self._trial = trial
        self._opened = opened
        self._pending = opened.first
        self._attempts = attempts
        self._prompt_estimate = prompt_estimate
        self._ended = False
        self.result: GenerationResult | None = None

    @property
    def text(self) -> str:
        """What has reached the caller so far."""
        return self._opened.stream.text

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> str:
        if self._ended:
            raise StopAsyncIteration
        if self._pending is not None:
            piece, self._pending = self._pending, None
            return piece
        try:
            return await anext(self._opened.stream)
        except StopAsyncIteration:
            self._succeeded()
            raise
        except ProviderError as error:
            failure = error
        except BaseException as exc:  # cancelled mid-stream (or a bug of ours)
            self._abandoned(exc)
            raise
        raise self._broke_off(failure)

    async def aclose(self) -> None:
        """Leave early: close the provider's stream and record what it cost so far."""
        if self._ended:
            return
        await self._opened.stream.aclose()
        self._abandoned(None)

    def _succeeded(self) -> None:
        self._ended = True
        try:
            reply = self._opened.stream.reply
        except ProviderError as error:  # ended without its usage: recorded as a failure
            self._ended = False
            raise self._broke_off(error) from None
        c = self._trial.candidate
        answer = GenerationResult(
            text=reply.text,
            provider_type=c.provider_type,
            model_name=reply.model_name or c.model_name,
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
            total_tokens=reply.usage.total_tokens,
            latency_ms=round((time.perf_counter() - self._opened.started) * 1000),
            cached_input_tokens=reply.usage.cached_input_tokens,
            cache_write_tokens=reply.usage.cache_write_tokens,
            reasoning_tokens=reply.usage.reasoning_tokens,
        )
        self.result = self._trial.succeeded(answer, self._attempts)

    def _broke_off(self, error: ProviderError) -> ProviderCallError:
        self._ended = True
        used, note = self._used()
        timed_out = isinstance(error, ProviderTimeout)
        status = UsageStatus.TIMEOUT if timed_out else UsageStatus.ERROR
        attempt = self._trial.failed(
            status, error.kind, error.message + note, self._trial.elapsed_ms(), used
        )
        c = self._trial.candidate
        return ProviderCallError(
            f"The stream from {c.provider_type} {c.model_name} broke off: {error.message}",
            error,
            [*self._attempts, attempt],
            partial_text=self.text,
        )

    def _abandoned(self, exc: BaseException | None) -> None:
        self._ended = True
        used, note = self._used()
        self._trial.abandoned(exc, used, note)

    def _used(self) -> tuple[tuple[int, int], str]:
        """(input, output) tokens so far: the provider's report, else an upper bound."""
        state = self._opened.stream.state
        if state.usage is not None and state.usage.output_tokens:
            return (state.usage.input_tokens, state.usage.output_tokens), ""
        prompt = state.input_tokens if state.input_tokens is not None else self._prompt_estimate
        return (prompt, len(self.text.encode())), ESTIMATED


class StreamCall:
    """What `router.stream(...)` returns: `async with` it for a RoutedStream."""

    def __init__(self, route: Callable[[], Awaitable[RoutedStream]]) -> None:
        self._route = route
        self._stream: RoutedStream | None = None

    async def __aenter__(self) -> RoutedStream:
        self._stream = await self._route()
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            await self._stream.aclose()


class SyncStream:
    """`router.stream_sync(...)`: the same stream for synchronous code, a piece at a time on
    the router's event-loop thread. Use it in a `with` block and iterate it."""

    def __init__(self, call: StreamCall, run: Callable[[Awaitable[Any]], Any]) -> None:
        self._call = call
        self._run = run  # on the router's own loop (sync_loop.py)
        self._stream: RoutedStream | None = None

    @property
    def result(self) -> GenerationResult | None:
        return self._stream.result if self._stream is not None else None

    @property
    def text(self) -> str:
        return self._stream.text if self._stream is not None else ""

    def __enter__(self) -> SyncStream:
        self._stream = self._run(self._call.__aenter__())
        return self

    def __iter__(self) -> Iterator[str]:
        assert self._stream is not None, "use stream_sync(...) in a `with` block"
        while True:
            try:
                yield self._run(anext(self._stream))
            except StopAsyncIteration:
                return

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._run(self._call.__aexit__(exc_type, exc, traceback))
