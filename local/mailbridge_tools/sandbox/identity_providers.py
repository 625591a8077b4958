"""Fake Microsoft (Entra ID + a Microsoft Graph subset) and Google (OAuth + a Gmail API
subset) identity providers on loopback, over verified HTTPS.

They check what the real ones check, so a wrong request fails the test that made it: the
client secret, the exact registered redirect URI, PKCE (S256), single-use and short-lived
codes, live refresh tokens (Microsoft hands out a new one at each use and, as its
documentation says, leaves the old one valid), and bearer tokens and their scopes on the
mail APIs. Signing in is automatic: the authorize endpoint redirects back at once as the
current account, or with an error if a test asked. A test can also make the next request to
an endpoint hang or drip its answer one byte at a time.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from .network import LOOPBACK
from .tls import server_context

_CODE_LIFETIME = 600
_TOKEN_LIFETIME = 3600
_DRIP_INTERVAL = 1.0  # seconds per byte of a dripped answer
Stall = Literal["silent", "drip"]


@dataclass
class Reply:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, value: Any) -> Reply:
    return Reply(status, json.dumps(value), {"Content-Type": "application/json"})


def _json_text(status: int, text: str) -> Reply:
    return Reply(status, text, {"Content-Type": "application/json"})


def _redirect(location: str) -> Reply:
    return Reply(302, "", {"Location": location})


def _page(status: int, text: str) -> Reply:
    return Reply(
        status, f"<!doctype html><p>{html.escape(text)}</p>", {"Content-Type": "text/html"}
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    # Clients here only decode id tokens (MSAL checks nonce, audience and expiry).
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "fake"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(b'not-a-signature')}"


def _pkce_matches(verifier: str, challenge: str) -> bool:
    return _b64(hashlib.sha256(verifier.encode()).digest()) == challenge


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]

    def bearer(self) -> str:
        value = self.headers.get("authorization", "")
        return value[7:] if value.lower().startswith("bearer ") else ""


@dataclass
class Account:
    email: str
    inbox_total: int
    inbox_unread: int
    subject: str = field(default_factory=lambda: secrets.token_hex(8))


@dataclass
class App:
    client_id: str
    client_secret: str
    redirect_uris: list[str]


@dataclass
class Code:
    client_id: str
    redirect_uri: str
    challenge: str
    scopes: list[str]
    account: Account
    nonce: str
    offline: bool
    expires_at: float
    used: bool = False


@dataclass
class Grant:
    """What a refresh token stands for."""

    client_id: str
    account: Account
    scopes: list[str]


@dataclass
class AccessToken:
    account: Account
    scopes: list[str]
    expires_at: float


Route = Callable[[Request], Reply]


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as the real providers: clients reuse connections (and deadlines must
    # cover a reused one).
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle kept-alive connection is closed
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read assertions, not access logs

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        request = Request(
            self.command,
            url.path,
            dict(parse_qsl(url.query)),
            dict(parse_qsl(body)),
            {name.lower(): value for name, value in self.headers.items()},
        )
        provider = self.server.provider
        misbehaviour = provider.take_misbehaviour(request.path)
        reply = misbehaviour if isinstance(misbehaviour, Reply) else provider.dispatch(request)
        data = reply.body.encode()
        head = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        head.append(f"Content-Length: {len(data)}")
        answer = "\r\n".join([*head, "", ""]).encode() + data
        if misbehaviour is None or isinstance(misbehaviour, Reply):
            self.wfile.write(answer)
            return
        self.close_connection = True
        if misbehaviour == "drip":
            for byte in answer:
                if provider.stopped.wait(_DRIP_INTERVAL):
                    return
                try:
                    self.wfile.write(bytes([byte]))
                except OSError:
                    return  # the client gave up, as it should
        else:
            provider.stopped.wait()

    do_GET = do_POST = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, provider: _FakeProvider, context: ssl.SSLContext) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.provider = provider
        self.socket = context.wrap_socket(self.socket, server_side=True)


class _FakeProvider:
    """The server, accounts, apps and token bookkeeping both fakes share."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._context = server_context(cert, key)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.apps: dict[str, App] = {}
        self.accounts: list[Account] = []
        self.codes: dict[str, Code] = {}
        self.refresh_tokens: dict[str, Grant] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.token_requests: list[dict[str, str]] = []
        self.refresh_count = 0
        # Every secret value handed out or received: codes, tokens, verifiers, client secrets.
        self.secrets: set[str] = set()
        # How often each refresh token was redeemed: a client that spends one twice races.
        self.refresh_uses: Counter[str] = Counter()
        self.stopped = threading.Event()
        self._misbehaviours: dict[str, Stall | Reply] = {}
        self._denial: tuple[str, str] | None = None
        self._next_scopes: list[str] | None = None

    # -- lifecycle
    def __enter__(self) -> _FakeProvider:
        self._server = _Server(self, self._context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._thread is not None
        self.stopped.set()  # ends stalled answers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        return f"https://{LOOPBACK}:{self._server.server_address[1]}"

    # -- what tests set up and change
    def register_app(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> None:
        self.apps[client_id] = App(client_id, client_secret, redirect_uris)
        self.secrets.add(client_secret)

    def add_account(self, email: str, *, inbox_total: int, inbox_unread: int) -> None:
        """Adds an account; the next sign-ins are as the account added last."""
        self.accounts.append(Account(email, inbox_total, inbox_unread))

    def deny_next_authorization(
        self, error: str = "access_denied", description: str = "The user declined."
    ) -> None:
        self._denial = (error, description)

    def grant_scopes_next(self, scopes: list[str] | None) -> None:
        """The next sign-in grants only these (a permission unticked at consent)."""
        self._next_scopes = scopes

    def stall_next(self, path_suffix: str, how: Stall) -> None:
        """The next request to a path ending with `path_suffix` is answered never
        (`silent`: the connection stays open) or one byte a second (`drip`)."""
        with self._lock:
            self._misbehaviours[path_suffix] = how

    def answer_next(self, path_suffix: str, status: int, body: str) -> None:
        """The next request to a path ending with `path_suffix` gets this answer instead of
        the right one, as a broken or hostile provider would send."""
        with self._lock:
            self._misbehaviours[path_suffix] = _json_text(status, body)

    def take_misbehaviour(self, path: str) -> Stall | Reply | None:
        with self._lock:
            suffix = next((s for s in self._misbehaviours if path.endswith(s)), None)
            return self._misbehaviours.pop(suffix) if suffix is not None else None

    def revoke_all_grants(self) -> None:
        with self._lock:
            self.refresh_tokens.clear()
            self.access_tokens.clear()

    # -- shared mechanics
    def dispatch(self, request: Request) -> Reply:
        for method, matches, route in self.routes():
            if request.method == method and matches(request.path):
                return route(request)
        return _json(404, {"error": "not_found"})

    def routes(self) -> list[tuple[str, Callable[[str], bool], Route]]:
        raise NotImplementedError

    def _authorize(self, request: Request, granted: list[str], offline: bool) -> Reply:
        """Checks an authorization request and redirects back with a code (or an error)."""
        query = request.query
        app = self.apps.get(query.get("client_id", ""))
        if app is None:
            return _page(400, "unauthorized_client: the client_id is not registered.")
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:
            # Never redirect to an unregistered URI: the error stays on the provider's page.
            return _page(400, "redirect_uri_mismatch: the redirect URI is not registered.")
        back = {"state": query["state"]} if "state" in query else {}
        if self._denial:
            error, description = self._denial
            self._denial = None
            denied = {"error": error, "error_description": description, **back}
            return _redirect(f"{redirect_uri}?{urlencode(denied)}")
        if query.get("response_type") != "code" or not query.get("scope"):
            return _redirect(f"{redirect_uri}?{urlencode({'error': 'invalid_request', **back})}")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            refusal = {"error": "invalid_request", "error_description": "PKCE S256 is required."}
            return _redirect(f"{redirect_uri}?{urlencode({**refusal, **back})}")
        if self._next_scopes is not None:
            granted, self._next_scopes = self._next_scopes, None
        code = self._secret(24)
        self.codes[code] = Code(
            app.client_id,
            redirect_uri,
            query["code_challenge"],
            granted,
            self.accounts[-1],
            query.get("nonce", ""),
            offline,
            time.time() + _CODE_LIFETIME,
        )
        return _redirect(f"{redirect_uri}?{urlencode(self._code_params(code, granted, back))}")

    def _code_params(self, code: str, granted: list[str], back: dict[str, str]) -> dict[str, str]:
        return {"code": code, **back}

    def _client(self, form: dict[str, str]) -> App | None:
        app = self.apps.get(form.get("client_id", ""))
        return (
            app
            if app and secrets.compare_digest(app.client_secret, form.get("client_secret", ""))
            else None
        )

    def _redeem(self, form: dict[str, str], app: App) -> Code | None:
        """The code, if this request may redeem it; a code is spent even by a failed try."""
        with self._lock:
            code = self.codes.get(form.get("code", ""))
            if code is None or code.used:
                return None
            code.used = True
        valid = (
            code.client_id == app.client_id
            and code.expires_at > time.time()
            and code.redirect_uri == form.get("redirect_uri")
            and _pkce_matches(form.get("code_verifier", ""), code.challenge)
        )
        return code if valid else None

    def _issue(self, account: Account, scopes: list[str]) -> tuple[str, int]:
        token = self._secret(32)
        self.access_tokens[token] = AccessToken(account, scopes, time.time() + _TOKEN_LIFETIME)
        return token, _TOKEN_LIFETIME

    def _bearer(self, request: Request) -> AccessToken | None:
        token = self.access_tokens.get(request.bearer())
        return token if token and token.expires_at > time.time() else None

    def _secret(self, length: int) -> str:
        """A new code or token, remembered: tests check none ever leaves our service."""
        value = secrets.token_urlsafe(length)
        self.secrets.add(value)
        return value

    def _record(self, form: dict[str, str]) -> None:
        # What the client proved itself with is secret too (the PKCE verifier above all).
        self.secrets.update(form[key] for key in ("code_verifier", "client_secret") if key in form)
        self.token_requests.append(
            {k: ("***" if k in {"client_secret", "code_verifier"} else v) for k, v in form.items()}
        )


# ---- Microsoft ---------------------------------------------------------------------------

_GRAPH = "https://graph.microsoft.com/"


def _short_scope(scope: str) -> str:
    return scope.removeprefix(_GRAPH)


class FakeMicrosoft(_FakeProvider):
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
        return _json(
            400, {"error": "invalid_tenant", "error_description": "AADSTS90002: Tenant not found."}
        )

    def _discovery(self, request: Request) -> Reply:
        tenant = self._tenant(request)
        if tenant is None:
            return self._unknown_tenant()
        base = f"{self.base_url}/{tenant}"
        return _json(
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
            return _page(400, "AADSTS90002: Tenant not found.")
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
            return _json(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
            )
        if form.get("grant_type") == "authorization_code":
            code = self._redeem(form, app)
            if code is None:
                return _json(
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
                return _json(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "AADSTS700082: The refresh token has expired.",
                        "error_codes": [700082],
                    },
                )
            return self._tokens(app, grant.account, grant.scopes, True, None, form)
        return _json(400, {"error": "unsupported_grant_type"})

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
            answer["id_token"] = _unsigned_jwt(claims)
        if form.get("client_info") == "1":
            answer["client_info"] = _b64(
                json.dumps({"uid": account.subject, "utid": self.tenant_id}).encode()
            )
        return _json(200, answer)

    def _graph(self, request: Request, needs: set[str]) -> AccessToken | Reply:
        token = self._bearer(request)
        if token is None:
            return _json(
                401,
                {
                    "error": {
                        "code": "InvalidAuthenticationToken",
                        "message": "Access token has expired or is not yet valid.",
                    }
                },
            )
        if not needs & set(token.scopes):
            return _json(
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
        return _json(
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
        return _json(
            200,
            {
                "id": "inbox-id",
                "displayName": "Inbox",
                "totalItemCount": account.inbox_total,
                "unreadItemCount": account.inbox_unread,
                "childFolderCount": 0,
            },
        )


# ---- Google ------------------------------------------------------------------------------

_GMAIL = "https://www.googleapis.com/auth/gmail."
_GMAIL_READ = {_GMAIL + "readonly", _GMAIL + "modify", "https://mail.google.com/"}


class FakeGoogle(_FakeProvider):
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
            return _json(401, {"error": "invalid_client", "error_description": "Unauthorized"})
        if form.get("grant_type") == "authorization_code":
            code = self._redeem(form, app)
            if code is None:
                return _json(400, {"error": "invalid_grant", "error_description": "Bad Request"})
            self._granted[(app.client_id, code.account.email)] = set(code.scopes)
            answer = self._tokens(code.account, code.scopes, app)
            if code.offline:
                refresh_token = self._secret(32)
                self.refresh_tokens[refresh_token] = Grant(app.client_id, code.account, code.scopes)
                answer["refresh_token"] = refresh_token
            return _json(200, answer)
        if form.get("grant_type") == "refresh_token":
            grant = self.refresh_tokens.get(form.get("refresh_token", ""))
            if grant is None or grant.client_id != app.client_id:
                return _json(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or revoked.",
                    },
                )
            asked = form.get("scope", "").split()
            if asked and not set(asked) <= set(grant.scopes):
                return _json(400, {"error": "invalid_scope", "error_description": "Bad Request"})
            with self._lock:
                self.refresh_count += 1
                self.refresh_uses[form["refresh_token"]] += 1
            return _json(200, self._tokens(grant.account, asked or grant.scopes, app))
        return _json(400, {"error": "unsupported_grant_type"})

    def _tokens(self, account: Account, scopes: list[str], app: App) -> dict[str, Any]:
        access_token, lifetime = self._issue(account, scopes)
        answer: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": lifetime - 1,
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }
        if "openid" in scopes:
            answer["id_token"] = _unsigned_jwt(
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
                return _json(
                    400, {"error": "invalid_token", "error_description": "Token expired or revoked"}
                )
            if grant is not None:
                # Revoking a refresh token revokes the access tokens issued with it.
                for key in [k for k, t in self.access_tokens.items() if t.account is grant.account]:
                    del self.access_tokens[key]
            self.revoked_tokens.append(token)
        return _json(200, {})

    def _gmail(self, request: Request, needs: set[str]) -> AccessToken | Reply:
        token = self._bearer(request)
        if token is None:
            return _json(
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
            return _json(
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
        return _json(
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
        return _json(
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
