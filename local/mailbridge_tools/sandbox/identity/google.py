"""Fake Google: its OAuth endpoints (authorize, token, revoke) with incremental consent, and
a Gmail API subset (the profile, the INBOX label). Refresh tokens are not rotated, as at
Google."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from .base import (
    Account,
    App,
    Code,
    FakeProvider,
    Grant,
    Reply,
    Request,
    Route,
    json_reply,
    unsigned_jwt,
)

_GMAIL = "https://www.googleapis.com/auth/gmail."
# The scopes that may read each Gmail resource: any one of them.
_GMAIL_READ = {_GMAIL + "readonly", _GMAIL + "modify", "https://mail.google.com/"}
_GMAIL_PROFILE = _GMAIL_READ | {_GMAIL + "compose", _GMAIL + "send"}


class FakeGoogle(FakeProvider):
    """Google's OAuth endpoints (/o/oauth2/v2/auth, /token, /revoke) and Gmail's
    (/gmail/v1/users/me/...). Refresh tokens are not rotated, as at Google."""

    _INVALID_CLIENT: ClassVar[dict[str, Any]] = {"error_description": "Unauthorized"}
    _INVALID_CODE: ClassVar[dict[str, Any]] = {"error_description": "Bad Request"}
    _INVALID_REFRESH_TOKEN: ClassVar[dict[str, Any]] = {
        "error_description": "Token has been expired or revoked."
    }
    # The error objects of Google's APIs.
    _UNAUTHENTICATED: ClassVar[dict[str, Any]] = {
        "code": 401,
        "message": "Request had invalid authentication credentials.",
        "status": "UNAUTHENTICATED",
    }
    _INSUFFICIENT_SCOPE: ClassVar[dict[str, Any]] = {
        "code": 403,
        "message": "Request had insufficient authentication scopes.",
        "status": "PERMISSION_DENIED",
    }

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
            (
                "GET",
                lambda path: path == "/gmail/v1/users/me/profile",
                self._api(_GMAIL_PROFILE, _profile),
            ),
            (
                "GET",
                lambda path: path == "/gmail/v1/users/me/labels/INBOX",
                self._api(_GMAIL_READ, _inbox_label),
            ),
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

    def _code_tokens(self, app: App, code: Code, form: dict[str, str]) -> Reply:
        self._granted[(app.client_id, code.account.email)] = set(code.scopes)
        answer = self._tokens(code.account, code.scopes, app)
        if code.offline:
            answer["refresh_token"] = self._issue_refresh_token(app, code.account, code.scopes)
        return json_reply(200, answer)

    def _refreshed_tokens(self, app: App, grant: Grant, form: dict[str, str]) -> Reply:
        asked = form.get("scope", "").split()
        if asked and not set(asked) <= set(grant.scopes):
            return json_reply(400, {"error": "invalid_scope", "error_description": "Bad Request"})
        self._count_refresh(form)
        return json_reply(200, self._tokens(grant.account, asked or grant.scopes, app))

    def _tokens(self, account: Account, scopes: list[str], app: App) -> dict[str, Any]:
        access_token, lifetime = self._issue(account, scopes)
        answer: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": lifetime - 1,
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }
        if "openid" in scopes:
            claims = self._id_claims("https://accounts.google.com", app, account)
            claims |= {"email": account.email, "email_verified": True}
            answer["id_token"] = unsigned_jwt(claims)
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


def _profile(account: Account) -> dict[str, Any]:
    return {
        "emailAddress": account.email,
        "messagesTotal": account.inbox_total,
        "threadsTotal": account.inbox_total,
        "historyId": "1000",
    }


def _inbox_label(account: Account) -> dict[str, Any]:
    return {
        "id": "INBOX",
        "name": "INBOX",
        "type": "system",
        "messagesTotal": account.inbox_total,
        "messagesUnread": account.inbox_unread,
        "threadsTotal": account.inbox_total,
        "threadsUnread": account.inbox_unread,
    }
