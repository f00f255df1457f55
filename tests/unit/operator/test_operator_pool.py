"""The warm pool: the keeper (refill, recycle, cap), the claim (warm path, lost race, cold
fallback) and the cap on live workers (CapacityExceeded), against fakes."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from opfakes import FakeKube
from test_operator_reconcile import body, runtime

from voicefleet_operator import naming as n
from voicefleet_operator.config import Settings
from voicefleet_operator.manifests import build_warm_pod
from voicefleet_operator.pool import SEEN_TTL, WarmPool, maintain_pool
from voicefleet_operator.reconcile import reconcile_session

NOW = 1_800_000_000.0


def warm_settings(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **{"warm_pool_size": 2, **changes})


def seen(pool: WarmPool, kube: FakeKube, name: str, ready: bool = True, age: float = 0) -> None:
    """The watch delivers the pod (as stored in the fake) to the pool's view."""
    pod = kube.pods[name]
    pod["metadata"].setdefault("resourceVersion", "1")
    pod["metadata"]["creationTimestamp"] = _iso(NOW - age)
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}
    pool.seen({**pod, "status": status})


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_the_keeper_fills_the_pool_and_counts_pods_not_seen_yet(settings: Settings) -> None:
    kube, pool = FakeKube(), WarmPool(clock=lambda: NOW)
    cfg = warm_settings(settings)
    assert await maintain_pool(kube, cfg, pool) == 2  # type: ignore[arg-type]
    assert await maintain_pool(kube, cfg, pool) == 0  # type: ignore[arg-type]
    for pod in kube.pods.values():
        assert pod["metadata"]["labels"][n.LABEL_POOL] == n.POOL_WARM
        assert "ownerReferences" not in pod["metadata"]
        assert n.LABEL_SESSION not in pod["metadata"]["labels"]


async def test_the_keeper_recycles_aged_pods_but_not_one_claimed_meanwhile(
    settings: Settings,
) -> None:
    kube, pool = FakeKube(), WarmPool(clock=lambda: NOW)
    cfg = warm_settings(settings, warm_pool_max_age_seconds=600.0)
    for name in ("voicefleet-worker-old11", "voicefleet-worker-old22"):
        kube.pods[name] = build_warm_pod(cfg.namespace, name, cfg)
        seen(pool, kube, name, age=900)
    kube.pods["voicefleet-worker-old22"]["metadata"]["resourceVersion"] = "7"  # claimed since
    await maintain_pool(kube, cfg, pool)  # type: ignore[arg-type]
    assert kube.deleting == {"voicefleet-worker-old11"}


async def test_the_keeper_never_goes_beyond_the_cap_on_live_workers(settings: Settings) -> None:
    kube, pool = FakeKube(), WarmPool(clock=lambda: NOW)
    cfg = warm_settings(settings, warm_pool_size=5, max_workers=3)
    bound = {"metadata": {"name": "voicefleet-worker-bound", "labels": n.worker_labels("s", 1)}}
    pool.seen({**bound, "status": {"phase": "Running"}})
    assert await maintain_pool(kube, cfg, pool) == 2  # type: ignore[arg-type]


async def test_a_new_connection_claims_a_ready_warm_pod_instead_of_creating_one(
    settings: Settings,
) -> None:
    rt, kube, _lk, events = runtime(warm_settings(settings))
    kube.pods["voicefleet-worker-warm1"] = build_warm_pod(
        "voicefleet", "voicefleet-worker-warm1", rt.settings
    )
    seen(rt.pool, kube, "voicefleet-worker-warm1")
    await reconcile_session(rt, body(), [])
    assert kube.claims == ["voicefleet-worker-warm1"]
    assert set(kube.pods) == {"voicefleet-worker-warm1"}  # nothing created cold
    claimed = kube.pods["voicefleet-worker-warm1"]["metadata"]
    assert claimed["labels"][n.LABEL_SESSION] == "alice-agent66"
    assert n.LABEL_POOL not in claimed["labels"]
    assert claimed["ownerReferences"][0]["name"] == "alice-agent66"
    assert any(e[1] == "WarmPodClaimed" for e in events)
    kube.ready.add("voicefleet-worker-warm1")
    await reconcile_session(rt, body(), [])
    status = rt.statuses["voicefleet/alice-agent66"]
    assert status.connection is not None and status.connection.pod == "voicefleet-worker-warm1"
    assert status.connection.pod_ready_at is not None


async def test_a_lost_claim_race_falls_back_to_the_cold_path(settings: Settings) -> None:
    rt, kube, _lk, _ = runtime(warm_settings(settings))
    kube.pods["voicefleet-worker-warm1"] = build_warm_pod(
        "voicefleet", "voicefleet-worker-warm1", rt.settings
    )
    seen(rt.pool, kube, "voicefleet-worker-warm1")
    kube.pods["voicefleet-worker-warm1"]["metadata"]["resourceVersion"] = "9"  # another won
    await reconcile_session(rt, body(), [])
    assert kube.claims == []
    assert len(kube.pods) == 2  # the warm pod (someone else's now) and a cold one


