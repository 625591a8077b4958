"""Google: the authorization-code flow with PKCE, google-auth for refresh, the Gmail API for
the mailbox, revocation on disconnect, and the verification of Gmail's Pub/Sub pushes."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

import requests
from google.auth import jwt
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.auth.transport.requests import Request
from google.oauth2 import reauth

from ..connections.records import InboxCounts
from ..core.errors import Cause, ErrorCode, ProviderError
from ..core.settings import settings
from ..oauth.providers import (
    REFRESH_MARGIN_SECONDS,
    AuthorizedAccount,
    Mailbox,
    OAuthApp,
    TokenGrant,
)
from ..oauth.scopes import GOOGLE_SCOPES, REQUIRED_PERMISSIONS
from .provider_http import (
    get_json,
    network_problem,
    reading_answer,
    session,
    timeout,
    unavailable,
)

_PROVIDER = "google"
_READ, _ = REQUIRED_PERMISSIONS[_PROVIDER]
# Who issues Google's id tokens, the sign-in's and Pub/Sub's pushes' (written both ways).
_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
# Leeway for the clocks of Google and Lambda in a token's iat and exp.
_CLOCK_SKEW_SECONDS = 10
# Google's signing keys are kept for as long as its answer's max-age says (within these
# bounds), and fetched again, at most once a minute, for a key id they do not hold: a key
# rotates in, and forged key ids cannot make every push a fetch.
_CERTS_MIN_SECONDS, _CERTS_MAX_SECONDS, _CERTS_REFETCH_SECONDS = 60, 6 * 3600, 60
_MAX_AGE = re.compile(r"max-age=([0-9]{1,9})")


class _TimedRequest(Request):
    """google-auth's transport, with our timeout on the calls it makes without one."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = timeout()
        return super().__call__(*args, **kwargs)


def _tokens(
    access_token: str, expires_in: float, refresh_token: str, scopes: list[str]
) -> dict[str, Any]:
    return {
        "access_token": access_token,
        "expires_at": int(time.time() + expires_in),
        "refresh_token": refresh_token,
        "scopes": scopes,
    }


def _error_code(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _client_refused(code: object) -> ProviderError | None:
    """The token endpoint refusing the app itself, if it did: its credentials
    (invalid_client), or the client's kind or existence."""
    if code == "invalid_client":
        cause = Cause.CLIENT_SECRET_REFUSED
        return ProviderError(ErrorCode.OAUTH_CLIENT_INVALID, _PROVIDER, cause=cause)
    if code in {"unauthorized_client", "deleted_client"}:
        return ProviderError(ErrorCode.OAUTH_CLIENT_INVALID, _PROVIDER)
    return None


class _PushCerts:
    """Google's certificates that sign push tokens, by key id, kept between pushes."""

    def __init__(self) -> None:
        self._certs: dict[str, str] = {}
        self._fetched_at = self._fresh_until = 0.0

    def get(self, key_id: str | None) -> dict[str, str]:
        now = time.monotonic()
        stale = now >= self._fresh_until
        unknown_key = key_id is not None and key_id not in self._certs
        if stale or (unknown_key and now - self._fetched_at >= _CERTS_REFETCH_SECONDS):
            self._fetch(now)
        return self._certs

    def _fetch(self, now: float) -> None:
        try:
            answer = session().get(settings().google_push_certs_url, timeout=timeout())
        except requests.RequestException as error:
            raise network_problem(error, _PROVIDER) from error
        if not answer.ok:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, _PROVIDER)
        with reading_answer(_PROVIDER):
            certs = answer.json()
            if not all(isinstance(v, str) for v in certs.values()):
                raise ValueError("not certificates by key id")
        found = _MAX_AGE.search(answer.headers.get("Cache-Control", ""))
        max_age = int(found.group(1)) if found else _CERTS_MIN_SECONDS
        self._certs = {str(key): value for key, value in certs.items()}
        self._fetched_at = now
        self._fresh_until = now + min(max(max_age, _CERTS_MIN_SECONDS), _CERTS_MAX_SECONDS)


