"""The LiveKit webhook receiver under bad input (issue 10): unsigned, forged, expired,
tampered, replayed, oversized and malformed bodies are refused (401/413) or acknowledged
without effect; none reaches `mark_session`, none is a 500.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from livekit import api
from secprops import BOUNDED

from voicefleet_operator.webhook import MAX_BODY, PATH, RecordedBodies, make_app

pytestmark = pytest.mark.asyncio(loop_scope="session")
KEY, SECRET = "APIsecuritytest", "s" * 40
ROOM = "vs-alice-agent66-1-bcdfg"


def signed(
    body: bytes,
    *,
    key: str = KEY,
    secret: str = SECRET,
    ttl: datetime.timedelta | None = None,
) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = api.AccessToken(key, secret).with_sha256(digest)
    if ttl is not None:
        token = token.with_ttl(ttl)
    return token.to_jwt()


def event(kind: str = "participant_left", ev_id: str = "EV_1", room: str = ROOM) -> bytes:
    return json.dumps({"event": kind, "id": ev_id, "room": {"name": room}}).encode()


class Recorder:
    def __init__(self) -> None:
        self.marks: list[tuple[str, str]] = []
        self.results: list[str] = []
        self.fail_next = False

    async def mark(self, session: str, value: str) -> bool:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("API server unavailable")
        self.marks.append((session, value))
        return True

    def observe(self, kind: str, result: str) -> None:
        self.results.append(result)


@pytest.fixture
async def hook() -> AsyncIterator[tuple[TestClient, Recorder]]:
    rec = Recorder()
    receiver = api.WebhookReceiver(api.TokenVerifier(KEY, SECRET))
    client = TestClient(TestServer(make_app(receiver, rec.mark, rec.observe, RecordedBodies())))
    await client.start_server()
    try:
        yield client, rec
    finally:
        await client.close()


async def post(client: TestClient, body: bytes, auth: str | None) -> int:
    headers = {"Content-Type": "application/webhook+json"}
    if auth is not None:
        headers["Authorization"] = auth
    async with client.post(PATH, data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_unsigned_forged_expired_and_tampered_webhooks_are_401(
    hook: tuple[TestClient, Recorder],
) -> None:
    client, rec = hook
    body = event()
    expired = signed(body, ttl=datetime.timedelta(seconds=-120))
    for auth in [
        None,
        "",
        "Bearer ",
        signed(body, secret="f" * 40),  # forged: another secret
        signed(body, key="APIother"),  # another key
        expired,
        signed(event(ev_id="EV_other")),  # the signature of another body
        f"Bearer {signed(body)}x",
        "eyJhbGciOiJub25lIn0.eyJzaGEyNTYiOiIifQ.",  # alg none
        "Basic dXNlcjpwYXNz",
    ]:
        assert await post(client, body, auth) == 401, auth
    assert rec.marks == []
    assert set(rec.results) == {"unauthorized"}


async def test_signed_but_malformed_bodies_are_refused_and_change_nothing(
    hook: tuple[TestClient, Recorder],
) -> None:
    client, rec = hook
    for body in [
        b"",
        b"{",
        b"[]",
        b"null",
        b'{"event": 3}',
        b'{"event": "participant_left", "room": "not an object"}',
        b"\xff\xfe\x00garbage",
        b"[" * 5000 + b"]" * 5000,
        json.dumps({"event": "participant_left", "room": {"name": "x" * 10_000}}).encode(),
    ]:
        status = await post(client, body, signed(body))
        assert status in (200, 400, 401), (body[:40], status)
    assert rec.marks == []


async def test_oversized_bodies_are_413_with_or_without_content_length(
    hook: tuple[TestClient, Recorder],
) -> None:
    client, rec = hook
    big = b'{"event": "participant_left", "x": "' + b"a" * (MAX_BODY + 10) + b'"}'
    assert await post(client, big, signed(big)) == 413

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    async with client.post(PATH, data=chunks(), headers={"Authorization": signed(big)}) as resp:
        assert resp.status == 413
    assert rec.marks == []


async def test_a_valid_webhook_sent_in_chunks_is_read_whole(
    hook: tuple[TestClient, Recorder],
) -> None:
    """No Content-Length (chunked): the signature covers the whole body, so all of it is read."""
    client, rec = hook
    body = json.dumps(
        {"event": "participant_left", "id": "EV_chunked", "room": {"name": ROOM}, "pad": "p" * 300}
    ).encode()

    async def chunks() -> AsyncIterator[bytes]:
        import asyncio

        for i in range(0, len(body), 50):
            yield body[i : i + 50]
            await asyncio.sleep(0.002)  # the receiver sees the body arrive in pieces

    async with client.post(PATH, data=chunks(), headers={"Authorization": signed(body)}) as resp:
        assert resp.status == 200, await resp.text()
    assert rec.marks == [("alice-agent66", "participant_left/1/EV_chunked")]


async def test_a_replayed_webhook_changes_nothing(hook: tuple[TestClient, Recorder]) -> None:
    client, rec = hook
    first, second = event(ev_id="EV_A"), event("participant_joined", ev_id="EV_B")
    for body in (first, second, first, second, first):
        assert await post(client, body, signed(body)) == 200
    assert rec.marks == [
        ("alice-agent66", "participant_left/1/EV_A"),
        ("alice-agent66", "participant_joined/1/EV_B"),
    ]
    assert rec.results.count("replayed") == 3


async def test_a_webhook_not_recorded_is_not_taken_for_a_replay_on_retry(
    hook: tuple[TestClient, Recorder],
) -> None:
    """LiveKit retries after a 503: the retry must be recorded, not dropped as a duplicate."""
    client, rec = hook
    body = event(ev_id="EV_retry")
    rec.fail_next = True
    assert await post(client, body, signed(body)) == 503
    assert await post(client, body, signed(body)) == 200
    assert rec.marks == [("alice-agent66", "participant_left/1/EV_retry")]


async def test_recorded_bodies_forget_after_the_window_and_stay_bounded() -> None:
    now = [0.0]
    seen = RecordedBodies(window=10, limit=3, clock=lambda: now[0])
    for digest in "abcd":
        seen.add(digest)
    assert "a" not in seen and "d" in seen  # bounded: the oldest went
    now[0] = 11.0
    assert "d" not in seen


@BOUNDED
@given(
    body=st.binary(max_size=2048),
    auth=st.one_of(st.none(), st.text(max_size=200), st.sampled_from(["Bearer x", "a.b.c"])),
)
async def test_random_bodies_and_headers_never_mark_and_never_500(
    hook: tuple[TestClient, Recorder], body: bytes, auth: str | None
) -> None:
    client, rec = hook
    if auth is not None and not auth.isprintable():
        auth = auth.encode("unicode_escape").decode()
    status = await post(client, body, auth)
    assert status in (401, 413)
    assert rec.marks == []
