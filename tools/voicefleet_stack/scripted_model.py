"""The offline brain: a deterministic scripted model behind an OpenAI-compatible HTTP API.

A real HTTP server (standard library only) that the real Letta server uses as its LLM and
embedding endpoint when no real model is configured. Letta is pointed at it with
``OPENAI_BASE_URL=http://127.0.0.1:<port>/v1`` and ``OPENAI_API_KEY=dummy``; the model
appears there as handle ``openai-proxy/scripted``.

Endpoints:

- ``GET /health`` -> ``{"status": "ok"}``
- ``GET /v1/models`` -> one model, ``scripted``
- ``POST /v1/chat/completions`` -> streaming (server-sent events, with the usage chunk
  asked for by ``stream_options.include_usage`` and ``data: [DONE]``) and non-streaming
- ``POST /v1/embeddings`` -> deterministic 1536-dim vectors (hashed bag of words), as
  float lists or base64 (``encoding_format``; the openai client asks for base64)

Every response carries ``Connection: close``: Letta's HTTP client otherwise keeps the
connection and stalls for a minute on the next request.

The script, looking at the last message of the request:

- the user's words contain ``what do you remember``: reply with the value of the
  ``human`` memory block as it appears in the system prompt (Letta renders each block as
  ``<human><description>..</description><metadata>..</metadata><value>..</value></human>``);
- the user's words contain ``remember <fact>``: call Letta's memory tool
  (``memory_insert`` into the ``human`` block with ``<fact>``; the argument names are read
  from the tool schema in the request), then, when the last message is that tool's result,
  reply ``OK, I will remember <fact>.``;
- anything else: reply ``You said: <the user's words>``.

Letta wraps user messages (a JSON envelope ``{"type": "user_message", "message": ..}``,
content parts, ``<system-reminder>`` blocks); the user's words are unwrapped from those.

Run: ``python3 tools/voicefleet_stack/scripted_model.py --host 127.0.0.1 --port 9283``
or ``python -m voicefleet_stack.scripted_model --port 9283``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import signal
import struct
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_ID = "scripted"
EMBEDDING_DIM = 1536
HUMAN_LABEL = "human"
MEMORY_TOOLS = ("memory_insert", "core_memory_append")

_RECALL = re.compile(r"\bwhat\s+do\s+you\s+remember\b", re.IGNORECASE)
_REMEMBER = re.compile(r"\bremember\s+(?:that\s+)?(?P<fact>\S.*)", re.IGNORECASE | re.DOTALL)
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
_WORD = re.compile(r"\w+", re.UNICODE)
_LINE_NUMBER = re.compile(r"^\d+\u2192 ?")

Message = dict[str, Any]


# ----------------------------------------------------------------------------- parsing


def content_text(content: Any) -> str:
    """The text of a message's content: a string or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return str(content)


def user_words(content: Any) -> str:
    """The user's actual words from a (possibly wrapped) user message's content."""
    text = _REMINDER.sub("", content_text(content)).strip()
    for _ in range(3):  # envelopes may nest
        if not text.startswith("{"):
            break
        try:
            envelope = json.loads(text)
        except ValueError:
            break
        if not isinstance(envelope, dict):
            break
        inner = envelope.get("message", envelope.get("text", envelope.get("content")))
        if not isinstance(inner, str):
            break
        text = _REMINDER.sub("", inner).strip()
    return text


def memory_block(system_prompt: str, label: str = HUMAN_LABEL) -> str | None:
    """The value of memory block `label` as rendered in Letta's system prompt, or None."""
    section = re.search(rf"<{re.escape(label)}>\n?(.*?)</{re.escape(label)}>", system_prompt, re.S)
    if section is None:
        return None
    body = section.group(1)
    value = re.search(r"<value>\n?(.*?)\n?</value>", body, re.S)
    text = value.group(1) if value is not None else body
    lines = [_LINE_NUMBER.sub("", line) for line in text.split("\n")]  # Anthropic-style numbering
    return "\n".join(lines).strip()


def clean_fact(fact: str) -> str:
    fact = " ".join(fact.split())
    return fact.rstrip(" .!?")


