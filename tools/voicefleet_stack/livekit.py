"""The LiveKit server of the local stack: one node, no Redis, loopback only, webhooks on."""

from __future__ import annotations

import os
import urllib.request

import yaml

from .parts import Part, StackContext


def livekit_part(ctx: StackContext) -> Part:
    port = ctx.ports["livekit"]
    rtc_tcp = ctx.ports["livekit_rtc_tcp"]
    udp_start = ctx.ports["livekit_udp_start"]
    key, secret = ctx.values["LIVEKIT_API_KEY"], ctx.values["LIVEKIT_API_SECRET"]
    data = ctx.data("livekit")
    config = {
        "port": port,
        "bind_addresses": ["127.0.0.1"],
        "rtc": {
            "tcp_port": rtc_tcp,
            "port_range_start": udp_start,
            "port_range_end": udp_start + 99,
            "use_external_ip": False,
        },
        "keys": {key: secret},
        "webhook": {"api_key": key, "urls": [ctx.values["WEBHOOK_URL"]]},
        "room": {"empty_timeout": 60, "departure_timeout": 10},
        "logging": {"level": "info", "json": False},
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
            "--node-ip=127.0.0.1",
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(data)},
        cwd=data,
        health=healthy,
        timeout=30,
        description=f"ws://127.0.0.1:{port}",
    )
