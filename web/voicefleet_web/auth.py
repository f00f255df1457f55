"""Who is calling: bearer tokens, either the static dev token or an OIDC-issued JWT.

The result is a `Principal` whose `identity` (derived from the authenticated subject, never
from a request body) is the LiveKit identity and the VoiceSession's `userIdentity`.
Tokens never reach a log line or an error detail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
from typing import Any

import jwt

from .config import OidcSettings, Settings
from .errors import DependencyUnavailable, Unauthorized
from .naming import identity_from_subject

JWT_LEEWAY_SECONDS = 30
JWKS_CACHE_SECONDS = 300


@dataclasses.dataclass(frozen=True)
class Principal:
    subject: str
    identity: str
    name: str
    method: str  # "dev-token" | "oidc"


class OidcVerifier:
    """Verifies JWTs against the issuer's JWKS (keys cached, refetched for unknown key ids)."""

    def __init__(self, settings: OidcSettings, jwks_client: jwt.PyJWKClient | None = None) -> None:
        self._settings = settings
        self._jwks = jwks_client or jwt.PyJWKClient(
            settings.jwks_url,
            cache_keys=True,
            lifespan=JWKS_CACHE_SECONDS,
            timeout=10,
        )

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            # PyJWKClient fetches with urllib (blocking): keep it off the event loop.
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            raise DependencyUnavailable(
                f"cannot fetch the OIDC issuer's keys from {self._settings.jwks_url}: {exc}"
            ) from None
        except (jwt.PyJWKClientError, jwt.DecodeError) as exc:
            raise Unauthorized(f"bearer token rejected: {exc}") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(self._settings.algorithms),
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=JWT_LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"bearer token rejected: {exc}") from None
        return claims


class Authenticator:
    def __init__(self, settings: Settings, oidc: OidcVerifier | None = None) -> None:
        self._dev_token = settings.dev_token
        self._dev_user = settings.dev_user
        self._oidc = oidc or (OidcVerifier(settings.oidc) if settings.oidc else None)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an `Authorization` header; raises Unauthorized."""
        if not authorization:
            raise Unauthorized("missing Authorization header: send `Authorization: Bearer <token>`")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be `Bearer <token>`")
        if self._dev_token is not None and hmac.compare_digest(
            token.encode(), self._dev_token.encode()
        ):
            return Principal(
                self._dev_user, identity_from_subject(self._dev_user), self._dev_user, "dev-token"
            )
        if self._oidc is not None and token.count(".") == 2:
            claims = await self._oidc.verify(token)
            subject = str(claims.get("sub") or "")
            if not subject:
                raise Unauthorized("bearer token rejected: empty subject")
            name = str(claims.get("name") or claims.get("preferred_username") or subject)
            return Principal(subject, identity_from_subject(subject), name[:128], "oidc")
        raise Unauthorized("bearer token rejected: unknown token")
