"""Fake Google Cloud Pub/Sub, as far as Gmail's push needs it: a topic with a push
subscription that POSTs each notification to its endpoint, authenticated as Pub/Sub does it
with an OIDC token (RS256, Google's issuer, the subscription's audience and service account)
that the fake signs with its own RSA key. The key's certificate is published in the shape of
https://www.googleapis.com/oauth2/v1/certs (PEM certificates by key id), which google-auth
reads."""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .base import b64url

ISSUER = "https://accounts.google.com"
_TOKEN_LIFETIME = 3600
_PUSH_TIMEOUT_SECONDS = 10


class OidcSigner:
    """An RSA key that signs OIDC tokens, and its self-signed certificate by key id."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or secrets.token_hex(20)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-google-oidc")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .sign(self._key, hashes.SHA256())
        )
        self.certificate = certificate.public_bytes(serialization.Encoding.PEM).decode()

    def certs(self) -> dict[str, str]:
        return {self.kid: self.certificate}

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        signing_input = (
            f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


@dataclass(frozen=True)
class PushSubscription:
    """A topic's push subscription: where it pushes, and what its OIDC token says."""

    topic: str  # projects/<project>/topics/<topic>
    endpoint: str
    audience: str
    service_account: str
    name: str = "projects/fake-project/subscriptions/mailbridge-gmail-push"

    def claims(self, **changes: Any) -> dict[str, Any]:
        """The claims of the token Pub/Sub attaches; `changes` replace some (None: left out)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": self.audience,
            "azp": "112233445566778899000",
            "sub": "112233445566778899000",
            "email": self.service_account,
            "email_verified": True,
            "iat": now,
            "exp": now + _TOKEN_LIFETIME,
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def envelope(self, data: dict[str, Any]) -> dict[str, Any]:
        """Pub/Sub's push body for a message of `data` (JSON, in base64)."""
        message_id = str(secrets.randbits(53))
        published = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        return {
            "message": {
                "data": base64.b64encode(json.dumps(data).encode()).decode(),
                "messageId": message_id,
                "message_id": message_id,
                "publishTime": published,
                "publish_time": published,
            },
            "subscription": self.name,
        }


@dataclass(frozen=True)
class Push:
    """One push delivered: what was sent and how the endpoint answered (0: not at all)."""

    address: str
    body: dict[str, Any]
    status: int


def post_push(endpoint: str, body: dict[str, Any], token: str | None) -> int:
    """POSTs a push body as Pub/Sub does; the endpoint's status (0 if it could not be
    reached)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        endpoint, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=_PUSH_TIMEOUT_SECONDS) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)
    except OSError:
        return 0
