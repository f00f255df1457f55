"""The gateway's API on the real stack, every status of SPEC.md, auth failures and limits
(issue 6's gap, issue 10's auth bypass and token scope).

The gateways are real processes with their own ServiceAccount; the sessions live in the
namespace of this checkout's operator (real process, real API server, real LiveKit), whose
worker pods run on kwok nodes and therefore never become ready: a connect times out (504)
unless the STAND-IN worker joins the room as the agent (then 200 and a join token).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from secharness import SecOperator, get_session, session_manifest, wait_for
from webharness import StandInWorker

from voicefleet_web.naming import session_name

pytestmark = pytest.mark.integration


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    return dict(body)


def admin_session(kubectl: Any, namespace: str, name: str, user: str, agent: str) -> None:
    spec = {"agentId": agent, "userIdentity": user, "joinTimeoutSeconds": 600}
    kubectl("apply", "-f", "-", stdin=json.dumps(session_manifest(namespace, name, spec)))


# -- 403 ------------------------------------------------------------------------------------
def test_someone_elses_session_is_403_and_stays_untouched(
    sec_operator: SecOperator, sec_gateway: Any, kubectl: Any, agent_66: str
) -> None:
    ns = sec_operator.namespace
    gateway = sec_gateway(user="it-sec-mallory", NAMESPACE=ns)
    # Bob's session, and one named as Mallory's would be but holding Bob's identity
    # (a name is no proof of ownership: only spec.userIdentity is).
    bobs = session_name("it-sec-bob", agent_66)
    squatted = session_name("it-sec-mallory", agent_66)
    for name in (bobs, squatted):
        admin_session(kubectl, ns, name, "it-sec-bob", agent_66)
    try:
        before = {n: get_session(kubectl, ns, n)["spec"]["connection"] for n in (bobs, squatted)}
        with gateway.client() as http:
            error_of(http.get(f"/api/sessions/{bobs}"), 403)
            error_of(http.delete(f"/api/sessions/{bobs}/connection"), 403)
            error_of(http.post("/api/sessions", json={"agentId": agent_66}), 403)
        after = {n: get_session(kubectl, ns, n)["spec"]["connection"] for n in (bobs, squatted)}
        assert after == before
        annotations = get_session(kubectl, ns, bobs)["metadata"].get("annotations") or {}
        assert "voicefleet.dev/end-connection" not in annotations
    finally:
        # Bob's sessions hold Agent_66 (one live connection per agent): gone before the next test.
        kubectl("delete", "voicesession", bobs, squatted, "-n", ns, "--wait=true", "--timeout=60s")


# -- 504 ------------------------------------------------------------------------------------
def test_a_connection_not_ready_in_time_is_504_and_can_still_be_ended(
    sec_operator: SecOperator, sec_gateway: Any, kubectl: Any, agent_66: str
) -> None:
    ns = sec_operator.namespace
    gateway = sec_gateway(user="it-sec-slow", NAMESPACE=ns, GATEWAY_READY_TIMEOUT_SECONDS="3")
    name = session_name("it-sec-slow", agent_66)
    started = time.monotonic()
    with gateway.client(timeout=30) as http:
        try:
            body = error_of(http.post("/api/sessions", json={"agentId": agent_66}), 504)
            took = time.monotonic() - started
            assert 2.5 < took < 15, took
            assert "phase Connecting" in body["detail"], body
            # The operator really started it: the worker was late, the request was not lost.
            assert get_session(kubectl, ns, name)["status"]["phase"] == "Connecting"
        finally:
            ended = http.delete(f"/api/sessions/{name}/connection")
        assert ended.status_code == 200, ended.text
        assert ended.json()["phase"] == "Idle"


# -- auth ------------------------------------------------------------------------------------
class Issuer:
    """A loopback OIDC issuer: a JWKS endpoint and tokens signed with its RSA key."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwks = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = jwks.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": self.url,
            "aud": "voicefleet",
            "sub": "oidc-alice",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    found = Issuer()
    yield found
    found.server.shutdown()


