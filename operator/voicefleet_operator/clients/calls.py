"""What each client does around every call: wait for a slot of its in-flight bound, time the call.

The bound (a semaphore per client) makes a burst of sessions queue instead of flooding a
dependency; the time is measured from when the call got its slot and goes to the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

CallObserver = Callable[[str, float, bool], None]  # (call, seconds, succeeded)


@contextlib.asynccontextmanager
async def timed_slot(
    slots: asyncio.Semaphore,
    call: str,
    observe: CallObserver | None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[None]:
    """Hold a slot of `slots`; on leaving, `observe(call, seconds, ok)`, ok if nothing raised."""
    async with slots:
        started = clock()
        ok = False
        try:
            yield
            ok = True
        finally:
            if observe is not None:
                observe(call, clock() - started, ok)
