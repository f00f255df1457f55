"""The gateway's only Kubernetes client: VoiceSessions in one namespace, over aiohttp.

It speaks the API server's REST protocol directly (get, create, JSON merge patch, list,
watch) so that waiting for a session is a real watch on the event loop, not a thread per
waiting request. Connection details (server, CA, client certificate or bearer token, the
in-cluster ServiceAccount with its rotating token) come from the `kubernetes` package's
config loaders, which know every kubeconfig form.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from voicefleet_operator.api import GROUP, PLURAL, VERSION

REQUEST_TIMEOUT = 15.0
MERGE_PATCH = "application/merge-patch+json"


class KubeUnavailable(Exception):
    """The API server could not be reached or answered 5xx."""


class KubeApiError(Exception):
    """The API server refused a call (4xx): `status` and its `reason` (NotFound, Conflict…)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Connection:
    server: str
    ssl_context: ssl.SSLContext | bool
    authorization: Callable[[], str | None]


def load_connection(kubeconfig: str | None) -> Connection:
    """Server and credentials from a kubeconfig file, or the in-cluster ServiceAccount."""
    from kubernetes import client, config  # only here: this is configuration parsing

    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=cfg
        )
    else:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    context: ssl.SSLContext | bool = False
    if cfg.host.startswith("https://"):
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE

    def authorization() -> str | None:
        # auth_settings() calls the refresh hook of in-cluster configs (ServiceAccount tokens
        # rotate); the key's name differs between client versions, so take any header.
        settings: dict[str, Any] = dict(cfg.auth_settings())
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                return str(setting["value"])
        return None

    return Connection(server=cfg.host.rstrip("/"), ssl_context=context, authorization=authorization)


class KubeSessions:
    """VoiceSessions of one namespace. Raises KubeApiError (4xx) or KubeUnavailable."""

    def __init__(self, connection: Connection, namespace: str) -> None:
        self._conn = connection
        self.namespace = namespace
        self._base = (
            f"{connection.server}/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}"
        )
        self._http: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._conn.ssl_context, limit=64),
                read_bufsize=2**20,  # watch events are single lines; objects can be large
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        auth = self._conn.authorization()
        if auth:
            headers["Authorization"] = auth
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _call(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        data = json.dumps(body) if body is not None else None
        try:
            async with self._client().request(
                method,
                url,
                data=data,
                params=params,
                headers=self._headers(content_type or ("application/json" if data else None)),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            ) as resp:
                text = await resp.text()
                return _answer(resp.status, text, f"{method} {url}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeUnavailable(f"Kubernetes API {self._conn.server}: {exc!r}") from None

    async def read(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", f"{self._base}/{quote(name)}")
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", self._base, body=body)

    async def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch; put `metadata.resourceVersion` in it for optimistic concurrency."""
        return await self._call(
            "PATCH", f"{self._base}/{quote(name)}", body=patch, content_type=MERGE_PATCH
        )

    async def list(self, label_selector: str) -> list[dict[str, Any]]:
        answer = await self._call("GET", self._base, params={"labelSelector": label_selector})
        return list(answer.get("items") or [])

    async def watch(
        self, name: str, resource_version: str, server_timeout: float
    ) -> AsyncIterator[WatchEvent]:
        """Events of one session after `resource_version`, for at most `server_timeout` s.

        The API server ends the watch after that time; the caller bounds it as well.

        Raises KubeApiError(410) when that version is too old (re-read, then watch again).
        """
        params = {
            "watch": "1",
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, int(server_timeout))),
        }
        try:
            async with self._client().get(
                self._base,
                params=params,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=REQUEST_TIMEOUT, sock_read=server_timeout + REQUEST_TIMEOUT
                ),
            ) as resp:
                if resp.status != 200:
                    _answer(resp.status, await resp.text(), f"WATCH {name}")
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        raise KubeApiError(
                            int(obj.get("code") or 500),
                            str(obj.get("reason")),
                            str(obj.get("message")),
                        )
                    yield WatchEvent(str(event.get("type")), obj)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise KubeUnavailable(f"watching VoiceSession {name}: {exc!r}") from None


def _answer(status: int, text: str, what: str) -> dict[str, Any]:
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        body = {"message": text[:200]}
    if status >= 500:
        raise KubeUnavailable(f"{what}: {status} {body.get('message', '')}")
    if status >= 400:
        raise KubeApiError(status, str(body.get("reason") or status), str(body.get("message")))
    return dict(body)