def test_auth_bypass_attempts_fail(
    sec_operator: SecOperator, sec_gateway: Any, issuer: Issuer, stack_env: dict[str, str]
) -> None:
    gateway = sec_gateway(
        user="it-sec-oidc",
        NAMESPACE=sec_operator.namespace,
        OIDC_ISSUER=issuer.url,
        OIDC_AUDIENCE="voicefleet",
        OIDC_JWKS_URL=f"{issuer.url}/jwks.json",
    )
    dev = stack_env["GATEWAY_TOKEN"]
    now = int(time.time())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    refused = {
        "no header": None,
        "wrong audience": f"Bearer {issuer.token(aud='another-service')}",
        "wrong issuer": f"Bearer {issuer.token(iss='https://evil.example')}",
        "expired": f"Bearer {issuer.token(exp=now - 3600, iat=now - 7200)}",
        "no exp": f"Bearer {issuer.token(exp=None)}",
        "no subject": f"Bearer {issuer.token(sub=None)}",
        "empty subject": f"Bearer {issuer.token(sub='')}",
        "alg none": "Bearer "
        + jwt.encode(
            {"iss": issuer.url, "aud": "voicefleet", "sub": "x", "exp": now + 60},
            None,
            algorithm="none",
        ),
        "signed by another key": "Bearer "
        + jwt.encode(
            {"iss": issuer.url, "aud": "voicefleet", "sub": "x", "exp": now + 60},
            other_key,
            algorithm="RS256",
            headers={"kid": "k1"},
        ),
        "HS256 keyed with the public key": f"Bearer {_hs256_with(public_pem, issuer.url, now)}",
        "unknown kid": "Bearer "
        + jwt.encode(
            {"iss": issuer.url, "aud": "voicefleet", "sub": "x", "exp": now + 60},
            issuer.key,
            algorithm="RS256",
            headers={"kid": "k2"},
        ),
        "dev token with a suffix": f"Bearer {dev}x",
        "dev token prefix": f"Bearer {dev[:-1]}",
        "dev token as Basic": f"Basic {dev}",
        "dev token, no scheme": dev,
    }
    with httpx.Client(base_url=gateway.url, timeout=20) as http:
        answers = {}
        for what, header in refused.items():
            headers = {"Authorization": header} if header else {}
            answers[what] = http.get("/api/agents", headers=headers).status_code
        # Tokens in places other than the Authorization header are not credentials.
        answers["token in query"] = http.get(
            "/api/agents", params={"access_token": dev}
        ).status_code
        answers["token in cookie"] = http.get(
            "/api/agents", headers={"Cookie": f"token={dev}"}
        ).status_code
        answers["path tricks"] = max(
            http.get(path).status_code
            for path in ("/api//agents", "/api/./agents", "/API/agents", "/api/agents/")
        )
        ok_oidc = http.get("/api/agents", headers={"Authorization": f"Bearer {issuer.token()}"})
        ok_dev = http.get("/api/agents", headers={"Authorization": f"Bearer {dev}"})
    assert {k: v for k, v in answers.items() if v not in (401, 404)} == {}
    assert answers["wrong audience"] == 401  # an invalid token (RFC 6750): 401, not 403
    assert ok_oidc.status_code == 200 and ok_dev.status_code == 200
    for line in gateway.log.read_text().splitlines():
        assert dev not in line and issuer.token()[:60] not in line


