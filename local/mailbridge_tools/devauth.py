"""A local stand-in for the platform's identity provider and API Gateway's JWT authorizer.

Its key pair lives in memory only: tokens it mints are worthless anywhere but the local API
that holds the same DevIssuer.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

_ALGORITHM = "RS256"


class DevIssuer:
    def __init__(
        self,
        issuer: str = "https://auth.mailbridge.localhost/",
        audience: str = "mailbridge-local",
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def mint(
        self,
        sub: str,
        org_id: str,
        role: str = "admin",
        ttl_seconds: int = 12 * 3600,
        org_claim: str = "org_id",
        *,
        scopes: tuple[str, ...] = (),
        agent_id: str | None = None,
    ) -> str:
        """A token as the platform's identity provider would issue it: for a person (with a
        role), or for an agent's runtime (`agent_id`), with OAuth scopes when given."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "iat": now,
            "exp": now + ttl_seconds,
            org_claim: org_id,
        }
        if agent_id is None:
            claims["role"] = role
        else:
            claims["agent_id"] = agent_id
        if scopes:
            claims["scope"] = " ".join(scopes)
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def verify(self, authorization_header: str | None) -> dict[str, Any] | None:
        """The token's claims if API Gateway's JWT authorizer would accept it, else None.

        As API Gateway does: the token may come bare or after "Bearer "; the signature, exp,
        nbf, iat, iss and aud are checked.
        """
        if not authorization_header:
            return None
        scheme, _, credentials = authorization_header.partition(" ")
        token = credentials.strip() if scheme.lower() == "bearer" else authorization_header
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=[_ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            return None
        return claims
