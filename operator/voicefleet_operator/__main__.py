"""`python -m voicefleet_operator`: the composition root.

Reads the settings once from the environment (see config.py and the README of the
operator in docs), configures structured (JSON) logs, and runs kopf for the one namespace
where VoiceSessions live, with the handlers of `handlers.py`. Kubernetes credentials come
from KUBECONFIG (the operator's ServiceAccount token), or the in-cluster ServiceAccount.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys

import kopf

from . import handlers  # noqa: F401  (registers the kopf handlers)
from .config import ConfigError, env_help, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voicefleet_operator",
        description=__doc__,
        epilog=env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--verbose", action="store_true", help="debug logs")
    parser.add_argument(
        "--plain-logs", action="store_true", help="human-readable logs instead of JSON"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"voicefleet-operator: {exc}", file=sys.stderr)
        return 2
    # What the imports made lives as long as the process: out of the collector's way for good
    # (gc.freeze), and the young generation sized for a process holding thousands of objects
    # per session (config.Settings.gc_thresholds says what it costs otherwise).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.gc_thresholds)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.FULL if args.plain_logs else kopf.LogFormat.JSON,
        log_refkey="session",
    )
    # The LiveKit SDK logs request URLs only; keep library chatter at warning level.
    logging.getLogger("livekit").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not args.verbose:
        # kopf reports every handled watch event at INFO ("Handler ... succeeded"): one line
        # per pod or session change. Decisions are logged by voicefleet.* and posted as Events.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    liveness = (
        f"http://{settings.bind_host}:{settings.health_port}/healthz"
        if settings.health_port
        else None
    )
    kopf.run(
        namespaces=[settings.namespace],
        clusterwide=False,
        standalone=settings.standalone or None,
        priority=settings.peering_priority,
        peering_name=settings.peering_name,
        liveness_endpoint=liveness,
        memo=kopf.Memo(settings=settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
