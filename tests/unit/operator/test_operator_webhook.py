"""The webhook receiver: verified events mark their session; anything else changes nothing."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from livekit import api
from opfixtures import ENV

from voicefleet_operator.webhook import PATH, make_app

# The client fixture lives on the session loop (asyncio_default_fixture_loop_scope); so do the tests.
pytestmark = pytest.mark.asyncio(loop_scope="session")
KEY, SECRET = ENV["LIVEKIT_API_KEY"], ENV["LIVEKIT_API_SECRET"]


def signed(body: bytes, secret: str = SECRET) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return api.AccessToken(KEY, secret).with_sha256(digest).to_jwt()


def event(kind: str, room: str) -> bytes:
    return json.dumps({"event": kind, "id": "EV_1", "room": {"name": room}}).encode()


class Recorder:
    def __init__(self, known: bool = True) -> None:
        self.marks: list[tuple[str, str]] = []
        self.seen: list[tuple[str, str]] = []
        self.known = known

    async def mark(self, session: str, value: str) -> bool:
        self.marks.append((session, value))
        return self.known

    def observe(self, kind: str, result: str) -> None:
        self.seen.append((kind, result))


@pytest.fixture
async def client_and_recorder() -> AsyncIterator[tuple[TestClient, Recorder]]:
    rec = Recorder()
    receiver = api.WebhookReceiver(api.TokenVerifier(KEY, SECRET))
    client = TestClient(TestServer(make_app(receiver, rec.mark, rec.observe)))
    await client.start_server()
    try:
        yield client, rec
    finally:
        await client.close()


async def test_a_signed_participant_event_marks_its_session(
    client_and_recorder: tuple[TestClient, Recorder],
) -> None:
    client, rec = client_and_recorder
    body = event("participant_left", "vs-alice-agent66-3-bcdfg")
    resp = await client.post(PATH, data=body, headers={"Authorization": signed(body)})
    assert resp.status == 200
    assert rec.marks == [("alice-agent66", "participant_left/3/EV_1")]
    assert rec.seen == [("participant_left", "marked")]


@pytest.mark.parametrize("auth", ["", "not-a-jwt", "wrong-secret", "other-body"])
async def test_an_unverified_webhook_is_a_401_and_changes_nothing(
    client_and_recorder: tuple[TestClient, Recorder], auth: str
) -> None:
    client, rec = client_and_recorder
    body = event("room_finished", "vs-alice-agent66-3-bcdfg")
    header = {
        "": "",
        "not-a-jwt": "not-a-jwt",
        "wrong-secret": signed(body, "x" * 40),
        "other-body": signed(event("room_started", "vs-alice-agent66-3-bcdfg")),
    }[auth]
    resp = await client.post(PATH, data=body, headers={"Authorization": header})
    assert resp.status == 401
    assert rec.marks == []
    assert SECRET not in await resp.text()


async def test_events_of_other_rooms_and_kinds_are_acknowledged_and_ignored(
    client_and_recorder: tuple[TestClient, Recorder],
) -> None:
    client, rec = client_and_recorder
    for body in (
        event("participant_joined", "test-room"),
        event("track_published", "vs-alice-agent66-3-bcdfg"),
        event("room_started", "vs-alice-agent66-3-bcdfg"),  # the operator opened it itself
    ):
        resp = await client.post(PATH, data=body, headers={"Authorization": signed(body)})
        assert resp.status == 200
    assert rec.marks == []


async def test_an_oversized_body_is_refused(
    client_and_recorder: tuple[TestClient, Recorder],
) -> None:
    client, rec = client_and_recorder
    resp = await client.post(PATH, data=b"x" * (2 << 20), headers={"Authorization": "x"})
    assert resp.status == 413
    assert rec.marks == []
