"""The gateway's API as an OpenAPI 3.1 document (served at /api/openapi.json).

It is the contract for clients and for API fuzzing: every status a route can answer is
listed, and every error body has the `Error` schema.
"""

from __future__ import annotations

from typing import Any

from voicefleet_operator.api import ID_MAX, ID_PATTERN, NAME_MAX

SESSION_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


AUTH_ERRORS = {
    "401": _error("missing, malformed, expired or unknown bearer token"),
    "429": _error("too many requests from this user (see Retry-After)"),
    "503": _error("a dependency (Kubernetes, Letta, the OIDC issuer) is unavailable"),
}

SESSION_NAME_PARAM = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": NAME_MAX, "pattern": SESSION_NAME_PATTERN},
}


def openapi_document(version: str = "0.1.0") -> dict[str, Any]:
    ref = "#/components/schemas/"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "voicefleet gateway",
            "version": version,
            "description": "Connect a user to a Letta voice agent through a VoiceSession.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/agents": {
                "get": {
                    "operationId": "listAgents",
                    "summary": "the Letta agents this user may talk to",
                    "responses": {
                        "200": _ok("agents", {"type": "array", "items": {"$ref": ref + "Agent"}}),
                        **AUTH_ERRORS,
                    },
                }
            },
            "/api/sessions": {
                "post": {
                    "operationId": "connect",
                    "summary": "find or create the caller's session with an agent, start a fresh "
                    "connection, wait until Ready, return a join token for its room",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": ref + "ConnectRequest"}}
                        },
                    },
                    "responses": {
                        "200": _ok("the connection is Ready", {"$ref": ref + "Connection"}),
                        "400": _error("body is not JSON or agentId is missing or malformed"),
                        "403": _error("the session belongs to another user"),
                        "404": _error("unknown agent (or the session vanished while waiting)"),
                        "409": _error("a newer connect request superseded this one"),
                        "413": _error("body too large"),
                        "415": _error("body is not application/json"),
                        **AUTH_ERRORS,
                        "429": _error(
                            "per-user request or connection limit, or the cluster's "
                            "worker capacity (CapacityExceeded)"
                        ),
                        "503": _error(
                            "a dependency is down, or the connection Failed (reason in detail)"
                        ),
                        "504": _error("the connection was not Ready in time"),
                    },
                }
            },
            "/api/sessions/{name}": {
                "get": {
                    "operationId": "getSession",
                    "summary": "phase, conditions, connection",
                    "parameters": [SESSION_NAME_PARAM],
                    "responses": {
                        "200": _ok("the session", {"$ref": ref + "Session"}),
                        "400": _error("malformed session name"),
                        "403": _error("the session belongs to another user"),
                        "404": _error("unknown session"),
                        **AUTH_ERRORS,
                    },
                }
            },
            "/api/sessions/{name}/connection": {
                "delete": {
                    "operationId": "disconnect",
                    "summary": "end the current connection; answers once its room and worker are "
                    "gone",
                    "parameters": [SESSION_NAME_PARAM],
                    "responses": {
                        "200": _ok("the connection has ended", {"$ref": ref + "Ended"}),
                        "400": _error("malformed session name"),
                        "403": _error("the session belongs to another user"),
                        "404": _error("unknown session"),
                        **AUTH_ERRORS,
                        "504": _error("the connection did not end in time"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
                },
                "Agent": {
                    "type": "object",
                    "required": ["id", "name"],
                    "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
                },
                "ConnectRequest": {
                    "type": "object",
                    "required": ["agentId"],
                    "properties": {
                        "agentId": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": ID_MAX,
                            "pattern": ID_PATTERN,
                        }
                    },
                },
                "Connection": {
                    "type": "object",
                    "required": ["session", "connection", "room", "livekitUrl", "token"],
                    "properties": {
                        "session": {"type": "string"},
                        "connection": {"type": "integer"},
                        "room": {"type": "string"},
                        "livekitUrl": {"type": "string"},
                        "token": {
                            "type": "string",
                            "description": "LiveKit join token for this room only, short-lived",
                        },
                        "identity": {"type": "string"},
                    },
                },
                "Ended": {
                    "type": "object",
                    "required": ["session", "connection"],
                    "properties": {
                        "session": {"type": "string"},
                        "connection": {"type": "integer"},
                        "phase": {"type": ["string", "null"]},
                        "endReason": {"type": ["string", "null"]},
                    },
                },
                "Session": {
                    "type": "object",
                    "required": ["session", "phase"],
                    "properties": {
                        "session": {"type": "string"},
                        "agentId": {"type": "string"},
                        "userIdentity": {"type": "string"},
                        "requestedConnection": {"type": "integer"},
                        "phase": {
                            "type": ["string", "null"],
                            "enum": ["Connecting", "Ready", "Idle", "Failed", None],
                        },
                        "connection": {"type": ["object", "null"]},
                        "connectionsTotal": {"type": "integer"},
                        "conditions": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
    }
