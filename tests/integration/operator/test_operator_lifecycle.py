"""SPEC.md rules 1-7 on the real stack: API server, scheduler, GC, kwok nodes, LiveKit server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from livekit import api, rtc
from opit import Kube, OperatorProcess

from voicefleet_operator.clients.livekit import LiveKitClient
from voicefleet_operator.manifests import RoomRequest

pytestmark = pytest.mark.integration


# -- helpers ------------------------------------------------------------------------------------
def session_obj(kube: Kube, name: str, agent_id: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "voicefleet.dev/v1alpha1",
        "kind": "VoiceSession",
        "metadata": {"name": name, "namespace": kube.namespace},
        "spec": {"agentId": agent_id, "userIdentity": "alice", **spec},
    }


async def wait_for(
    what: str, check: Callable[[], Any], within: float = 40.0, every: float = 0.25
) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {within} s waiting for {what} (last: {last!r})")


def status(kube: Kube, name: str) -> dict[str, Any]:
    obj = kube.get("voicesession", name) or {}
    return dict(obj.get("status") or {})


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def live_pods(kube: Kube, name: str) -> list[dict[str, Any]]:
    return kube.pods(name)


@asynccontextmanager
async def livekit(env: dict[str, str]) -> AsyncIterator[api.LiveKitAPI]:
    lk = api.LiveKitAPI(
        env["LIVEKIT_URL"].replace("ws://", "http://"),
        env["LIVEKIT_API_KEY"],
        env["LIVEKIT_API_SECRET"],
    )
    try:
        yield lk
    finally:
        await lk.aclose()


async def room_exists(env: dict[str, str], room: str) -> bool:
    async with livekit(env) as lk:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
        return any(r.name == room for r in rooms.rooms)


@asynccontextmanager
async def participant(
    env: dict[str, str], room: str, identity: str, agent: bool = False
) -> AsyncIterator[rtc.Room]:
    """A real LiveKit participant in `room` (an agent by participant kind when `agent`)."""
    grants = api.VideoGrants(room_join=True, room=room, agent=agent or None)
    token = (
        api.AccessToken(env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
        .with_identity(identity)
        .with_grants(grants)
    )
    if agent:
        token = token.with_kind("agent")
    lk_room = rtc.Room()
    await lk_room.connect(env["LIVEKIT_URL"], token.to_jwt())
    try:
        yield lk_room
    finally:
        await lk_room.disconnect()


async def started(kube: Kube, name: str, dispatched: bool = True) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        st = status(kube, name)
        conn = st.get("connection") or {}
        return (
            st
            if conn.get("room") and conn.get("pod") and (conn.get("dispatchedAt") or not dispatched)
            else None
        )

    return dict(await wait_for(f"{name} to get a room, a pod and a dispatch", ready))


async def ended(kube: Kube, name: str, within: float = 40.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        st = status(kube, name)
        return st if (st.get("connection") or {}).get("endedAt") else None

    return dict(await wait_for(f"{name}'s connection to end", done, within=within))


# -- rule 1 ---------------------------------------------------------------------------------------
async def test_apply_gets_a_room_and_a_worker_dispatched_by_pod_name(
    stack_env: dict[str, str],
    kube: Kube,
    operator: OperatorProcess | None,
    session_name: str,
    agent_id: str,
) -> None:
    kube.apply(session_obj(kube, session_name, agent_id))
    st = await started(kube, session_name)
    conn = st["connection"]
    assert conn["room"].startswith(f"vs-{session_name}-1-") and st["connectionsTotal"] == 1
    (pod,) = live_pods(kube, session_name)
    assert pod["metadata"]["name"] == conn["pod"]
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/name": "voicefleet-worker",
        "app.kubernetes.io/managed-by": "voicefleet-operator",
        "voicefleet.dev/session": session_name,
        "voicefleet.dev/connection": "1",
    }
    assert (
        pod["metadata"]["ownerReferences"][0]["uid"]
        == kube.get("voicesession", session_name)["metadata"]["uid"]
    )
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert stack_env["LIVEKIT_API_SECRET"] not in json.dumps(pod)
    assert condition(st, "WorkerReady")["status"] == "True"
    assert condition(st, "RoomReady")["status"] == "True"
    assert st["phase"] == "Connecting"
    async with livekit(stack_env) as lk:
        # LiveKit adds its own automatic dispatch (agent name ""), which named workers never take.
        (dispatch,) = [
            d for d in await lk.agent_dispatch.list_dispatch(conn["room"]) if d.agent_name
        ]
        assert dispatch.agent_name == conn["pod"]
        assert json.loads(dispatch.metadata) == {
            "session": f"{kube.namespace}/{session_name}",
            "agentId": agent_id,
            "connection": 1,
            "userIdentity": "alice",
        }
    reasons = {e["reason"] for e in kube.events(session_name)}
    assert {"ConnectionStarted", "RoomCreated", "Dispatched"} <= reasons


# -- rules 2, 5, 7: agent joins, user joins and leaves (no webhook reaches this operator) -----------
async def test_user_leaving_tears_down_room_and_worker_without_webhooks(
    stack_env: dict[str, str],
    kube: Kube,
    operator: OperatorProcess | None,
    session_name: str,
    agent_id: str,
) -> None:
    kube.apply(session_obj(kube, session_name, agent_id))
    conn = (await started(kube, session_name))["connection"]
    async with participant(stack_env, conn["room"], f"agent-{conn['pod']}", agent=True):
        await wait_for("phase Ready", lambda: status(kube, session_name).get("phase") == "Ready")
        async with participant(stack_env, conn["room"], "alice"):
            await wait_for(
                "UserConnected",
                lambda: (
                    condition(status(kube, session_name), "UserConnected").get("status") == "True"
                ),
            )
        st = await ended(kube, session_name)
    assert st["phase"] == "Idle" and st["connection"]["endReason"] == "UserLeft"
    assert condition(st, "Ready")["reason"] == "ConnectionEnded"
    assert live_pods(kube, session_name) == []
    assert not await room_exists(stack_env, conn["room"])


# -- rules 2, 3: reconnect, superseding, one worker ---------------------------------------------------
async def test_connection_bump_gets_a_fresh_room_and_a_fresh_worker(
    stack_env: dict[str, str],
    kube: Kube,
    operator: OperatorProcess | None,
    session_name: str,
    agent_id: str,
) -> None:
    kube.apply(session_obj(kube, session_name, agent_id))
    first = (await started(kube, session_name))["connection"]
    kube.patch_session(session_name, {"spec": {"connection": 2}})

    def second() -> dict[str, Any] | None:
        conn = status(kube, session_name).get("connection") or {}
        return conn if conn.get("id") == 2 and conn.get("dispatchedAt") else None

    conn = await wait_for("connection 2 dispatched", second)
    assert conn["room"] != first["room"] and conn["pod"] != first["pod"]
    assert [p["metadata"]["name"] for p in live_pods(kube, session_name)] == [conn["pod"]]
    assert not await room_exists(stack_env, first["room"])
    assert status(kube, session_name)["connectionsTotal"] == 2


async def test_a_pod_name_taken_by_another_sessions_pod_is_named_anew(
    kube: Kube, operator: OperatorProcess | None, session_name: str, agent_id: str
) -> None:
    """Pod names are derived from the session's uid, so two sessions can meet on one (a
    1,000-session burst once left a session waiting on a pod that was not its own). A pod
    of another session holds the name connection 2 would get: connection 2 gets a worker
    under another name, and the other session's pod is left alone."""
    from voicefleet_operator import naming

    kube.apply(session_obj(kube, session_name, agent_id))
    await started(kube, session_name)
    uid = (kube.get("voicesession", session_name) or {})["metadata"]["uid"]
    met = naming.pod_name(naming.derived_suffix(uid, "pod", 2, 0))
    other = f"{session_name}-other"
    decoy = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": met,
            "namespace": kube.namespace,
            "labels": naming.worker_labels(other, 1),
        },
        # Never scheduled: only its name matters.
        "spec": {
            "nodeSelector": {"voicefleet.dev/test": "nowhere"},
            "containers": [{"name": "worker", "image": "voicefleet-worker:none"}],
        },
    }
    kube.apply(decoy)
    try:
        kube.patch_session(session_name, {"spec": {"connection": 2}})

        def second() -> dict[str, Any] | None:
            conn = status(kube, session_name).get("connection") or {}
            return conn if conn.get("id") == 2 and conn.get("dispatchedAt") else None

        conn = await wait_for("connection 2 dispatched", second)
        assert conn["pod"] != met
        assert [p["metadata"]["name"] for p in live_pods(kube, session_name)] == [conn["pod"]]
        still = kube.get("pod", met)
        assert still is not None and not still["metadata"].get("deletionTimestamp")
        assert still["metadata"]["labels"]["voicefleet.dev/session"] == other
    finally:
        kube.run("-n", kube.namespace, "delete", "pod", met, "--ignore-not-found", "--wait=false")


