"""Fake Microsoft: Entra ID's v2.0 endpoints under a tenant (discovery, authorize, token) and
a Microsoft Graph subset (/v1.0/me, the inbox folder). Each refresh hands out a new refresh
token and leaves the used one valid, as at Microsoft."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from .base import (
    Account,
    App,
    Code,
    FakeProvider,
    Grant,
    PathTest,
    Reply,
    Request,
    Route,
    b64url,
    html_page,
    json_reply,
    unsigned_jwt,
)

_GRAPH = "https://graph.microsoft.com/"
# The scopes that may read each Graph resource: any one of them.
_USER_READ = {"User.Read", "User.ReadBasic.All"}
_MAIL_READ = {"Mail.Read", "Mail.ReadWrite"}
_IMMUTABLE = "AAkALg"  # how Graph's immutable message ids begin


def _short_scope(scope: str) -> str:
    return scope.removeprefix(_GRAPH)


class FakeMicrosoft(FakeProvider):
    """Entra ID's v2.0 endpoints under {base_url}/{tenant}, Graph under {base_url}/v1.0."""

    _INVALID_CLIENT: ClassVar[dict[str, Any]] = {
        "error_description": "AADSTS7000215: Invalid client secret provided."
    }
    _INVALID_CODE: ClassVar[dict[str, Any]] = {
        "error_description": "AADSTS70008: The code has expired or was used."
    }
    _INVALID_REFRESH_TOKEN: ClassVar[dict[str, Any]] = {
        "error_description": "AADSTS700082: The refresh token has expired.",
        "error_codes": [700082],
    }
    # Graph's error objects.
    _UNAUTHENTICATED: ClassVar[dict[str, Any]] = {
        "code": "InvalidAuthenticationToken",
        "message": "Access token has expired or is not yet valid.",
    }
    _INSUFFICIENT_SCOPE: ClassVar[dict[str, Any]] = {
        "code": "ErrorAccessDenied",
        "message": "Access is denied. Check credentials and try again.",
    }
    _TOO_MANY_REQUESTS: ClassVar[dict[str, Any]] = {
        "code": "TooManyRequests",
        "message": "Too many requests. Retry after the time the Retry-After header gives.",
    }

    def __init__(
        self,
        cert: Path,
        key: Path,
        *,
        tenant_id: str = "9188040d-6c67-4c5b-b112-36a304b66dad",
        tenant_domain: str = "contoso.example",
    ) -> None:
        super().__init__(cert, key)
        self.tenant_id = tenant_id
        self.tenants = {tenant_id, tenant_domain, "organizations", "common"}

    def routes(self) -> list[tuple[str, PathTest, Route]]:
        def under(suffix: str) -> Callable[[str], bool]:
            return lambda path: path.endswith(suffix) and path.count("/") == suffix.count("/") + 1

        return [
            ("GET", under("/v2.0/.well-known/openid-configuration"), self._discovery),
            ("GET", under("/oauth2/v2.0/authorize"), self._authorize_route),
            ("POST", under("/oauth2/v2.0/token"), self._token_route),
            ("GET", lambda path: path == "/v1.0/me", self._api(_USER_READ, _user)),
            (
                "GET",
                lambda path: path == "/v1.0/me/mailFolders/inbox",
                self._api(_MAIL_READ, _inbox_folder),
            ),
        ]

    def _new_message_id(self) -> str:
        return f"{_IMMUTABLE}{b64url(secrets.token_bytes(64))}AAA="

    def _new_thread_id(self, message_id: str) -> str:
        return f"AAQkAG{b64url(hashlib.sha256(message_id.encode()).digest())}="

    def _tenant(self, request: Request) -> str | None:
        tenant = request.path.split("/")[1]
        return tenant if tenant in self.tenants else None

    def _unknown_tenant(self) -> Reply:
        return json_reply(
            400, {"error": "invalid_tenant", "error_description": "AADSTS90002: Tenant not found."}
        )

    def _discovery(self, request: Request) -> Reply:
        tenant = self._tenant(request)
        if tenant is None:
            return self._unknown_tenant()
        base = f"{self.base_url}/{tenant}"
        return json_reply(
            200,
            {
                "issuer": f"{self.base_url}/{self.tenant_id}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
            },
        )

    def _authorize_route(self, request: Request) -> Reply:
        if self._tenant(request) is None:
            return html_page(400, "AADSTS90002: Tenant not found.")
        scopes = [_short_scope(s) for s in request.query.get("scope", "").split()]
        return self._authorize(request, scopes, offline="offline_access" in scopes)

    def _token_route(self, request: Request) -> Reply:
        tenant = self._tenant(request)
        if tenant is None:
            return self._unknown_tenant()
        return self._token(request, tenant=tenant)

    def _code_tokens(self, app: App, code: Code, form: dict[str, str]) -> Reply:
        return self._tokens(app, code.account, code.scopes, code.offline, code.nonce, form)

    def _refreshed_tokens(self, app: App, grant: Grant, form: dict[str, str]) -> Reply:
        # Each use hands out a successor; the used one stays valid until it expires or is
        # revoked ("Refresh tokens in the Microsoft identity platform").
        self._count_refresh(form)
        return self._tokens(app, grant.account, grant.scopes, True, None, form)

    def _tokens(
        self,
        app: App,
        account: Account,
        scopes: list[str],
        offline: bool,
        nonce: str | None,
        form: dict[str, str],
    ) -> Reply:
        access_token, lifetime = self._issue(account, scopes)
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(
                s for s in scopes if s not in {"openid", "profile", "offline_access"}
            ),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }
        if offline:
            answer["refresh_token"] = self._issue_refresh_token(app, account, scopes)
        if "openid" in scopes:
            claims = self._id_claims(f"{self.base_url}/{self.tenant_id}/v2.0", app, account)
            claims |= {
                "oid": account.subject,
                "tid": self.tenant_id,
                "preferred_username": account.email,
                "name": account.email.split("@")[0],
                "nbf": claims["iat"],
                "ver": "2.0",
            }
            if nonce:
                claims["nonce"] = nonce
            answer["id_token"] = unsigned_jwt(claims)
        if form.get("client_info") == "1":
            answer["client_info"] = b64url(
                json.dumps({"uid": account.subject, "utid": self.tenant_id}).encode()
            )
        return json_reply(200, answer)


def _user(account: Account) -> dict[str, Any]:
    return {
        "id": account.subject,
        "displayName": account.email.split("@")[0],
        "mail": account.email,
        "userPrincipalName": account.email,
    }


def _inbox_folder(account: Account) -> dict[str, Any]:
    return {
        "id": "inbox-id",
        "displayName": "Inbox",
        "totalItemCount": account.inbox_total,
        "unreadItemCount": account.inbox_unread,
        "childFolderCount": 0,
    }
