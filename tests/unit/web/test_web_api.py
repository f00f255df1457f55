"""The gateway's HTTP API over a fake Kubernetes (with a fake operator) and a fake Letta."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from webfakes import (
    AUTH,
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    FakeAgents,
    FakeOperator,
    FakeStore,
    MakeClient,
)

from voicefleet_web.naming import ANNOTATION_END_CONNECTION, session_name

pytestmark = pytest.mark.asyncio(loop_scope="session")
Client = TestClient[Any, Any]


async def assert_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error", "detail"}
    assert body["detail"]
    if code:
        assert body["error"] == code
    return dict(body)


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, LIVEKIT_SECRET, algorithms=["HS256"], issuer=LIVEKIT_KEY))


# -- authentication -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer wrong-token", "Bearer a.b.c"]
)
async def test_bad_or_missing_bearer_token_is_401(client: Client, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    resp = await client.get("/api/agents", headers=headers)
    await assert_error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_every_api_route_needs_a_token(client: Client) -> None:
    for method, path in [
        ("GET", "/api/agents"),
        ("POST", "/api/sessions"),
        ("GET", "/api/sessions/x"),
        ("DELETE", "/api/sessions/x/connection"),
    ]:
        await assert_error(await client.request(method, path), 401)


async def test_openapi_and_health_need_no_token(client: Client) -> None:
    resp = await client.get("/api/openapi.json")
    doc = await resp.json()
    assert resp.status == 200 and doc["openapi"].startswith("3.")
    assert {
        "/api/agents",
        "/api/sessions",
        "/api/sessions/{name}",
        "/api/sessions/{name}/connection",
    } <= set(doc["paths"])
    assert (await client.get("/healthz")).status == 200


async def test_someone_elses_session_is_403(
    client: Client,
    store: FakeStore,
    operator: FakeOperator,
) -> None:
    name = session_name("bob", "agent-66")
    await store.create(
        {
            "metadata": {"name": name},
            "spec": {"agentId": "agent-66", "userIdentity": "bob", "connection": 1},
        }
    )
    await assert_error(await client.get(f"/api/sessions/{name}", headers=AUTH), 403, "forbidden")
    await assert_error(await client.delete(f"/api/sessions/{name}/connection", headers=AUTH), 403)


# -- agents ---------------------------------------------------------------------------------
async def test_agents_are_listed_as_id_and_name(client: Client) -> None:
    resp = await client.get("/api/agents", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == [
        {"id": "agent-66", "name": "Agent_66"},
        {"id": "agent-7", "name": "Agent_7"},
    ]


async def test_letta_down_is_503(client: Client, agents: FakeAgents) -> None:
    agents.unavailable = True
    await assert_error(await client.get("/api/agents", headers=AUTH), 503, "dependency_unavailable")


# -- connect --------------------------------------------------------------------------------
async def test_connect_creates_the_session_and_returns_a_room_token(
    client: Client,
    store: FakeStore,
) -> None:
    resp = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    name = session_name("alice", "agent-66")
    assert body["session"] == name and body["connection"] == 1
    assert body["room"] == f"vs-{name}-1-bcdfg"
    assert body["livekitUrl"] == "ws://127.0.0.1:7880"
    spec = store.objects[name]["spec"]
    assert spec == {"agentId": "agent-66", "userIdentity": "alice", "connection": 1}


async def test_join_token_is_scoped_to_the_room_with_a_short_ttl(client: Client) -> None:
    body = await (
        await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    ).json()
    claims = claims_of(body["token"])
    assert claims["sub"] == "alice"
    assert claims["video"]["room"] == body["room"]
    assert claims["video"]["roomJoin"] is True
    assert not {"roomAdmin", "roomCreate", "roomList", "roomRecord", "agent"} & {
        k for k, v in claims["video"].items() if v
    }
    assert 0 < claims["exp"] - time.time() <= 120 + 5


async def test_identity_comes_from_the_subject_not_the_body(
    client: Client,
    store: FakeStore,
) -> None:
    resp = await client.post(
        "/api/sessions",
        headers=AUTH,
        json={"agentId": "agent-66", "userIdentity": "mallory", "identity": "mallory"},
    )
    body = await resp.json()
    assert claims_of(body["token"])["sub"] == "alice"
    assert store.objects[body["session"]]["spec"]["userIdentity"] == "alice"


async def test_reconnect_raises_the_connection_and_gets_a_new_room(
    client: Client,
    store: FakeStore,
) -> None:
    rooms = []
    for expected in (1, 2, 3):
        body = await (
            await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
        ).json()
        assert body["connection"] == expected
        rooms.append(body["room"])
    assert len(set(rooms)) == 3
    assert store.objects[session_name("alice", "agent-66")]["spec"]["connection"] == 3


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '"agent-66"',
        "{}",
        '{"agentId": 66}',
        '{"agentId": ""}',
        '{"agentId": "../etc/passwd"}',
        '{"agentId": "a b"}',
        '{"agentId": "' + "a" * 129 + '"}',
        "[" * 8000,
        '{"agentId": NaN}',
        b'{"agentId": "\xff"}',
    ],
)
async def test_bad_connect_body_is_400(client: Client, body: str | bytes) -> None:
    resp = await client.post(
        "/api/sessions", data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    await assert_error(resp, 400, "bad_request")


async def test_non_json_content_type_is_415(client: Client) -> None:
    resp = await client.post(
        "/api/sessions",
        data="agentId=x",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    await assert_error(resp, 415)


async def test_oversized_body_is_413(client: Client) -> None:
    resp = await client.post(
        "/api/sessions",
        data='{"agentId": "' + "a" * 20000 + '"}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    await assert_error(resp, 413)


async def test_unknown_agent_is_404(client: Client, store: FakeStore) -> None:
    resp = await client.post("/api/sessions", json={"agentId": "agent-404"}, headers=AUTH)
    await assert_error(resp, 404, "not_found")
    assert store.objects == {}


async def test_capacity_exceeded_is_429(
    make_client: MakeClient,
    store: FakeStore,
) -> None:
    FakeOperator(store, mode="fail", reason="CapacityExceeded")
    client = await make_client()
    resp = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    await assert_error(resp, 429, "capacity_exceeded")
    assert "Retry-After" in resp.headers


async def test_other_failure_is_503_with_the_reason(
    make_client: MakeClient,
    store: FakeStore,
) -> None:
    FakeOperator(store, mode="fail", reason="ImagePullFailed")
    client = await make_client()
    resp = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    body = await assert_error(resp, 503, "connection_failed")
    assert "ImagePullFailed" in body["detail"]


async def test_not_ready_in_time_is_504(make_client: MakeClient, store: FakeStore) -> None:
    FakeOperator(store, mode="never")
    client = await make_client(ready_timeout_seconds=0.3)
    started = time.monotonic()
    resp = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    body = await assert_error(resp, 504, "timeout")
    assert "Connecting" in body["detail"]
    assert time.monotonic() - started < 3


async def test_kubernetes_down_is_503(client: Client, store: FakeStore) -> None:
    store.unavailable = True
    resp = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    await assert_error(resp, 503, "dependency_unavailable")


async def test_a_ready_status_of_the_previous_connection_is_not_taken_for_the_new_one(
    make_client: MakeClient,
    store: FakeStore,
) -> None:
    operator = FakeOperator(store)
    client = await make_client(ready_timeout_seconds=0.3)
    first = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    assert first.status == 200
    operator.mode = "never"
    # connection 1 is still Ready in status: connection 2 must wait, then time out
    operator.store.operator = None
    resp = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    await assert_error(resp, 504)


async def test_a_dropped_or_expired_watch_is_resumed(
    client: Client,
    store: FakeStore,
) -> None:
    from voicefleet_web.kube import KubeApiError, KubeUnavailable

    store.watch_failures = [KubeUnavailable("stream reset"), KubeApiError(410, "Expired", "old")]
    resp = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    assert resp.status == 200, await resp.text()


async def test_a_watch_refused_is_503(client: Client, store: FakeStore) -> None:
    from voicefleet_web.kube import KubeApiError

    FakeOperator(store, mode="never")
    store.watch_failures = [KubeApiError(403, "Forbidden", "no watch for you")]
    resp = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    await assert_error(resp, 503)


# -- limits ---------------------------------------------------------------------------------
async def test_requests_per_minute_limit_is_429(
    make_client: MakeClient,
    operator: FakeOperator,
) -> None:
    client = await make_client(requests_per_minute=3)
    for _ in range(3):
        assert (await client.get("/api/agents", headers=AUTH)).status == 200
    resp = await client.get("/api/agents", headers=AUTH)
    await assert_error(resp, 429, "too_many_requests")
    assert int(resp.headers["Retry-After"]) >= 1


async def test_concurrent_connections_limit_is_429(
    make_client: MakeClient,
    operator: FakeOperator,
    agents: FakeAgents,
) -> None:
    client = await make_client(max_connections_per_user=1)
    first = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    assert first.status == 200
    second = await client.post("/api/sessions", json={"agentId": "agent-7"}, headers=AUTH)
    await assert_error(second, 429, "too_many_requests")
    # reconnecting the live session replaces its connection: not limited
    again = await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    assert again.status == 200


async def test_two_simultaneous_connects_cannot_both_pass_a_limit_of_one(
    make_client: MakeClient,
    operator: FakeOperator,
) -> None:
    client = await make_client(max_connections_per_user=1)
    answers = await asyncio.gather(
        client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH),
        client.post("/api/sessions", json={"agentId": "agent-7"}, headers=AUTH),
    )
    assert sorted(r.status for r in answers) == [200, 429]


# -- sessions and disconnect ----------------------------------------------------------------
async def test_get_session_shows_phase_and_connection(client: Client) -> None:
    body = await (
        await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    ).json()
    resp = await client.get(f"/api/sessions/{body['session']}", headers=AUTH)
    assert resp.status == 200
    info = await resp.json()
    assert info["phase"] == "Ready"
    assert info["connection"]["id"] == 1 and info["connection"]["room"] == body["room"]
    assert info["conditions"][0]["type"] == "Ready"
    assert "token" not in info


async def test_unknown_session_is_404_and_malformed_name_is_400(client: Client) -> None:
    await assert_error(await client.get("/api/sessions/nobody-here", headers=AUTH), 404)
    await assert_error(await client.get("/api/sessions/Bad_Name", headers=AUTH), 400)
    await assert_error(await client.delete("/api/sessions/nobody/connection", headers=AUTH), 404)


async def test_disconnect_asks_the_operator_and_waits_for_idle(
    client: Client,
    store: FakeStore,
) -> None:
    body = await (
        await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    ).json()
    resp = await client.delete(f"/api/sessions/{body['session']}/connection", headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "session": body["session"],
        "connection": 1,
        "phase": "Idle",
        "endReason": "UserLeft",
    }
    annotations = store.objects[body["session"]]["metadata"]["annotations"]
    assert annotations[ANNOTATION_END_CONNECTION] == "1"


async def test_disconnect_of_an_ended_connection_answers_at_once(
    client: Client,
    store: FakeStore,
) -> None:
    body = await (
        await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    ).json()
    url = f"/api/sessions/{body['session']}/connection"
    assert (await client.delete(url, headers=AUTH)).status == 200
    patches = len(store.patches)
    again = await client.delete(url, headers=AUTH)
    assert again.status == 200 and len(store.patches) == patches


async def test_disconnect_not_honoured_in_time_is_504(
    make_client: MakeClient,
    store: FakeStore,
) -> None:
    FakeOperator(store, honour_end=False)
    client = await make_client(idle_timeout_seconds=0.3)
    body = await (
        await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    ).json()
    resp = await client.delete(f"/api/sessions/{body['session']}/connection", headers=AUTH)
    await assert_error(resp, 504, "timeout")


async def test_reconnect_after_disconnect_gets_connection_two(client: Client) -> None:
    for expected in (1, 2):
        body = await (
            await client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
        ).json()
        assert body["connection"] == expected
        resp = await client.delete(f"/api/sessions/{body['session']}/connection", headers=AUTH)
        assert (await resp.json())["connection"] == expected


async def test_session_deleted_while_connecting_is_404(
    make_client: MakeClient,
    store: FakeStore,
) -> None:
    FakeOperator(store, mode="never")
    client = await make_client()
    task = asyncio.ensure_future(
        client.post("/api/sessions", json={"agentId": "agent-66"}, headers=AUTH)
    )
    name = session_name("alice", "agent-66")
    while name not in store.objects:
        await store.changed.wait()
    await store.delete(name)
    await assert_error(await task, 404)


# -- other routes -------------------------------------------------------------------------
async def test_every_api_route_is_in_the_openapi_document(client: Client) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in client.app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/")
        and r.method not in ("*", "HEAD")
        and r.resource.canonical != "/api/openapi.json"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    for ops in doc["paths"].values():
        for op in ops.values():
            for status, answer in op["responses"].items():
                if int(status) >= 400:
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}


async def test_unknown_api_route_and_wrong_method_are_json(client: Client) -> None:
    await assert_error(await client.get("/api/nothing", headers=AUTH), 404)
    resp = await client.put("/api/agents", headers=AUTH)
    assert resp.status in (404, 405)
    await assert_error(resp, resp.status)


async def test_index_is_served_with_a_strict_csp(client: Client) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert (await client.get("/static/app.js")).status == 200


async def test_metrics_count_requests_by_route(client: Client) -> None:
    await client.get("/api/agents", headers=AUTH)
    text = await (await client.get("/metrics")).text()
    assert (
        'voicefleet_gateway_requests_total{method="GET",route="/api/agents",status="200"}' in text
    )
