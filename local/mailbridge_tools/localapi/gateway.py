"""What API Gateway (HTTP API, payload format 2.0) does between the client and the functions:
routes from the functions' HttpApi events, the JWT authorizer (tokens from a DevIssuer), the
2.0 event, the response mapping, and the errors it answers itself, in its own format."""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..devauth import DevIssuer
from ..template import Route
from .aws import ACCOUNT_ID
from .lambda_runtime import LambdaFunction

_log = logging.getLogger(__name__)
API_ID = "local"
PATH_PARAMETER = re.compile(r"\{(\w+)\}")  # a {name} segment of a route's path


@dataclass
class HttpRequest:
    method: str
    target: str  # as on the request line: path and query, still percent-encoded
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str
    protocol: str


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def gateway_error(status: int, message: str, *headers: tuple[str, str]) -> HttpResponse:
    """An error API Gateway answers itself, in its own format."""
    body = json.dumps({"message": message}).encode()
    return HttpResponse(status, [("Content-Type", "application/json"), *headers], body)


class _Router:
    def __init__(self, all_routes: list[Route]) -> None:
        # API Gateway prefers the most specific route: literal segments win over {params}.
        ordered = sorted(all_routes, key=lambda route: route.path.count("{"))
        self._patterns = [(route, _path_pattern(route.path)) for route in ordered]

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | list[str]:
        """The route and its path parameters, or else the methods the path allows."""
        allowed: list[str] = []
        for route, pattern in self._patterns:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            if route.method == method:
                return route, found.groupdict()
            allowed.append(route.method)
        return sorted(set(allowed))


def _path_pattern(path: str) -> re.Pattern[str]:
    parts = PATH_PARAMETER.split(path)
    # re.split alternates literal text and parameter names.
    return re.compile(
        "".join(
            f"(?P<{part}>[^/]+)" if index % 2 else re.escape(part)
            for index, part in enumerate(parts)
        )
    )


def _claim_text(value: Any) -> str:
    """A claim as API Gateway passes it on: strings, and arrays as "[a b]"."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(_claim_text(item) for item in value) + "]"
    return json.dumps(value)


def build_event(
    request: HttpRequest,
    route: Route,
    path_parameters: dict[str, str],
    claims: dict[str, Any] | None,
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway would send for `request`.

    `path_parameters` are matched on the decoded path, so they are decoded too.
    """
    split = urlsplit(request.target)
    # HTTP APIs hand the path to the function already percent-decoded.
    path = unquote(split.path)
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        if name.lower() == "cookie":
            cookies += [cookie.strip() for cookie in value.split(";") if cookie.strip()]
        else:
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(split.query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    now = datetime.now(UTC)
    domain = headers.get("host", "localhost")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": path,
        "rawQueryString": split.query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": request.method,
                "path": path,
                "protocol": request.protocol,
                "sourceIp": request.source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    # Like API Gateway, leave out what the request does not have.
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = path_parameters
    if claims is not None:
        text_claims = {name: _claim_text(value) for name, value in claims.items()}
        # API Gateway passes the token's scopes on routes that require some.
        scopes = sorted(token_scopes(claims)) if route.scopes else None
        event["requestContext"]["authorizer"] = {"jwt": {"claims": text_claims, "scopes": scopes}}
    if request.body:
        try:
            event["body"] = request.body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(request.body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def to_http_response(result: Any) -> HttpResponse:
    """Maps a handler's return value to HTTP as API Gateway does for payload format 2.0."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # A bare value means 200 with that value as JSON.
        return HttpResponse(
            200, [("Content-Type", "application/json")], json.dumps(result).encode()
        )
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    headers = [
        (name, str(value))
        for name, value in (result.get("headers") or {}).items()
        if name.lower() != "content-length"  # set from the body actually sent
    ]
    headers += [("Set-Cookie", cookie) for cookie in result.get("cookies") or []]
    return HttpResponse(int(result["statusCode"]), headers, data)


class Gateway:
    """What API Gateway does between the client and the functions."""

    def __init__(
        self,
        api_routes: list[Route],
        functions: dict[str, LambdaFunction],
        issuer: DevIssuer,
        observers: list[Callable[[HttpResponse], None]],
        pages: Callable[[str], HttpResponse | None],
    ) -> None:
        self._router = _Router(api_routes)
        self._functions = functions
        self._issuer = issuer
        self._observers = observers
        # What answers a GET of a path no route has, if anything does: the web files.
        self._pages = pages

    def handle(self, request: HttpRequest) -> HttpResponse:
        response = self._answer(request)
        for observe in self._observers:
            observe(response)
        return response

    def _answer(self, request: HttpRequest) -> HttpResponse:
        path = unquote(urlsplit(request.target).path)
        match = self._router.match(request.method, path)
        if isinstance(match, list):
            page = self._pages(path) if not match and request.method == "GET" else None
            if page is not None:
                return page
            if not match:
                return gateway_error(404, "Not Found")
            # API Gateway itself answers 404 here; 405 is what HTTP (and schemathesis) expect.
            return gateway_error(405, "Method Not Allowed", ("Allow", ", ".join(match)))
        route, path_parameters = match
        claims = None
        if route.authorized:
            claims = self._issuer.verify(_header(request, "authorization"))
            if claims is None:
                return gateway_error(401, "Unauthorized", ("WWW-Authenticate", "Bearer"))
            if route.scopes and not token_scopes(claims) & set(route.scopes):
                return gateway_error(403, "Forbidden")
        function = self._functions[route.function]
        try:
            event = build_event(request, route, path_parameters, claims)
            return to_http_response(function.invoke(event))
        except Exception:
            # What Lambda would log; the caller learns nothing of it, as with API Gateway.
            _log.exception("%s failed on %s", function.name, route.route_key)
            return gateway_error(500, "Internal Server Error")


def token_scopes(claims: dict[str, Any]) -> set[str]:
    """The scopes a JWT grants, as API Gateway reads them: `scope` (space-separated) or
    `scp` (a list, or space-separated)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(str(item) for item in value)
    return found


def _header(request: HttpRequest, name: str) -> str | None:
    values = [value for key, value in request.headers if key.lower() == name]
    return ",".join(values) if values else None
