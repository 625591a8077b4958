"""The whole API on one machine, without Docker: `python -m mailbridge_tools.localapi`.

What SAM deploys, emulated in one process from template.yaml:
- DynamoDB and Secrets Manager: moto's server on loopback; AWS_ENDPOINT_URL points every
  boto3 client there, so the handlers run unchanged.
- API Gateway (HTTP API, payload format 2.0): routes from the functions' HttpApi events, the
  JWT authorizer (tokens from a DevIssuer), the 2.0 event and the response mapping.
- Lambda: each function's handler module, loaded from its CodeUri under a name of its own,
  with the template's environment, and one request at a time per function as on Lambda.

All functions share this process's environment, so a variable that two functions would set
to different values is refused rather than guessed. Not emulated: Lambda's timeout (the
context reports the time left, nothing stops a slow handler), ANY methods, {proxy+} paths.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import boto3
from moto.server import ThreadedMotoServer

from ..devauth import DevIssuer
from ..functions import load_function_module
from ..template import (
    TEMPLATE_PATH,
    Route,
    TemplateError,
    create_table,
    function_environment,
    function_properties,
    load_template,
    routes,
    table_logical_id,
)

_log = logging.getLogger(__name__)
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
API_ID = "local"
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit for HTTP APIs
_PARAMETER = re.compile(r"\{(\w+)\}")  # a {name} segment of a route's path

Handler = Callable[[dict[str, Any], "LambdaContext"], Any]


@dataclass
class LambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    deadline: float  # time.monotonic() at which Lambda would stop the invocation

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


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


def _gateway_error(status: int, message: str, *headers: tuple[str, str]) -> HttpResponse:
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
    parts = _PARAMETER.split(path)
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
        event["requestContext"]["authorizer"] = {"jwt": {"claims": text_claims, "scopes": None}}
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


class _Function:
    """One function's handler, loaded on first use, invoked one request at a time."""

    def __init__(self, route: Route, memory_mb: int, timeout_seconds: float) -> None:
        self.name = route.function
        self._code_uri = route.code_uri
        self._handler_name = route.handler
        self._memory_mb = memory_mb
        self._timeout_seconds = timeout_seconds
        self._handler: Handler | None = None
        # Lambda never runs two requests in one instance; handlers may rely on it.
        self._lock = threading.Lock()

    def invoke(self, event: dict[str, Any]) -> Any:
        with self._lock:
            if self._handler is None:
                self._handler = self._load()
            context = LambdaContext(
                function_name=self.name,
                memory_limit_in_mb=self._memory_mb,
                invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.name}",
                aws_request_id=str(uuid.uuid4()),
                deadline=time.monotonic() + self._timeout_seconds,
            )
            return self._handler(event, context)

    def _load(self) -> Handler:
        module = load_function_module(self.name, self._code_uri, self._handler_name)
        handler: Handler = getattr(module, self._handler_name.rpartition(".")[2])
        return handler