async def test_rapid_double_bump_never_runs_two_workers(
    kube: Kube, operator: OperatorProcess | None, session_name: str, agent_id: str
) -> None:
    kube.apply(session_obj(kube, session_name, agent_id))
    await started(kube, session_name)
    kube.patch_session(session_name, {"spec": {"connection": 2}})
    kube.patch_session(session_name, {"spec": {"connection": 3}})
    most = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        most = max(most, len(live_pods(kube, session_name)))
        conn = status(kube, session_name).get("connection") or {}
        if conn.get("id") == 3 and conn.get("dispatchedAt"):
            break
        await asyncio.sleep(0.1)
    assert most <= 1, "two worker pods existed at once for one session"
    st = status(kube, session_name)
    assert st["connection"]["id"] == 3 and st["connectionsTotal"] == 2
    (pod,) = live_pods(kube, session_name)
    assert pod["metadata"]["labels"]["voicefleet.dev/connection"] == "3"


async def test_second_session_for_a_busy_agent_waits_until_it_is_free(
    kube: Kube, operator: OperatorProcess | None, session_name: str, agent_id: str
) -> None:
    other = f"{session_name}-b"
    try:
        kube.apply(session_obj(kube, session_name, agent_id))
        await started(kube, session_name)
        kube.apply(session_obj(kube, other, agent_id))
        await wait_for(
            "AgentBusy",
            lambda: condition(status(kube, other), "Ready").get("reason") == "AgentBusy",
        )
        assert status(kube, other)["phase"] == "Connecting" and live_pods(kube, other) == []
        kube.delete_session(session_name, wait=True)
        await started(kube, other)
    finally:
        kube.delete_session(other, wait=True)


