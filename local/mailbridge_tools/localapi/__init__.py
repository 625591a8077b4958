"""The whole API on one machine, without Docker: `python -m mailbridge_tools.localapi`.

What SAM deploys, emulated in one process from template.yaml:
- DynamoDB and Secrets Manager: moto's server on loopback; AWS_ENDPOINT_URL points every
  boto3 client there, so the handlers run unchanged (aws).
- API Gateway (HTTP API, payload format 2.0): routes from the functions' HttpApi events, the
  JWT authorizer (tokens from a DevIssuer), the 2.0 event and the response mapping (gateway,
  behind the HTTP server of server).
- Lambda: each function's handler module, loaded from its CodeUri under a name of its own,
  with the template's environment, and one request at a time per function as on Lambda
  (lambda_runtime).

All functions share this process's environment, so a variable that two functions would set
to different values is refused rather than guessed. Not emulated: Lambda's timeout (the
context reports the time left, nothing stops a slow handler), ANY methods, {proxy+} paths.

Here LocalApi puts them together (web serves the Email tab and the OpenAPI document beside
the API), with the demo agents and the command.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from ..devauth import DevIssuer
from ..template import TEMPLATE_PATH, Route, load_template, routes, table_logical_id
from .aws import ACCOUNT_ID, REGION, set_env, start_aws
from .gateway import PATH_PARAMETER, Gateway, HttpResponse
from .lambda_runtime import LambdaContext, LambdaFunction, lambda_functions, shared_environment
from .server import HttpServer, serve
from .web import OPENAPI_ROUTE, WebPages

__all__ = ["HttpResponse", "LambdaContext", "LocalApi"]


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
        self._functions: dict[str, LambdaFunction] = {}
        # Called with every response the gateway answers (tests look for secrets in them).
        self.response_observers: list[Callable[[HttpResponse], None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        template = load_template(self.template_path)
        self.routes = routes(template, self.template_path.parent)
        with ExitStack() as stack:
            self.aws_endpoint_url = start_aws(stack, template, self.table_name)
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
            for name, value in shared_environment(template, self.routes, resolved).items():
                set_env(stack, name, value)
            # No CloudWatch here to receive metrics.
            set_env(stack, "POWERTOOLS_METRICS_DISABLED", "true", overwrite=False)
            serve(stack, server)
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

    def _bind_http(self, stack: ExitStack, template: dict[str, Any]) -> HttpServer:
        """The listening socket, bound before the environment is set because the
        environment names its URL; requests are served only once it is set."""
        self._functions = lambda_functions(template, self.routes)
        pages = WebPages(self.routes)
        gateway = Gateway(
            self.routes, self._functions, self.issuer, self.response_observers, pages.get
        )
        server = HttpServer((self.host, self.port), gateway)
        stack.callback(server.server_close)
        self.port = server.server_address[1]
        return server


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
        f'  curl -s {auth} "{api.url}{PATH_PARAMETER.sub(_placeholder, route.path)}"'
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
                set_env(stack, name, value)
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
