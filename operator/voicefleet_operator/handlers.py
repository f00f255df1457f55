"""kopf registration only: each handler is a few lines that call `reconcile`.

Why a daemon and not create/update/resume handlers: a connection is a process in time
(timeouts, grace periods, periodic room checks), not a reaction to spec changes. One
long-lived loop per VoiceSession runs observe → plan → apply passes, serialized per session,
and sleeps until its next deadline or until something wakes it: any change of the session
(spec, the webhook's annotation), any change of its worker pods. kopf starts the loop on
create and on operator start (resume), and stops it on deletion, where the `teardown`
handler (behind the finalizer) takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from livekit import api as lkapi

from . import naming as n
from .api import GROUP, PLURAL, VERSION, parse_status
from .clients.kube import KubeClient, KubernetesUnavailable, pod_view
from .clients.livekit import LiveKitClient, LiveKitUnavailable
from .clients.worker_probe import WorkerReadiness
from .config import Settings
from .events import EventPoster
from .manifests import build_worker_secret
from .metrics import Metrics, serve_metrics
from .plan import PodView
from .pool import maintain_pool
from .reconcile import (
    RetryLater,
    Runtime,
    current_connection,
    holds_agent,
    reconcile_session,
    sweep_orphan_rooms,
    teardown_session,
)
from .webhook import make_app, start_webhook_server

log = logging.getLogger("voicefleet.operator")
SAFETY_RECHECK = 300.0
COALESCE_SECONDS = 0.05


class NoDiffBase(kopf.DiffBaseStorage):
    """No "last-handled-configuration": nothing here reacts to spec diffs.

    kopf keeps a copy of each object's last handled spec to tell creations and updates
    apart, written with one more PATCH per object (and one per annotation change). This
    operator has no create/update/resume handlers (the per-session loop reads the spec
    itself, level-based) and deletion is told by the deletionTimestamp, so the copy would be
    written and never read: a PATCH per session in a burst of them, saved.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Any = None
    ) -> kopf.BodyEssence:  # kopf deep-copies the whole body here, per event: not needed
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _wake(memo: Any, key: str, *, urgent: bool = False) -> None:
    """Wake the session's loop. `urgent`: a change that comes alone and that a user waits on
    (a participant joined or left, a worker pod is gone): its pass runs without the settle
    that collects a burst of pod updates into one pass."""
    event = memo.wakers.get(key)
    if event is not None:
        if urgent:
            memo.urgent.add(key)
        event.set()


def configure_kopf(settings: kopf.OperatorSettings, cfg: Settings) -> None:
    """kopf's settings for this operator (pure: tested on a fresh `kopf.OperatorSettings`)."""
    settings.persistence.finalizer = n.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=n.KOPF_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Keep watches alive and bounded: the server ends each stream before the client gives up.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    # Only this operator's pods on the pod watch, chosen by the API server: the handlers'
    # `labels=` filter is kopf's, applied after every pod event of the namespace has been
    # sent, decoded and queued here (any other workload's pods, at its pace, on this CPU).
    settings.watching.label_selectors["", "v1", "pods"] = n.WORKERS_SELECTOR
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # No cluster-wide CRD/namespace scanning: the served namespace is fixed (least privilege).
    settings.scanning.disabled = True
    settings.peering.name = cfg.peering_name
    settings.peering.priority = cfg.peering_priority
    settings.peering.lifetime = cfg.peering_lifetime_seconds
    settings.peering.standalone = cfg.standalone
    settings.peering.stealth = True
    settings.posting.reporting_component = n.MANAGER
    settings.posting.worker_limit = cfg.event_posters  # kopf's own Events (handler errors)
    settings.background.cancellation_polling = 5


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg: Settings = memo.settings
    configure_kopf(settings, cfg)

    metrics = Metrics()
    kube = await KubeClient.connect(max_inflight=cfg.api_max_inflight)
    livekit = LiveKitClient(
        cfg.livekit_http_url,
        cfg.livekit_api_key,
        cfg.livekit_api_secret,
        max_inflight=cfg.api_max_inflight,
    )
    kube.observe = metrics.api_observer("kubernetes")
    livekit.observe = metrics.api_observer("livekit")
    memo.events = EventPoster(
        kube,
        n.MANAGER,
        cfg.event_posters,
        metrics.events_dropped.inc,
        per_second=cfg.events_per_second,
    )
    memo.events.start()
    memo.runtime = Runtime(
        settings=cfg,
        kube=kube,
        livekit=livekit,
        metrics=metrics,
        record_event=memo.events.record,
        readiness=WorkerReadiness(cfg.worker.health_port),
    )
    memo.wakers = {}
    memo.urgent = set()
    memo.current = {}
    memo.seen = {}
    await kube.ensure_secret(cfg.namespace, build_worker_secret(cfg.namespace, cfg))
    if not cfg.standalone:
        await kube.ensure_peering(cfg.namespace, cfg.peering_name)
    if cfg.metrics_port:
        serve_metrics(cfg.bind_host, cfg.metrics_port)
    memo.webhook = None
    if cfg.webhook_port:
        receiver = lkapi.WebhookReceiver(
            lkapi.TokenVerifier(cfg.livekit_api_key, cfg.livekit_api_secret)
        )

        async def mark(session: str, value: str) -> bool:
            key = n.session_key(cfg.namespace, session)
            memo.runtime.rooms.forget(key)  # the next pass asks LiveKit (RecentRooms)
            _wake(memo, key, urgent=True)
            return await kube.annotate_session(
                cfg.namespace, session, {n.ANNOTATION_LIVEKIT_EVENT: value}
            )

        app = make_app(receiver, mark, lambda e, r: metrics.webhooks.labels(e, r).inc())
        memo.webhook = await start_webhook_server(app, cfg.bind_host, cfg.webhook_port)
    memo.sweeper = asyncio.create_task(_sweep_forever(memo))
    # Always on: with no pool configured it only removes pool pods left by an earlier setting.
    memo.keeper = asyncio.create_task(_keep_pool_forever(memo))
    log.info("voicefleet operator started: namespace %s, settings %r", cfg.namespace, cfg)


