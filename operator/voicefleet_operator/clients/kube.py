"""Kubernetes I/O: worker pods, the workers' Secret, VoiceSession status and annotations.

Built on the asyncio client of `kubernetes` (kubernetes.aio). kopf does its own watching;
this client makes the few direct calls the reconcile needs. Pods come back as the plan's
`PodView`, so nothing above this layer sees a client model.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Collection, Mapping
from typing import Any, TypeVar, cast
from urllib.parse import quote

from kubernetes.aio import config as kube_config
from kubernetes.aio.client import ApiClient, Configuration, CoreV1Api, CustomObjectsApi, V1Secret
from kubernetes.aio.client.exceptions import ApiException

from .. import naming as n
from ..api import GROUP, PLURAL, VERSION
from ..plan import PodView
from .calls import CallObserver, Priority, PrioritySlots, timed_slot

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_INFLIGHT = 48
T = TypeVar("T")


class KubernetesUnavailable(Exception):
    """The API server could not be reached or answered 5xx; retry later."""


def _unavailable(exc: BaseException, what: str) -> KubernetesUnavailable:
    status = getattr(exc, "status", None)
    return KubernetesUnavailable(f"{what}: {type(exc).__name__} {status or ''}".strip())


def _retryable(exc: ApiException) -> bool:
    """No answer, a server error, or "too many requests": try again later."""
    return exc.status is None or exc.status >= 500 or exc.status == 429


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """The plan's view of a pod, from its JSON form (a watch event body or a listed item)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    raw_conn = labels.get(n.LABEL_CONNECTION)
    connection = int(raw_conn) if raw_conn and str(raw_conn).isdigit() else None
    ready = False
    unschedulable: str | None = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
        elif (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            unschedulable = cond.get("message") or "unschedulable"
    restarts = 0
    waiting_reason: str | None = None
    waiting_message = ""
    last_exit: str | None = None
    for cs in status.get("containerStatuses") or []:
        restarts = max(restarts, int(cs.get("restartCount") or 0))
        state = cs.get("state") or {}
        waiting = state.get("waiting")
        if waiting and waiting.get("reason"):
            waiting_reason, waiting_message = waiting["reason"], waiting.get("message") or ""
        ended = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if ended:
            last_exit = _exit_text(ended)
    return PodView(
        name=str(meta.get("name", "")),
        connection=connection,
        phase=status.get("phase") or "Pending",
        ready=ready,
        deleting=meta.get("deletionTimestamp") is not None,
        restarts=restarts,
        waiting_reason=waiting_reason,
        waiting_message=waiting_message[:512],
        unschedulable=unschedulable,
        last_exit=last_exit,
        address=status.get("podIP") if status.get("phase") == "Running" else None,
    )


def _exit_text(terminated: Mapping[str, Any]) -> str:
    """ "OOMKilled, exit code 137": the kubelet's reason and code of a container's end."""
    reason = str(terminated.get("reason") or "terminated")[:64]
    code = terminated.get("exitCode")
    return f"{reason}, exit code {code}" if code is not None else reason


# Calls on a connection's critical path go first, Events last; the rest in between.
PRIORITIES = {
    "create_pod": Priority.URGENT,
    "claim_pod": Priority.URGENT,
    "create_event": Priority.BACKGROUND,
}


def proxy_configured(env: Mapping[str, str]) -> bool:
    """Whether the environment names an HTTP(S) proxy (any case, as aiohttp reads them)."""
    return any(env.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"))


class KubeClient:
    """One API client for the operator's own calls (kopf keeps its own for watching)."""

    def __init__(self, api: ApiClient, max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        self._api = api
        # The operator's own calls in flight, bounded: a burst of sessions queues here instead
        # of flooding the API server into 429s and everyone's retries.
        self._slots = PrioritySlots(max_inflight)
        self.observe: CallObserver | None = None  # (call, seconds, ok) → metrics
        self._core = CoreV1Api(api)
        self._custom = CustomObjectsApi(api)

    @classmethod
    async def connect(
        cls, kubeconfig: str | None = None, max_inflight: int = DEFAULT_MAX_INFLIGHT
    ) -> KubeClient:
        """From KUBECONFIG (a file), else the in-cluster ServiceAccount."""
        config = Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path:
            await kube_config.load_kube_config(config_file=path, client_configuration=config)  # type: ignore[no-untyped-call]
        else:
            kube_config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        # The client's aiohttp session reads ~/.netrc and the proxy variables on every request
        # when it trusts the environment (a thread hop and file reads per call, a few % of the
        # operator's CPU in a burst); it only needs to when a proxy is configured.
        config.client_session_kwargs = {"trust_env": proxy_configured(os.environ)}
        return cls(ApiClient(configuration=config), max_inflight)

    async def _send(
        self,
        call: str,
        what: str,
        request: Awaitable[T],
        absent: Collection[int] = (404,),
        refusals_raise: bool = False,
    ) -> T | None:
        """One API call, in a slot of the in-flight bound and timed for the metrics.

        An answer whose status is in `absent` is None (gone, or another writer won); no
        answer, 5xx and 429 are KubernetesUnavailable (retry later). Other refusals (403,
        422) are KubernetesUnavailable too, or raised as they are with `refusals_raise`.
        """
        async with timed_slot(
            self._slots, call, self.observe, priority=PRIORITIES.get(call, Priority.NORMAL)
        ):
            try:
                return await request
            except ApiException as exc:
                if exc.status in absent:
                    return None  # an answer, so the call counts as ok
                if refusals_raise and not _retryable(exc):
                    raise
                raise _unavailable(exc, what) from exc
            except (OSError, TimeoutError) as exc:
                raise _unavailable(exc, what) from exc

    async def close(self) -> None:
        await self._api.close()  # type: ignore[no-untyped-call]

    async def _write(
        self, method: str, path: str, body: Mapping[str, Any], content_type: str = JSON
    ) -> bool:
        """A write whose answer is not read: the dict goes out as JSON, as it is.

        The generated client validates a body into its pydantic models and back, and the
        answer into models too: ~15 % of the operator's CPU in a burst of pod creates, for
        objects the operator never reads back (its watches show them). Same session,
        authentication and errors (ApiException) as every other call.
        """
        method, url, headers, _, _ = await self._api.param_serialize(
            method=method,
            resource_path=path,
            header_params={"Accept": JSON, "Content-Type": content_type},
            auth_settings=["BearerToken"],
        )
        response = await self._api.call_api(
            method, url, headers, dict(body), _request_timeout=REQUEST_TIMEOUT
        )
        text = (await response.read()).decode("utf-8", "replace")  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return True

    # -- pods ----------------------------------------------------------------------------
    async def list_session_pods(self, namespace: str, session: str) -> tuple[PodView, ...]:
        request = self._core.list_namespaced_pod(
            namespace, label_selector=n.session_selector(session), _request_timeout=REQUEST_TIMEOUT
        )
        pods = await self._send("list_pods", f"listing pods of {namespace}/{session}", request, ())
        serialize = self._api.sanitize_for_serialization
        items = pods.items if pods is not None else []
        return tuple(pod_view(serialize(p)) for p in items or [])  # type: ignore[no-untyped-call]

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create a pod; False if one of that name exists already (creating is idempotent)."""
        request = self._write("POST", f"/api/v1/namespaces/{quote(namespace)}/pods", body)
        what = f"creating pod {body['metadata']['name']}"
        return (
            await self._send("create_pod", what, request, (409,), refusals_raise=True) is not None
        )

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Ask for the pod's deletion with its own grace period (SIGTERM → flush → exit)."""
        request = self._core.delete_namespaced_pod(
            name, namespace, _request_timeout=REQUEST_TIMEOUT
        )
        await self._send("delete_pod", f"deleting pod {namespace}/{name}", request)

    async def claim_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> bool:
        """Merge-patch a warm pod (the patch carries its resourceVersion): False if another
        claim won (409 Conflict) or the pod is gone."""
        request = self._core.patch_namespaced_pod(
            name,
            namespace,
            dict(patch),
            _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT,
        )
        what = f"claiming pod {namespace}/{name}"
        return await self._send("claim_pod", what, request, (404, 409)) is not None

    async def delete_pod_if_unchanged(
        self, namespace: str, name: str, resource_version: str
    ) -> bool:
        """Delete a pod only as it was seen (precondition): False if it changed or is gone."""
        request = self._core.delete_namespaced_pod(
            name,
            namespace,
            body=cast(Any, {"preconditions": {"resourceVersion": resource_version}}),
            _request_timeout=REQUEST_TIMEOUT,
        )
        what = f"deleting pod {namespace}/{name}"
        return await self._send("delete_pod", what, request, (404, 409)) is not None

    # -- the workers' credentials -----------------------------------------------------------
    async def ensure_secret(self, namespace: str, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        try:
            await self._core.patch_namespaced_secret(
                name,
                namespace,
                {"data": body["data"], "metadata": {"labels": body["metadata"]["labels"]}},
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT,
            )
            return
        except ApiException as exc:
            if exc.status != 404:
                raise _unavailable(exc, f"updating secret {namespace}/{name}") from exc
        secret = V1Secret.from_dict(dict(body))
        assert secret is not None
        await self._core.create_namespaced_secret(
            namespace, secret, _request_timeout=REQUEST_TIMEOUT
        )

    # -- kopf peering ------------------------------------------------------------------------
    async def ensure_peering(self, namespace: str, name: str) -> bool:
        """Create kopf's KopfPeering object (kopf waits for it when its CRD exists); False if absent."""
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": name, "namespace": namespace},
        }
        try:
            await self._custom.create_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfpeerings", body, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 409:
                return True
            if exc.status == 404:
                return False  # no peering CRD: kopf runs standalone
            raise _unavailable(exc, f"creating KopfPeering {namespace}/{name}") from exc
        return True

    async def read_peering(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The KopfPeering object's status (peer id → priority, lastseen, lifetime)."""
        request = self._custom.get_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings", name, _request_timeout=REQUEST_TIMEOUT
        )
        body: Any = await self._send(
            "get_peering", f"reading KopfPeering {namespace}/{name}", request
        )
        return None if body is None else dict(body.get("status") or {})

    # -- VoiceSessions ------------------------------------------------------------------------
    async def read_session_status(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The status of a VoiceSession as the API server has it now; None if it is gone."""
        request = self._custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
        )
        body: Any = await self._send("get_session", f"reading {namespace}/{name}", request)
        return None if body is None else dict(body.get("status") or {})

    async def list_session_names(self, namespace: str) -> set[str]:
        """The names of the namespace's VoiceSessions as the API server has them now."""
        request = self._custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _request_timeout=REQUEST_TIMEOUT
        )
        body: Any = await self._send(
            "list_sessions", f"listing VoiceSessions in {namespace}", request
        )
        items = (body or {}).get("items") or []
        return {str((item.get("metadata") or {}).get("name")) for item in items}

    async def patch_session_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> bool:
        """Merge-patch the status subresource; False if the session is gone."""
        path = (
            f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}/{quote(name)}/status"
        )
        request = self._write("PATCH", path, {"status": dict(status)}, MERGE_PATCH)
        what = f"writing status of {namespace}/{name}"
        return await self._send("patch_status", what, request) is not None

    async def annotate_session(
        self, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> bool:
        """Merge-patch annotations (the webhook's wake-up mark); False if the session is gone."""
        request = self._custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"annotations": dict(annotations)}},
            _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT,
        )
        what = f"annotating {namespace}/{name}"
        return await self._send("annotate_session", what, request) is not None

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Post a core/v1 Event (background priority: behind every other call)."""
        request = self._write("POST", f"/api/v1/namespaces/{quote(namespace)}/events", body)
        await self._send("create_event", f"posting event {body.get('reason')}", request, ())
