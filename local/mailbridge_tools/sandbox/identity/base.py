"""What both fake identity providers share: the HTTPS server and its handler (with the
misbehaviours a test asks for), the request and reply types, accounts and the messages they
hold, apps, codes, grants and tokens, and what the authorize and token endpoints and the mail
APIs check and count alike. Each provider adds its routes, its error bodies and what its
answers hold."""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import itertools
import json
import re
import secrets
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, Self
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from ..network import LOOPBACK, HttpsServer
from ..tls import server_context

_CODE_LIFETIME = 600
_TOKEN_LIFETIME = 3600
_ID_TOKEN_LIFETIME = 3600
_DRIP_INTERVAL = 1.0  # seconds per byte of a dripped answer
Stall = Literal["silent", "drip"]


@dataclass
class Reply:
    status: int
    body: str | bytes = ""
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """Ends a mail API request with `reply`, the provider's error answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


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
    body: bytes = b""
    # Every query parameter in order, repeated ones too (Gmail's labelIds, metadataHeaders).
    query_items: list[tuple[str, str]] = field(default_factory=list)
    # What the route's pattern captured in the path (a message id).
    path_args: tuple[str, ...] = ()

    def bearer(self) -> str:
        value = self.headers.get("authorization", "")
        return value[7:] if value.lower().startswith("bearer ") else ""

    def query_all(self, name: str) -> list[str]:
        return [value for key, value in self.query_items if key == name]

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object; None if it is not one."""
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


@dataclass
class StoredMessage:
    """A message an account holds, as its provider keeps it. `folder` is Graph's view (a
    well-known folder name) and `labels` Gmail's (but UNREAD, which `read` stands for); each
    provider reads its own."""

    id: str
    thread_id: str
    raw: bytes
    received_at: datetime.datetime
    read: bool
    folder: str
    labels: set[str]
    # The order the account got it in: what sorts messages received in the same instant.
    sequence: int

    def parsed(self) -> EmailMessage:
        return parse_message(self.raw)

    @property
    def newest_first(self) -> tuple[float, int]:
        """A sort key: the negated receipt order."""
        return (-self.received_at.timestamp(), -self.sequence)


@dataclass
class Account:
    email: str
    inbox_total: int
    inbox_unread: int
    subject: str = field(default_factory=lambda: secrets.token_hex(8))
    mailbox: list[StoredMessage] = field(default_factory=list)


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
# A path's test: a function, or a pattern the whole path must match (its groups become the
# request's path_args).
PathTest = Callable[[str], bool] | re.Pattern[str]
# What a mail API endpoint answers for the account a token stands for.
Resource = Callable[[Account], dict[str, Any]]
# A mail API endpoint given a live token that holds a scope it needs.
MailRoute = Callable[[Request, AccessToken], Reply]