def _last_user_index(messages: list[Message]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index
    return None


def _system_prompt(messages: list[Message]) -> str:
    return "\n".join(
        content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
    )


def _tool_schema(tools: list[Any], name: str) -> dict[str, Any] | None:
    for tool in tools or []:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name") == name:
            params = function.get("parameters")
            return params if isinstance(params, dict) else {}
    return None


def memory_tool_call(tools: list[Any], fact: str) -> tuple[str, dict[str, Any]] | None:
    """Name and arguments of the call that appends `fact` to the human block, if offered."""
    for name in MEMORY_TOOLS:
        schema = _tool_schema(tools, name)
        if schema is None:
            continue
        props: dict[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        args: dict[str, Any] = {}
        text_done = False
        for prop, spec in props.items():
            kind = spec.get("type") if isinstance(spec, dict) else None
            if prop == "label" or prop.endswith("_label"):
                args[prop] = HUMAN_LABEL
            elif prop in ("new_string", "new_str", "content", "text", "value") and not text_done:
                args[prop] = fact
                text_done = True
            elif prop == "request_heartbeat":
                args[prop] = True
            elif prop in required:
                args[prop] = {"integer": -1, "number": -1, "boolean": True}.get(str(kind), "")
        if not text_done:  # unknown schema: first required string that is not the label
            for prop in schema.get("required") or []:
                if prop not in args or args[prop] == "":
                    args[prop] = fact
                    break
        return name, args
    return None


# ----------------------------------------------------------------------------- the script


def decide(request: dict[str, Any]) -> tuple[str | None, tuple[str, dict[str, Any]] | None]:
    """(content, tool call) the scripted model answers a chat-completions request with."""
    messages: list[Message] = [m for m in request.get("messages") or [] if isinstance(m, dict)]
    tools: list[Any] = request.get("tools") or []
    last = messages[-1] if messages else {}

    if last.get("role") == "tool":
        # The result of our memory call: finish the turn.
        fact = _fact_of_tool_call(messages, str(last.get("tool_call_id") or ""))
        if fact is not None:
            return f"OK, I will remember {fact}.", None
        return "OK.", None

    index = _last_user_index(messages)
    words = user_words(messages[index].get("content")) if index is not None else ""

    if _RECALL.search(words):
        value = memory_block(_system_prompt(messages))
        if value is None:
            return "I have no human memory block.", None
        return (value if value else "I do not remember anything yet."), None

    match = _REMEMBER.search(words)
    if match is not None and index == len(messages) - 1:
        fact = clean_fact(match.group("fact"))
        call = memory_tool_call(tools, fact) if fact else None
        if call is not None:
            return None, call
        if fact:
            return f"OK, I will remember {fact}.", None

    return f"You said: {words}", None


def _fact_of_tool_call(messages: list[Message], tool_call_id: str) -> str | None:
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            if tool_call_id and call.get("id") != tool_call_id:
                continue
            function = call.get("function") or {}
            if function.get("name") not in MEMORY_TOOLS:
                continue
            try:
                args = json.loads(function.get("arguments") or "{}")
            except ValueError:
                return None
            for key in ("new_string", "new_str", "content", "text", "value"):
                if isinstance(args.get(key), str):
                    return str(args[key])
            return None
    return None


# ----------------------------------------------------------------------------- responses


def _tokens(text: str) -> int:
    return max(1, len(_WORD.findall(text)))


def _usage(request: dict[str, Any], completion: str) -> dict[str, int]:
    prompt = sum(_tokens(content_text(m.get("content"))) for m in request.get("messages") or [])
    done = _tokens(completion)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def _call_id(request: dict[str, Any], name: str, args: dict[str, Any]) -> str:
    seed = json.dumps([len(request.get("messages") or []), name, args], sort_keys=True)
    return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]


def chat_completion(request: dict[str, Any]) -> dict[str, Any]:
    content, call = decide(request)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    finish = "stop"
    produced = content or ""
    if call is not None:
        name, args = call
        arguments = json.dumps(args)
        message["tool_calls"] = [
            {
                "id": _call_id(request, name, args),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        ]
        finish = "tool_calls"
        produced = arguments
    return {
        "id": "chatcmpl-" + hashlib.sha256(json.dumps(request).encode()).hexdigest()[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(request.get("model") or MODEL_ID),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _usage(request, produced),
    }


def chat_completion_chunks(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The same answer as `chat_completion`, as streaming chunks."""
    whole = chat_completion(request)
    message = whole["choices"][0]["message"]
    base = {k: whole[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return base | {"choices": [choice]}

    yield chunk({"role": "assistant", "content": ""})
    if message.get("tool_calls"):
        for index, call in enumerate(message["tool_calls"]):
            head = {"index": index, "id": call["id"], "type": "function"}
            head["function"] = {"name": call["function"]["name"], "arguments": ""}
            yield chunk({"tool_calls": [head]})
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), 24):
                piece = {"index": index, "function": {"arguments": arguments[start : start + 24]}}
                yield chunk({"tool_calls": [piece]})
    else:
        words = re.findall(r"\S+\s*", message.get("content") or "")
        for word in words:
            yield chunk({"content": word})
    yield chunk({}, whole["choices"][0]["finish_reason"])
    options = request.get("stream_options") or {}
    if options.get("include_usage"):
        yield base | {"choices": [], "usage": whole["usage"]}


def embed(text: str) -> list[float]:
    """A deterministic unit vector: hashed bag of words (similar texts are close)."""
    vector = [0.0] * EMBEDDING_DIM
    words = [w.lower() for w in _WORD.findall(text)] or [text]
    for word in words:
        digest = hashlib.shake_256(word.encode()).digest(16)
        for i in range(0, 16, 4):
            (n,) = struct.unpack("<I", digest[i : i + 4])
            vector[n % EMBEDDING_DIM] += 1.0 if n & 0x80000000 else -1.0
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


def embeddings(request: dict[str, Any]) -> dict[str, Any]:
    raw = request.get("input")
    inputs: list[Any] = raw if isinstance(raw, list) else [raw]
    if inputs and all(isinstance(i, int) for i in inputs):  # one text as token ids
        inputs = [inputs]
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    total = 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else " ".join(str(t) for t in item or [])
        total += _tokens(text)
        vector = embed(text)
        encoded: Any = vector
        if as_base64:
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": str(request.get("model") or "text-embedding-3-small"),
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }


def models() -> dict[str, Any]:
    entry = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "voicefleet"}
    return {"object": "list", "data": [entry]}


# ----------------------------------------------------------------------------- server


class Handler(BaseHTTPRequestHandler):
    server_version = "voicefleet-scripted-model/1"
    protocol_version = "HTTP/1.1"
    quiet = False
    dump_dir: str | None = None  # write every POST body there (debugging)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            sys.stderr.write(f"[scripted-model] {self.address_string()} {format % args}\n")

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": "invalid_request_error"}})

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def do_GET(self) -> None:
        path = self._path()
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path in ("/v1/models", "/models"):
            self._send_json(200, models())
        elif path in (f"/v1/models/{MODEL_ID}", f"/models/{MODEL_ID}"):
            self._send_json(200, models()["data"][0])
        else:
            self._error(404, f"no route GET {path}")

    def do_POST(self) -> None:
        path = self._path()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(request, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as exc:
            self._error(400, f"bad JSON body: {exc}")
            return
        if self.dump_dir:
            name = f"{time.time():.6f}-{path.strip('/').replace('/', '_')}.json"
            with open(f"{self.dump_dir}/{name}", "w") as f:
                json.dump(request, f, indent=1)
        if path in ("/v1/chat/completions", "/chat/completions"):
            if request.get("stream"):
                self._stream(chat_completion_chunks(request))
            else:
                self._send_json(200, chat_completion(request))
        elif path in ("/v1/embeddings", "/embeddings"):
            self._send_json(200, embeddings(request))
        else:
            self._error(404, f"no route POST {path}")

    def _stream(self, chunks: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # body ends when the connection closes
        self.end_headers()
        self.close_connection = True
        for item in chunks:
            self.wfile.write(f"data: {json.dumps(item)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def serve(host: str, port: int, quiet: bool = False) -> ThreadingHTTPServer:
    """Start the server in a background thread (for tests); `shutdown()` stops it."""
    handler = type("QuietHandler" if quiet else "Handler", (Handler,), {"quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="scripted-model", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9283)
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    parser.add_argument("--dump-dir", help="write every POST body into this folder (debugging)")
    args = parser.parse_args(argv)
    handler = type("Handler", (Handler,), {"quiet": args.quiet, "dump_dir": args.dump_dir})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    print(f"[scripted-model] listening on http://{args.host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    sys.exit(main())
