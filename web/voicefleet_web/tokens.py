"""LiveKit join tokens: one room, a short lifetime, the identity of the authenticated user."""

from __future__ import annotations

import datetime

from livekit import api


def join_token(
    *,
    api_key: str,
    api_secret: str,
    room: str,
    identity: str,
    name: str,
    ttl_seconds: int,
) -> str:
    """A token that lets `identity` join `room` (and nothing else) for `ttl_seconds`.

    The token only has to outlive the join: once in the room, LiveKit refreshes the
    client's token itself.
    """
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_subscribe=True,
        can_publish_data=True,
        can_update_own_metadata=False,
    )
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name(name)
        .with_kind("standard")
        .with_grants(grants)
        .with_ttl(datetime.timedelta(seconds=ttl_seconds))
        .to_jwt()
    )
