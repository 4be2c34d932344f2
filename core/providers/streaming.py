"""A streamed answer from one provider, read through its SDK's own streaming API.

    async with adapter.stream_content(prompt, max_output_tokens=1024) as stream:
        async for piece in stream:       # str pieces, as the provider sends them
            ...
    stream.reply                         # text, model and the provider's own usage, at the end

Whatever the SDK raises, while opening the stream or in the middle of it, comes out as a
redacted ProviderError with no SDK exception attached (AIProvider._call's rule), and the text
received so far stays readable on `stream.text`. Leaving the `async with` early, or being
cancelled, closes the provider's stream (and so its HTTP response) at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from core.providers.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    UnexpectedResponse,
)

if TYPE_CHECKING:
    from core.providers.base import AIProvider, Reply, Usage


@dataclass
class StreamState:
    """What a stream has told so far; the adapter's generator fills it in as events come."""

    model_name: str
    usage: Usage | None = None  # the provider's report, once it has sent one
    input_tokens: int | None = None  # some providers say this at the start (Anthropic, Gemini)
    pieces: list[str] = field(default_factory=list)


class ProviderStream:
    """One streamed answer (see the module docstring). Iterate it once."""

    def __init__(self, adapter: AIProvider, pieces: AsyncIterator[str], state: StreamState):
        self._adapter = adapter
        self._pieces = pieces
        self.state = state
        self.ended = False  # the provider finished its answer (not cut, not closed early)

    @property
    def text(self) -> str:
        """The text received so far (all of it once the stream has ended)."""
        return "".join(self.state.pieces)

    @property
    def reply(self) -> Reply:
        """Text, model and usage of the whole answer; UnexpectedResponse if the provider
        ended its stream without reporting usage."""
        from core.providers.base import Reply

        provider = self._adapter.provider_type.value
        if not self.ended:
            raise UnexpectedResponse(provider, "the stream has not ended")
        if self.state.usage is None:
            raise UnexpectedResponse(provider, "the stream ended without reporting usage")
        return Reply(self.text, self.state.model_name, self.state.usage)

    def __aiter__(self) -> ProviderStream:
        return self

    async def __anext__(self) -> str:
        try:
            piece = await anext(self._pieces)
        except StopAsyncIteration:
            self.ended = True
            raise
        except ProviderError as exc:
            error = exc
        except Exception as exc:  # an SDK's, mid-stream: translated as AIProvider._call does
            error = self._adapter._translate(exc)
        else:
            self.state.pieces.append(piece)
            return piece
        if self.state.pieces and isinstance(error, ProviderUnavailable | ProviderTimeout):
            error.with_message(
                f"{error.message} (the answer broke off after {len(self.state.pieces)} pieces)"
            )
        raise self._adapter._detached(error)  # outside the except: no __context__

    async def aclose(self) -> None:
        """Stop reading and close the provider's stream (its generator's `finally` blocks)."""
        close = getattr(self._pieces, "aclose", None)
        if close is not None:
            # Closing a broken stream may fail again; there is nothing left to do about it.
            with contextlib.suppress(Exception):
                await close()

    async def __aenter__(self) -> ProviderStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
