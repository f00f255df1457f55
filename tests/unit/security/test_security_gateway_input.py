"""The gateway's names and tokens under bad input (issue 10).

- whatever a caller sends (agent id, session name) or an issuer signs (subject), what the
  gateway accepts is what the API server accepts: no input reaches Kubernetes only to be
  refused there (a 5xx), in particular no trailing newline (Python's `$` allows one, RE2's not);
- a join token is scoped to one room, short-lived, for the caller's identity, with no admin grant;
- settings never print a secret.
"""

from __future__ import annotations

import dataclasses
import string

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from secprops import BOUNDED, crd_refusal, re2_match

from voicefleet_web.config import Settings, load_settings
from voicefleet_web.naming import (
    SESSION_NAME_RE,
    identity_from_subject,
    is_agent_id,
    is_session_name,
    session_name,
)
from voicefleet_web.tokens import join_token

texts = st.one_of(
    st.text(max_size=140),
    st.text(alphabet=string.ascii_letters + string.digits + "._:-@+|\n ", max_size=140),
    st.sampled_from(["agent-66\n", "alice\n", "auth0|abc", "a" * 129, "-", ".", "\n", ""]),
)
agent_ids = st.text(
    alphabet=string.ascii_letters + string.digits + "._:-", min_size=1, max_size=128
)


@BOUNDED
@given(texts)
def test_an_agent_id_the_gateway_accepts_the_api_server_accepts(text: str) -> None:
    if is_agent_id(text):
        assert crd_refusal({"agentId": text, "userIdentity": "alice"}) is None, repr(text)


@BOUNDED
@given(texts)
def test_a_session_name_the_gateway_accepts_is_a_dns_label(text: str) -> None:
    if is_session_name(text):
        assert len(text) <= 63 and re2_match(SESSION_NAME_RE.pattern, text), repr(text)


@BOUNDED
@given(texts, agent_ids)
def test_any_subject_becomes_an_identity_and_a_session_the_api_server_accepts(
    subject: str, agent_id: str
) -> None:
    identity = identity_from_subject(subject)
    if is_agent_id(agent_id):
        assert crd_refusal({"agentId": agent_id, "userIdentity": identity}) is None
        name = session_name(identity, agent_id)
        assert len(name) <= 63 and re2_match(SESSION_NAME_RE.pattern, name)


@BOUNDED
@given(texts, texts)
def test_two_subjects_never_share_an_identity(a: str, b: str) -> None:
    if a != b:
        assert identity_from_subject(a) != identity_from_subject(b)


def test_a_join_token_is_for_one_room_one_identity_and_short_lived() -> None:
    token = join_token(
        api_key="APIkey",
        api_secret="s" * 40,
        room="vs-alice-agent66-1-bcdfg",
        identity="alice",
        name="Alice",
        ttl_seconds=300,
    )
    claims = jwt.decode(token, "s" * 40, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["iss"] == "APIkey"
    assert 0 < claims["exp"] - claims["nbf"] <= 300
    video = claims["video"]
    assert video["room"] == "vs-alice-agent66-1-bcdfg" and video["roomJoin"] is True
    for admin in ("roomAdmin", "roomCreate", "roomList", "roomRecord", "ingressAdmin", "agent"):
        assert not video.get(admin), admin
    assert not video.get("canUpdateOwnMetadata")
    assert claims.get("kind", "standard") == "standard"


def test_join_token_lifetimes_are_bounded_by_configuration() -> None:
    env = {
        "GATEWAY_TOKEN": "t" * 20,
        "LIVEKIT_API_KEY": "k",
        "LIVEKIT_API_SECRET": "s" * 40,
        "LIVEKIT_URL": "ws://127.0.0.1:1",
        "LETTA_BASE_URL": "http://127.0.0.1:2",
    }
    assert load_settings(env).join_token_ttl_seconds == 300
    with pytest.raises(ValueError):
        load_settings({**env, "GATEWAY_JOIN_TOKEN_TTL_SECONDS": "5"})
    with pytest.raises(ValueError):
        load_settings({**env, "GATEWAY_TOKEN": "short"})


def test_settings_never_print_a_secret() -> None:
    settings = Settings(
        livekit_api_key="APIkey",
        livekit_api_secret="livekit-secret-value",
        dev_token="dev-token-value-0123",
        letta_api_key="letta-key-value",
    )
    text = repr(settings) + str(dataclasses.asdict(settings).keys())
    for secret in ("livekit-secret-value", "dev-token-value-0123", "letta-key-value"):
        assert secret not in text
