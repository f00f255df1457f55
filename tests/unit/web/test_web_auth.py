"""Bearer authentication: the static dev token and OIDC JWTs checked against a real JWKS
endpoint (a local HTTP server) with PyJWT's PyJWKClient."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from webfakes import FakeOperator, MakeClient

from voicefleet_web.accesslog import ACCESS_LOGGER, JsonAccessLogger
from voicefleet_web.auth import Authenticator
from voicefleet_web.config import OidcSettings, Settings
from voicefleet_web.errors import Unauthorized

pytestmark = pytest.mark.asyncio(loop_scope="session")
ISSUER, AUDIENCE = "https://id.example.test/", "voicefleet"


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    good = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(good.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    return {"good": good, "other": other, "jwks": {"keys": [jwk]}}


@pytest_asyncio.fixture(loop_scope="session")
async def jwks_url(keys: dict[str, Any]) -> AsyncIterator[str]:
    app = web.Application()

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(keys["jwks"])

    app.router.add_get("/jwks.json", jwks)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/jwks.json"))
    await server.close()


def make_jwt(key: Any, kid: str = "k1", **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "auth0|carol",
        "name": "Carol",
        "iat": now,
        "exp": now + 300,
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def authenticator(settings: Settings, jwks_url: str) -> Authenticator:
    oidc = OidcSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_url, algorithms=("RS256",))
    return Authenticator(Settings(**{**settings.__dict__, "oidc": oidc}))


async def test_a_valid_oidc_token_authenticates_its_subject(
    settings: Settings,
    jwks_url: str,
    keys: dict[str, Any],
) -> None:
    user = await authenticator(settings, jwks_url).authenticate(f"Bearer {make_jwt(keys['good'])}")
    assert user.subject == "auth0|carol" and user.method == "oidc" and user.name == "Carol"
    assert user.identity.startswith("auth0-carol-")  # `|` is not allowed in an identity


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "other_key",
        "unknown_kid",
        "no_subject",
        "alg_none",
    ],
)
async def test_bad_oidc_tokens_are_refused(
    settings: Settings,
    jwks_url: str,
    keys: dict[str, Any],
    case: str,
) -> None:
    token = {
        "expired": lambda: make_jwt(keys["good"], exp=int(time.time()) - 600),
        "wrong_audience": lambda: make_jwt(keys["good"], aud="someone-else"),
        "wrong_issuer": lambda: make_jwt(keys["good"], iss="https://evil.test/"),
        "other_key": lambda: make_jwt(keys["other"]),
        "unknown_kid": lambda: make_jwt(keys["other"], kid="k9"),
        "no_subject": lambda: make_jwt(keys["good"], sub=None),
        "alg_none": lambda: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
            None,
            algorithm="none",
            headers={"kid": "k1"},
        ),
    }[case]()
    with pytest.raises(Unauthorized):
        await authenticator(settings, jwks_url).authenticate(f"Bearer {token}")


async def test_oidc_user_gets_a_join_token_for_their_own_identity(
    make_client: MakeClient,
    settings: Settings,
    jwks_url: str,
    keys: dict[str, Any],
    operator: FakeOperator,
) -> None:
    client = await make_client(authenticator=authenticator(settings, jwks_url))
    resp = await client.post(
        "/api/sessions",
        json={"agentId": "agent-66"},
        headers={"Authorization": f"Bearer {make_jwt(keys['good'])}"},
    )
    body = await resp.json()
    assert resp.status == 200, body
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == body["identity"] and claims["sub"].startswith("auth0-carol-")
    assert claims["name"] == "Carol"


async def test_the_dev_token_still_works_next_to_oidc(
    make_client: MakeClient,
    settings: Settings,
    jwks_url: str,
) -> None:
    client = await make_client(authenticator=authenticator(settings, jwks_url))
    resp = await client.get(
        "/api/agents", headers={"Authorization": f"Bearer {settings.dev_token}"}
    )
    assert resp.status == 200


async def test_access_log_holds_identity_but_no_token(
    make_client: MakeClient,
    settings: Settings,
    operator: FakeOperator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await make_client(
        server={
            "access_log_class": JsonAccessLogger,
            "access_log": logging.getLogger(ACCESS_LOGGER),
        }
    )
    with caplog.at_level(logging.INFO):
        resp = await client.post(
            "/api/sessions?token=leaky",
            json={"agentId": "agent-66"},
            headers={"Authorization": f"Bearer {settings.dev_token}"},
        )
        join = (await resp.json())["token"]
        await client.get("/api/agents", headers={"Authorization": "Bearer not-a-real-token"})
    access = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(access) == 2
    fields = [r.fields for r in access]  # type: ignore[attr-defined]
    assert fields[0]["user"] == "alice" and fields[0]["status"] == 200
    assert fields[0]["path"] == "/api/sessions" and fields[1]["status"] == 401
    text = caplog.text + json.dumps(fields)
    for secret in (settings.dev_token or "", join, "not-a-real-token", "leaky"):
        assert secret not in text


async def test_unreachable_jwks_is_503_not_401(
    make_client: MakeClient,
    settings: Settings,
    keys: dict[str, Any],
) -> None:
    client = await make_client(authenticator=authenticator(settings, "http://127.0.0.1:9/jwks"))
    resp = await client.get(
        "/api/agents", headers={"Authorization": f"Bearer {make_jwt(keys['good'])}"}
    )
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["error"] == "dependency_unavailable"
