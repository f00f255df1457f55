"""`python -m voicefleet_web --host 127.0.0.1 --port 8080`: run the gateway."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from .accesslog import ACCESS_LOGGER, JsonAccessLogger, configure_logging
from .app import create_app
from .config import ENV_DOC, ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    epilog = "environment:\n" + "\n".join(f"  {k:34} {v}" for k, v in ENV_DOC.items())
    parser = argparse.ArgumentParser(
        prog="python -m voicefleet_web",
        description="voicefleet gateway",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"voicefleet gateway: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("voicefleet_web").info(
        "starting",
        extra={
            "fields": {
                "host": args.host,
                "port": args.port,
                "namespace": settings.namespace,
                "auth": ["dev-token"] * bool(settings.dev_token) + ["oidc"] * bool(settings.oidc),
            }
        },
    )
    web.run_app(
        create_app(settings),
        host=args.host,
        port=args.port,
        access_log_class=JsonAccessLogger,
        access_log=logging.getLogger(ACCESS_LOGGER),
        print=None,
        shutdown_timeout=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
