"""The gateway's composition root: routes, middleware, and the services they call.

`create_app(settings)` wires the real Kubernetes and Letta clients; tests pass fakes for
`store` and `agents`. Handlers are thin: parse, call a service, answer JSON.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .accesslog import ERROR_CODE_KEY, IDENTITY_KEY, REQUEST_ID_KEY
from .agents import AgentDirectory, LettaAgents
from .auth import Authenticator, Principal
from .config import Settings
from .errors import (
    ApiError,
    BadRequest,
    CapacityExceeded,
    Conflict,
    ConnectionFailed,
    DependencyUnavailable,
    NotFound,
    NotReadyInTime,
    TooManyRequests,
    Unauthorized,
)
from .kube import KubeSessions, load_connection
from .limits import RateLimiter
from .metrics import Metrics
from .naming import is_agent_id, is_session_name
from .openapi import openapi_document
from .sessions import SessionService, SessionStore
from .tokens import join_token

log = logging.getLogger("voicefleet_web")

SETTINGS = web.AppKey("settings", Settings)
SESSIONS = web.AppKey("sessions", SessionService)
AGENTS = web.AppKey("agents", AgentDirectory)
AUTH = web.AppKey("auth", Authenticator)
RATE = web.AppKey("rate", RateLimiter)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", SessionStore)

# Per-request values the access log reads (accesslog.py): never a credential.
REQUEST_ID = REQUEST_ID_KEY
IDENTITY = IDENTITY_KEY
ERROR_CODE = ERROR_CODE_KEY

MAX_BODY = 16 * 1024
PUBLIC_PATHS = frozenset({"/api/openapi.json"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss: http: https:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


def _error_response(request: web.Request, exc: ApiError) -> web.Response:
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="voicefleet"'
        request.app[METRICS].auth_failures.inc()
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    request[ERROR_CODE] = exc.code
    return _json_error(exc.status, exc.code, exc.detail, headers)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, JSON errors, metrics and security headers for every request."""
    request[REQUEST_ID] = uuid.uuid4().hex[:16]
    started = time.monotonic()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error_response(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        request[ERROR_CODE] = code
        response = _json_error(
            exc.status,
            code,
            exc.reason
            if exc.text is None
            else f"{exc.reason}: {request.method} {request.rel_url.path}",
        )
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        log.exception(
            "unhandled error",
            extra={"fields": {"request_id": request[REQUEST_ID], "path": request.rel_url.path}},
        )
        request[ERROR_CODE] = "internal_error"
        response = _json_error(
            500, "internal_error", f"unexpected error; request id {request[REQUEST_ID]}"
        )
    route = request.match_info.route.resource
    label = route.canonical if route is not None else "unmatched"
    metrics = request.app[METRICS]
    metrics.requests.labels(request.method, label, str(response.status)).inc()
    metrics.latency.labels(request.method, label).observe(time.monotonic() - started)
    response.headers["X-Request-Id"] = request[REQUEST_ID]
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.rel_url.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _user(request: web.Request) -> Principal:
    """The authenticated caller, after spending one of their requests of the minute."""
    user = await request.app[AUTH].authenticate(request.headers.get("Authorization"))
    request[IDENTITY] = user.identity
    try:
        request.app[RATE].check(user.identity)
    except TooManyRequests:
        request.app[METRICS].rejected.labels("requests_per_minute").inc()
        raise
    return user


# -- API handlers ----------------------------------------------------------------------------
async def list_agents(request: web.Request) -> web.Response:
    await _user(request)
    agents = await request.app[AGENTS].list_agents()
    return web.json_response([a.to_json() for a in agents])


async def _connect_body(request: web.Request) -> str:
    # A body announced too large is refused before reading: read() would otherwise wait for
    # bytes that may never come (client_max_size only counts what has arrived).
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send the body as application/json")
    try:
        body: Any = await request.json()
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"agentId": "<Letta agent id>"}')
    agent_id = body.get("agentId")
    if not isinstance(agent_id, str) or not is_agent_id(agent_id):
        raise BadRequest(
            "agentId must be a Letta agent id (letters, digits, . _ : -, at most 128 characters)"
        )
    return agent_id


