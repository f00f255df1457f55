"""Structured logs: one JSON object per line; access lines carry no credential.

An access line holds the method, the path without its query string, the route, the status,
the duration, the authenticated identity (never a token) and a request id that is also
returned in the `X-Request-Id` header.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

ACCESS_LOGGER = "voicefleet_web.access"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
IDENTITY_KEY = web.RequestKey("identity", str)
ERROR_CODE_KEY = web.RequestKey("error_code", str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class JsonAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = None
        match_info = getattr(request, "match_info", None)
        if match_info is not None and match_info.route.resource is not None:
            route = match_info.route.resource.canonical
        self.logger.info(
            "access",
            extra={
                "fields": {
                    "method": request.method,
                    "path": request.rel_url.path,  # never the query string
                    "route": route,
                    "status": response.status,
                    "duration_ms": round(time * 1000, 1),
                    "user": request.get(IDENTITY_KEY),
                    "request_id": request.get(REQUEST_ID_KEY),
                    "remote": request.remote,
                    "error": request.get(ERROR_CODE_KEY),
                }
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
