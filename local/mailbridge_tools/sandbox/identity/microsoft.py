"""Fake Microsoft: Entra ID's v2.0 endpoints under a tenant (discovery, authorize, token) and
a Microsoft Graph subset (/v1.0/me, the inbox folder). Each refresh hands out a new refresh
token and leaves the used one valid, as at Microsoft."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import (
    AccessToken,
    Account,
    App,
    FakeProvider,
    Grant,
    Reply,
    Request,
    Route,
    b64url,
    html_page,
    json_reply,
    unsigned_jwt,
)

_GRAPH = "https://graph.microsoft.com/"


def _short_scope(scope: str) -> str:
    return scope.removeprefix(_GRAPH)


class FakeMicrosoft(FakeProvider):
    """Entra ID's v2.0 endpoints under {base_url}/{tenant}, Graph under {base_url}/v1.0."""

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

    def routes(self) -> list[tuple[str, Callable[[str], bool], Route]]:
        def under(suffix: str) -> Callable[[str], bool]:
            return lambda path: path.endswith(suffix) and path.count("/") == suffix.count("/") + 1

        return [
            ("GET", under("/v2.0/.well-known/openid-configuration"), self._discovery),
            ("GET", under("/oauth2/v2.0/authorize"), self._authorize_route),
            ("POST", under("/oauth2/v2.0/token"), self._token),
            ("GET", lambda path: path == "/v1.0/me", self._me),
            ("GET", lambda path: path == "/v1.0/me/mailFolders/inbox", self._inbox),
        ]

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

    def _token(self, request: Request) -> Reply:
        tenant = self._tenant(request)
        if tenant is None:
            return self._unknown_tenant()
        form = request.form
        self._record({**form, "tenant": tenant})
        app = self._client(form)
        if app is None:
            return json_reply(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
            )
        if form.get("grant_type") == "authorization_code":
            code = self._redeem(form, app)
            if code is None:
                return json_reply(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "AADSTS70008: The code has expired or was used.",
                    },
                )
            return self._tokens(app, code.account, code.scopes, code.offline, code.nonce, form)
        if form.get("grant_type") == "refresh_token":
            with self._lock:
                # Each use hands out a successor; the used one stays valid until it expires
                # or is revoked ("Refresh tokens in the Microsoft identity platform").
                grant = self.refresh_tokens.get(form.get("refresh_token", ""))
                if grant is not None:
                    self.refresh_count += 1
                    self.refresh_uses[form["refresh_token"]] += 1
            if grant is None or grant.client_id != app.client_id:
                return json_reply(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "AADSTS700082: The refresh token has expired.",
                        "error_codes": [700082],
                    },
                )
            return self._tokens(app, grant.account, grant.scopes, True, None, form)
        return json_reply(400, {"error": "unsupported_grant_type"})

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
            refresh_token = self._secret(32)
            self.refresh_tokens[refresh_token] = Grant(app.client_id, account, scopes)
            answer["refresh_token"] = refresh_token
        now = int(time.time())
        if "openid" in scopes:
            claims = {
                "iss": f"{self.base_url}/{self.tenant_id}/v2.0",
                "aud": app.client_id,
                "sub": account.subject,
                "oid": account.subject,
                "tid": self.tenant_id,
                "preferred_username": account.email,
                "name": account.email.split("@")[0],
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
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

    def _graph(self, request: Request, needs: set[str]) -> AccessToken | Reply:
        token = self._bearer(request)
        if token is None:
            return json_reply(
                401,
                {
                    "error": {
                        "code": "InvalidAuthenticationToken",
                        "message": "Access token has expired or is not yet valid.",
                    }
                },
            )
        if not needs & set(token.scopes):
            return json_reply(
                403,
                {
                    "error": {
                        "code": "ErrorAccessDenied",
                        "message": "Access is denied. Check credentials and try again.",
                    }
                },
            )
        return token

    def _me(self, request: Request) -> Reply:
        token = self._graph(request, {"User.Read", "User.ReadBasic.All"})
        if isinstance(token, Reply):
            return token
        account = token.account
        return json_reply(
            200,
            {
                "id": account.subject,
                "displayName": account.email.split("@")[0],
                "mail": account.email,
                "userPrincipalName": account.email,
            },
        )

    def _inbox(self, request: Request) -> Reply:
        token = self._graph(request, {"Mail.Read", "Mail.ReadWrite"})
        if isinstance(token, Reply):
            return token
        account = token.account
        return json_reply(
            200,
            {
                "id": "inbox-id",
                "displayName": "Inbox",
                "totalItemCount": account.inbox_total,
                "unreadItemCount": account.inbox_unread,
                "childFolderCount": 0,
            },
        )