async def _sweep_forever(memo: kopf.Memo) -> None:
    rt: Runtime = memo.runtime
    while True:
        await asyncio.sleep(rt.settings.sweep_seconds)
        try:
            deleted = await sweep_orphan_rooms(rt, dict(memo.current))
            for room in deleted:
                log.info("deleted orphan room %s", room)
        except (LiveKitUnavailable, KubernetesUnavailable) as exc:
            log.warning("orphan sweep skipped: %s", exc)
        except Exception:
            log.exception("orphan sweep failed")


POOL_PERIOD = 2.0


async def _keep_pool_forever(memo: kopf.Memo) -> None:
    """The warm pool's keeper: refills and recycles, only while this replica is active."""
    rt: Runtime = memo.runtime
    cfg = rt.settings
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.pool.changed.wait(), POOL_PERIOD)
        rt.pool.changed.clear()
        try:

            async def active() -> bool:
                return cfg.standalone or not await _standing_by(rt)

            await maintain_pool(rt.kube, cfg, rt.pool, active)
            rt.metrics.warm_pool.set(rt.pool.size())
        except KubernetesUnavailable as exc:
            log.warning("warm pool: %s; retrying", exc)
            await asyncio.sleep(POOL_PERIOD)
        except Exception:
            log.exception("warm pool: keeper pass failed")
            await asyncio.sleep(POOL_PERIOD)


