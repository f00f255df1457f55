"""The LiveKit webhook receiver: verified events mark their session so it reconciles sooner.

`POST /livekit/webhook`: the signature (a JWT over the body's SHA-256, signed with the API
secret) is checked with `livekit.api.WebhookReceiver`; anything unverified is a 401 and
changes nothing. A verified participant/room event for a room this operator named is
turned into an annotation on its VoiceSession (`voicefleet.dev/livekit-event`), which
the session's watch delivers to whichever replica is active, plus an in-process wake-up.
The webhook carries no state the reconcile relies on: it only makes it look sooner, and a
lost webhook changes nothing but latency (the periodic room check finds the same).
A body this process already recorded (a replay, within `REPLAY_WINDOW_SECONDS`) is
acknowledged and changes nothing; bodies over `MAX_BODY` are a 413, whatever their framing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web
from livekit import api

from . import naming as n

log = logging.getLogger("voicefleet.webhook")

MAX_BODY = 1 << 20
PATH = "/livekit/webhook"
# LiveKit signs each webhook with a short-lived token; a replay after the window fails its
# `exp` check anyway, so remembering the bodies of the window is enough.
REPLAY_WINDOW_SECONDS = 600.0
REPLAY_MAX_ENTRIES = 4096
# Events that can change a session's state; the rest are acknowledged and ignored.
RELEVANT = frozenset(
    {
        "participant_joined",
        "participant_left",
        "participant_connection_aborted",
        "room_finished",
    }
)  # not room_started: the operator opens every room itself and sees it on its next pass

# (session name, mark) → True if the session exists and was marked.
MarkSession = Callable[[str, str], Awaitable[bool]]
Observe = Callable[[str, str], None]  # (event, result) → metrics


class RecordedBodies:
    """SHA-256 digests of the bodies recorded in the last `window` seconds (at most `limit`)."""

    def __init__(
        self,
        window: float = REPLAY_WINDOW_SECONDS,
        limit: int = REPLAY_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window, self._limit, self._clock = window, limit, clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def _forget_old(self) -> None:
        horizon = self._clock() - self._window
        while self._seen and (
            len(self._seen) > self._limit or next(iter(self._seen.values())) < horizon
        ):
            self._seen.popitem(last=False)

    def __contains__(self, digest: object) -> bool:
        self._forget_old()
        return digest in self._seen

    def add(self, digest: str) -> None:
        self._seen[digest] = self._clock()
        self._seen.move_to_end(digest)
        self._forget_old()


def make_app(
    receiver: api.WebhookReceiver,
    mark_session: MarkSession,
    observe: Observe,
    recorded: RecordedBodies | None = None,
) -> web.Application:
    seen = recorded if recorded is not None else RecordedBodies()

    async def webhook(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            observe("unknown", "too_large")
            return web.json_response({"error": "body too large"}, status=413)
        try:
            # read() gathers every chunk (a chunked body has no Content-Length) and stops
            # at client_max_size; content.read(n) would return only what has arrived.
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            observe("unknown", "too_large")
            return web.json_response({"error": "body too large"}, status=413)
        try:
            event = receiver.receive(raw.decode("utf-8"), request.headers.get("Authorization", ""))
        except Exception as exc:  # any verification failure: 401, nothing changed, no details
            observe("unknown", "unauthorized")
            log.warning("webhook refused: %s", type(exc).__name__)
            return web.json_response({"error": "webhook not verified"}, status=401)
        kind = event.event
        digest = hashlib.sha256(raw).hexdigest()
        if digest in seen:
            observe(kind or "unknown", "replayed")
            return web.json_response({"status": "duplicate"})
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
        seen.add(digest)
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