_push_certs = _PushCerts()


def _id_token_claims(id_token: str, app: OAuthApp) -> dict[str, Any]:
    """The claims of the id token the token endpoint answered. Received from Google over
    verified TLS in answer to our own client's request, it needs no signature check (OpenID
    Connect Core 3.1.3.7); it must still be Google's, for this app, and name its subject."""
    if not id_token:
        raise ProviderError(ErrorCode.AUTHORIZATION_FAILED, _PROVIDER, detail=": no id token")
    claims: dict[str, Any] = jwt.decode(id_token, verify=False)
    subject = claims.get("sub")
    if (
        claims.get("aud") != app.client_id
        or claims.get("iss") not in _ISSUERS
        or not (isinstance(subject, str) and subject)
    ):
        raise ProviderError(
            ErrorCode.AUTHORIZATION_FAILED, _PROVIDER, detail=": the id token is not this app's"
        )
    return claims


class GoogleClient:
    def start(self, app: OAuthApp, state: str, *, consent: bool) -> tuple[str, dict[str, Any]]:
        verifier = secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = {
            "client_id": app.client_id,
            "redirect_uri": settings().oauth_redirect_uri,
            "response_type": "code",
            "scope": " ".join(GOOGLE_SCOPES),
            "state": state,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            # A refresh token is only issued offline, and only again with consent.
            "access_type": "offline",
            "prompt": "consent" if consent else "select_account consent",
            # Incremental consent: what was granted before stays granted.
            "include_granted_scopes": "true",
        }
        return f"{settings().google_auth_url}?{urlencode(query)}", {"code_verifier": verifier}

    def finish(
        self, app: OAuthApp, flow: dict[str, Any], response: dict[str, str]
    ) -> AuthorizedAccount:
        try:
            answer = session().post(
                settings().google_token_url,
                data={
                    "grant_type": "authorization_code",
                    "code": response.get("code", ""),
                    "code_verifier": flow["code_verifier"],
                    "redirect_uri": settings().oauth_redirect_uri,
                    "client_id": app.client_id,
                    "client_secret": app.client_secret,
                },
                timeout=timeout(),
            )
        except requests.RequestException as error:
            raise network_problem(error, _PROVIDER) from error
        if not answer.ok:
            # Google failing or asking to slow down, not the sign-in refused.
            refused = unavailable(answer, _PROVIDER) or _client_refused(_error_code(answer))
            if refused is not None:
                raise refused
            raise ProviderError(ErrorCode.AUTHORIZATION_FAILED, _PROVIDER)
        with reading_answer(_PROVIDER):
            body = answer.json()
            if "refresh_token" not in body:
                raise ProviderError(
                    ErrorCode.AUTHORIZATION_FAILED,
                    _PROVIDER,
                    detail=": no offline access was granted",
                )
            scopes = str(body.get("scope", "")).split()
            tokens = _tokens(
                body["access_token"], body["expires_in"], body["refresh_token"], scopes
            )
            claims = _id_token_claims(str(body.get("id_token", "")), app)
        grant = TokenGrant(body["access_token"], scopes, tokens["expires_at"], tokens)
        return AuthorizedAccount(
            grant=grant,
            tenant_id=None,
            account_id=claims["sub"],
            username=str(claims.get("email", "")),
        )

    def cached_token(self, tokens: dict[str, Any]) -> TokenGrant | None:
        if tokens["expires_at"] - time.time() <= REFRESH_MARGIN_SECONDS:
            return None
        return TokenGrant(tokens["access_token"], tokens["scopes"], tokens["expires_at"], None)

    def refresh(self, app: OAuthApp, tokens: dict[str, Any]) -> TokenGrant:
        try:
            with reading_answer(_PROVIDER):  # google-auth reads the answer without checking it
                # Credentials.refresh would drop the answer's `scope` (it keeps it only when
                # scopes are asked for, and asking for withdrawn ones is refused): what it
                # calls, called here.
                access_token, refresh_token, expiry, answer, _ = reauth.refresh_grant(
                    _TimedRequest(session()),
                    settings().google_token_url,
                    tokens["refresh_token"],
                    app.client_id,
                    app.client_secret,
                )
        except RefreshError as error:
            details = error.args[1] if len(error.args) > 1 else None
            code = details.get("error") if isinstance(details, dict) else None
            refused = _client_refused(code)
            if refused is not None:
                raise refused from error
            if code == "invalid_grant":
                raise ProviderError(
                    ErrorCode.REAUTHORIZATION_REQUIRED, _PROVIDER, cause=Cause.GOOGLE_GRANT_ENDED
                ) from error
            raise ProviderError(ErrorCode.PROVIDER_ERROR, _PROVIDER) from error
        except TransportError as error:
            cause = error.__cause__ or error.__context__
            if isinstance(cause, requests.RequestException):
                raise network_problem(cause, _PROVIDER) from error
            raise ProviderError(ErrorCode.CONNECTION_FAILED, _PROVIDER) from error
        # What is granted now: scopes withdrawn since the sign-in are no longer listed.
        scopes = str(answer.get("scope", "")).split() or list(tokens["scopes"])
        # google-auth gives expiry as a naive UTC datetime.
        expires_in = (expiry.replace(tzinfo=UTC).timestamp() if expiry else 0) - time.time()
        # Google keeps refresh tokens; should it ever rotate one, the new one is kept.
        refreshed = _tokens(
            str(access_token), expires_in, refresh_token or tokens["refresh_token"], scopes
        )
        return TokenGrant(str(access_token), scopes, refreshed["expires_at"], refreshed)

    def mailbox(self, access_token: str) -> Mailbox:
        gmail = settings().gmail_base_url
        profile = get_json(_PROVIDER, f"{gmail}/users/me/profile", access_token, needs=_READ)
        inbox = get_json(_PROVIDER, f"{gmail}/users/me/labels/INBOX", access_token, needs=_READ)
        with reading_answer(_PROVIDER):
            return Mailbox(
                email=profile["emailAddress"],
                inbox=InboxCounts(total=inbox["messagesTotal"], unread=inbox["messagesUnread"]),
            )

    def revoke(self, tokens: dict[str, Any]) -> None:
        try:
            answer = session().post(
                settings().google_revoke_url,
                data={"token": tokens["refresh_token"]},
                timeout=timeout(),
            )
        except requests.RequestException as error:
            raise network_problem(error, _PROVIDER) from error
        # invalid_token: already revoked or expired, which is the outcome wanted.
        if not answer.ok and _error_code(answer) != "invalid_token":
            raise ProviderError(ErrorCode.PROVIDER_ERROR, _PROVIDER)

    def verify_push_token(self, token: str, *, audience: str, service_account: str) -> bool:
        """Whether `token` is an OIDC token Google signed for a push of the subscription
        that pushes as `service_account` to `audience`: signature, issuer, audience, expiry,
        and the service account's verified address. Google's keys that cannot be fetched
        are a ProviderError (the push is tried again), not a refusal."""
        if not (token and audience and service_account):
            return False
        try:
            header = jwt.decode_header(token)
            certs = _push_certs.get(header.get("kid"))
            claims = jwt.decode(
                token, certs=certs, audience=audience, clock_skew_in_seconds=_CLOCK_SKEW_SECONDS
            )
        # A token is input: whatever it makes google-auth raise is a token refused.
        except (GoogleAuthError, ValueError, TypeError, AttributeError, KeyError):
            return False
        return (
            claims.get("iss") in _ISSUERS
            and claims.get("email") == service_account
            and claims.get("email_verified") is True
        )


ADAPTER = GoogleClient()
