"""Quota leases: a router's block of reserved tokens, handed out to its calls in memory.

Reserving each call's tokens in the database costs a round trip on every limited call; on a fast
provider that is a fifth of the call. A lease removes it from most calls: a call that finds no
lease reserves a block for many calls like it in one ordinary reservation (ledger.py), and the
calls after it take their share of that block under a lock in this process. The block adapts
to what is left: `LEASE_CALLS` calls' worth, or as many as fit in 1/(`LEASE_SHARE` + 1) of the
tokens neither used nor held, whichever is fewer, so a small limit gets small leases instead of
none (a 200,000-token limit: leases of about 10 calls of 1,100 tokens, where a fixed 32 calls'
worth would have needed 560,000 left). A lease serves
new calls until it runs low, `LEASE_WINDOW_S` has passed, or no call has drawn on it for
`LEASE_IDLE_S`; then it is retired. The usage writer draws each call's real usage down from the
lease's row as it settles the call, and gives back what is left once the last one is settled.

Why the limit still holds: the database never holds more than the limit allows (the lease is
one conditional reservation), and a call is served by a lease only while the lease's balance
covers the call's upper bound, so everything its calls use fits in it. No call draws on a lease
after its window, and the lease's row is renewed until every call drawn on it has settled (or
the longest a call can last has passed), so no call outlasts it.

Holds of a process that dies are freed within a minute: every hold's row (a lease or a call's
own reservation) expires `HOLD_EXPIRY` after it was taken, and the usage writer of a live
process renews the rows of the holds it still has (`renewable`) every sixth of that. Once the
process is gone its rows expire within `HOLD_EXPIRY`, and any router or console sweeps them
within its sweep interval. (A process that cannot reach the database for longer than
`HOLD_EXPIRY` while its calls run cannot renew them either: another process may then sweep their
holds, and those calls count as used only when they settle.)

What it costs: tokens in another process's lease cannot serve this one. A lease is granted only
while it leaves at least `LEASE_SHARE - 1` times its size for everyone else, so only when fewer
than two calls' worth fit in that share (the last ~34 calls' worth of a limit) does every call
reserve exactly. Further from it, the tokens a process's
current lease holds beyond its calls in progress (for at most `LEASE_IDLE_S` after its last
draw) may make a call elsewhere be refused that exact reservations would have let through. A
retired lease gives back what no call was promised at the writer's next turn, without waiting
for its calls; a call refused here first tries this process's own leases. A process that dies
leaves its lease to the sweep, like any hold.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta

from core.quota.ledger import Demand, Limits, QuotaLedger, Reservation

LEASE_CALLS = 32  # a lease covers this many calls of the size of the one that asked for it
LEASE_SHARE = 16  # ...and is granted only while it is at most 1/16 of what is left
LEASE_WINDOW_S = 5.0  # calls draw on a lease this long; then what is left is given back
LEASE_IDLE_S = 0.5  # ...or sooner, once no call has drawn on it for this long
HOLD_EXPIRY = timedelta(seconds=30)  # a hold's row expires this long after its last renewal


@dataclass
class _Lease:
    grant: Reservation  # the reservation row, as taken
    limits: Limits
    usable_until: float  # monotonic
    last_draw: float
    balance: int  # tokens not yet promised to a call
    balance_micro_usd: int  # ...and micro-dollars (0 for a config without a budget)
    unsettled: int = 0  # draws handed out and not yet settled by the usage writer

    @property
    def spare(self) -> bool:
        return self.balance > 0 or self.balance_micro_usd > 0


class QuotaLeases:
    """This process's leases, one per limited config, over `ledger`. Thread-safe: routers call
    it from their event loops, the usage writer from its thread."""

    def __init__(
        self,
        ledger: QuotaLedger,
        ttl: timedelta,
        *,
        calls: int = LEASE_CALLS,
        share: int = LEASE_SHARE,
        window_s: float = LEASE_WINDOW_S,
        idle_s: float = LEASE_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
        expiry: timedelta = HOLD_EXPIRY,
    ) -> None:
        if calls < 1 or share < 1:
            raise ValueError(
                f"lease_calls and lease_share must be at least 1 (got {calls} and {share})"
            )
        self.ledger = ledger
        self._ttl = ttl  # the longest a call can last
        self.expiry = expiry
        self._calls = calls
        self._share = share
        self._window_s = window_s
        self._idle_s = idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._current: dict[int, _Lease] = {}  # config id -> the lease new calls draw on
        self._open: dict[int, _Lease] = {}  # reservation id -> every lease not yet given back
        self._asking: dict[int, asyncio.Task[None]] = {}  # config id -> a lease being asked for
        self._refused_until: dict[int, float] = {}
        self._held: dict[int, float] = {}  # calls' own reservations not yet settled -> taken at

    async def hold(self, demand: Demand) -> Reservation | None:
        """Hold `demand.tokens` for one call: from the config's lease, from a new lease, or
        reserved for this call alone. None when the limits cannot cover the call."""
        config_id = demand.config_id
        loop = asyncio.get_running_loop()
        waited = False
        while True:
            with self._lock:
                lease = self._current.get(config_id)
                if lease is not None:
                    if self._covers(lease, demand):
                        return self._draw(lease, demand)
                    self._retire(lease)
                pending = self._asking.get(config_id)
                if pending is not None and pending.done():  # its loop stopped before cleanup
                    del self._asking[config_id]
                    pending = None
                if pending is None and not waited and self._may_lease(config_id):
                    pending = loop.create_task(self._ask(demand))
                    pending.add_done_callback(functools.partial(self._asked, config_id))
                    self._asking[config_id] = pending
            # Wait, once, for the lease being asked for in this event loop (one round trip, the
            # same as reserving alone), then draw on it. Otherwise reserve alone.
            if waited or pending is None or pending.get_loop() is not loop:
                return await self._reserve_alone(demand)
            waited = True
            try:
                await asyncio.shield(pending)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not pending.cancelled() or (current is not None and current.cancelling()):
                    raise  # this call is being cancelled, not just the lease request
            except Exception:  # noqa: S110 - the request failed: this call reserves alone
                pass

    async def _ask(self, demand: Demand) -> None:
        """Ask the database for a lease for calls like `demand`, and make it the current one. It
        runs as a task of its own, so a caller cancelled meanwhile leaves no lease stranded."""
        config_id, limits = demand.config_id, demand.limits
        asked_at = self._clock()
        # As many calls' worth as fit in a share of what is left (up to `calls`): a small limit
        # gets small leases instead of none. The reservation checks the share again, so a
        # race with other processes can only make it refused, never exceed the limit.
        standing = await self.ledger.standing_now(config_id, demand.now)
        part = self._share + 1
        calls = min(self._calls, standing.left(limits) // (part * demand.tokens))
        if demand.micro_usd:
            calls = min(calls, standing.left_micro_usd(limits) // (part * demand.micro_usd))
        grant = None
        if calls >= 2:
            block = demand.scaled(calls)
            grant = await self.ledger.reserve(
                block,
                self.expiry,
                margin=(self._share - 1) * block.tokens,
                margin_micro_usd=(self._share - 1) * block.micro_usd,
            )
        with self._lock:
            if grant is None:
                self._refused_until[config_id] = self._clock() + self._window_s
                return
            lease = _Lease(
                grant, limits, asked_at + self._window_s, asked_at, grant.tokens, grant.micro_usd
            )
            if (old := self._current.get(config_id)) is not None:
                self._retire(old)
            self._current[config_id] = self._open[grant.id] = lease

    def _asked(self, config_id: int, task: asyncio.Task[None]) -> None:
        """A lease request is over (done, failed or cancelled, even before it started)."""
        with self._lock:
            if self._asking.get(config_id) is task:
                del self._asking[config_id]
        if not task.cancelled():
            task.exception()  # seen: the callers waiting on it got it, or reserved alone

    def spent(self, hold: Reservation, used: int, used_micro_usd: int = 0) -> None:
        """The call on `hold` is over, having used `used` tokens and `used_micro_usd`: its
        lease (if it drew on one) may promise the rest to other calls."""
        if not hold.draw:
            return
        with self._lock:
            lease = self._open.get(hold.id)
            if lease is not None:
                lease.balance += hold.tokens - used
                lease.balance_micro_usd += hold.micro_usd - used_micro_usd

    def settled(self, holds: Iterable[Reservation | None]) -> None:
        """The usage writer has committed these calls' settlements."""
        with self._lock:
            for hold in holds:
                if hold is None:
                    continue
                if not hold.draw:
                    self._held.pop(hold.id, None)
                elif lease := self._open.get(hold.id):
                    lease.unsettled -= 1

    def renewable(self) -> list[int]:
        """The reservation ids whose rows must not expire yet: every lease not yet given back,
        and the calls' own reservations not yet settled (none older than the longest call)."""
        with self._lock:
            oldest = self._clock() - self._ttl.total_seconds()
            self._held = {hold: at for hold, at in self._held.items() if at >= oldest}
            return [*self._open, *self._held]

    def due(self) -> tuple[list[Reservation], list[tuple[Reservation, int, int]]]:
        """What to give back now: whole leases (retired, every call settled, or expired), and
        the unpromised balance (tokens, micro-dollars) of retired leases whose calls are still
        running. Leases past
        their window or idle are retired first. The caller (the usage writer) must give back
        everything it is handed."""
        with self._lock:
            now = self._clock()
            for lease in list(self._current.values()):
                if now >= lease.usable_until or now - lease.last_draw >= self._idle_s:
                    self._retire(lease)
            whole: list[Reservation] = []
            part: list[tuple[Reservation, int, int]] = []
            for lease in list(self._open.values()):
                if self._is_current(lease):
                    continue
                # An expired lease may be swept by now: whatever still settles on it counts as
                # used only, like an overdue call (a call still running, or a dropped batch).
                if not lease.unsettled or now >= lease.usable_until + self._ttl.total_seconds():
                    del self._open[lease.grant.id]
                    whole.append(lease.grant)
                elif lease.spare:
                    part.append(self._take_spare(lease))
        return whole, part

    def retire_all(self) -> None:
        """Stop drawing on every lease (the router is closing); `due` then returns them."""
        with self._lock:
            for lease in list(self._current.values()):
                self._retire(lease)

    async def _reserve_alone(self, demand: Demand) -> Reservation | None:
        """Reserve for this call only. If refused, draw on a lease of ours that is being given
        back, or give back what our retired leases hold unpromised and try once more (after a
        limit edit, say, the old lease may hold what this call needs)."""
        for attempt in (1, 2):
            own = await self.ledger.reserve(demand, self.expiry)
            if own is not None:
                with self._lock:
                    self._held[own.id] = self._clock()
                return own
            with self._lock:
                spare: list[tuple[Reservation, int, int]] = []
                for lease in self._open.values():
                    if lease.grant.config_id != demand.config_id:
                        continue
                    if self._covers(lease, demand):
                        return self._draw(lease, demand)
                    if not self._is_current(lease) and lease.spare:  # writer not there yet
                        spare.append(self._take_spare(lease))
            if attempt == 2 or not spare:
                return None
            given = [await self.ledger.give_back(*part) for part in spare]
            if not any(given):
                return None
        return None

    # --- under the lock ---

    def _may_lease(self, config_id: int) -> bool:
        return self._calls > 1 and self._clock() >= self._refused_until.get(config_id, 0.0)

    def _covers(self, lease: _Lease, demand: Demand) -> bool:
        """Whether a call's `demand` may draw on `lease` now. Never after its window: a call
        drawn later could outlast the lease, which is given back window + ttl after the grant
        whatever its calls are doing."""
        return (
            lease.balance >= demand.tokens
            and lease.balance_micro_usd >= demand.micro_usd
            and lease.limits == demand.limits
            and lease.grant.day == demand.now.date()
            and self._clock() < lease.usable_until
        )

    def _draw(self, lease: _Lease, demand: Demand) -> Reservation:
        lease.balance -= demand.tokens
        lease.balance_micro_usd -= demand.micro_usd
        lease.unsettled += 1
        lease.last_draw = self._clock()
        return replace(lease.grant, tokens=demand.tokens, micro_usd=demand.micro_usd, draw=True)

    @staticmethod
    def _take_spare(lease: _Lease) -> tuple[Reservation, int, int]:
        """What `lease` holds unpromised, to give back (a balance overdrawn gives back 0)."""
        spare = (lease.grant, max(lease.balance, 0), max(lease.balance_micro_usd, 0))
        lease.balance = min(lease.balance, 0)
        lease.balance_micro_usd = min(lease.balance_micro_usd, 0)
        return spare

    def _is_current(self, lease: _Lease) -> bool:
        """Not yet retired: new calls may draw on it."""
        return self._current.get(lease.grant.config_id) is lease

    def _retire(self, lease: _Lease) -> None:
        if self._is_current(lease):
            del self._current[lease.grant.config_id]
