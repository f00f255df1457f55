"""The LiveKit webhook receiver: verified events mark their session so it reconciles sooner.

`POST /livekit/webhook`: the signature (a JWT over the body's SHA-256, signed with the API
secret) is checked with `livekit.api.WebhookReceiver`; anything unverified is a 401 and
changes nothing. A verified participant/room event for a room this operator named is
turned into an annotation on its VoiceSession (`voicefleet.dev/livekit-event`), which
the session's watch delivers to whichever replica is active, plus an in-process wake-up.
The webhook carries no state the reconcile relies on: it only makes it look sooner, and a
lost webhook changes nothing but latency (the periodic room check finds the same).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from livekit import api

from . import naming as n

log = logging.getLogger("voicefleet.webhook")

MAX_BODY = 1 << 20
PATH = "/livekit/webhook"
# Events that can change a session's state; the rest are acknowledged and ignored.
RELEVANT = frozenset(
    {
        "participant_joined",
        "participant_left",
        "participant_connection_aborted",
        "room_finished",
        "room_started",
    }
)

# (session name, mark) → True if the session exists and was marked.
MarkSession = Callable[[str, str], Awaitable[bool]]
Observe = Callable[[str, str], None]  # (event, result) → metrics


def make_app(
    receiver: api.WebhookReceiver, mark_session: MarkSession, observe: Observe
) -> web.Application:
    async def webhook(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            observe("unknown", "too_large")
            return web.json_response({"error": "body too large"}, status=413)
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            observe("unknown", "too_large")
            return web.json_response({"error": "body too large"}, status=413)
        try:
            event = receiver.receive(raw.decode("utf-8"), request.headers.get("Authorization", ""))
        except Exception as exc:  # any verification failure: 401, nothing changed, no details
            observe("unknown", "unauthorized")
            log.warning("webhook refused: %s", type(exc).__name__)
            return web.json_response({"error": "webhook not verified"}, status=401)
        kind = event.event
        if kind not in RELEVANT:
            observe(kind or "unknown", "ignored")
            return web.json_response({"status": "ignored"})
        parsed = n.parse_room_name(event.room.name)
        if parsed is None:
            observe(kind, "foreign_room")
            return web.json_response({"status": "ignored"})
        session, connection = parsed
        mark = f"{kind}/{connection}/{event.id or event.created_at}"
        try:
            found = await mark_session(session, mark)
        except (
            Exception
        ) as exc:  # the API server is unavailable: LiveKit retries, the loop converges
            observe(kind, "error")
            log.warning(
                "webhook %s for session %s not recorded: %s", kind, session, type(exc).__name__
            )
            return web.json_response(
                {"error": "not recorded", "detail": type(exc).__name__}, status=503
            )
        observe(kind, "marked" if found else "unknown_session")
        return web.json_response({"status": "ok"})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(PATH, webhook)
    app.router.add_get("/healthz", healthz)
    return app


async def start_webhook_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve `app` on host:port (127.0.0.1 unless configured otherwise); returns the runner to stop."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("webhook receiver on http://%s:%d%s", host, port, PATH)
    return runner
