"""The Letta agents a user may talk to: the gateway's only Letta client (httpx).

Letta has no notion of the gateway's users; every agent on the server is offered, or only
those carrying one of `LETTA_AGENT_TAGS` when that is set.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import httpx

from .errors import DependencyUnavailable

PAGE_SIZE = 100
MAX_AGENTS = 1000


@dataclasses.dataclass(frozen=True)
class Agent:
    id: str
    name: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


class AgentDirectory(Protocol):
    async def list_agents(self) -> list[Agent]: ...

    async def get_agent(self, agent_id: str) -> Agent | None: ...

    async def close(self) -> None: ...


class LettaAgents:
    """Agents on a Letta server. Raises DependencyUnavailable when Letta cannot answer."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        tags: tuple[str, ...] = (),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._base_url = base_url
        self._tags = frozenset(tags)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(10.0),
            transport=transport,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            resp = await self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(
                f"Letta at {self._base_url} is unreachable: {exc!r}"
            ) from None
        if resp.status_code >= 500:
            raise DependencyUnavailable(f"Letta at {self._base_url} answered {resp.status_code}")
        return resp

    def _offered(self, raw: dict[str, Any]) -> bool:
        return not self._tags or bool(self._tags & set(raw.get("tags") or ()))

    async def list_agents(self) -> list[Agent]:
        agents: list[Agent] = []
        after: str | None = None
        while len(agents) < MAX_AGENTS:
            params: dict[str, Any] = {"limit": PAGE_SIZE, "order": "asc"}
            if after:
                params["after"] = after
            if self._tags:
                params["tags"] = sorted(self._tags)
            resp = await self._get("/v1/agents/", params)
            if resp.status_code != 200:
                raise DependencyUnavailable(f"Letta agent list answered {resp.status_code}")
            page = resp.json()
            if not isinstance(page, list):
                raise DependencyUnavailable("Letta agent list: unexpected answer")
            agents += [_agent(raw) for raw in page if self._offered(raw)]
            if len(page) < PAGE_SIZE:
                break
            after = str(page[-1].get("id"))
        return sorted(agents, key=lambda a: (a.name.lower(), a.id))

    async def get_agent(self, agent_id: str) -> Agent | None:
        resp = await self._get(f"/v1/agents/{agent_id}")
        if resp.status_code in (400, 404, 422):  # 400/422: an id of the wrong shape
            return None
        if resp.status_code != 200:
            raise DependencyUnavailable(f"Letta agent lookup answered {resp.status_code}")
        raw = resp.json()
        return _agent(raw) if self._offered(raw) else None


def _agent(raw: dict[str, Any]) -> Agent:
    return Agent(id=str(raw["id"]), name=str(raw.get("name") or raw["id"]))
