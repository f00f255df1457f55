"""The LiveKit server of the local stack: one node, no Redis, loopback only, webhooks on.

Signalling listens on 127.0.0.1 only, and media too: ICE host candidates from the loopback
interface (`rtc.interfaces`, `rtc.ips`, loopback candidates allowed) and no ICE-TCP, because
LiveKit's `rtc.tcp_port` listens on every interface of the machine (mediatransportutil's
`net.ListenTCP("tcp", {Port})`) and, without the interface filter, its UDP sockets bind the
machine's external addresses; the stack's network rule forbids both.

With the real node (`bridge` given), worker pods in containers must reach it too: the
signalling port is bound on 127.0.0.1 and on the stack's bridge address, and media lives on
the bridge address only, which is the node IP LiveKit advertises. Host-side clients keep
signalling on 127.0.0.1 and send media to the bridge address, a local address of this machine.
"""

from __future__ import annotations

import os
import urllib.request

import yaml

from .parts import Part, StackContext


def livekit_part(ctx: StackContext, bridge: tuple[str, str] | None = None) -> Part:
    """LiveKit on loopback; `bridge` = (interface, address) also serves worker pods there."""
    port = ctx.ports["livekit"]
    udp_start = ctx.ports["livekit_udp_start"]
    key, secret = ctx.values["LIVEKIT_API_KEY"], ctx.values["LIVEKIT_API_SECRET"]
    data = ctx.data("livekit")
    config = {
        "port": port,
        "bind_addresses": ["127.0.0.1"],
        "rtc": {
            # No ICE-TCP: LiveKit's rtc.tcp_port listens on every interface of the machine.
            "tcp_port": 0,
            "port_range_start": udp_start,
            "port_range_end": udp_start + 99,
            "use_external_ip": False,
            # Media on loopback only (not eth0, not IPv6): host candidates from `lo`.
            "interfaces": {"includes": ["lo"]},
            "ips": {"includes": ["127.0.0.1/32"]},
            "enable_loopback_candidate": True,
        },
        "keys": {key: secret},
        "webhook": {"api_key": key, "urls": [ctx.values["WEBHOOK_URL"]]},
        "room": {"empty_timeout": 60, "departure_timeout": 10},
        "logging": {"level": "info", "json": False},
    }
    node_ip = "127.0.0.1"
    if bridge is not None:
        interface, address = bridge
        node_ip = address
        config["bind_addresses"] = ["127.0.0.1", address]
        config["rtc"] = {
            "port_range_start": udp_start,
            "port_range_end": udp_start + 99,
            "use_external_ip": False,
            "tcp_port": 0,  # not omitted: LiveKit's default is 7881 on every interface
            # ICE host candidates from the bridge only (not eth0, not its IPv6 link-local).
            "interfaces": {"includes": [interface]},
            "ips": {"includes": [f"{address}/32"]},
        }
    config_path = data / "livekit.yaml"
    config_path.write_text(yaml.safe_dump(config))
    config_path.chmod(0o600)  # holds the API secret

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
            return bool(resp.status == 200)

    return Part(
        name="livekit-server",
        argv=[
            str(ctx.bin_dir / "livekit-server"),
            f"--config={config_path}",
            f"--node-ip={node_ip}",
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(data)},
        cwd=data,
        health=healthy,
        timeout=30,
        description=f"ws://127.0.0.1:{port}"
        + (f" and ws://{node_ip}:{port} (worker pods; media on {node_ip})" if bridge else ""),
    )
