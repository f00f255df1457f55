"""Helpers of the security tests: admin reads of sessions, signed webhooks, raw HTTP.

Waiting here polls the API server with kubectl at a short interval and a bound: these are
the test's own hands and eyes, not the product's.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit import api

GROUP_VERSION = "voicefleet.dev/v1alpha1"


@dataclass
class SecOperator:
    namespace: str
    proc: Any  # opit.OperatorProcess

    @property
    def webhook_url(self) -> str:
        return str(self.proc.webhook_url)

    @property
    def metrics_url(self) -> str:
        return str(self.proc.metrics_url)

    @property
    def log(self) -> Path:
        return Path(self.proc.log)

    def alive(self) -> bool:
        return self.proc.proc is not None and self.proc.proc.poll() is None


def session_manifest(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "VoiceSession",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def fresh_name(prefix: str = "sec") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def get_session(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    out = kubectl("get", "voicesession", name, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


def wait_for(what: str, check: Callable[[], Any], within: float = 60.0, every: float = 0.3) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {within:.0f} s waiting for {what} (last: {last!r})")


def dispatched(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    """The session once the operator gave its connection a room and a pod."""

    def check() -> dict[str, Any] | None:
        obj = get_session(kubectl, namespace, name)
        conn = (obj.get("status") or {}).get("connection") or {}
        return obj if conn.get("room") and conn.get("pod") else None

    return dict(wait_for(f"{name} to get a room and a pod", check))


def signed_webhook(
    env: dict[str, str],
    body: bytes,
    *,
    secret: str | None = None,
    ttl: datetime.timedelta | None = None,
) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = api.AccessToken(env["LIVEKIT_API_KEY"], secret or env["LIVEKIT_API_SECRET"])
    token = token.with_sha256(digest)
    if ttl is not None:
        token = token.with_ttl(ttl)
    return token.to_jwt()


def webhook_body(kind: str, room: str, ev_id: str) -> bytes:
    return json.dumps(
        {
            "event": kind,
            "id": ev_id,
            "room": {"name": room},
            "participant": {"identity": "alice"},
            "createdAt": str(int(time.time())),
        }
    ).encode()


def raw_request(
    url: str,
    method: str = "POST",
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    timeout: float = 20.0,
) -> tuple[int, bytes]:
    """One request on a fresh connection; `body` as an iterable is sent chunked.

    Returns (status, body); (0, b"") when the server closed the connection without answering.
    """
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        chunked = body is not None and not isinstance(body, bytes)
        for key, value in pairs:
            conn.putheader(key, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if isinstance(body, bytes):
            conn.send(body)
        elif body is not None:
            for chunk in body:
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError):
        return 0, b""
    finally:
        conn.close()


def metrics_text(url: str) -> str:
    status, body = raw_request(url, "GET")
    assert status == 200, (url, status)
    return body.decode()


def metric_value(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key = line.split()[0].split("{")[0]
            if key == name:
                total += float(line.split()[-1])
    return total
