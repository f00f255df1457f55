"""The worker's only door to Letta (the only module that imports letta_client).

`LettaMemory` is one connection's view of one Letta agent: it loads the agent and its
memory blocks, opens a fresh conversation when the server has conversations (memory
blocks shared with the agent, context of its own), sends each user turn and streams the
reply. Every request runs in a task this object owns, so a reply the listener stops
reading (the user interrupted, the room went away) still completes on the server:
`flush` awaits those pending writes within a bound at job end; `aclose` ends the rest.

`check_letta` is the start-up probe behind readiness.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx
from letta_client import APIStatusError as _LettaStatusError
from letta_client import AsyncLetta
from letta_client import LettaError as _LettaClientError
from letta_client import NotFoundError as _LettaNotFound
from letta_client.types.agents import AssistantMessage
from letta_client.types.agents.letta_streaming_response import (
    LettaErrorMessage,
    LettaStopReason,
)

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 60.0
# Stop reasons after which a turn without any reply text is a failure worth an apology.
_FAILED_STOPS = frozenset(
    {
        "error",
        "llm_api_error",
        "invalid_llm_response",
        "invalid_tool_call",
        "cancelled",
        "insufficient_credits",
        "context_window_overflow_in_system_prompt",
        "max_tokens_exceeded",
    }
)


class LettaUnavailable(Exception):
    """Letta could not serve a request; the message says which request and why."""


@dataclass(frozen=True)
class MemorySnapshot:
    """What the job learned about its Letta agent when it opened (no block contents: logs)."""

    agent_id: str
    agent_name: str
    block_labels: tuple[str, ...]
    conversation_id: str | None  # None: the server has no conversations; the agent's own


def make_client(
    base_url: str,
    api_key: str | None,
    *,
    max_retries: int,
    http_client: httpx.AsyncClient | None = None,
) -> AsyncLetta:
    return AsyncLetta(
        base_url=base_url,
        api_key=api_key,
        timeout=REQUEST_TIMEOUT_SECONDS,
        max_retries=max_retries,
        http_client=http_client,
    )


async def check_letta(
    base_url: str,
    api_key: str | None,
    *,
    within: float = 5.0,
    http_client: httpx.AsyncClient | None = None,
) -> str:
    """Ask Letta's health endpoint; return its version or raise `LettaUnavailable`."""
    client = make_client(base_url, api_key, max_retries=0, http_client=http_client)
    try:
        health = await client.health(timeout=within)
        return str(health.version)
    except _LettaClientError as exc:
        raise LettaUnavailable(f"Letta at {base_url} is unreachable: {_describe(exc)}") from None
    finally:
        await client.close()


class LettaMemory:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        agent_id: str,
        *,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._base_url = base_url
        self._agent_id = agent_id
        # Loading may retry; sending never does: a retried turn would enter memory twice.
        self._client = make_client(base_url, api_key, max_retries=2, http_client=http_client)
        self._send_client = self._client.with_options(max_retries=0)
        self._snapshot: MemorySnapshot | None = None
        self._open_lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def snapshot(self) -> MemorySnapshot | None:
        return self._snapshot

    @property
    def pending_writes(self) -> int:
        return len(self._pending)

    async def open(self) -> MemorySnapshot:
        """Load the agent and its memory blocks; start this connection's conversation."""
        async with self._open_lock:
            if self._snapshot is not None:
                return self._snapshot
            try:
                agent = await self._client.agents.retrieve(self._agent_id, include=["agent.blocks"])
                conversation_id: str | None
                try:
                    conversation = await self._client.conversations.create(agent_id=self._agent_id)
                    conversation_id = conversation.id
                except _LettaStatusError as exc:
                    if exc.status_code not in (404, 405, 501):
                        raise
                    log.info(
                        "Letta has no conversations; using agent %s's own context", self._agent_id
                    )
                    conversation_id = None
            except _LettaNotFound:
                raise LettaUnavailable(
                    f"Letta agent {self._agent_id} does not exist at {self._base_url}"
                ) from None
            except _LettaClientError as exc:
                raise LettaUnavailable(
                    f"loading Letta agent {self._agent_id}: {_describe(exc)}"
                ) from None
            self._snapshot = MemorySnapshot(
                agent_id=agent.id,
                agent_name=agent.name,
                block_labels=tuple(block.label or "" for block in agent.blocks or []),
                conversation_id=conversation_id,
            )
            return self._snapshot

    async def send(self, text: str) -> AsyncGenerator[str, None]:
        """Send one user turn; yield the reply text as it streams.

        Raises `LettaUnavailable` (possibly after some text) when Letta fails.
        """
        if self._closing:
            raise LettaUnavailable("the job is ending: no new turns are sent to Letta")
        replies: asyncio.Queue[str | LettaUnavailable | None] = asyncio.Queue()
        task = asyncio.create_task(self._run_turn(text, replies), name="letta-turn")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        while True:
            item = await replies.get()
            if item is None:
                return
            if isinstance(item, LettaUnavailable):
                raise item
            yield item

    async def _run_turn(self, text: str, replies: asyncio.Queue[Any]) -> None:
        started = time.monotonic()
        produced = False
        try:
            snapshot = await self.open()
            if snapshot.conversation_id is not None:
                stream = await self._send_client.conversations.messages.create(
                    snapshot.conversation_id, input=text, stream_tokens=True
                )
            else:
                stream = await self._send_client.agents.messages.stream(
                    self._agent_id, input=text, stream_tokens=True
                )
            async for event in stream:
                if isinstance(event, AssistantMessage):
                    delta = _content_text(event.content)
                    if delta:
                        produced = True
                        replies.put_nowait(delta)
                elif isinstance(event, LettaErrorMessage):
                    raise LettaUnavailable(f"Letta error {event.error_type}: {event.message}")
                elif (
                    isinstance(event, LettaStopReason)
                    and event.stop_reason in _FAILED_STOPS
                    and not produced
                ):
                    raise LettaUnavailable(f"Letta stopped the turn: {event.stop_reason}")
        except LettaUnavailable as exc:
            replies.put_nowait(exc)
        except _LettaClientError as exc:
            replies.put_nowait(LettaUnavailable(f"sending a turn to Letta: {_describe(exc)}"))
        except asyncio.CancelledError:
            replies.put_nowait(LettaUnavailable("the Letta request was abandoned"))
            raise
        else:
            replies.put_nowait(None)
        finally:
            log.debug("Letta turn finished in %.2f s", time.monotonic() - started)

    async def flush(self, within: float) -> int:
        """Refuse new turns; wait up to `within` s for pending writes. Return how many were cut."""
        self._closing = True
        pending = set(self._pending)
        if not pending:
            return 0
        log.info("flushing %d pending Letta write(s) (bound %.1f s)", len(pending), within)
        _, late = await asyncio.wait(pending, timeout=within)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            log.warning(
                "%d Letta write(s) did not finish within %.1f s; abandoned", len(late), within
            )
        return len(late)

    async def aclose(self) -> None:
        self._closing = True
        late = set(self._pending)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        await self._client.close()


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(getattr(part, "text", "") or "" for part in content)
    return ""


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name} (HTTP {status})" if status else f"{name}: {exc}"