async def _standing_by(rt: Runtime) -> bool:
    """True while a peer of higher kopf priority is alive: kopf pauses this replica then, and
    the keeper must not fill the namespace's pool twice."""
    cfg = rt.settings
    peers = await rt.kube.read_peering(cfg.namespace, cfg.peering_name) or {}
    now = datetime.now(UTC)
    for peer in peers.values():
        if not isinstance(peer, dict) or int(peer.get("priority", 0)) <= cfg.peering_priority:
            continue
        seen = peer.get("lastseen")
        lifetime = float(peer.get("lifetime", 60))
        if seen and (now - datetime.fromisoformat(str(seen))).total_seconds() < lifetime:
            return True
    return False


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for name in ("sweeper", "keeper"):
        task = getattr(memo, name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if getattr(memo, "webhook", None) is not None:
        await memo.webhook.cleanup()
    if getattr(memo, "events", None) is not None:
        await memo.events.stop()
    rt: Runtime | None = getattr(memo, "runtime", None)
    if rt is not None:
        await rt.livekit.aclose()
        if rt.readiness is not None:
            await rt.readiness.aclose()
        await rt.kube.close()


@kopf.index(GROUP, VERSION, PLURAL)
async def agent_holders(name: str, body: kopf.Body, **_: Any) -> dict[str, str] | None:
    """Letta agent id → the session holding it (a live connection with a room)."""
    agent = (body.get("spec") or {}).get("agentId")
    # body.get gives the raw dict; dict(kopf.Status) walks kopf's view key by key (a measured
    # 6 % of the operator's CPU in a burst, with the same in session_changed).
    if agent and holds_agent(parse_status(body.get("status"))):
        return {str(agent): name}
    return None


@kopf.index("", "v1", "pods", labels={n.LABEL_MANAGED_BY: n.MANAGER})
async def worker_pods(labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[str, PodView] | None:
    """Session name → its worker pods, as the plan sees them (kept by kopf from the watch)."""
    session = labels.get(n.LABEL_SESSION)
    return {session: pod_view(body)} if session else None


@kopf.on.event(GROUP, VERSION, PLURAL)
async def session_changed(
    name: str,
    namespace: str | None,
    type: str,
    body: kopf.Body,
    memo: Any,
    **_: Any,
) -> None:
    key = n.session_key(namespace or "", name)
    if type == "DELETED":
        memo.current.pop(name, None)
        memo.seen.pop(key, None)
        return
    parsed = parse_status(body.get("status"))
    current = current_connection(parsed)
    if current is not None:
        memo.current[name] = current
    # The echo of this operator's own status write changes nothing it did not know: no wake.
    # Anything else (spec, the webhook's mark, deletion, someone else's write) wakes the loop.
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    seen = (
        meta.get("generation"),
        annotations.get(n.ANNOTATION_LIVEKIT_EVENT),
        annotations.get(n.ANNOTATION_END_CONNECTION),
        meta.get("deletionTimestamp"),
    )
    own_echo = memo.seen.get(key) == seen and memo.runtime.statuses.get(key) == parsed
    memo.seen[key] = seen
    if not own_echo:
        _wake(memo, key)


@kopf.on.event("", "v1", "pods", labels={n.LABEL_MANAGED_BY: n.MANAGER})
async def worker_pod_changed(
    labels: kopf.Labels,
    namespace: str | None,
    body: kopf.Body,
    type: str,
    memo: Any,
    **_: Any,
) -> None:
    memo.runtime.pool.seen(body, deleted=type == "DELETED")
    session = labels.get(n.LABEL_SESSION)
    if session:
        # A pod gone is final (nothing follows it) and opens SPEC rule 3's gate for the
        # session's next worker.
        _wake(memo, n.session_key(namespace or "", session), urgent=type == "DELETED")


@kopf.daemon(GROUP, VERSION, PLURAL, id="connection", cancellation_timeout=60)
async def connection_loop(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **kwargs: Any,
) -> None:
    rt: Runtime = memo.runtime
    agent_holders: kopf.Index[str, str] = kwargs["agent_holders"]
    pods: kopf.Index[str, PodView] = kwargs["worker_pods"]
    key = n.session_key(namespace or "", name)
    wake: asyncio.Event = memo.wakers.setdefault(key, asyncio.Event())
    while not stopped:
        wake.clear()
        async with rt.lock(key):
            if stopped:
                break
            agent = body.get("spec", {}).get("agentId")
            holders = list(agent_holders.get(agent, ())) if agent else []
            try:
                delay = await reconcile_session(rt, body, holders, list(pods.get(name, ())))
            except Exception:  # never a crash loop: log, count, look again later
                log.exception("session %s: reconcile failed", key)
                rt.metrics.errors.labels("ReconcileError").inc()
                delay = 5.0
        await _sleep(wake, stopped, SAFETY_RECHECK if delay is None else delay)
        if wake.is_set() and not stopped and key not in memo.urgent:
            # Events come in bursts (a pod's scheduling, container and readiness updates):
            # one pass after a short settle sees them all.
            await asyncio.sleep(COALESCE_SECONDS)
        memo.urgent.discard(key)
    memo.wakers.pop(key, None)
    memo.urgent.discard(key)


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Until `seconds` pass, something wakes the session, or kopf stops its loop."""
    if seconds <= 0:
        return
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@kopf.on.delete(GROUP, VERSION, PLURAL, id="teardown")
async def teardown(
    body: kopf.Body, name: str, namespace: str | None, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    rt: Runtime = memo.runtime
    key = n.session_key(namespace or "", name)
    _wake(memo, key)
    since = meta.get("deletionTimestamp")
    started = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else datetime.now(UTC)
    async with rt.lock(key):
        try:
            await teardown_session(rt, body, (datetime.now(UTC) - started).total_seconds())
        except RetryLater as exc:
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
