"""Every name the operator makes: rooms, pods, labels, annotations, the finalizer.

Rooms are `vs-<session>-<connection>-<5 random>`: unique per connection (a reconnect never
reuses a room name), readable, and parseable back into (session, connection) because the
session name is capped at 63 characters (it is also a label value) and the last two
segments have fixed shapes. Pods are `voicefleet-worker-<5 letters>`; the pod name is also
the agent name the worker registers under with LiveKit.

The operator derives both suffixes from the session's uid and the connection (`derived_suffix`),
so the names of a connection are known before anything is created: an operator that dies
between creating a pod and recording it finds the same names again on restart, and the
creates can go out together with the status write instead of after it.
"""

from __future__ import annotations

import hashlib
import re

from .api import GROUP

# Kubernetes' own generateName alphabet: no vowels (no words), no look-alikes (0/o, 1/l, 3/e).
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SUFFIX_LENGTH = 5
ROOM_PREFIX = "vs-"
ROOM_NAME_MAX = 128  # well inside LiveKit's limit; also bounded by the session name cap
POD_PREFIX = "voicefleet-worker-"
SESSION_NAME_MAX = 63

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SESSION = f"{GROUP}/session"
LABEL_CONNECTION = f"{GROUP}/connection"
# Warm pool pods carry `voicefleet.dev/pool: warm` until a connection claims them.
LABEL_POOL = f"{GROUP}/pool"
POOL_WARM = "warm"
WORKER_APP = "voicefleet-worker"
MANAGER = "voicefleet-operator"

ANNOTATION_AGENT_ID = f"{GROUP}/agent-id"
ANNOTATION_ROOM = f"{GROUP}/room"
# Set by the webhook receiver: a change here wakes the session's reconcile loop.
ANNOTATION_LIVEKIT_EVENT = f"{GROUP}/livekit-event"
# Set by the gateway (DELETE /api/sessions/{name}/connection) to the id of the connection the
# user ends. Honoured only while that connection is the current, live one.
ANNOTATION_END_CONNECTION = f"{GROUP}/end-connection"
FINALIZER = f"{GROUP}/teardown"
# kopf's own bookkeeping (progress, diff base) lives under this prefix, not in status.
KOPF_PREFIX = f"operator.{GROUP}"

_ROOM_RE = re.compile(
    rf"^{re.escape(ROOM_PREFIX)}(?P<session>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)"
    rf"-(?P<connection>[1-9][0-9]*)-(?P<suffix>[{SUFFIX_ALPHABET}]{{{SUFFIX_LENGTH}}})$"
)


def derived_suffix(seed: str, *parts: object) -> str:
    """A suffix fixed by `seed` (a session uid) and `parts`: the same inputs, the same name."""
    digest = hashlib.blake2b("/".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "big")
    letters = []
    for _ in range(SUFFIX_LENGTH):
        value, index = divmod(value, len(SUFFIX_ALPHABET))
        letters.append(SUFFIX_ALPHABET[index])
    return "".join(letters)


def room_name(session: str, connection: int, suffix: str) -> str:
    """The LiveKit room of one connection of one session."""
    if len(session) > SESSION_NAME_MAX:
        raise ValueError(f"session name {session!r} is longer than {SESSION_NAME_MAX}")
    if connection < 1:
        raise ValueError(f"connection must be >= 1, got {connection}")
    name = f"{ROOM_PREFIX}{session}-{connection}-{suffix}"
    if not _ROOM_RE.match(name) or len(name) > ROOM_NAME_MAX:
        raise ValueError(f"cannot make a room name from {session!r}/{connection}/{suffix!r}")
    return name


def parse_room_name(room: str) -> tuple[str, int] | None:
    """(session, connection) of a room this operator named, or None for any other room."""
    match = _ROOM_RE.match(room)
    if match is None:
        return None
    return match["session"], int(match["connection"])


def pod_name(suffix: str) -> str:
    """A worker pod name; it doubles as the LiveKit agent name the worker registers under."""
    return f"{POD_PREFIX}{suffix}"


def worker_labels(session: str | None = None, connection: int | None = None) -> dict[str, str]:
    """Labels of a worker pod; the session/connection pair only once it is bound to one."""
    labels = {LABEL_NAME: WORKER_APP, LABEL_MANAGED_BY: MANAGER}
    if session is not None:
        labels[LABEL_SESSION] = session
    if connection is not None:
        labels[LABEL_CONNECTION] = str(connection)
    return labels


WORKERS_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
"""Label selector of every pod this operator made (workers of sessions and of the pool)."""


def session_selector(session: str) -> str:
    """Label selector of every worker pod bound to `session`, whatever the connection."""
    return f"{WORKERS_SELECTOR},{LABEL_SESSION}={session}"


def session_key(namespace: str, name: str) -> str:
    """`<namespace>/<name>`, as in the dispatch metadata."""
    return f"{namespace}/{name}"