# -- rule 2: join timeout --------------------------------------------------------------------------
async def test_join_timeout_without_an_agent_fails_and_cleans_up(
    stack_env: dict[str, str],
    kube: Kube,
    operator: OperatorProcess | None,
    session_name: str,
    agent_id: str,
) -> None:
    kube.apply(
        session_obj(kube, session_name, agent_id, joinTimeoutSeconds=8, maxDurationSeconds=60)
    )
    room = (await started(kube, session_name, dispatched=False))["connection"]["room"]
    st = await ended(kube, session_name, within=30)
    assert st["connection"]["endReason"] == "JoinTimeout" and st["phase"] == "Failed"
    # Why it could not be served depends on how far it got in 8 s on a loaded machine.
    assert condition(st, "Ready")["reason"] in {"AgentNotJoined", "PodNotReady", "PodPending"}
    assert live_pods(kube, session_name) == [] and not await room_exists(stack_env, room)


async def test_an_unschedulable_worker_fails_fast_with_the_reason(
    stack_env: dict[str, str],
    kube: Kube,
    operator: OperatorProcess | None,
    session_name: str,
    agent_id: str,
) -> None:
    """No node can hold the worker: Failed/Unschedulable with the scheduler's words, long
    before the join timeout, and nothing left behind (not a silent wait)."""
    huge = {"requests": {"cpu": "4000", "memory": "1Gi"}, "limits": {"cpu": "4000"}}
    kube.apply(
        session_obj(
            kube, session_name, agent_id, joinTimeoutSeconds=600, worker={"resources": huge}
        )
    )
    room = (await started(kube, session_name, dispatched=False))["connection"]["room"]
    st = await ended(kube, session_name, within=60)
    assert st["phase"] == "Failed" and st["connection"]["endReason"] == "WorkerFailed"
    ready = condition(st, "Ready")
    assert ready["reason"] == "Unschedulable" and "cpu" in ready["message"].lower()
    assert live_pods(kube, session_name) == [] and not await room_exists(stack_env, room)


# -- rule 4: deletion ---------------------------------------------------------------------------------
async def test_delete_leaves_no_pod_no_room_no_session(
    stack_env: dict[str, str],
    kube: Kube,
    operator: OperatorProcess | None,
    session_name: str,
    agent_id: str,
) -> None:
    # The API server sets the finalizer at create (manifests/admission.yaml, applied by `up`):
    # the created object carries it before any operator has seen it.
    created = kube.run(
        "create",
        "-o",
        "json",
        "-f",
        "-",
        stdin=json.dumps(session_obj(kube, session_name, agent_id)),
    )
    assert json.loads(created.stdout)["metadata"]["finalizers"] == ["voicefleet.dev/teardown"]
    conn = (await started(kube, session_name))["connection"]
    kube.delete_session(session_name)
    await wait_for("the session to be gone", lambda: kube.get("voicesession", session_name) is None)
    assert live_pods(kube, session_name) == []
    assert not await room_exists(stack_env, conn["room"])


