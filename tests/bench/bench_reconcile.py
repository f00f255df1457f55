"""`make bench`: the reconcile benchmark on kwok pods, side by side with its floor.

Two phases in one run, on one local stack (started privately here, or the running one named
by VOICEFLEET_STACK_ENV=<env file>), with the same background load in both:

- floor: N worker pods (the operator's own pod builder, kwok toleration and node selector)
  created directly through the API as admin, in a burst; create → pod bound (spec.nodeName
  set, seen on a pod watch), per pod. No operator is involved.
- reconcile: N VoiceSessions (distinct agent ids, so AgentBusy never applies) created in a
  burst with the same concurrency; create → its worker pod bound, per session. The
  operator is the real one (`python -m voicefleet_operator`, as ServiceAccount
  voicefleet-operator) run here with kopf peering priority 100, so the stack's own operator
  pauses meanwhile; its worker pods go to the kwok nodes (Running/Ready, no process).

Throughput is N / (first create sent → last pod bound). The operator's RSS (VmRSS) is read
with all N sessions live. Everything is deleted (and awaited) between phases. The table goes
to stdout, the figures to bench/results/latest.json and bench/results/<UTC timestamp>.json
(through run.py, which `make bench` calls; running this file is `run.py --only reconcile`).

BENCH_SESSIONS=<N> overrides N (default 1000); BENCH_CONCURRENCY the creates in flight
(default 50); BENCH_OPERATOR_ENV a JSON object of VOICEFLEET_* settings for the benchmark's
operator (A/B runs); BENCH_TIMES=<file> writes each session's and pod's timestamps there.
Benchmarks report; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from benchlib import (
    cpu_seconds,
    format_table,
    log,
    percentile,
    read_rss,
    stack_dir_of,
    stack_pids,
)
from opit import Kube, OperatorProcess, operator_kubeconfig

from voicefleet_operator.api import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    parse_spec,
)
from voicefleet_operator.config import load_settings
from voicefleet_operator.manifests import SessionRef, build_worker_pod

BENCH_LABEL = f"{GROUP}/bench"
SESSION_LABEL = f"{GROUP}/session"
KWOK_TOLERATIONS = json.dumps(
    [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
)
KWOK_NODE_SELECTOR = json.dumps({"type": "kwok"})
JOIN_TIMEOUT_SECONDS = 3600  # nobody joins: the connections must outlive the benchmark
PROGRESS_SECONDS = 2.0
PEERING_SETTLE_SECONDS = 5.0  # the stack's operator sees the higher-priority peer and pauses
STEADY_SECONDS = 20.0  # after the burst: N live sessions, no new work (tests/bench/README.md)
RSS_SETTLE_SECONDS = 5.0  # pods turn Ready after binding; the operator reacts (dispatch)
CLEANUP_TIMEOUT = 600.0
RETRIES_429 = 30
WARMUP = 20  # unmeasured pods/sessions first: cold caches cost neither phase
GOALS = {"ratio_to_floor": ">= 0.5", "p99_ms": "<= 2000", "operator_rss_mb": "<= 300"}
METRIC_LABEL = re.compile(r'(\w+)="([^"]*)"')
READ_VERBS = {"GET", "LIST", "WATCH", "CONNECT"}
APF_SERIES = (
    ("apiserver_flowcontrol_request_wait_duration_seconds_count", "requests"),
    ("apiserver_flowcontrol_request_wait_duration_seconds_sum", "wait_s"),
    ("apiserver_flowcontrol_rejected_requests_total", "rejected"),
)
LEGS = tuple(f"{leg}_{p}_ms" for leg in ("create", "to_pod", "to_bound") for p in ("p50", "p99"))
BENCH_OPERATOR = "operator"  # the benchmark's operator among the processes whose CPU is read


# -- a small asyncio client of the API server (JSON in, JSON out, no client models) --------
class Api:
    def __init__(self, kubeconfig: str, concurrency: int) -> None:
        config = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.kubeconfig = kubeconfig
        self.server = str(cluster["server"]).rstrip("/")
        if not self.server.startswith("https://127.0.0.1"):
            raise SystemExit(f"refusing a non-loopback API server: {self.server}")
        self.ssl = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.ssl.load_cert_chain(user["client-certificate"], user["client-key"])
        self.limit = concurrency + 8  # the creates, plus watches and polls
        self.throttled = 0  # 429 answers this client got (and retried)
        self.pids: dict[str, int] = {}  # processes whose CPU time each burst reads
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl, limit=self.limit),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
        answer_within: float = 60.0,
    ) -> dict[str, Any]:
        assert self.session is not None
        for _ in range(RETRIES_429):
            async with self.session.request(
                method,
                self.server + path,
                json=body,
                params=params,
                timeout=aiohttp.ClientTimeout(total=answer_within),
            ) as resp:
                data = await resp.json(content_type=None)
                if resp.status == 429:  # the API server's in-flight limit: as clients do, retry
                    self.throttled += 1
                    await asyncio.sleep(float(resp.headers.get("Retry-After") or 1))
                    continue
                if resp.status not in ok:
                    raise RuntimeError(f"{method} {path}: {resp.status} {str(data)[:300]}")
                return dict(data or {})
        raise RuntimeError(f"{method} {path}: still 429 after {RETRIES_429} attempts")

    async def metrics(self) -> str:
        """The API server's /metrics."""
        assert self.session is not None
        async with self.session.get(self.server + "/metrics") as resp:
            return await resp.text()