async def test_a_session_with_worker_overrides_takes_the_cold_path(settings: Settings) -> None:
    rt, kube, _lk, _ = runtime(warm_settings(settings))
    kube.pods["voicefleet-worker-warm1"] = build_warm_pod(
        "voicefleet", "voicefleet-worker-warm1", rt.settings
    )
    seen(rt.pool, kube, "voicefleet-worker-warm1")
    await reconcile_session(rt, body(worker={"image": "example/worker:2"}), [])
    assert kube.claims == [] and len(kube.pods) == 2


async def test_at_the_cap_a_new_connection_fails_with_capacity_exceeded(
    settings: Settings,
) -> None:
    rt, kube, _lk, _ = runtime(dataclasses.replace(settings, max_workers=1))
    busy = {"metadata": {"name": "voicefleet-worker-busy1", "labels": n.worker_labels("other", 1)}}
    rt.pool.seen({**busy, "status": {"phase": "Running"}})
    for _ in range(3):
        await reconcile_session(rt, body(), [])
    status = rt.statuses["voicefleet/alice-agent66"]
    assert kube.pods == {}
    assert status.phase is not None and status.phase.value == "Failed"
    ready = status.condition("Ready")
    assert ready is not None and ready.reason == "CapacityExceeded"


async def test_a_smaller_pool_removes_its_surplus_and_a_standby_touches_nothing(
    settings: Settings,
) -> None:
    kube, pool = FakeKube(), WarmPool(clock=lambda: NOW)
    cfg = warm_settings(settings, warm_pool_size=0)
    for i, name in enumerate(("voicefleet-worker-left1", "voicefleet-worker-left2")):
        kube.pods[name] = build_warm_pod(cfg.namespace, name, cfg)
        seen(pool, kube, name, age=100 + i)

    async def standing_by() -> bool:
        return False

    await maintain_pool(kube, cfg, pool, standing_by)  # type: ignore[arg-type]
    assert kube.deleting == set()
    await maintain_pool(kube, cfg, pool)  # type: ignore[arg-type]
    assert kube.deleting == {"voicefleet-worker-left1", "voicefleet-worker-left2"}


async def test_the_removal_reason_is_judged_on_the_pools_clock(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    kube, pool = FakeKube(), WarmPool(clock=lambda: NOW)
    cfg = warm_settings(settings, warm_pool_size=0, warm_pool_max_age_seconds=600.0)
    for name, age in (("voicefleet-worker-aged1", 900), ("voicefleet-worker-young", 10)):
        kube.pods[name] = build_warm_pod(cfg.namespace, name, cfg)
        seen(pool, kube, name, age=age)
    with caplog.at_level(logging.INFO, logger="voicefleet.pool"):
        await maintain_pool(kube, cfg, pool)  # type: ignore[arg-type]
    said = sorted(r.getMessage() for r in caplog.records if "removed" in r.getMessage())
    assert said == [
        "warm pool: removed voicefleet-worker-aged1 (older than 600 s)",
        "warm pool: removed voicefleet-worker-young (beyond the pool size 0)",
    ]


def test_a_pod_started_here_counts_until_the_watch_shows_it_or_its_ttl_passes(
    settings: Settings,
) -> None:
    now = [NOW]
    pool = WarmPool(clock=lambda: now[0])
    pool.created("voicefleet-worker-new11")
    pool.created("voicefleet-worker-new22")
    assert pool.size() == 2 and pool.live_workers() == 2
    shown = build_warm_pod("voicefleet", "voicefleet-worker-new11", settings)
    pool.seen({**shown, "status": {"phase": "Pending"}})  # seen, not ready: still in the pool
    assert pool.size() == 2 and pool.candidates() == []
    now[0] += SEEN_TTL + 1  # new22 never showed up: the watch is believed again
    assert pool.size() == 1 and pool.live_workers() == 1


def test_a_pod_being_claimed_is_neither_offered_counted_nor_surplus(settings: Settings) -> None:
    kube, pool = FakeKube(), WarmPool(clock=lambda: NOW)
    for i, name in enumerate(("voicefleet-worker-free1", "voicefleet-worker-took1")):
        kube.pods[name] = build_warm_pod("voicefleet", name, settings)
        seen(pool, kube, name, age=100 - i)
    pool.claiming("voicefleet-worker-took1")
    assert [p.name for p in pool.candidates()] == ["voicefleet-worker-free1"]
    assert pool.size() == 1
    assert [p.name for p in pool.surplus(0)] == ["voicefleet-worker-free1"]
    pool.released("voicefleet-worker-took1")
    assert [p.name for p in pool.candidates()] == [
        "voicefleet-worker-free1",
        "voicefleet-worker-took1",
    ]