# -- rule 6: bad specs ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"userIdentity": "alice"}, "agentId"),
        ({"agentId": "agent 1", "userIdentity": "alice"}, "agentId"),
        ({"agentId": "agent-1", "userIdentity": "alice", "connection": 0}, "connection"),
        (
            {
                "agentId": "agent-1",
                "userIdentity": "alice",
                "joinTimeoutSeconds": 900,
                "maxDurationSeconds": 600,
            },
            "joinTimeoutSeconds",
        ),
        (
            {
                "agentId": "agent-1",
                "userIdentity": "alice",
                "worker": {"env": [{"name": "LIVEKIT_API_SECRET"}]},
            },
            "reserved",
        ),
    ],
)
def test_bad_specs_are_refused_by_the_api_server(
    kube: Kube, spec: dict[str, Any], message: str
) -> None:
    obj = {
        "apiVersion": "voicefleet.dev/v1alpha1",
        "kind": "VoiceSession",
        "metadata": {"name": "it-bad", "namespace": kube.namespace},
        "spec": spec,
    }
    result = kube.apply(obj, check=False)
    assert result.returncode != 0 and message in result.stderr


async def test_lowering_the_connection_is_refused(
    kube: Kube, operator: OperatorProcess | None, session_name: str, agent_id: str
) -> None:
    kube.apply(session_obj(kube, session_name, agent_id, connection=2))
    result = kube.run(
        "-n",
        kube.namespace,
        "patch",
        "voicesession",
        session_name,
        "--type",
        "merge",
        "-p",
        '{"spec":{"connection":1}}',
        check=False,
    )
    assert result.returncode != 0 and "may only grow" in result.stderr


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


# -- webhooks ---------------------------------------------------------------------------------------------
def _post(url: str, body: bytes, auth: str) -> int:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": auth, "Content-Type": "application/webhook+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _signed(env: dict[str, str], body: bytes, secret: str | None = None) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = api.AccessToken(
        env["LIVEKIT_API_KEY"], secret or env["LIVEKIT_API_SECRET"]
    ).with_sha256(digest)
    return token.to_jwt()


async def test_forged_webhook_is_refused_and_changes_nothing(
    stack_env: dict[str, str], kube: Kube, webhook_url: str, session_name: str, agent_id: str
) -> None:
    kube.apply(session_obj(kube, session_name, agent_id))
    room = (await started(kube, session_name))["connection"]["room"]
    body = json.dumps(
        {"event": "participant_left", "id": "EV_forged", "room": {"name": room}}
    ).encode()
    before = kube.get("voicesession", session_name)["metadata"].get("annotations", {})
    assert _post(webhook_url, body, _signed(stack_env, body, secret="x" * 40)) == 401
    assert _post(webhook_url, body, "") == 401
    tampered = body.replace(b"participant_left", b"room_finished")
    assert _post(webhook_url, tampered, _signed(stack_env, body)) == 401
    assert kube.get("voicesession", session_name)["metadata"].get("annotations", {}) == before


async def test_signed_webhook_marks_its_session(
    stack_env: dict[str, str], kube: Kube, webhook_url: str, session_name: str, agent_id: str
) -> None:
    kube.apply(session_obj(kube, session_name, agent_id))
    room = (await started(kube, session_name))["connection"]["room"]
    body = json.dumps(
        {
            "event": "participant_joined",
            "id": "EV_signed",
            "room": {"name": room},
            "participant": {"identity": "alice"},
        }
    ).encode()
    assert _post(webhook_url, body, _signed(stack_env, body)) == 200
    annotations = kube.get("voicesession", session_name)["metadata"]["annotations"]
    assert annotations["voicefleet.dev/livekit-event"] == "participant_joined/1/EV_signed"


# -- rule 7: an operator killed mid-connection converges, no orphans ---------------------------------------
async def test_operator_killed_mid_connection_converges_without_orphans(
    stack_env: dict[str, str],
    kube: Kube,
    operator: OperatorProcess | None,
    session_name: str,
    agent_id: str,
) -> None:
    if operator is None:
        pytest.skip("the operator under test is external")
    kube.apply(session_obj(kube, session_name, agent_id))
    await wait_for("a pod", lambda: live_pods(kube, session_name))
    operator.kill()
    try:
        kube.patch_session(session_name, {"spec": {"connection": 2}})
        await asyncio.sleep(1)
    finally:
        operator.start()

    def second() -> dict[str, Any] | None:
        conn = status(kube, session_name).get("connection") or {}
        return conn if conn.get("id") == 2 and conn.get("dispatchedAt") else None

    conn = await wait_for(
        "connection 2 after the restart", second, within=40 + OperatorProcess.restart_pause_seconds
    )
    assert [p["metadata"]["name"] for p in live_pods(kube, session_name)] == [conn["pod"]]
    kube.delete_session(session_name)
    await wait_for("the session to be gone", lambda: kube.get("voicesession", session_name) is None)
    assert live_pods(kube, session_name) == []
    assert not await room_exists(stack_env, conn["room"])


