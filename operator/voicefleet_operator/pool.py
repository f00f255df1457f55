"""The warm pool (SPEC.md, "Warm pool"): idle workers, registered and with models loaded.

`WarmPool` is this process's view of the pool, fed by the pod watch (kopf's `on.event` for
worker pods), and the count of every live worker pod (warm or bound) for the cap.
`maintain_pool` is one pass of the background keeper: recycle pool pods past their age
(and any that ended), then create what is missing, never beyond the cap. A connection claims
a ready pool pod in the reconcile (`reconcile.claim_warm_pod`) with a resourceVersion-guarded
patch, so two claims of one pod cannot both win.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from . import naming as n
from .clients.kube import KubeClient, pod_view
from .config import Settings
from .expect import ExpectedUntilSeen
from .manifests import build_warm_pod

log = logging.getLogger("voicefleet.pool")
SEEN_TTL = 30.0  # a pod created here counts until the watch shows it, at most this long


@dataclasses.dataclass(frozen=True)
class PoolPod:
    name: str
    resource_version: str
    ready: bool
    ended: bool  # Succeeded or Failed: a warm worker must not exit; it is replaced
    deleting: bool
    created: float  # unix seconds


class WarmPool:
    """The pool pods as last seen, the pods being claimed, and every live worker pod."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._pods: dict[str, PoolPod] = {}
        self._claiming: set[str] = set()
        self._starting: ExpectedUntilSeen[None] = ExpectedUntilSeen(SEEN_TTL, clock)
        self._workers: set[str] = set()  # live worker pods (warm or bound), not deleting
        # Every worker pod that exists (deleting and ended ones too: a name is taken until
        # the object is gone) → the session it is labelled for ("" for a pool pod).
        self._owners: dict[str, str] = {}
        self.changed = asyncio.Event()

    # -- fed by the pod watch ----------------------------------------------------------------
    def seen(self, pod: Mapping[str, Any], deleted: bool = False) -> None:
        """Any worker pod event (warm or bound)."""
        meta = pod.get("metadata") or {}
        name = str(meta.get("name", ""))
        self._starting.seen((name,))
        view = pod_view(pod)
        gone = deleted or view.deleting or view.phase in ("Succeeded", "Failed")
        if gone:
            self._workers.discard(name)
        else:
            self._workers.add(name)
        labels = meta.get("labels") or {}
        if deleted:
            self._owners.pop(name, None)
        else:
            self._owners[name] = str(labels.get(n.LABEL_SESSION, ""))
        if deleted or labels.get(n.LABEL_POOL) != n.POOL_WARM:
            if self._pods.pop(name, None) is not None:
                self._claiming.discard(name)
                self.changed.set()
            return
        created = meta.get("creationTimestamp")
        self._pods[name] = PoolPod(
            name=name,
            resource_version=str(meta.get("resourceVersion", "")),
            ready=view.ready,
            ended=view.phase in ("Succeeded", "Failed"),
            deleting=view.deleting,
            created=(
                datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
                if created
                else self._clock()
            ),
        )
        self.changed.set()

    # -- used by the reconcile ---------------------------------------------------------------
    def candidates(self) -> list[PoolPod]:
        """Ready pool pods nobody here is claiming, oldest first (the next to be recycled)."""
        ready = [p for p in self._free() if p.ready]
        return sorted(ready, key=lambda p: p.created)

    def claiming(self, name: str) -> None:
        self._claiming.add(name)

    def released(self, name: str) -> None:
        """A claim that lost (409) or failed: the pod is someone else's or still free."""
        self._claiming.discard(name)

    def live_workers(self) -> int:
        return len(self._workers | self._starting.names())

    def taken_by_another(self, name: str, session: str) -> bool:
        """Does a worker pod of this name exist, labelled for another session?

        A pool pod (no session label yet) is nobody's: it may be the one this session just
        claimed, whose relabelling the watch has not delivered.
        """
        owner = self._owners.get(name)
        return bool(owner) and owner != session

    # -- used by the keeper -------------------------------------------------------------------
    def size(self) -> int:
        """Pool pods that are or will be available (not deleting, not ended, not claimed)."""
        self._starting.expire()
        return len({p.name for p in self._free()} | self._starting.names())

    def to_recycle(self, max_age: float) -> list[PoolPod]:
        now = self._clock()
        return [
            p
            for p in self._pods.values()
            if not p.deleting
            and p.name not in self._claiming
            and (p.ended or now - p.created >= max_age)
        ]

    def created(self, name: str) -> None:
        self._starting.add(name, None)

    def surplus(self, size: int) -> list[PoolPod]:
        """Seen pool pods beyond `size` (the pool was made smaller), oldest first."""
        extra = self.size() - size
        if extra <= 0:
            return []
        return sorted(self._free(), key=lambda p: p.created)[:extra]

    def now(self) -> float:
        """The pool's clock (unix seconds, like `PoolPod.created`)."""
        return self._clock()

    def _free(self) -> list[PoolPod]:
        """Seen pool pods not deleting, not ended and not being claimed here (ready or not)."""
        return [
            p
            for p in self._pods.values()
            if not p.deleting and not p.ended and p.name not in self._claiming
        ]


async def maintain_pool(
    rt_kube: KubeClient,
    settings: Settings,
    pool: WarmPool,
    may_act: Callable[[], Awaitable[bool]] | None = None,
) -> int:
    """One pass of the keeper; returns the number of pods created.

    Removes pool pods past their age (and any whose worker exited) and pods beyond the
    pool's size (it was made smaller), then creates what is missing, never beyond the cap.
    `may_act` is asked only when there is something to do (the replica may be standing by).
    """
    stale = pool.to_recycle(settings.warm_pool_max_age_seconds)
    stale += [p for p in pool.surplus(settings.warm_pool_size) if p not in stale]
    missing = settings.warm_pool_size - (pool.size() - len(stale))
    if settings.max_workers:
        missing = min(missing, settings.max_workers - pool.live_workers())
    if not stale and missing <= 0:
        return 0
    if may_act is not None and not await may_act():
        return 0
    now = pool.now()
    for pod in stale:
        # Guarded by its resourceVersion: a pod claimed meanwhile is not deleted.
        if await rt_kube.delete_pod_if_unchanged(
            settings.namespace, pod.name, pod.resource_version
        ):
            log.info("warm pool: removed %s (%s)", pod.name, _why(pod, settings, now))
    created = 0
    for _ in range(max(0, missing)):
        name = n.pod_name("".join(secrets.choice(n.SUFFIX_ALPHABET) for _ in range(5)))
        if await rt_kube.create_pod(
            settings.namespace, build_warm_pod(settings.namespace, name, settings)
        ):
            pool.created(name)
            created += 1
    if created:
        log.info("warm pool: started %d worker(s) (size %d)", created, settings.warm_pool_size)
    return created


def _why(pod: PoolPod, settings: Settings, now: float) -> str:
    """Why `maintain_pool` removes a pool pod, for the log (`now` on the pool's clock)."""
    if pod.ended:
        return "its worker exited"
    if now - pod.created >= settings.warm_pool_max_age_seconds:
        return f"older than {settings.warm_pool_max_age_seconds:.0f} s"
    return f"beyond the pool size {settings.warm_pool_size}"
