"""Fake Google: its OAuth endpoints (authorize, token, revoke) with incremental consent, and
a Gmail API subset (the profile, the INBOX label). Refresh tokens are not rotated, as at
Google."""

from __future__ import annotations

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
    json_reply,
    unsigned_jwt,
)

_GMAIL = "https://www.googleapis.com/auth/gmail."
_GMAIL_READ = {_GMAIL + "readonly", _GMAIL + "modify", "https://mail.google.com/"}


class FakeGoogle(FakeProvider):
    """Google's OAuth endpoints (/o/oauth2/v2/auth, /token, /revoke) and Gmail's
    (/gmail/v1/users/me/...). Refresh tokens are not rotated, as at Google."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(cert, key)
        self.revoked_tokens: list[str] = []
        # What each (client, account) was granted before: incremental consent adds to it.
        self._granted: dict[tuple[str, str], set[str]] = {}

    def routes(self) -> list[tuple[str, Callable[[str], bool], Route]]:
        return [
            ("GET", lambda path: path == "/o/oauth2/v2/auth", self._authorize_route),
            ("POST", lambda path: path == "/token", self._token),
            ("POST", lambda path: path == "/revoke", self._revoke),
            ("GET", lambda path: path == "/gmail/v1/users/me/profile", self._profile),
            ("GET", lambda path: path == "/gmail/v1/users/me/labels/INBOX", self._inbox),
        ]

    def _authorize_route(self, request: Request) -> Reply:
        scopes = request.query.get("scope", "").split()
        if request.query.get("include_granted_scopes") == "true" and self.accounts:
            earlier = self._granted.get(
                (request.query.get("client_id", ""), self.accounts[-1].email), set()
            )
            scopes = sorted(set(scopes) | earlier)
        return self._authorize(
            request, scopes, offline=request.query.get("access_type") == "offline"
        )

    def _code_params(self, code: str, granted: list[str], back: dict[str, str]) -> dict[str, str]:
        return {"code": code, "scope": " ".join(granted), **back}

    def _token(self, request: Request) -> Reply:
        form = request.form
        self._record(form)
        app = self._client(form)
        if app is None:
            return json_reply(401, {"error": "invalid_client", "error_description": "Unauthorized"})
        if form.get("grant_type") == "authorization_code":
            code = self._redeem(form, app)
            if code is None:
                return json_reply(
                    400, {"error": "invalid_grant", "error_description": "Bad Request"}
                )
            self._granted[(app.client_id, code.account.email)] = set(code.scopes)
            answer = self._tokens(code.account, code.scopes, app)
            if code.offline:
                refresh_token = self._secret(32)
                self.refresh_tokens[refresh_token] = Grant(app.client_id, code.account, code.scopes)
                answer["refresh_token"] = refresh_token
            return json_reply(200, answer)
        if form.get("grant_type") == "refresh_token":
            grant = self.refresh_tokens.get(form.get("refresh_token", ""))
            if grant is None or grant.client_id != app.client_id:
                return json_reply(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or revoked.",
                    },
                )
            asked = form.get("scope", "").split()
            if asked and not set(asked) <= set(grant.scopes):
                return json_reply(
                    400, {"error": "invalid_scope", "error_description": "Bad Request"}
                )
            with self._lock:
                self.refresh_count += 1
                self.refresh_uses[form["refresh_token"]] += 1
            return json_reply(200, self._tokens(grant.account, asked or grant.scopes, app))
        return json_reply(400, {"error": "unsupported_grant_type"})

    def _tokens(self, account: Account, scopes: list[str], app: App) -> dict[str, Any]:
        access_token, lifetime = self._issue(account, scopes)
        answer: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": lifetime - 1,
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }
        if "openid" in scopes:
            answer["id_token"] = unsigned_jwt(
                {
                    "iss": "https://accounts.google.com",
                    "aud": app.client_id,
                    "sub": account.subject,
                    "email": account.email,
                    "email_verified": True,
                    "iat": int(time.time()),
                    "exp": int(time.time()) + 3600,
                }
            )
        return answer

    def _revoke(self, request: Request) -> Reply:
        token = request.form.get("token") or request.query.get("token", "")
        with self._lock:
            grant = self.refresh_tokens.pop(token, None)
            access = self.access_tokens.pop(token, None)
            if grant is None and access is None:
                return json_reply(
                    400, {"error": "invalid_token", "error_description": "Token expired or revoked"}
                )
            if grant is not None:
                # Revoking a refresh token revokes the access tokens issued with it.
                for key in [k for k, t in self.access_tokens.items() if t.account is grant.account]:
                    del self.access_tokens[key]
            self.revoked_tokens.append(token)
        return json_reply(200, {})

    def _gmail(self, request: Request, needs: set[str]) -> AccessToken | Reply:
        token = self._bearer(request)
        if token is None:
            return json_reply(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials.",
                        "status": "UNAUTHENTICATED",
                    }
                },
            )
        if not needs & set(token.scopes):
            return json_reply(
                403,
                {
                    "error": {
                        "code": 403,
                        "message": "Request had insufficient authentication scopes.",
                        "status": "PERMISSION_DENIED",
                    }
                },
            )
        return token

    def _profile(self, request: Request) -> Reply:
        token = self._gmail(
            request, {s for s in _GMAIL_READ} | {_GMAIL + "compose", _GMAIL + "send"}
        )
        if isinstance(token, Reply):
            return token
        account = token.account
        return json_reply(
            200,
            {
                "emailAddress": account.email,
                "messagesTotal": account.inbox_total,
                "threadsTotal": account.inbox_total,
                "historyId": "1000",
            },
        )

    def _inbox(self, request: Request) -> Reply:
        token = self._gmail(request, _GMAIL_READ)
        if isinstance(token, Reply):
            return token
        account = token.account
        return json_reply(
            200,
            {
                "id": "INBOX",
                "name": "INBOX",
                "type": "system",
                "messagesTotal": account.inbox_total,
                "messagesUnread": account.inbox_unread,
                "threadsTotal": account.inbox_total,
                "threadsUnread": account.inbox_unread,
            },
        )