class LocalApi:
    """The API served on `host:port` (0: a free port) with its own moto and DevIssuer.

    Use it as a context manager. While it runs, this process's environment is the functions'
    (TABLE_NAME, AWS_ENDPOINT_URL, ...), so code in the same process, such as a test or the
    `seed` hook, reaches the same table; stop() restores the environment.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: Callable[[LocalApi], None] | None = None,
        template_path: Path = TEMPLATE_PATH,
        table_name: str = "mailbridge-local",
        parameters: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.template_path = template_path
        self.table_name = table_name
        # Template parameter values, as `sam deploy --parameter-overrides` gives them.
        self.parameters = parameters or {}
        self.issuer = DevIssuer()
        self.aws_endpoint_url = ""
        self.routes: list[Route] = []
        self._cleanup = ExitStack()
        self._functions: dict[str, _Function] = {}
        # Called with every response the gateway answers (tests look for secrets in them).
        self.response_observers: list[Callable[[HttpResponse], None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        template = load_template(self.template_path)
        self.routes = routes(template, self.template_path.parent)
        with ExitStack() as stack:
            self._start_aws(stack, template)
            server = self._bind_http(stack, template)
            resolved = {
                table_logical_id(template): self.table_name,
                # The authorizer's settings: the DevIssuer stands in for the platform's.
                "JwtIssuer": self.issuer.issuer,
                "JwtAudience": self.issuer.audience,
                # OAuth providers redirect here, and the Email tab it serves gets the results.
                "PublicBaseUrl": self.url,
                "AllowedUiOrigins": self.url,
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT_ID,
                **self.parameters,
            }
            for name, value in _shared_environment(template, self.routes, resolved).items():
                _set_env(stack, name, value)
            # No CloudWatch here to receive metrics.
            _set_env(stack, "POWERTOOLS_METRICS_DISABLED", "true", overwrite=False)
            self._serve_http(stack, server)
            if self.seed is not None:
                self.seed(self)
            self._cleanup = stack.pop_all()

    def stop(self) -> None:
        self._cleanup.close()

    def invoke(self, event: dict[str, Any]) -> Any:
        """Runs the function that owns the event's routeKey on the event as given, with no
        authorizer check: what `sam local invoke` does with a file from events/."""
        route = next(r for r in self.routes if r.route_key == event["routeKey"])
        return self._functions[route.function].invoke(event)

    def __enter__(self) -> LocalApi:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_aws(self, stack: ExitStack, template: dict[str, Any]) -> None:
        # moto's access log would interleave with the API's own, in the same format.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        self.aws_endpoint_url = f"http://{host}:{port}"
        _set_env(stack, "AWS_ENDPOINT_URL", self.aws_endpoint_url)
        # Lambda sets both; botocore reads the second.
        _set_env(stack, "AWS_REGION", REGION)
        _set_env(stack, "AWS_DEFAULT_REGION", REGION)
        # Never real credentials for a fake AWS; existing ones are left alone.
        _set_env(stack, "AWS_ACCESS_KEY_ID", "local", overwrite=False)
        _set_env(stack, "AWS_SECRET_ACCESS_KEY", "local", overwrite=False)
        client = boto3.client("dynamodb")
        try:
            create_table(client, self.table_name, template)
        finally:
            client.close()

    def _bind_http(self, stack: ExitStack, template: dict[str, Any]) -> _HttpServer:
        """The listening socket, bound before the environment is set because the
        environment names its URL; requests are served only once it is set."""
        functions: dict[str, _Function] = {}
        for route in self.routes:
            if route.function not in functions:
                properties = function_properties(template, route.function)
                functions[route.function] = _Function(
                    route,
                    memory_mb=int(properties.get("MemorySize", 128)),
                    timeout_seconds=float(properties.get("Timeout", 3)),
                )
        self._functions = functions
        gateway = _Gateway(self.routes, functions, self.issuer, self.response_observers)
        server = _HttpServer((self.host, self.port), gateway)
        stack.callback(server.server_close)
        self.port = server.server_address[1]
        return server

    def _serve_http(self, stack: ExitStack, server: _HttpServer) -> None:
        # A short poll so that stop() returns at once.
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="localapi",
            daemon=True,
        )
        thread.start()
        stack.callback(thread.join)
        stack.callback(server.shutdown)


def _shared_environment(
    template: dict[str, Any], api_routes: list[Route], resolved: dict[str, str]
) -> dict[str, str]:
    environment: dict[str, str] = {}
    for function in sorted({route.function for route in api_routes}):
        for name, value in function_environment(template, function, resolved).items():
            if environment.setdefault(name, value) != value:
                raise TemplateError(
                    f"{name} differs between functions; one local process cannot give each "
                    "function its own value"
                )
    return environment


def _set_env(stack: ExitStack, name: str, value: str, *, overwrite: bool = True) -> None:
    """Sets an environment variable until `stack` closes."""
    previous = os.environ.get(name)
    if previous is not None and not overwrite:
        return
    os.environ[name] = value
    if previous is None:
        stack.callback(os.environ.pop, name, None)
    else:
        stack.callback(os.environ.__setitem__, name, previous)


class _Gateway:
    """What API Gateway does between the client and the functions."""

    def __init__(
        self,
        api_routes: list[Route],
        functions: dict[str, _Function],
        issuer: DevIssuer,
        observers: list[Callable[[HttpResponse], None]],
    ) -> None:
        self._routes = api_routes
        self._router = _Router(api_routes)
        self._functions = functions
        self._issuer = issuer
        self._observers = observers
        self._openapi = b""
        self._openapi_lock = threading.Lock()

    def handle(self, request: HttpRequest) -> HttpResponse:
        response = self._answer(request)
        for observe in self._observers:
            observe(response)
        return response

    def _answer(self, request: HttpRequest) -> HttpResponse:
        path = unquote(urlsplit(request.target).path)
        match = self._router.match(request.method, path)
        if isinstance(match, list):
            if not match and request.method == "GET" and path in _WEB_FILES:
                return _web_file(path)
            if not match and request.method == "GET" and path == OPENAPI_ROUTE:
                return self._openapi_document()
            if not match:
                return _gateway_error(404, "Not Found")
            # API Gateway itself answers 404 here; 405 is what HTTP (and schemathesis) expect.
            return _gateway_error(405, "Method Not Allowed", ("Allow", ", ".join(match)))
        route, path_parameters = match
        claims = None
        if route.authorized:
            claims = self._issuer.verify(_header(request, "authorization"))
            if claims is None:
                return _gateway_error(401, "Unauthorized", ("WWW-Authenticate", "Bearer"))
        function = self._functions[route.function]
        try:
            event = build_event(request, route, path_parameters, claims)
            return to_http_response(function.invoke(event))
        except Exception:
            # What Lambda would log; the caller learns nothing of it, as with API Gateway.
            _log.exception("%s failed on %s", function.name, route.route_key)
            return _gateway_error(500, "Internal Server Error")

    def _openapi_document(self) -> HttpResponse:
        """The API's contract, generated from the functions this run serves (once: they do not
        change while it runs)."""
        # Imported here: the generator imports this module.
        from ..openapi import build_document, render

        with self._openapi_lock:
            if not self._openapi:
                self._openapi = render(build_document(self._routes)).encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        return HttpResponse(200, headers, self._openapi)


# The API's OpenAPI document, public like the web files.
OPENAPI_ROUTE = "/openapi.json"
# The reference Email tab (web/), served beside the API as the platform's UI would be.
WEB_DIR = TEMPLATE_PATH.parent / "web"
_WEB_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def _web_file(path: str) -> HttpResponse:
    name, content_type = _WEB_FILES[path]
    headers = [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        # The page runs only its own files and talks only to this origin.
        ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
    ]
    return HttpResponse(200, headers, (WEB_DIR / name).read_bytes())


def _header(request: HttpRequest, name: str) -> str | None:
    values = [value for key, value in request.headers if key.lower() == name]
    return ",".join(values) if values else None


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: _Gateway) -> None:
        super().__init__(address, _RequestHandler)
        self.gateway = gateway


class _RequestHandler(BaseHTTPRequestHandler):
    """Only HTTP in and out; everything else is the _Gateway's."""

    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The path without its query: the OAuth callback's carries a code and a state.
        self.log_message('"%s %s" %s', self.command, urlsplit(self.path).path, code)

    def _handle(self) -> None:
        response = self._read_and_handle()
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _read_and_handle(self) -> HttpResponse:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Unread chunks would corrupt the next request on this connection.
            self.close_connection = True
            return _gateway_error(411, "Length Required")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            return _gateway_error(400, "Bad Request")
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is never read
            return _gateway_error(413, "Request Entity Too Large")
        request = HttpRequest(
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body=self.rfile.read(length) if length > 0 else b"",
            source_ip=self.client_address[0],
            protocol=self.request_version,
        )
        return self.server.gateway.handle(request)

    # Every method reaches the gateway, which answers 405 where a path does not allow it
    # (http.server would answer 501 for methods without a do_ method).
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle
    do_TRACE = do_QUERY = _handle