def samples(metrics: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """(labels, value) of each sample of the metric `name` in a /metrics text."""
    for line in metrics.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            head, _, value = line.rpartition(" ")
            yield dict(METRIC_LABEL.findall(head[len(name) :])), float(value)


def writes_of(metrics: str) -> Counter[str]:
    """The API server's writes so far ("POST pods/binding": count)."""
    counts: Counter[str] = Counter()
    for labels, value in samples(metrics, "apiserver_request_total"):
        if labels.get("verb") in READ_VERBS:
            continue
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[f"{labels.get('verb')} {resource}"] += int(value)
    return counts


def flow_control_of(metrics: str) -> dict[tuple[str, str], float]:
    """API Priority and Fairness so far, by flow schema: (flow, "requests" | "wait_s" |
    "rejected") → value. Requests that ran, the seconds they waited in its queues, and the
    requests it refused (429)."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for name, what in APF_SERIES:
        for labels, value in samples(metrics, name):
            if what == "rejected" or labels.get("execute") == "true":
                out[(labels.get("flow_schema", ""), what)] += value
    return out


def flow_control(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], n: int
) -> dict[str, dict[str, float]]:
    """Per flow schema with at least n/100 requests in between: how many per item, their
    mean wait in the API server's queues (ms), and how many were refused."""
    out: dict[str, dict[str, float]] = {}
    for flow in sorted({f for f, _ in after}):

        def change(what: str, flow: str = flow) -> float:
            return after.get((flow, what), 0.0) - before.get((flow, what), 0.0)

        ran, rejected, waited = change("requests"), change("rejected"), change("wait_s")
        if ran + rejected < n / 100:
            continue
        out[flow] = {
            "per_item": round(ran / n, 2),
            "mean_wait_ms": round(waited / ran * 1000, 1) if ran else 0.0,
            "rejected": int(rejected),
        }
    return out


# -- the pod watch, in a process of its own -------------------------------------------------
# The benchmark's event loop sends 50 creates at a time; a watch read on the same loop (and
# under the same GIL) would see pods late by however long the loop is busy, and that lag
# would count as the operator's. A child process reads the watch instead and stamps each pod
# as it arrives (CLOCK_MONOTONIC, one clock for every process of the machine).
async def watch_pods(
    kubeconfig: str,
    namespace: str,
    selector: str,
    key_label: str | None,
    on_pod: Callable[[str, bool, float], None],
    ready: asyncio.Event,
) -> None:
    """Run `watch_child` until cancelled: on_pod(key, bound, monotonic time seen) per event;
    key is the pod's name, or its `key_label` label."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--watch-pods",
        kubeconfig,
        namespace,
        selector,
        key_label or "",
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    assert proc.stdout is not None
    try:
        async for line in proc.stdout:
            at, key, bound = line.decode().split()
            if key == "-":
                ready.set()
            else:
                on_pod(key, bound == "1", float(at))
        raise RuntimeError(f"pod watch process ended (rc {await proc.wait()})")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def watch_child(kubeconfig: str, namespace: str, selector: str, key_label: str) -> None:
    """LIST then WATCH pods (again when the stream ends), printing "<time> <key> <0|1>" per pod
    event (1: bound), and "<time> - 0" each time the watch is open."""
    import http.client
    import urllib.parse

    api = Api(kubeconfig, 1)
    host = urllib.parse.urlsplit(api.server)

    def key_of(pod: dict[str, Any]) -> str | None:
        meta = pod["metadata"]
        return (meta.get("labels") or {}).get(key_label) if key_label else meta.get("name")

    def emit(pod: dict[str, Any]) -> None:
        key = key_of(pod)
        if key:
            bound = "1" if (pod.get("spec") or {}).get("nodeName") else "0"
            sys.stdout.write(f"{time.monotonic():.6f} {key} {bound}\n")

    path = f"/api/v1/namespaces/{namespace}/pods"
    while True:
        conn = http.client.HTTPSConnection(host.hostname, host.port, context=api.ssl, timeout=300)
        query = urllib.parse.urlencode({"labelSelector": selector})
        conn.request("GET", f"{path}?{query}")
        listed = json.loads(conn.getresponse().read())
        for pod in listed.get("items") or []:
            emit(pod)
        query = urllib.parse.urlencode(
            {
                "labelSelector": selector,
                "watch": "1",
                "resourceVersion": listed["metadata"]["resourceVersion"],
                "timeoutSeconds": "280",
            }
        )
        conn.request("GET", f"{path}?{query}")
        resp = conn.getresponse()
        if resp.status != 200:
            raise SystemExit(f"watch pods: {resp.status}")
        sys.stdout.write(f"{time.monotonic():.6f} - 0\n")
        sys.stdout.flush()
        for line in resp:
            if not line.strip():
                continue
            event = json.loads(line)
            if event.get("type") == "ERROR":
                break  # e.g. 410 Gone: relist
            if event.get("type") in ("ADDED", "MODIFIED"):
                emit(event["object"])
                sys.stdout.flush()
        conn.close()


# -- one burst: create N things, see N pods bound --------------------------------------------
class Burst:
    """Timestamps of one measured burst (time.monotonic seconds), by key."""

    def __init__(self, name: str, keys: list[str]) -> None:
        self.name = name
        self.keys = set(keys)
        self.created: dict[str, float] = {}  # the create sent
        self.accepted: dict[str, float] = {}  # the create answered
        self.appeared: dict[str, float] = {}  # its pod first seen on the watch
        self.bound: dict[str, float] = {}
        self.client_429 = 0  # 429 answers to this burst's creates (retried)
        # What the API server did from the first create to the last pod bound: its writes by
        # verb and resource (everyone's: the operator's, the scheduler's, kwok's); and the CPU
        # seconds each of the stack's processes (and the benchmark's operator) used meanwhile.
        self.writes: dict[str, int] = {}
        self.cpu_s: dict[str, float] = {}
        self.operator_work: dict[str, dict[str, float]] = {}  # see operator_work()
        # N live sessions after the burst: CPU s per s by process, the operator's calls
        self.steady_cpu: dict[str, float] = {}
        self.steady_work: dict[str, dict[str, float]] = {}
        self.flow_control: dict[str, dict[str, float]] = {}  # see flow_control()

    def see(self, key: str, bound: bool, at: float) -> None:
        if key not in self.keys or key in self.bound:
            return
        self.appeared.setdefault(key, at)
        if bound:
            self.bound[key] = at

    def figures(self) -> dict[str, float]:
        latencies = sorted(self.bound[k] - self.created[k] for k in self.bound)
        span = max(self.bound.values()) - min(self.created.values())
        return self.split() | {
            "throughput_per_s": round(len(self.bound) / span, 2),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1),
            "duration_s": round(span, 2),
        }

    def stamps(self) -> dict[str, list[float | None]]:
        """key → [created, accepted, appeared, bound] (monotonic seconds, None: never)."""
        return {
            k: [d.get(k) for d in (self.created, self.accepted, self.appeared, self.bound)]
            for k in sorted(self.keys)
        }

    def split(self) -> dict[str, float]:
        """Where create → bound goes, p50/p99 of each leg (ms): the create's answer, then until
        its pod is on the watch (for a session: the operator's part), then until it is bound
        (the scheduler's). A pod that arrives bound counts its whole wait in the middle leg."""

        def legs(start: dict[str, float], end: dict[str, float]) -> list[float]:
            return sorted(end[k] - start[k] for k in self.bound if k in start and k in end)

        out: dict[str, float] = {}
        for leg, start, end in (
            ("create", self.created, self.accepted),
            ("to_pod", self.accepted, self.appeared),
            ("to_bound", self.appeared, self.bound),
        ):
            values = legs(start, end)
            if values:
                out[f"{leg}_p50_ms"] = round(percentile(values, 50) * 1000, 1)
                out[f"{leg}_p99_ms"] = round(percentile(values, 99) * 1000, 1)
        return out


async def run_burst(
    api: Api,
    namespace: str,
    burst: Burst,
    selector: str,
    key_label: str | None,
    create: Callable[[str], Awaitable[None]],
    concurrency: int,
    within: float,
    quiet: bool = False,
    describe: Callable[[str], Awaitable[str]] | None = None,
) -> None:
    """Create `burst.keys` (`concurrency` at a time) and wait until each one's pod is bound;
    `describe(key)` tells what became of a key whose pod is not bound in time."""
    ready = asyncio.Event()
    throttled = api.throttled
    creates: asyncio.Future[list[None]] | None = None
    watcher = asyncio.create_task(
        watch_pods(api.kubeconfig, namespace, selector, key_label, burst.see, ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        metrics_before = await api.metrics()
        cpu_before = cpu_by_process(api.pids)
        gate = asyncio.Semaphore(concurrency)

        async def one(key: str) -> None:
            async with gate:
                burst.created[key] = time.monotonic()
                await create(key)
                burst.accepted[key] = time.monotonic()

        creates = asyncio.gather(*(one(k) for k in sorted(burst.keys)))
        deadline = time.monotonic() + within
        while len(burst.bound) < len(burst.keys):
            if watcher.done():
                watcher.result()  # raises what ended it
                raise RuntimeError("pod watch ended")
            if creates.done() and creates.exception() is not None:
                raise creates.exception()  # type: ignore[misc]
            if time.monotonic() > deadline:
                missing = sorted(burst.keys - set(burst.bound))
                if describe is not None:
                    for key in missing[:5]:
                        log(f"{burst.name}: not bound: {key}: {await describe(key)}")
                raise TimeoutError(
                    f"{burst.name}: {len(burst.bound)}/{len(burst.keys)} pods bound "
                    f"after {within:.0f} s; not bound: {', '.join(missing[:20])}"
                )
            await asyncio.sleep(0.05 if quiet else PROGRESS_SECONDS)
            if not quiet:
                log(
                    f"{burst.name}: created {len(burst.created)}/{len(burst.keys)}, "
                    f"bound {len(burst.bound)}/{len(burst.keys)}"
                )
        burst.cpu_s = {
            name: round(spent, 1) for name, spent in cpu_by_process(api.pids, cpu_before).items()
        }
        metrics_after = await api.metrics()
        burst.writes = dict((writes_of(metrics_after) - writes_of(metrics_before)).most_common())
        burst.flow_control = flow_control(
            flow_control_of(metrics_before), flow_control_of(metrics_after), len(burst.keys)
        )
        await asyncio.wait_for(creates, 60)
        burst.client_429 = api.throttled - throttled
    finally:
        for task in (watcher, creates):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def delete(api: Api, path: str, params: dict[str, str]) -> bool:
    """One collection DELETE; False if it ended before the collection did: the API server's
    504 at its own 60 s, or no answer in 90 s (seen with 1,000 sessions and their finalizer)."""
    try:
        answer = await api.call("DELETE", path, params=params, ok=(200, 404, 504), answer_within=90)
    except TimeoutError:
        return False
    return answer.get("code") != 504


async def delete_all(api: Api, path: str, selector: str, what: str) -> None:
    """DELETE the collection, and wait until it is gone. A collection delete that runs out of
    time (see `delete`) is sent again until one finishes (deleting an object twice changes
    nothing), within the cleanup timeout."""
    deadline = time.monotonic() + CLEANUP_TIMEOUT
    params = {"labelSelector": selector}
    while not await delete(api, path, params):
        if time.monotonic() > deadline:
            raise TimeoutError(f"deleting {what}: the API server kept timing out")
        log(f"cleanup: deleting {what} ran out of time; deleting the rest")
    await wait_gone(api, path, selector, what, deadline - time.monotonic())


async def wait_gone(api: Api, path: str, selector: str, what: str, within: float) -> None:
    deadline = time.monotonic() + within
    last = -1
    while True:
        left = len((await api.call("GET", path, params={"labelSelector": selector}))["items"])
        if left == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{left} {what} still there after {within:.0f} s")
        if left != last:
            log(f"cleanup: {left} {what} left")
            last = left
        await asyncio.sleep(1.0)


# -- the two phases --------------------------------------------------------------------------
def floor_pod_factory(env: dict[str, str], namespace: str) -> Callable[[str], dict[str, Any]]:
    """The pod the operator builds for a session, minus its owner (there is no session)."""
    settings = load_settings(
        {
            **env,
            "NAMESPACE": namespace,
            "VOICEFLEET_WORKER_TOLERATIONS": KWOK_TOLERATIONS,
            "VOICEFLEET_WORKER_NODE_SELECTOR": KWOK_NODE_SELECTOR,
        }
    )
    ref = SessionRef(namespace=namespace, name="bench-floor", uid="00000000-0000-0000-0000-0")
    spec = parse_spec(session_spec("agent-bench-floor", "bench-floor"))

    def build(name: str) -> dict[str, Any]:
        pod: dict[str, Any] = build_worker_pod(ref, spec, 1, name, f"vs-{name}-1-bbbbb", settings)
        meta = pod["metadata"]
        del meta["ownerReferences"]
        # Not the operator's managed-by label: the idle operator must not take these as its own.
        meta["labels"] = {"app.kubernetes.io/name": "voicefleet-worker", BENCH_LABEL: "floor"}
        return pod

    return build


def session_spec(agent: str, user: str) -> dict[str, Any]:
    return {
        "agentId": agent,
        "userIdentity": user,
        "connection": 1,
        "joinTimeoutSeconds": JOIN_TIMEOUT_SECONDS,
        "maxDurationSeconds": 2 * JOIN_TIMEOUT_SECONDS,
    }


async def floor_phase(
    api: Api, env: dict[str, str], ns: str, n: int, concurrency: int, within: float, tag: str
) -> Burst:
    build = floor_pod_factory(env, ns)
    path = f"/api/v1/namespaces/{ns}/pods"
    selector = f"{BENCH_LABEL}=floor"

    async def create(name: str) -> None:
        await api.call("POST", path, build(name))

    burst = Burst("floor", [f"bench-floor-{tag}-{i}" for i in range(n)])
    try:
        await run_burst(
            api,
            ns,
            burst,
            selector,
            None,
            create,
            concurrency,
            within,
            quiet=tag == "w",
        )
    finally:
        await delete_all(api, path, selector, "floor pods")
    return burst


async def operator_phase(
    api: Api,
    ns: str,
    n: int,
    concurrency: int,
    within: float,
    tag: str,
    operator_pid: int | None,
    operator_log: Path | None = None,
    operator_metrics: str | None = None,
) -> tuple[Burst, dict[str, float]]:
    sessions = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}"
    selector = f"{BENCH_LABEL}=reconcile"

    async def create(name: str) -> None:
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "labels": {BENCH_LABEL: "reconcile"}},
            "spec": session_spec(f"agent-{name}", f"user-{name}"),
        }
        await api.call("POST", sessions, body)

    async def describe(name: str) -> str:
        """The session's status and its pods, as the API server has them now."""
        got = await api.call("GET", f"{sessions}/{name}", ok=(200, 404))
        pods = await api.call(
            "GET",
            f"/api/v1/namespaces/{ns}/pods",
            params={"labelSelector": f"{SESSION_LABEL}={name}"},
        )
        seen = [
            (p["metadata"]["name"], (p.get("spec") or {}).get("nodeName"), p["status"].get("phase"))
            for p in pods.get("items") or []
        ]
        return f"status {json.dumps(got.get('status'))[:1500]}; pods {seen}"

    burst = Burst("reconcile", [f"bench-{tag}-{i}" for i in range(n)])
    rss: dict[str, float] = {}
    log_start = log_size(operator_log)
    counts_before = await operator_counts(operator_metrics)
    try:
        await run_burst(
            api,
            ns,
            burst,
            SESSION_LABEL,
            SESSION_LABEL,
            create,
            concurrency,
            within,
            quiet=tag == "w",
            describe=describe,
        )
        if operator_pid is not None:
            await asyncio.sleep(RSS_SETTLE_SECONDS)
            rss = read_rss(operator_pid)
            rss["api_429"] = count_429(operator_log, log_start)
            rss["cpu_s"] = burst.cpu_s[BENCH_OPERATOR]
            counts_after = await operator_counts(operator_metrics)
            burst.operator_work = operator_work(counts_before, counts_after, n)
            log(f"reconcile: operator RSS {rss['rss_mb']:.0f} MB with {n} live sessions")
            log(f"reconcile: {n} live sessions, no new work, for {STEADY_SECONDS:.0f} s")
            cpu_before = cpu_by_process(api.pids)
            await asyncio.sleep(STEADY_SECONDS)
            burst.steady_cpu = {
                name: round(spent / STEADY_SECONDS, 3)
                for name, spent in cpu_by_process(api.pids, cpu_before).items()
            }
            burst.steady_work = operator_work(
                counts_after, await operator_counts(operator_metrics), n
            )
    finally:
        await delete_all(api, sessions, selector, "VoiceSessions")
        await wait_gone(
            api, f"/api/v1/namespaces/{ns}/pods", SESSION_LABEL, "worker pods", CLEANUP_TIMEOUT
        )
    return burst, rss


async def operator_counts(url: str | None) -> dict[str, float]:
    """The operator's reconcile passes and its calls by target and call, from its /metrics:
    "<what>" → how many, "<what> s" → their seconds in all."""
    counts: dict[str, float] = defaultdict(float)
    if url is None:
        return counts

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())

    metrics = await asyncio.to_thread(scrape)
    for kind, suffix in (("count", ""), ("sum", " s")):
        for _, value in samples(metrics, f"voicefleet_reconcile_seconds_{kind}"):
            counts["reconcile passes" + suffix] += value
        for labels, value in samples(metrics, f"voicefleet_api_request_seconds_{kind}"):
            name = f"{labels['target']} {labels['call']}"
            if labels.get("result", "ok") != "ok":
                name += f" ({labels['result']})"
            counts[name + suffix] += value
    return counts


def operator_work(
    before: dict[str, float], after: dict[str, float], n: int
) -> dict[str, dict[str, float]]:
    """What the operator did per session in between, and how long each took on average (ms)."""
    counts = {what: after[what] - before.get(what, 0.0) for what in after}
    return {
        what: {
            "per_session": round(count / n, 2),
            "mean_ms": round(counts[f"{what} s"] / count * 1000, 1),
        }
        for what, count in sorted(counts.items(), key=lambda kv: -kv[1])
        if not what.endswith(" s") and count >= n / 100
    }


def log_size(path: Path | None) -> int:
    return path.stat().st_size if path is not None and path.exists() else 0


def count_429(path: Path | None, offset: int) -> int:
    """Lines of the operator's log since `offset` that report a 429 from the API server."""
    if path is None:
        return 0
    with path.open("rb") as f:
        f.seek(offset)
        return sum(1 for line in f if b"429" in line or b"TooManyRequests" in line)


async def measure(
    env: dict[str, str],
    n: int,
    concurrency: int,
    operator_pid: int,
    operator_log: Path,
    operator_metrics: str,
) -> dict[str, Any]:
    ns = env.get("NAMESPACE", "voicefleet")
    timeout = max(120.0, n * 0.6)
    async with Api(env["KUBECONFIG"], concurrency) as api:
        api.pids = {
            f"{name} (stack's)" if name == "operator" else name: pid
            for name, pid in stack_pids(env).items()
        }
        api.pids |= {BENCH_OPERATOR: operator_pid, "benchmark": os.getpid()}
        version = await api.call("GET", "/version")
        # Leftovers of an interrupted run on a reused stack.
        for path, selector in (
            (f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}", f"{BENCH_LABEL}=reconcile"),
            (f"/api/v1/namespaces/{ns}/pods", f"{BENCH_LABEL}=floor"),
        ):
            await delete_all(api, path, selector, "leftovers")
        log(f"warm-up: {WARMUP} pods, {WARMUP} sessions (not measured)")
        await floor_phase(api, env, ns, WARMUP, concurrency, 120, "w")
        await operator_phase(api, ns, WARMUP, concurrency, 120, "w", None)
        idle = read_rss(operator_pid)
        log(f"floor: {n} pods straight through the API, {concurrency} creates in flight")
        floor = await floor_phase(api, env, ns, n, concurrency, timeout, "m")
        ff = floor.figures()
        log(f"floor: {ff['throughput_per_s']}/s, p50 {ff['p50_ms']} ms, p99 {ff['p99_ms']} ms")
        log(f"reconcile: {n} VoiceSessions in a burst, {concurrency} creates in flight")
        rec, rss = await operator_phase(
            api, ns, n, concurrency, timeout, "m", operator_pid, operator_log, operator_metrics
        )
        rf = rec.figures()
        if os.environ.get("BENCH_TIMES"):  # each key's stamps, for a closer look
            stamps = json.dumps({b.name: b.stamps() for b in (floor, rec)})
            await asyncio.to_thread(Path(os.environ["BENCH_TIMES"]).write_text, stamps)
        log(f"reconcile: {rf['throughput_per_s']}/s, p50 {rf['p50_ms']} ms, p99 {rf['p99_ms']} ms")
    return {
        "reconcile": {
            "sessions": n,
            "throughput_per_s": rf["throughput_per_s"],
            "floor_throughput_per_s": ff["throughput_per_s"],
            "ratio_to_floor": round(rf["throughput_per_s"] / ff["throughput_per_s"], 3),
            "p50_ms": rf["p50_ms"],
            "p99_ms": rf["p99_ms"],
            "floor_p50_ms": ff["p50_ms"],
            "floor_p99_ms": ff["p99_ms"],
            "operator_rss_mb": rss["rss_mb"],
            "max_ms": rf["max_ms"],
            "floor_max_ms": ff["max_ms"],
            "duration_s": rf["duration_s"],
            "floor_duration_s": ff["duration_s"],
            "operator_rss_peak_mb": rss["rss_peak_mb"],
            "operator_rss_idle_mb": idle["rss_mb"],
            "create_concurrency": concurrency,
            "floor_client_429": floor.client_429,
            "client_429": rec.client_429,
            "operator_log_429_lines": int(rss["api_429"]),
            "operator_cpu_s": rss["cpu_s"],
            # CPU seconds by process in each burst (2 cores: 2 s of CPU per second at most)
            "cpu_s_by_process": dict(sorted(rec.cpu_s.items(), key=lambda kv: -kv[1])),
            "floor_cpu_s_by_process": dict(sorted(floor.cpu_s.items(), key=lambda kv: -kv[1])),
            # per session / per floor pod, from the first create to the last pod bound
            "apiserver_writes_per_session": per_item(rec.writes, n),
            "floor_apiserver_writes_per_pod": per_item(floor.writes, n),
            # API Priority and Fairness by flow schema in each burst: requests per item, their
            # mean wait in its queues, refusals (the benchmark's own creates are admin: exempt)
            "flow_control": rec.flow_control,
            "floor_flow_control": floor.flow_control,
            # the operator's reconcile passes and calls per session (and their mean time),
            # in the burst and the 5 s after it
            "operator_work": rec.operator_work,
            # then N live sessions for STEADY_SECONDS with no new work: CPU seconds per
            # second by process, and the operator's calls per session in that window
            "steady_seconds": STEADY_SECONDS,
            "steady_cpu_per_s_by_process": dict(
                sorted(rec.steady_cpu.items(), key=lambda kv: -kv[1])
            ),
            "steady_operator_work": rec.steady_work,
            # create → bound in legs: the create's answer, its pod on the watch, bound
            "latency_legs_ms": {leg: rf[leg] for leg in LEGS if leg in rf},
            "floor_latency_legs_ms": {leg: ff[leg] for leg in LEGS if leg in ff},
            "goals": GOALS,
        },
        "kubernetes": version.get("gitVersion", ""),
    }


def cpu_by_process(pids: dict[str, int], since: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds of each process: used so far, or since `since` (an earlier reading)."""
    return {name: cpu_seconds(pid) - (since or {}).get(name, 0.0) for name, pid in pids.items()}


def per_item(writes: dict[str, int], n: int) -> dict[str, float]:
    """Writes per session (or pod), the busiest first; "total" sums them."""
    out = {what: round(count / n, 2) for what, count in writes.items() if count >= n / 100}
    return {"total": round(sum(writes.values()) / n, 2)} | out


# -- the table ----------------------------------------------------------------------------
def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _legs(legs: dict[str, float] | None, leg: str) -> str:
    legs = legs or {}
    if f"{leg}_p50_ms" not in legs:
        return "-"
    return f"{legs[f'{leg}_p50_ms']:.0f} / {legs[f'{leg}_p99_ms']:.0f}"


def _flow(flows: dict[str, dict[str, float]] | None, flow: str) -> str:
    got = (flows or {}).get(flow)
    if got is None:
        return "-"
    return f"{got['per_item']:.2f}, {got['mean_wait_ms']:.0f} ms, {got['rejected']:.0f}"


def table(rec: dict[str, Any]) -> str:
    floor_writes = rec.get("floor_apiserver_writes_per_pod") or {}
    floor_cpu = rec.get("floor_cpu_s_by_process") or {}
    floor_apf = rec.get("floor_flow_control") or {}
    rows = [
        ("figure", "voicefleet", "floor (no operator)", "goal"),
        ("sessions / pods", str(rec["sessions"]), str(rec["sessions"]), ""),
        (
            "throughput (pods bound/s)",
            f"{rec['throughput_per_s']:.1f}",
            f"{rec['floor_throughput_per_s']:.1f}",
            "",
        ),
        ("ratio_to_floor", f"{rec['ratio_to_floor']:.2f}", "1.00", GOALS["ratio_to_floor"]),
        ("p50 create→bound (ms)", f"{rec['p50_ms']:.0f}", f"{rec['floor_p50_ms']:.0f}", ""),
        ("p99 create→bound (ms)", f"{rec['p99_ms']:.0f}", f"{rec['floor_p99_ms']:.0f}", "<= 2000"),
        *(
            (
                f"  {title} p50 / p99 (ms)",
                _legs(rec.get("latency_legs_ms"), leg),
                _legs(rec.get("floor_latency_legs_ms"), leg),
                "",
            )
            for leg, title in (
                ("create", "of which: the create answered,"),
                ("to_pod", "then its pod on the watch,"),
                ("to_bound", "then bound,"),
            )
        ),
        ("burst duration (s)", f"{rec['duration_s']:.1f}", f"{rec['floor_duration_s']:.1f}", ""),
        (
            "429s: creates / operator log lines",
            f"{rec['client_429']} / {rec['operator_log_429_lines']}",
            f"{rec['floor_client_429']} / -",
            "",
        ),
        (
            "operator CPU during the burst (s)",
            f"{rec['operator_cpu_s']:.1f} in {rec['duration_s']:.1f}",
            "",
            "",
        ),
        *(
            (f"CPU in the burst (s): {name}", f"{cpu:g}", _opt(floor_cpu.get(name)), "")
            for name, cpu in list((rec.get("cpu_s_by_process") or {}).items())[:6]
        ),
        (
            "API server writes per session / pod",
            _opt((rec.get("apiserver_writes_per_session") or {}).get("total")),
            _opt((rec.get("floor_apiserver_writes_per_pod") or {}).get("total")),
            "",
        ),
        *(
            (f"  {what}", f"{per:.2f}", _opt(floor_writes.get(what)), "")
            for what, per in list((rec.get("apiserver_writes_per_session") or {}).items())[1:]
        ),
        ("API server queues (APF): requests per item, mean wait ms, refused", "", "", ""),
        *(
            (f"  {flow}", _flow(rec.get("flow_control"), flow), _flow(floor_apf, flow), "")
            for flow in sorted({*(rec.get("flow_control") or {}), *floor_apf})
        ),
        ("operator's passes and calls per session (mean ms)", "", "", ""),
        *(
            (f"  {what}", f"{work['per_session']:.2f} ({work['mean_ms']:.0f})", "", "")
            for what, work in (rec.get("operator_work") or {}).items()
        ),
        (f"N live sessions, {rec.get('steady_seconds', 0):g} s after: CPU s/s", "", "", ""),
        *(
            (f"  {name}", f"{cpu:.3f}", "", "")
            for name, cpu in list((rec.get("steady_cpu_per_s_by_process") or {}).items())[:4]
        ),
        *(
            (f"  operator: {what} per session", f"{work['per_session']:.2f}", "", "")
            for what, work in (rec.get("steady_operator_work") or {}).items()
        ),
        ("operator RSS, N live (MB)", f"{rec['operator_rss_mb']:.0f}", "", "<= 300"),
        (
            "operator RSS peak / idle (MB)",
            f"{rec['operator_rss_peak_mb']:.0f} / {rec['operator_rss_idle_mb']:.0f}",
            "",
            "",
        ),
    ]
    return format_table("reconcile", rows)


def tables(results: dict[str, Any]) -> str:
    return table(results["reconcile"])


# -- the entry point of run.py -----------------------------------------------------------------
def run(env: dict[str, str], work: Path) -> dict[str, Any]:
    """The reconcile benchmark on the stack of `env`: {"reconcile": {...}, "kubernetes": ...}.

    BENCH_SESSIONS=<N> (default 1000), BENCH_CONCURRENCY (default 50)."""
    n = int(os.environ.get("BENCH_SESSIONS", "1000"))
    concurrency = int(os.environ.get("BENCH_CONCURRENCY", "50"))
    kube = Kube(env)
    logs = stack_dir_of(env) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    operator = OperatorProcess(
        env, operator_kubeconfig(kube, env, work / "kubeconfig"), logs / "operator-bench.log"
    )
    # The operator as deployed (default room checks and finalizer budget), workers on kwok.
    operator.env.pop("VOICEFLEET_ROOM_CHECK_SECONDS", None)
    operator.env.pop("VOICEFLEET_FINALIZER_BUDGET_SECONDS", None)
    operator.env["VOICEFLEET_WORKER_TOLERATIONS"] = KWOK_TOLERATIONS
    operator.env["VOICEFLEET_WORKER_NODE_SELECTOR"] = KWOK_NODE_SELECTOR
    # A/B runs of operator settings: BENCH_OPERATOR_ENV='{"VOICEFLEET_API_MAX_INFLIGHT": "16"}'
    extra = json.loads(os.environ.get("BENCH_OPERATOR_ENV") or "{}")
    if not isinstance(extra, dict) or not all(str(k).startswith("VOICEFLEET_") for k in extra):
        raise SystemExit("BENCH_OPERATOR_ENV: a JSON object of VOICEFLEET_* variables")
    operator.env.update({str(k): str(v) for k, v in extra.items()})
    if extra:
        log(f"operator settings for this run: {extra}")
    log(f"starting the benchmark's operator (peering priority 100), log {operator.log}")
    operator.start()
    try:
        time.sleep(PEERING_SETTLE_SECONDS)
        assert operator.proc is not None
        figures = asyncio.run(
            measure(env, n, concurrency, operator.proc.pid, operator.log, operator.metrics_url)
        )
    finally:
        operator.stop()
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--watch-pods"]:
        watch_child(*sys.argv[2:6])
        sys.exit(0)
    from run import main

    sys.exit(main(["--only", "reconcile"]))