# -- LiveKit briefly down: the condition says so, then it recovers ---------------------------------------
def _livekit_pid(env: dict[str, str]) -> int:
    pids = json.loads((Path(env["KUBECONFIG"]).parent / "pids.json").read_text())
    return int(next(p["pid"] for p in pids if p["name"] == "livekit-server"))


async def test_livekit_briefly_down_is_reported_then_recovers(
    stack_env: dict[str, str],
    kube: Kube,
    operator: OperatorProcess | None,
    session_name: str,
    agent_id: str,
) -> None:
    kube.apply(session_obj(kube, session_name, agent_id))
    conn = (await started(kube, session_name))["connection"]
    pid = _livekit_pid(stack_env)
    os.kill(pid, signal.SIGSTOP)  # frozen, not killed: requests hang and time out
    try:
        await wait_for(
            "RoomReady=False/LiveKitUnavailable",
            lambda: (
                condition(status(kube, session_name), "RoomReady").get("reason")
                == "LiveKitUnavailable"
            ),
            within=30,
        )
        assert condition(status(kube, session_name), "Ready")["reason"] == "LiveKitUnavailable"
    finally:
        os.kill(pid, signal.SIGCONT)
    await wait_for(
        "RoomReady=True again",
        lambda: condition(status(kube, session_name), "RoomReady").get("status") == "True",
        within=30,
    )
    after = status(kube, session_name)["connection"]
    assert (after["room"], after["pod"]) == (conn["room"], conn["pod"])
    assert await room_exists(stack_env, conn["room"])


async def test_a_room_check_tells_absent_empty_and_occupied_rooms_apart(
    stack_env: dict[str, str],
) -> None:
    """The operator's LiveKit client on the real server: ListParticipants answers an empty
    list for a room that does not exist, so an empty answer must ask whether the room is
    there (one ListRooms for the rooms asked about at about the same time)."""
    client = LiveKitClient(
        stack_env["LIVEKIT_URL"].replace("ws://", "http://"),
        stack_env["LIVEKIT_API_KEY"],
        stack_env["LIVEKIT_API_SECRET"],
    )
    calls: Counter[str] = Counter()
    client.observe = lambda call, _seconds, _ok: calls.update([call])
    prefix = f"vf-it-check-{secrets.token_hex(3)}"
    present = [f"{prefix}-empty-{i}" for i in range(20)]
    absent = [f"{prefix}-absent-{i}" for i in range(20)]
    busy, unasked = f"{prefix}-busy", f"{prefix}-unasked"
    try:
        for room in [*present, busy, unasked]:
            await client.create_room(RoomRequest(room, 120, 30, ""))
        async with participant(stack_env, busy, "alice"):
            names = [*present, *absent, busy]
            views = await asyncio.gather(*(client.observe_room(r, False) for r in names))
            seen = dict(zip(names, views, strict=True))
            lists = calls["list_rooms"]
        assert all(seen[r].exists and seen[r].participants == () for r in present)
        assert not any(seen[r].exists for r in absent)
        assert seen[busy].exists
        assert [p.identity for p in seen[busy].participants] == ["alice"]
        # 40 empty answers, far fewer listings: shared by the checks that asked together
        assert 1 <= lists < len(present) + len(absent)
        # the answer is about the rooms asked, whether the listing named them (a few) or not
        assert await client.existing_rooms(frozenset([present[0], absent[0]])) == {present[0]}
        assert await client.existing_rooms(frozenset([*present, *absent])) == set(present)
    finally:
        for room in [*present, busy, unasked]:
            await client.delete_room(room)
        await client.aclose()


# -- rule 5: metrics --------------------------------------------------------------------------------------
async def test_metrics_count_sessions_and_connection_steps(
    kube: Kube, operator: OperatorProcess | None, session_name: str, agent_id: str
) -> None:
    if operator is None:
        pytest.skip("the operator under test is external")
    kube.apply(session_obj(kube, session_name, agent_id))
    await started(kube, session_name)
    text = await asyncio.to_thread(_get, operator.metrics_url)
    assert 'voicefleet_sessions{phase="Connecting"}' in text
    assert 'voicefleet_connection_step_seconds_count{step="dispatched"}' in text
    assert "voicefleet_reconcile_seconds_count" in text
