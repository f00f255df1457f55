"""What each client does around every call: wait for a slot of its in-flight bound, time the call.

The bound (a semaphore per client, urgent calls first) makes a burst of sessions queue instead
of flooding a dependency; the time is measured from when the call got its slot and goes to
the metrics.
`SharedFresh` lets many callers share one call whose answer is never older than their question.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")
CallObserver = Callable[[str, float, bool], None]  # (call, seconds, succeeded)


class Priority(enum.IntEnum):
    """Who gets a freed slot first (lower first)."""

    URGENT = 0  # on a connection's critical path: pod create/claim, room create, dispatch
    NORMAL = 1  # status writes, room checks, listings
    BACKGROUND = 2  # Kubernetes Events: informative, posted behind the work


class PrioritySlots:
    """A semaphore whose waiters are served by priority, then in order of arrival.

    In a burst of sessions the calls on a connection's critical path (creating its worker
    pod, claiming a warm one, creating its room, dispatching its job) should not wait behind
    bookkeeping (status writes, room checks) of sessions that are further along, and neither
    should wait behind Events: a freed slot goes to the oldest waiter of the most urgent
    priority that has one. Urgent calls are few per session, so the others are delayed, not
    starved, by a burst.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("at least one slot")
        self._free = slots
        self._queues: tuple[collections.deque[asyncio.Future[None]], ...] = tuple(
            collections.deque() for _ in Priority
        )

    def locked(self) -> bool:
        return self._free == 0

    def waiting(self) -> tuple[int, ...]:
        """Callers waiting for a slot, per priority (urgent first)."""
        return tuple(len(q) for q in self._queues)

    async def acquire(self, priority: Priority = Priority.NORMAL) -> None:
        if self._free > 0 and not any(self._queues[: priority + 1]):
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues[priority]
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over as the caller left: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
            raise

    def release(self) -> None:
        for queue in self._queues:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot goes straight to the waiter
                    return
        self._free += 1


@contextlib.asynccontextmanager
async def timed_slot(
    slots: PrioritySlots,
    call: str,
    observe: CallObserver | None,
    clock: Callable[[], float] = time.monotonic,
    priority: Priority = Priority.NORMAL,
) -> AsyncIterator[None]:
    """Hold a slot of `slots`; on leaving, `observe(call, seconds, ok)`, ok if nothing raised."""
    await slots.acquire(priority)
    try:
        started = clock()
        ok = False
        try:
            yield
            ok = True
        finally:
            if observe is not None:
                observe(call, clock() - started, ok)
    finally:
        slots.release()


class SharedFresh(Generic[K, T]):
    """One call serves every caller that asked while it was waiting to start.

    `get(key)` answers with the result of a call that started after `get()` was called (so
    never an answer older than the question) and that asked about `key`; callers that ask
    while a call runs share the next one, which asks about all their keys at once: with N
    sessions wanting the same kind of answer at once, one call goes out, not N, at most one
    runs at a time, and it asks only about what its callers asked. An error reaches every
    caller of that call.
    """

    def __init__(self, fetch: Callable[[frozenset[K]], Awaitable[T]]) -> None:
        self._fetch = fetch
        self._next: asyncio.Future[T] | None = None
        self._keys: set[K] = set()  # what the callers of the next call asked about
        self._runner: asyncio.Task[None] | None = None
        self.calls = 0  # calls made (for tests and metrics)

    async def get(self, key: K) -> T:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        self._keys.add(key)
        future = self._next
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while self._next is not None:
            future, self._next = self._next, None
            keys, self._keys = frozenset(self._keys), set()
            self.calls += 1
            try:
                result = await self._fetch(keys)
            except asyncio.CancelledError:
                future.cancel()
                if self._next is not None:
                    self._next.cancel()
                    self._next = None
                raise
            except Exception as exc:  # every waiter gets it; retrieved so nothing warns
                future.set_exception(exc)
                future.add_done_callback(lambda f: f.exception())
            else:
                future.set_result(result)

    async def aclose(self) -> None:
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