def _hs256_with(public_pem: bytes, iss: str, now: int) -> str:
    """An HS256 token whose HMAC key is the issuer's public key (the classic alg confusion)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    payload = b64(
        json.dumps({"iss": iss, "aud": "voicefleet", "sub": "x", "exp": now + 60}).encode()
    )
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


# -- 200, and what the join token allows ---------------------------------------------------------
def livekit_http(stack_env: dict[str, str]) -> str:
    return stack_env["LIVEKIT_URL"].replace("ws://", "http://").replace("wss://", "https://")


def test_a_join_token_joins_one_room_and_administers_nothing(
    sec_operator: SecOperator,
    sec_gateway: Any,
    stack_env: dict[str, str],
    agent_66: str,
    kubectl: Any,
) -> None:
    ns = sec_operator.namespace
    gateway = sec_gateway(user="it-sec-ok", NAMESPACE=ns, GATEWAY_READY_TIMEOUT_SECONDS="60")
    worker = StandInWorker(stack_env, ns)
    worker.start()
    try:
        with gateway.client(timeout=90) as http:
            resp = http.post("/api/sessions", json={"agentId": agent_66})
            assert resp.status_code == 200, resp.text
            answer = resp.json()
            claims = jwt.decode(answer["token"], options={"verify_signature": False})
            assert claims["sub"] == "it-sec-ok" and claims["video"]["room"] == answer["room"]
            assert 0 < claims["exp"] - int(time.time()) <= 300
            # The token is a user's, for one room: LiveKit's admin API refuses it.
            twirp = f"{livekit_http(stack_env)}/twirp/livekit.RoomService"
            headers = {"Authorization": f"Bearer {answer['token']}"}
            for method, body in [
                ("ListRooms", {}),
                ("CreateRoom", {"name": "sec-not-allowed"}),
                ("DeleteRoom", {"room": answer["room"]}),
                ("ListParticipants", {"room": answer["room"]}),
                ("RemoveParticipant", {"room": answer["room"], "identity": "anyone"}),
            ]:
                status = httpx.post(f"{twirp}/{method}", json=body, headers=headers, timeout=10)
                assert status.status_code in (401, 403), (method, status.status_code, status.text)
            dispatch = httpx.post(
                f"{livekit_http(stack_env)}/twirp/livekit.AgentDispatchService/CreateDispatch",
                json={"room": answer["room"], "agentName": "x"},
                headers=headers,
                timeout=10,
            )
            assert dispatch.status_code in (401, 403), dispatch.text
            ended = http.delete(f"/api/sessions/{answer['session']}/connection")
            assert ended.status_code == 200, ended.text
    finally:
        worker.stop()
    wait_for(
        "the room to be gone",
        lambda: answer["room"] not in _rooms(stack_env),
        within=30,
    )


def _rooms(stack_env: dict[str, str]) -> list[str]:
    from livekit import api

    token = (
        api.AccessToken(stack_env["LIVEKIT_API_KEY"], stack_env["LIVEKIT_API_SECRET"])
        .with_grants(api.VideoGrants(room_list=True))
        .to_jwt()
    )
    resp = httpx.post(
        f"{livekit_http(stack_env)}/twirp/livekit.RoomService/ListRooms",
        json={},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    resp.raise_for_status()
    return [r["name"] for r in resp.json().get("rooms", [])]


# -- every status code of SPEC.md ------------------------------------------------------------
def test_every_error_status_of_the_spec_on_the_real_stack(
    sec_operator: SecOperator, sec_gateway: Any, kubectl: Any, agent_66: str
) -> None:
    """400, 401, 404, 429 and 503 here; 403 and 504 in the tests above; 200 above too."""
    ns = sec_operator.namespace
    seen: dict[int, str] = {}
    with sec_gateway(user="it-sec-codes", NAMESPACE=ns).client() as http:
        seen[400] = error_of(http.post("/api/sessions", json={"agentId": "a b"}), 400)["error"]
        seen[404] = error_of(http.post("/api/sessions", json={"agentId": "agent-none"}), 404)[
            "error"
        ]
        seen[413] = error_of(
            http.post(
                "/api/sessions",
                content=b'{"agentId": "' + b"a" * 20_000 + b'"}',
                headers={"Content-Type": "application/json"},
            ),
            413,
        )["error"]
        seen[415] = error_of(http.post("/api/sessions", content=b"agentId=x"), 415)["error"]
    with sec_gateway(user="it-sec-codes").client(token="") as http:
        seen[401] = error_of(http.get("/api/agents"), 401)["error"]
    limited = sec_gateway(user="it-sec-rate", NAMESPACE=ns, GATEWAY_REQUESTS_PER_MINUTE="2")
    with limited.client() as http:
        statuses = [http.get("/api/agents").status_code for _ in range(3)]
        assert statuses[:2] == [200, 200]
        resp = http.get("/api/agents")
        seen[429] = error_of(resp, 429)["error"]
        assert int(resp.headers["Retry-After"]) >= 1
    no_letta = sec_gateway(user="it-sec-noletta", NAMESPACE=ns, LETTA_BASE_URL="http://127.0.0.1:9")
    with no_letta.client() as http:
        seen[503] = error_of(http.get("/api/agents"), 503)["error"]
    assert seen == {
        400: "bad_request",
        404: "not_found",
        413: "payload_too_large",
        415: "unsupported_media_type",
        401: "unauthorized",
        429: "too_many_requests",
        503: "dependency_unavailable",
    }