DEMO_ORG_ID, DEMO_AGENT_ID = "demo-org", "demo-agent"
CLIENT_ORG_ID, CLIENT_AGENT_ID = "acme", "acme-agent"


def _placeholder(parameter: re.Match[str]) -> str:
    return DEMO_AGENT_ID if parameter[1] == "agentId" else f"<{parameter[1]}>"


def seed_demo_agent(api: LocalApi) -> None:
    """The agent a newcomer can connect right away; the platform registers real ones."""
    from mailbridge.models import Agent
    from mailbridge.storage import AgentStore

    store = AgentStore(api.table_name)
    store.put_agent(Agent(agent_id=DEMO_AGENT_ID, org_id=DEMO_ORG_ID, name="Demo agent"))
    store.put_agent(
        Agent(
            agent_id=CLIENT_AGENT_ID,
            org_id=DEMO_ORG_ID,
            name="Acme's agent",
            client_org_id=CLIENT_ORG_ID,
        )
    )


def email_tab_url(api: LocalApi, token: str, agent_id: str) -> str:
    # The fragment carries the token to the page and never reaches a server.
    return f"{api.url}/#token={token}&agent={agent_id}"


def welcome_text(api: LocalApi, token: str) -> str:
    """What `main` prints once the API is up."""
    auth = '-H "Authorization: Bearer $MAILBRIDGE_TOKEN"'
    examples = [
        f'  curl -s {auth} "{api.url}{_PARAMETER.sub(_placeholder, route.path)}"'
        for route in api.routes
        if route.method == "GET"
    ]
    return "\n".join(
        [
            f"mailbridge local API: {api.url}",
            f"AWS (moto), for aws --endpoint-url: {api.aws_endpoint_url}",
            f"Table: {api.table_name}",
            "",
            "Routes:",
            *(f"  {route.route_key}" for route in api.routes),
            "",
            f"Demo agent: {DEMO_AGENT_ID}, in organization {DEMO_ORG_ID}.",
            f"Email tab: {email_tab_url(api, token, DEMO_AGENT_ID)}",
            f"OpenAPI document: {api.url}{OPENAPI_ROUTE}",
            f"Development token (sub dev-user, organization {DEMO_ORG_ID}, valid 12 hours):",
            f"  export MAILBRIDGE_TOKEN={token}",
            "",
            "Try:",
            *examples,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        # What usage lines have always named (argv[0] is now the package's __main__.py).
        prog="localapi.py",
        description="Serve the mailbridge API locally.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="template parameters, as `sam deploy` takes them, e.g. "
        "AllowPrivateMailServers=true ExtraMailPorts=1143,1587",
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="also serve, on loopback, a demo mailbox (Dovecot, SMTP) and fake Microsoft and "
        "Google identity providers, and point the API at them",
    )
    args = parser.parse_args(argv)
    overrides = dict(override.partition("=")[::2] for override in args.parameter_overrides)
    with ExitStack() as stack:
        sandbox = None
        if args.sandbox:
            from ..sandbox import Sandbox

            sandbox = stack.enter_context(Sandbox())
            # Read once per process by the functions, so set before the API starts.
            for name, value in sandbox.environment().items():
                _set_env(stack, name, value)
        parameters = (sandbox.parameters() if sandbox else {}) | overrides
        api = stack.enter_context(
            LocalApi(args.host, args.port, seed=seed_demo_agent, parameters=parameters)
        )
        if sandbox is not None:
            sandbox.register_apps(api.url)
            sandbox.seed(api.url, api.issuer.mint(sub="dev-admin", org_id=DEMO_ORG_ID))
        token = api.issuer.mint(sub="dev-user", org_id=DEMO_ORG_ID)
        print(welcome_text(api, token), flush=True)
        if sandbox is not None:
            print(f"\n{sandbox.describe(api.url, DEMO_AGENT_ID)}")
            client_agent = email_tab_url(api, token, CLIENT_AGENT_ID)
            print(f"  An agent of client organization {CLIENT_ORG_ID}: {client_agent}")
        print("\nEverything lives in memory and is gone after Ctrl-C.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("\nstopped", file=sys.stderr)
