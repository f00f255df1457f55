"""Pure parts of the gateway: names, configuration, decisions on a session's status, limits,
and the Letta agent directory (over an httpx mock transport)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from voicefleet_operator.api import IDENTITY_PATTERN
from voicefleet_web.agents import LettaAgents
from voicefleet_web.config import ConfigError, load_settings
from voicefleet_web.errors import CapacityExceeded, Conflict, ConnectionFailed, TooManyRequests
from voicefleet_web.limits import InFlight, RateLimiter
from voicefleet_web.naming import identity_from_subject, is_session_name, session_name
from voicefleet_web.sessions import connection_ended, ready_room

ENV = {
    "GATEWAY_TOKEN": "t" * 20,
    "LIVEKIT_API_KEY": "k",
    "LIVEKIT_API_SECRET": "s",
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LETTA_BASE_URL": "http://127.0.0.1:8283",
}


# -- names ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "user,agent",
    [
        ("alice", "agent-66"),
        ("Alice.Smith@Example.com", "agent-1b2c3d4e-aaaa-bbbb-cccc-0123456789ab"),
        ("x" * 128, "y" * 128),
        ("auth0-carol-1234abcd", "A:B.C"),
        ("9", "0"),
    ],
)
def test_session_names_are_deterministic_dns_labels_within_63(user: str, agent: str) -> None:
    name = session_name(user, agent)
    assert name == session_name(user, agent)
    assert len(name) <= 63 and is_session_name(name)
    assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name)


def test_users_whose_slugs_coincide_get_different_sessions() -> None:
    assert session_name("Alice", "agent-66") != session_name("alice", "agent-66")
    assert session_name("a.b", "agent") != session_name("a-b", "agent")


@pytest.mark.parametrize("subject", ["alice", "auth0|abc", "_x_", "a" * 300, "|||", "ü@x"])
def test_identities_fit_the_crd_pattern(subject: str) -> None:
    identity = identity_from_subject(subject)
    assert re.match(IDENTITY_PATTERN, identity) and len(identity) <= 128
    if subject == "alice":
        assert identity == "alice"


def test_distinct_subjects_never_share_an_identity() -> None:
    assert identity_from_subject("auth0|abc") != identity_from_subject("auth0-abc")


# -- configuration --------------------------------------------------------------------------
def test_settings_read_the_stack_env() -> None:
    settings = load_settings({**ENV, "NAMESPACE": "ns", "GATEWAY_DEV_USER": "bob"})
    assert settings.namespace == "ns" and settings.dev_user == "bob"
    assert "t" * 20 not in repr(settings) and "'s'" not in repr(settings)


@pytest.mark.parametrize(
    "change",
    [
        {"GATEWAY_TOKEN": ""},
        {"GATEWAY_TOKEN": "short"},
        {"LIVEKIT_API_SECRET": ""},
        {"LETTA_BASE_URL": "nope"},
        {"OIDC_ISSUER": "https://id.test/"},
        {"GATEWAY_REQUESTS_PER_MINUTE": "0"},
        {"GATEWAY_READY_TIMEOUT_SECONDS": "soon"},
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(change: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings({**ENV, **change})


# -- decisions on a session's status --------------------------------------------------------
def body(connection: int, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "s"}, "spec": {"connection": connection}, "status": status or {}}


def conn(cid: int, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "room": f"vs-s-{cid}-bcdfg", "startedAt": "2026-11-26T10:00:00Z", **extra}


def test_ready_needs_the_requested_connection() -> None:
    assert ready_room("s", body(2, {"phase": "Ready", "connection": conn(1)}), 2) is None
    assert ready_room("s", body(2, {"phase": "Connecting", "connection": conn(2)}), 2) is None
    assert ready_room("s", body(2, {"phase": "Ready", "connection": conn(2)}), 2) == "vs-s-2-bcdfg"


def test_failed_capacity_is_capacity_other_failures_are_failures() -> None:
    with pytest.raises(CapacityExceeded):
        ready_room(
            "s", body(1, {"phase": "Failed", "connection": conn(1, failure="CapacityExceeded")}), 1
        )
    with pytest.raises(ConnectionFailed, match="Unschedulable"):
        ready_room(
            "s",
            body(
                1,
                {
                    "phase": "Failed",
                    "connection": conn(1),
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "False",
                            "reason": "Unschedulable",
                            "lastTransitionTime": "2026-11-26T10:00:00Z",
                        }
                    ],
                },
            ),
            1,
        )


def test_a_newer_request_supersedes_the_wait() -> None:
    with pytest.raises(Conflict):
        ready_room("s", body(3, {"phase": "Connecting", "connection": conn(2)}), 2)


def test_ended_means_idle_for_that_connection_or_superseded() -> None:
    assert not connection_ended(body(1, {"phase": "Ready", "connection": conn(1)}), 1)
    assert connection_ended(body(1, {"phase": "Idle", "connection": conn(1)}), 1)
    assert connection_ended(body(2, {"phase": "Connecting", "connection": conn(2)}), 1)
    assert not connection_ended(body(2, {"phase": "Idle", "connection": conn(1)}), 2)


# -- limits ---------------------------------------------------------------------------------
def test_rate_limit_refills_over_the_minute() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.check("u")
    limiter.check("u")
    with pytest.raises(TooManyRequests) as err:
        limiter.check("u")
    assert err.value.retry_after == 30
    limiter.check("v")  # per user
    now[0] = 30.0
    limiter.check("u")


def test_in_flight_counts_other_sessions_only() -> None:
    flight = InFlight()
    with flight.connecting("u", "a", live=frozenset({"a"}), limit=1):
        with pytest.raises(TooManyRequests):
            with flight.connecting("u", "b", live=frozenset(), limit=1):
                pass
        with flight.connecting("u", "a", live=frozenset(), limit=1):
            pass
    assert flight.sessions("u") == frozenset()


# -- Letta ----------------------------------------------------------------------------------
async def test_letta_agents_are_paged_and_filtered_by_tag() -> None:
    pages = {
        None: [
            {"id": f"agent-{i}", "name": f"A{i:03d}", "tags": ["voice"] if i % 2 else []}
            for i in range(100)
        ],
        "agent-99": [{"id": "agent-100", "name": "Z", "tags": ["voice"]}],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/agents/":
            return httpx.Response(200, json=pages[request.url.params.get("after")])
        if request.url.path == "/v1/agents/agent-1":
            return httpx.Response(200, json=pages[None][1])
        return httpx.Response(404, json={"detail": "not found"})

    letta = LettaAgents(
        "http://letta.test", tags=("voice",), transport=httpx.MockTransport(handler)
    )
    agents = await letta.list_agents()
    assert len(agents) == 51 and agents[-1].id == "agent-100"
    assert (await letta.get_agent("agent-1")) is not None
    assert (await letta.get_agent("agent-404")) is None
    await letta.close()


# -- layering -------------------------------------------------------------------------------
def test_the_gateway_imports_only_the_api_module_of_the_operator() -> None:
    import ast
    from pathlib import Path

    import voicefleet_web

    package = Path(voicefleet_web.__file__).parent
    imported: set[str] = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    operator = {m for m in imported if m.split(".")[0] == "voicefleet_operator"}
    assert operator == {"voicefleet_operator.api"}
    assert not {m for m in imported if m.split(".")[0] in ("voicefleet_worker", "kopf")}
