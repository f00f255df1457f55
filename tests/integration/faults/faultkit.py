"""Helpers of the fault tests: the stack's parts, an inventory of pods, rooms and sessions.

Session helpers (session_obj, status, condition, wait_for, livekit) are the operator
tests' own, imported from tests/integration/operator.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit import api
from opit import Kube, OperatorProcess
from test_operator_lifecycle import livekit, status

WORKER_LABEL = "app.kubernetes.io/name=voicefleet-worker"


def voicefleet(stack_dir: Path, *args: str, timeout: float = 180) -> None:
    """`voicefleet <args>` on the stack in `stack_dir` (and only that one)."""
    result = subprocess.run(
        [sys.executable, "-m", "voicefleet_stack", *args],
        env=dict(os.environ, VOICEFLEET_STACK_DIR=str(stack_dir)),
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"voicefleet {' '.join(args)} failed ({result.returncode}): "
            f"{result.stdout[-1500:]}{result.stderr[-1500:]}"
        )


def part_pid(stack_dir: Path, part: str) -> int:
    pids = json.loads((stack_dir / "pids.json").read_text())
    return int(next(p["pid"] for p in pids if p["name"] == part))


async def rooms(env: dict[str, str], prefix: str) -> set[str]:
    """LiveKit rooms whose name starts with `prefix`."""
    async with livekit(env) as lk:
        listed = await lk.room.list_rooms(api.ListRoomsRequest())
    return {r.name for r in listed.rooms if r.name.startswith(prefix)}


def sessions(kube: Kube) -> dict[str, dict[str, Any]]:
    out = kube.run("-n", kube.namespace, "get", "voicesessions", "-o", "json").stdout
    return {o["metadata"]["name"]: o for o in json.loads(out)["items"]}


def worker_pods(kube: Kube) -> list[dict[str, Any]]:
    out = kube.run("-n", kube.namespace, "get", "pods", "-l", WORKER_LABEL, "-o", "json").stdout
    return list(json.loads(out)["items"])


@dataclass
class Inventory:
    """What is left after a fault, and what of it should not be there."""

    sessions: dict[str, dict[str, Any]]
    pods: list[dict[str, Any]]
    rooms: set[str]

    def stuck_finalizers(self) -> list[str]:
        return sorted(n for n, o in self.sessions.items() if o["metadata"].get("deletionTimestamp"))

    def orphan_pods(self) -> list[str]:
        """Pods of no live session, or of a connection that is not the session's current one."""
        orphans = []
        for pod in self.pods:
            labels = pod["metadata"].get("labels", {})
            owner = self.sessions.get(labels.get("voicefleet.dev/session", ""))
            conn = ((owner or {}).get("status") or {}).get("connection") or {}
            if (
                owner is None
                or owner["metadata"].get("deletionTimestamp")
                or labels.get("voicefleet.dev/connection") != str(conn.get("id"))
                or pod["metadata"]["name"] != conn.get("pod")
                or conn.get("endedAt")
            ):
                orphans.append(pod["metadata"]["name"])
        return sorted(orphans)

    def orphan_rooms(self) -> list[str]:
        """Rooms that are not the live room of the current connection of a live session."""
        live = set()
        for obj in self.sessions.values():
            conn = (obj.get("status") or {}).get("connection") or {}
            if conn.get("room") and not conn.get("endedAt"):
                live.add(conn["room"])
        return sorted(self.rooms - live)


async def inventory(kube: Kube, env: dict[str, str], room_prefix: str) -> Inventory:
    got_sessions, pods = await asyncio.gather(
        asyncio.to_thread(sessions, kube), asyncio.to_thread(worker_pods, kube)
    )
    return Inventory(got_sessions, pods, await rooms(env, room_prefix))


async def astatus(kube: Kube, name: str) -> dict[str, Any]:
    return await asyncio.to_thread(status, kube, name)


class Partition:
    """A TCP relay on 127.0.0.1 between one client (the operator) and a server (LiveKit)
    that the test can cut: while cut, connections are refused and open ones are closed,
    and nothing sent meanwhile reaches the server later (unlike SIGSTOP, where requests
    wait in the frozen server's socket queue and run when it resumes). A network
    partition between the two, with the server itself alive."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.close()
        self._links.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links.difference_update((writer, up_writer))


def operator_errors(operator: OperatorProcess, reason: str | None = None) -> float:
    """voicefleet_errors_total of a running operator: of one reason, or summed over all."""
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    label = re.escape(reason) if reason is not None else '[^"]*'
    found = re.findall(rf'^voicefleet_errors_total\{{reason="{label}"\}} (\S+)$', text, re.M)
    return sum(float(v) for v in found)
