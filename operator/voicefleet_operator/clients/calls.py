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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
CallObserver = Callable[[str, float, bool], None]  # (call, seconds, succeeded)


class PrioritySlots:
    """A semaphore whose urgent waiters go first.

    In a burst of sessions the calls on a connection's critical path (creating its worker
    pod, claiming a warm one, creating its room, dispatching its job) should not wait behind
    bookkeeping (status writes, room checks, listings) of sessions that are further along:
    a freed slot goes to the oldest urgent waiter, else to the oldest other one. Urgent
    calls are few per session, so the others are delayed, never starved, by a burst.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("at least one slot")
        self._free = slots
        self._urgent: collections.deque[asyncio.Future[None]] = collections.deque()
        self._normal: collections.deque[asyncio.Future[None]] = collections.deque()

    def locked(self) -> bool:
        return self._free == 0

    def waiting(self) -> tuple[int, int]:
        """(urgent, other) callers waiting for a slot."""
        return len(self._urgent), len(self._normal)

    async def acquire(self, urgent: bool = False) -> None:
        if self._free > 0 and not self._urgent and (urgent or not self._normal):
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._normal
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
        for queue in (self._urgent, self._normal):
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
    urgent: bool = False,
) -> AsyncIterator[None]:
    """Hold a slot of `slots`; on leaving, `observe(call, seconds, ok)`, ok if nothing raised."""
    await slots.acquire(urgent)
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


class SharedFresh(Generic[T]):
    """One call serves every caller that asked while it was waiting to start.

    `get()` answers with the result of a call that started after `get()` was called (so never
    an answer older than the question), and callers that ask while a call runs share the next
    one: with N sessions wanting the same listing at once, one call goes out, not N, and at
    most one runs at a time. An error reaches every caller of that call.
    """

    def __init__(self, fetch: Callable[[], Awaitable[T]]) -> None:
        self._fetch = fetch
        self._next: asyncio.Future[T] | None = None
        self._runner: asyncio.Task[None] | None = None
        self.calls = 0  # calls made (for tests and metrics)

    async def get(self) -> T:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        future = self._next
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while self._next is not None:
            future, self._next = self._next, None
            self.calls += 1
            try:
                result = await self._fetch()
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