def parse_message(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def message_ids(value: str | None) -> list[str]:
    """The <msg-id>s a header such as In-Reply-To or References names."""
    return re.findall(r"<[^<>\s]+>", value or "")


def bare_subject(subject: str | None) -> str:
    """A subject without its reply prefixes, as threading compares them."""
    return re.sub(r"^(\s*re\s*:\s*)+", "", subject or "", flags=re.IGNORECASE).strip()


def answers(message: EmailMessage, held: StoredMessage) -> bool:
    """Whether `message` answers `held`, as threading sees it: its In-Reply-To or References
    name the held message, and their subjects match but for "Re:"."""
    named = message_ids(message.get("In-Reply-To")) + message_ids(message.get("References"))
    answered = held.parsed()
    return answered.get("Message-ID", "").strip() in named and bare_subject(
        answered.get("Subject")
    ) == bare_subject(message.get("Subject"))


def addresses(message: EmailMessage, *names: str) -> list[tuple[str, str]]:
    """(display name, address) of everyone the headers `names` name."""
    values = [str(value) for name in names for value in message.get_all(name, [])]
    return [(display, address) for display, address in getaddresses(values) if address]


def body_text(message: EmailMessage) -> str:
    """The message's text: its plain part, else its HTML part without tags."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = part.get_content()
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        return html.unescape(re.sub(r"<[^>]*>", " ", content))
    return content


def preview(message: EmailMessage, length: int) -> str:
    return " ".join(body_text(message).split())[:length]


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
        body = self.rfile.read(length) if length else b""
        query_items = parse_qsl(url.query)
        request = Request(
            self.command,
            unquote(url.path),
            dict(query_items),
            dict(parse_qsl(body.decode(errors="replace"))),
            {name.lower(): value for name, value in self.headers.items()},
            body,
            query_items,
        )
        provider = self.server.provider
        provider.requests.append((request.method, request.path))
        misbehaviour = provider.take_misbehaviour(request.path)
        if callable(misbehaviour):
            misbehaviour()  # what happens meanwhile; then the right answer
            misbehaviour = None
        reply = misbehaviour if isinstance(misbehaviour, Reply) else provider.dispatch(request)
        data = reply.body.encode() if isinstance(reply.body, str) else reply.body
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

    do_GET = do_POST = do_PATCH = do_DELETE = _handle


class _Server(HttpsServer):
    def __init__(self, provider: FakeProvider, context: ssl.SSLContext) -> None:
        super().__init__(_Handler, context)
        self.provider = provider


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
    # ...and for a request it throttles, by the status it answers: 429, and the other
    # statuses the provider throttles with.
    _THROTTLED: ClassVar[dict[int, dict[str, Any]]]

    def __init__(self, cert: Path, key: Path) -> None:
        self._context = server_context(cert, key)
        self._server: _Server | None = None
        self._lock = threading.Lock()
        self.apps: dict[str, App] = {}
        self.accounts: list[Account] = []
        self.codes: dict[str, Code] = {}
        self.refresh_tokens: dict[str, Grant] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.token_requests: list[dict[str, str]] = []
        # Every request received, as (method, path): tests check where a client's went.
        self.requests: list[tuple[str, str]] = []
        self.refresh_count = 0
        # Every secret value handed out or received: codes, tokens, verifiers, client secrets.
        self.secrets: set[str] = set()
        # How often each refresh token was redeemed: a client that spends one twice races.
        self.refresh_uses: Counter[str] = Counter()
        self.stopped = threading.Event()
        self._misbehaviours: dict[str, Stall | Reply | Callable[[], object]] = {}
        self._denial: tuple[str, str] | None = None
        self._next_scopes: list[str] | None = None
        self._sequence = itertools.count(1)

    # -- lifecycle
    def __enter__(self) -> Self:
        self._server = _Server(self, self._context).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self.stopped.set()  # ends stalled answers
        self._server.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        return f"https://{LOOPBACK}:{self._server.port}"

    # -- what tests set up and change
    def register_app(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> None:
        self.apps[client_id] = App(client_id, client_secret, redirect_uris)
        self.secrets.add(client_secret)

    def add_account(self, email: str, *, inbox_total: int, inbox_unread: int) -> None:
        """Adds an account; the next sign-ins are as the account added last. An address
        added again is another account (its own subject): one deleted and made anew."""
        self.accounts.append(Account(email, inbox_total, inbox_unread))

    def deny_next_authorization(
        self, error: str = "access_denied", description: str = "The user declined."
    ) -> None:
        self._denial = (error, description)

    def grant_scopes_next(self, scopes: list[str] | None) -> None:
        """The next sign-in grants only these (a permission unticked at consent)."""
        self._next_scopes = scopes

    def withdraw_scopes(self, email: str, scopes: list[str]) -> None:
        """The account's consent to these scopes is withdrawn (an admin removes a permission,
        the user unticks it at a later consent): refresh tokens it holds give them no more,
        and refreshes answer the scopes that are left."""
        account = self.account(email)
        with self._lock:
            for grant in self.refresh_tokens.values():
                if grant.account is account:
                    grant.scopes = [scope for scope in grant.scopes if scope not in scopes]

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

    def meanwhile_next(self, path_suffix: str, action: Callable[[], object]) -> None:
        """The next request to a path ending with `path_suffix` is answered right, once
        `action` is done: what the user did while the client waited (a race, made sure)."""
        with self._lock:
            self._misbehaviours[path_suffix] = action

    def take_misbehaviour(self, path: str) -> Stall | Reply | Callable[[], object] | None:
        with self._lock:
            suffix = next((s for s in self._misbehaviours if path.endswith(s)), None)
            return self._misbehaviours.pop(suffix) if suffix is not None else None

    def throttle_next(
        self,
        path_suffix: str,
        *,
        retry_after: int | None = 1,
        status: int = 429,
        reason: str | None = None,
    ) -> None:
        """The next request to a path ending with `path_suffix` is refused as throttled:
        `status` (429, Google's 403, Graph's 503) in the provider's error shape, for Google's
        `reason` (a rate limit's unless given: dailyLimitExceeded, quotaExceeded...), with a
        Retry-After of `retry_after` seconds (None: without one)."""
        reply = json_reply(status, {"error": self._throttled(status, reason)})
        if retry_after is not None:
            reply.headers["Retry-After"] = str(retry_after)
        with self._lock:
            self._misbehaviours[path_suffix] = reply

    def _throttled(self, status: int, reason: str | None) -> dict[str, Any]:
        """The error object of a request throttled with `status`, for `reason` if the provider
        gives reasons."""
        if reason is not None:
            raise ValueError(f"{type(self).__name__} gives no reasons")
        return self._THROTTLED[status]

    def revoke_all_grants(self) -> None:
        with self._lock:
            self.refresh_tokens.clear()
            self.access_tokens.clear()

    def issue_token(self, email: str, scopes: list[str]) -> str:
        """For the tests of the fakes themselves: an access token for the account and scopes,
        without the sign-in a client goes through."""
        token, _ = self._issue(self.account(email), scopes)
        return token

    # -- the mail an account holds, for tests to put in and look at
    def account(self, email: str) -> Account:
        """The account added last with this address."""
        for account in reversed(self.accounts):
            if account.email == email:
                return account
        raise LookupError(f"no account {email}")

    def deliver(
        self,
        email: str,
        raw: bytes,
        *,
        unread: bool = True,
        received_at: datetime.datetime | None = None,
    ) -> str:
        """Puts the exact message `raw` in the account's inbox and returns its id. It joins
        the thread of a held message its In-Reply-To or References name, if the subjects
        match but for "Re:"."""
        account = self.account(email)
        thread_id = self.thread_of(account, parse_message(raw))
        held = self.hold(
            account,
            raw,
            folder="inbox",
            labels={"INBOX"},
            read=not unread,
            thread_id=thread_id,
            received_at=received_at,
        )
        return held.id

    def messages(self, email: str) -> list[StoredMessage]:
        """What the account holds (received, sent and drafts), in the order it got them."""
        return list(self.account(email).mailbox)

    def hold(
        self,
        account: Account,
        raw: bytes,
        *,
        folder: str,
        labels: set[str],
        read: bool,
        thread_id: str | None,
        received_at: datetime.datetime | None = None,
    ) -> StoredMessage:
        """Keeps a message for the account, in a thread of its own unless `thread_id`."""
        with self._lock:
            message_id = self._new_message_id()
            held = StoredMessage(
                message_id,
                thread_id or self._new_thread_id(message_id),
                raw,
                received_at or datetime.datetime.now(datetime.UTC),
                read,
                folder,
                labels,
                next(self._sequence),
            )
            account.mailbox.append(held)
        return held

    @staticmethod
    def thread_of(account: Account, message: EmailMessage) -> str | None:
        """The thread of the held message that `message` answers, if any."""
        answered = (held for held in reversed(account.mailbox) if answers(message, held))
        return next((held.thread_id for held in answered), None)

    def _new_message_id(self) -> str:
        raise NotImplementedError

    def _new_thread_id(self, message_id: str) -> str:
        """The id of a thread that `message_id` starts."""
        raise NotImplementedError

    # -- shared mechanics
    def dispatch(self, request: Request) -> Reply:
        for method, matches, route in self.routes():
            if request.method != method:
                continue
            if isinstance(matches, re.Pattern):
                found = matches.fullmatch(request.path)
                if found is None:
                    continue
                request.path_args = found.groups()
            elif not matches(request.path):
                continue
            return route(request)
        return json_reply(404, {"error": "not_found"})

    def routes(self) -> list[tuple[str, PathTest, Route]]:
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
        """A mail API endpoint that answers the resource of the token's account."""
        return self._mail_api(needs, lambda _, token: json_reply(200, resource(token.account)))

    def _mail_api(self, needs: set[str], handle: MailRoute) -> Route:
        """A mail API endpoint: `handle` for a live bearer token that holds one of the scopes
        in `needs`, or else the API's refusal. `handle` may raise ApiError."""

        def route(request: Request) -> Reply:
            token = self.access_tokens.get(request.bearer())
            if token is None or token.expires_at <= time.time():
                return json_reply(401, {"error": self._UNAUTHENTICATED})
            if not needs & set(token.scopes):
                return json_reply(403, {"error": self._INSUFFICIENT_SCOPE})
            try:
                return handle(request, token)
            except ApiError as error:
                return error.reply

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
