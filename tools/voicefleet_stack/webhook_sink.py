"""STOPGAP: a LiveKit webhook receiver that verifies and records events to a file.

It holds the operator's `WEBHOOK_URL` slot until the operator's own receiver (issue 4)
takes it over; the smoke tests use it to prove LiveKit's signed webhooks arrive and verify.
Bad signatures get 401 and are not recorded. Run:
    python -m voicefleet_stack.webhook_sink --port P --out events.jsonl
with LIVEKIT_API_KEY / LIVEKIT_API_SECRET in the environment (never on the command line).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from livekit import api

MAX_BODY = 1 << 20


def make_handler(receiver: api.WebhookReceiver, out: Path) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply(200, {"status": "ok"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._reply(413, {"error": "body too large"})
                return
            body = self.rfile.read(length).decode("utf-8", errors="replace")
            try:
                event = receiver.receive(body, self.headers.get("Authorization", ""))
            except Exception as exc:  # any verification failure is a 401
                self._reply(401, {"error": "webhook not verified", "detail": type(exc).__name__})
                return
            record = MessageToDict(event, preserving_proto_field_name=True)
            with lock, out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            self._reply(200, {"status": "ok"})

        def log_message(self, format: str, *args: object) -> None:
            print(
                f"webhook-sink: {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}",
                flush=True,
            )

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    receiver = api.WebhookReceiver(
        api.TokenVerifier(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"])
    )
    server = ThreadingHTTPServer((args.host, args.port), make_handler(receiver, args.out))
    print(f"webhook-sink listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
