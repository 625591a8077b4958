"""What both fake identity providers share: the HTTPS server and its handler (with the
misbehaviours a test asks for), the request and reply types, accounts, apps, codes, grants and
tokens, and what the authorize and token endpoints and the mail APIs check and count alike.
Each provider adds its routes, its error bodies and what its answers hold."""

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
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..network import LOOPBACK
from ..tls import server_context

_CODE_LIFETIME = 600
_TOKEN_LIFETIME = 3600
_ID_TOKEN_LIFETIME = 3600
_DRIP_INTERVAL = 1.0  # seconds per byte of a dripped answer
Stall = Literal["silent", "drip"]


@dataclass
class Reply:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, value: Any) -> Reply:
    return Reply(status, json.dumps(value), {"Content-Type": "application/json"})


def _json_text(status: int, text: str) -> Reply:
    return Reply(status, text, {"Content-Type": "application/json"})


def _redirect(location: str) -> Reply:
    return Reply(302, "", {"Location": location})


def html_page(status: int, text: str) -> Reply:
    return Reply(
        status, f"<!doctype html><p>{html.escape(text)}</p>", {"Content-Type": "text/html"}
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(claims: dict[str, Any]) -> str:
    # Clients here only decode id tokens (MSAL checks nonce, audience and expiry).
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "fake"}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}.{b64url(b'not-a-signature')}"


def _pkce_matches(verifier: str, challenge: str) -> bool:
    return b64url(hashlib.sha256(verifier.encode()).digest()) == challenge


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
# What a mail API endpoint answers for the account a token stands for.
Resource = Callable[[Account], dict[str, Any]]


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

    def __init__(self, provider: FakeProvider, context: ssl.SSLContext) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.provider = provider
        self.socket = context.wrap_socket(self.socket, server_side=True)


class FakeProvider:
    """The server, accounts, apps and token bookkeeping both fakes share."""

    # What each provider says in its errors. At the token endpoint, beside the OAuth error:
    # for a client that fails to authenticate, a code it may not redeem, and a refresh token
    # that is not live or not the client's.
    _INVALID_CLIENT: ClassVar[dict[str, Any]]
    _INVALID_CODE: ClassVar[dict[str, Any]]
    _INVALID_REFRESH_TOKEN: ClassVar[dict[str, Any]]
    # In the mail API's error object: for a request without a live access token, and for
    # one whose token holds none of the scopes the endpoint needs.
    _UNAUTHENTICATED: ClassVar[dict[str, Any]]
    _INSUFFICIENT_SCOPE: ClassVar[dict[str, Any]]

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
    def __enter__(self) -> FakeProvider:
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
        return json_reply(404, {"error": "not_found"})

    def routes(self) -> list[tuple[str, Callable[[str], bool], Route]]:
        raise NotImplementedError

    def _authorize(self, request: Request, granted: list[str], offline: bool) -> Reply:
        """Checks an authorization request and redirects back with a code (or an error)."""
        query = request.query
        app = self.apps.get(query.get("client_id", ""))
        if app is None:
            return html_page(400, "unauthorized_client: the client_id is not registered.")
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:
            # Never redirect to an unregistered URI: the error stays on the provider's page.
            return html_page(400, "redirect_uri_mismatch: the redirect URI is not registered.")
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

    def _token(self, request: Request, **recorded: str) -> Reply:
        """The token endpoint: checks the client and what it redeems, a code or a refresh
        token, and leaves the answer to the provider. `recorded`: noted with the request."""
        form = request.form
        self._record({**form, **recorded})
        app = self._client(form)
        if app is None:
            return json_reply(401, {"error": "invalid_client", **self._INVALID_CLIENT})
        if form.get("grant_type") == "authorization_code":
            code = self._redeem(form, app)
            if code is None:
                return json_reply(400, {"error": "invalid_grant", **self._INVALID_CODE})
            return self._code_tokens(app, code, form)
        if form.get("grant_type") == "refresh_token":
            grant = self.refresh_tokens.get(form.get("refresh_token", ""))
            if grant is None or grant.client_id != app.client_id:
                return json_reply(400, {"error": "invalid_grant", **self._INVALID_REFRESH_TOKEN})
            return self._refreshed_tokens(app, grant, form)
        return json_reply(400, {"error": "unsupported_grant_type"})

    def _code_tokens(self, app: App, code: Code, form: dict[str, str]) -> Reply:
        """The answer to a code redeemed by its client."""
        raise NotImplementedError

    def _refreshed_tokens(self, app: App, grant: Grant, form: dict[str, str]) -> Reply:
        """The answer to a live refresh token redeemed by its client; the provider counts the
        redemption (_count_refresh) unless it still refuses."""
        raise NotImplementedError

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

    def _issue_refresh_token(self, app: App, account: Account, scopes: list[str]) -> str:
        refresh_token = self._secret(32)
        self.refresh_tokens[refresh_token] = Grant(app.client_id, account, scopes)
        return refresh_token

    def _count_refresh(self, form: dict[str, str]) -> None:
        """Counts a redemption of the form's refresh token (a refused request redeems none)."""
        with self._lock:
            self.refresh_count += 1
            self.refresh_uses[form["refresh_token"]] += 1

    def _id_claims(self, issuer: str, app: App, account: Account) -> dict[str, Any]:
        """The claims of an id token that every provider sets; each adds its own."""
        now = int(time.time())
        return {
            "iss": issuer,
            "aud": app.client_id,
            "sub": account.subject,
            "iat": now,
            "exp": now + _ID_TOKEN_LIFETIME,
        }

    def _api(self, needs: set[str], resource: Resource) -> Route:
        """A mail API endpoint: the resource of the account of a live bearer token that holds
        one of the scopes in `needs`, or else the API's refusal."""

        def route(request: Request) -> Reply:
            token = self.access_tokens.get(request.bearer())
            if token is None or token.expires_at <= time.time():
                return json_reply(401, {"error": self._UNAUTHENTICATED})
            if not needs & set(token.scopes):
                return json_reply(403, {"error": self._INSUFFICIENT_SCOPE})
            return json_reply(200, resource(token.account))

        return route

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