async def connect(request: web.Request) -> web.Response:
    user = await _user(request)
    agent_id = await _connect_body(request)
    app, settings = request.app, request.app[SETTINGS]
    metrics = app[METRICS]
    if await app[AGENTS].get_agent(agent_id) is None:
        raise NotFound(f"unknown agent {agent_id}")
    started = time.monotonic()
    outcome = "error"
    metrics.waiting.labels("connect").inc()
    try:
        connected = await app[SESSIONS].connect(user, agent_id)
        outcome = "ready"
    except ApiError as exc:
        outcome = {
            NotReadyInTime: "timeout",
            ConnectionFailed: "failed",
            CapacityExceeded: "capacity",
            Conflict: "superseded",
            TooManyRequests: "limit",
            DependencyUnavailable: "unavailable",
        }.get(type(exc), "error")
        if isinstance(exc, TooManyRequests):
            metrics.rejected.labels("connections").inc()
        raise
    finally:
        metrics.waiting.labels("connect").dec()
        metrics.connects.labels(outcome).inc()
    metrics.connect_seconds.observe(time.monotonic() - started)
    token = join_token(
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret,
        room=connected.room,
        identity=user.identity,
        name=user.name,
        ttl_seconds=settings.join_token_ttl_seconds,
    )
    log.info(
        "connection ready",
        extra={
            "fields": {
                "session": connected.session,
                "connection": connected.connection,
                "room": connected.room,
                "user": user.identity,
            }
        },
    )
    return web.json_response(
        {
            "session": connected.session,
            "connection": connected.connection,
            "room": connected.room,
            "livekitUrl": settings.livekit_url,
            "token": token,
            "identity": user.identity,
        }
    )


def _session_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_session_name(name):
        raise BadRequest(f"{name[:80]!r} is not a session name")
    return name


async def get_session(request: web.Request) -> web.Response:
    user = await _user(request)
    return web.json_response(await request.app[SESSIONS].describe(user, _session_name(request)))


async def disconnect(request: web.Request) -> web.Response:
    user = await _user(request)
    name = _session_name(request)
    metrics = request.app[METRICS]
    started = time.monotonic()
    metrics.waiting.labels("disconnect").inc()
    try:
        ended = await request.app[SESSIONS].disconnect(user, name)
    finally:
        metrics.waiting.labels("disconnect").dec()
    metrics.disconnect_seconds.observe(time.monotonic() - started)
    log.info(
        "connection ended",
        extra={
            "fields": {
                "session": name,
                "connection": ended.connection,
                "user": user.identity,
                "endReason": ended.end_reason,
            }
        },
    )
    return web.json_response(ended.to_json())


# -- unauthenticated -----------------------------------------------------------------------
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def index(request: web.Request) -> web.StreamResponse:
    page = request.app[SETTINGS].static_dir / "index.html"
    if not page.is_file():
        raise DependencyUnavailable(
            "the browser client is not built: run tools/install-web-deps.sh"
        )
    return web.FileResponse(
        page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
    )


async def api_not_found(request: web.Request) -> web.Response:
    raise NotFound(f"no such API route: {request.method} {request.rel_url.path}")


async def _close_clients(app: web.Application) -> None:
    await app[STORE].close()
    await app[AGENTS].close()


def create_app(
    settings: Settings,
    *,
    store: SessionStore | None = None,
    agents: AgentDirectory | None = None,
    authenticator: Authenticator | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    app = web.Application(middlewares=[observe], client_max_size=MAX_BODY)
    store = store or KubeSessions(load_connection(settings.kubeconfig), settings.namespace)
    app[SETTINGS] = settings
    app[STORE] = store
    app[AGENTS] = agents or LettaAgents(
        settings.letta_base_url, settings.letta_api_key, settings.letta_agent_tags
    )
    app[AUTH] = authenticator or Authenticator(settings)
    app[RATE] = RateLimiter(settings.requests_per_minute, clock=clock)
    app[METRICS] = Metrics()
    app[SESSIONS] = SessionService(
        store,
        namespace=settings.namespace,
        ready_timeout=settings.ready_timeout_seconds,
        idle_timeout=settings.idle_timeout_seconds,
        max_connections_per_user=settings.max_connections_per_user,
        clock=clock,
    )
    app.on_cleanup.append(_close_clients)
    app.router.add_get("/api/agents", list_agents)
    app.router.add_post("/api/sessions", connect)
    app.router.add_get("/api/sessions/{name}", get_session)
    app.router.add_delete("/api/sessions/{name}/connection", disconnect)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_route("*", "/api/{tail:.*}", api_not_found)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    if settings.static_dir.is_dir():
        app.router.add_static("/static/", settings.static_dir, follow_symlinks=False)
    return app
