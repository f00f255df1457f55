"""The one place the gateway makes names: VoiceSession names, user identities, labels.

A VoiceSession name is `<user slug>-<agent slug>-<hash>`: readable, deterministic (the same
user and agent always find the same session), unique (the hash covers the exact pair, so
two users whose slugs coincide still differ) and within the limits the operator needs: at
most 63 characters (it is a label value and part of room names), lowercase DNS-label
characters only.
"""

from __future__ import annotations

import hashlib
import re

from voicefleet_operator.api import GROUP, ID_MAX, ID_PATTERN, IDENTITY_PATTERN, NAME_MAX

# Label on sessions the gateway creates: a hash of the user identity (identities may hold
# characters a label value cannot), so the gateway can count one user's connections.
LABEL_USER = f"{GROUP}/user-hash"
LABEL_CREATED_BY = "app.kubernetes.io/created-by"
CREATED_BY = "voicefleet-gateway"
# How the gateway asks the operator to end a connection (DELETE .../connection): the value
# is the connection id to end. The operator ends that connection (reason UserLeft) if it is
# still the current one and ignores the annotation otherwise.
ANNOTATION_END_CONNECTION = f"{GROUP}/end-connection"

USER_SLUG_MAX = 20
AGENT_SLUG_MAX = 30
HASH_LENGTH = 8
SESSION_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IDENTITY_RE = re.compile(IDENTITY_PATTERN)
_AGENT_ID_RE = re.compile(ID_PATTERN)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_NOT_IDENTITY = re.compile(r"[^A-Za-z0-9._@:+-]+")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _slug(text: str, limit: int) -> str:
    slug = _NOT_SLUG.sub("-", text.lower()).strip("-")[:limit].strip("-")
    return slug or "x"


def session_name(identity: str, agent_id: str) -> str:
    """The VoiceSession of `identity` talking to `agent_id`."""
    name = (
        f"{_slug(identity, USER_SLUG_MAX)}-{_slug(agent_id, AGENT_SLUG_MAX)}"
        f"-{_digest(identity, agent_id)[:HASH_LENGTH]}"
    )
    assert len(name) <= NAME_MAX and SESSION_NAME_RE.fullmatch(name), name
    return name


def is_session_name(name: str) -> bool:
    return len(name) <= NAME_MAX and SESSION_NAME_RE.fullmatch(name) is not None


def is_agent_id(agent_id: str) -> bool:
    return 0 < len(agent_id) <= ID_MAX and _AGENT_ID_RE.fullmatch(agent_id) is not None


def identity_from_subject(subject: str) -> str:
    """The LiveKit identity of an authenticated subject.

    A subject that already fits the VoiceSession identity pattern is used as it is. Others
    (for example `auth0|abc`) get the offending characters replaced and a hash of the exact
    subject appended, so two subjects never share an identity.
    """
    if len(subject) <= ID_MAX and _IDENTITY_RE.fullmatch(subject):
        return subject
    cleaned = _NOT_IDENTITY.sub("-", subject).strip("-._@:+")[: ID_MAX - HASH_LENGTH - 1]
    cleaned = cleaned.rstrip("-._@:+") or "user"
    return f"{cleaned}-{_digest(subject)[:HASH_LENGTH]}"


def user_label(identity: str) -> str:
    """The value of LABEL_USER for `identity` (a label value: 63 characters at most)."""
    return _digest(identity)[:40]
