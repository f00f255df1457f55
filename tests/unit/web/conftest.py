"""Fixtures of the gateway's unit tests: the app over a fake store, operator and Letta."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from webfakes import (
    DEV_TOKEN,
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    FakeAgents,
    FakeOperator,
    FakeStore,
    MakeClient,
)

from voicefleet_web.app import create_app
from voicefleet_web.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>voicefleet</title>")
    (static / "app.js").write_text("console.log('hi')")
    return Settings(
        namespace="voicefleet",
        livekit_url="ws://127.0.0.1:7880",
        livekit_api_key=LIVEKIT_KEY,
        livekit_api_secret=LIVEKIT_SECRET,
        dev_token=DEV_TOKEN,
        dev_user="alice",
        join_token_ttl_seconds=120,
        ready_timeout_seconds=5.0,
        idle_timeout_seconds=5.0,
        max_connections_per_user=2,
        requests_per_minute=60,
        static_dir=static,
    )


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def operator(store: FakeStore) -> FakeOperator:
    return FakeOperator(store)


@pytest.fixture
def agents() -> FakeAgents:
    return FakeAgents()


@pytest_asyncio.fixture(loop_scope="session")
async def make_client(
    settings: Settings, store: FakeStore, agents: FakeAgents
) -> AsyncIterator[MakeClient]:
    """make_client(authenticator=None, server={runner kwargs}, **settings_overrides)."""
    clients: list[TestClient[Any, Any]] = []

    async def make(
        authenticator: Any = None,
        server: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> TestClient[Any, Any]:
        app = create_app(
            dataclasses.replace(settings, **overrides),
            store=store,
            agents=agents,
            authenticator=authenticator,
        )
        test_server = TestServer(app, host="127.0.0.1")
        await test_server.start_server(**(server or {}))  # runner options (access log)
        client: TestClient[Any, Any] = TestClient(test_server)
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def client(make_client: MakeClient, operator: FakeOperator) -> TestClient[Any, Any]:
    return await make_client()  # type: ignore[no-any-return]
