"""The SDK clients a router calls through: one connection pool per event loop, and each
config's adapter, built once per config version and event loop."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Any

import httpx2

from core.providers import AIProvider, ProviderFactory
from core.providers.egress import Allowlist, egress_client
from core.routing.candidates import Candidate


@dataclass
class _LoopState:
    http: httpx2.AsyncClient
    adapters: dict[tuple[Any, ...], AIProvider] = field(default_factory=dict)
    generation: int = -1


class Clients:
    """Adapters by event loop (an httpx2 client belongs to the loop it was used on)."""

    def __init__(self, allowlist: Allowlist, timeout_s: float, max_retries: int) -> None:
        self._allowlist = allowlist
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def adapter(self, candidate: Candidate, key: str, generation: int) -> AIProvider:
        """The adapter for a candidate on this loop, with its decrypted `key`.

        Building an SDK client costs more than the routing itself (~0.3 ms of lazy set-up on
        its first request), so each one is kept while its config is unchanged (the configs'
        `generation`), like any service keeps its own credentials; a config edit or key
        rotation builds a fresh one.
        """
        state = self._state()
        if state.generation != generation:
            state.adapters.clear()
            state.generation = generation
        cache_key = (
            candidate.config_id,
            candidate.provider_type,
            candidate.model_name,
            candidate.base_url,
            candidate.secret,
        )
        adapter = state.adapters.get(cache_key)
        if adapter is None:
            adapter = ProviderFactory.create_provider(
                candidate.provider_type,
                key,
                candidate.model_name,
                candidate.base_url,
                timeout_s=self._timeout_s,
                max_retries=self._max_retries,
                http_client=state.http,
            )
            state.adapters[cache_key] = adapter
        return adapter

    async def aclose(self) -> None:
        """Close the running loop's connection pool (its adapters use it)."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.http.aclose()

    def _state(self) -> _LoopState:
        """This event loop's connection pool (shared by every provider) and adapters."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            # No redirects, no proxies, every connection's address vetted (core.providers.egress).
            http = egress_client(
                self._allowlist,
                limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50),
            )
            state = self._loops[loop] = _LoopState(http)
        return state
