"""The local run's command line: its options, the welcome it prints once the API is up (URLs,
a development token, calls to try) and, with --sandbox, the demo mailbox and identity
providers around it."""

from __future__ import annotations

import argparse
import re
import sys
import threading
from contextlib import ExitStack
from dataclasses import dataclass

from . import LocalApi
from .aws import set_env
from .gateway import PATH_PARAMETER
from .seed import CLIENT_AGENT_ID, CLIENT_ORG_ID, DEMO_AGENT_ID, DEMO_ORG_ID, seed_demo_agent
from .web import OPENAPI_ROUTE

MAIL_SCOPES = ("mail.read", "mail.send")


def _placeholder(parameter: re.Match[str]) -> str:
    return DEMO_AGENT_ID if parameter[1] == "agentId" else f"<{parameter[1]}>"


def email_tab_url(api: LocalApi, token: str, agent_id: str) -> str:
    # The fragment carries the token to the page and never reaches a server.
    return f"{api.url}/#token={token}&agent={agent_id}"


@dataclass(frozen=True)
class DevTokens:
    """The three kinds of caller, as the platform's identity provider would issue them."""

    person: str  # an organization admin, as the Email tab calls the API (mail scopes too)
    agent: str  # the demo agent's runtime: its mail, and nothing else
    platform: str  # the platform registering and removing agents


def mint_dev_tokens(api: LocalApi) -> DevTokens:
    return DevTokens(
        person=api.issuer.mint(sub="dev-user", org_id=DEMO_ORG_ID, scopes=MAIL_SCOPES),
        agent=api.issuer.mint(
            sub="agent-runtime", org_id=DEMO_ORG_ID, agent_id=DEMO_AGENT_ID, scopes=MAIL_SCOPES
        ),
        platform=api.issuer.mint(sub="platform", org_id=DEMO_ORG_ID, scopes=("agents.manage",)),
    )


def welcome_text(api: LocalApi, tokens: DevTokens) -> str:
    """What `main` prints once the API is up."""
    auth = '-H "Authorization: Bearer $MAILBRIDGE_TOKEN"'
    # The routes a reader can call as printed: no id to fill in but the demo agent's.
    examples = [
        f'  curl -s {auth} "{api.url}{PATH_PARAMETER.sub(_placeholder, route.path)}"'
        for route in api.routes
        if route.method == "GET" and set(PATH_PARAMETER.findall(route.path)) <= {"agentId"}
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
            f"Email tab: {email_tab_url(api, tokens.person, DEMO_AGENT_ID)}",
            f"OpenAPI document: {api.url}{OPENAPI_ROUTE}",
            f"Development tokens, valid 12 hours, organization {DEMO_ORG_ID}: an admin (the "
            "Email tab's), the demo agent's runtime, the platform:",
            f"  export MAILBRIDGE_TOKEN={tokens.person}",
            f"  export MAILBRIDGE_AGENT_TOKEN={tokens.agent}",
            f"  export MAILBRIDGE_PLATFORM_TOKEN={tokens.platform}",
            "",
            "Try:",
            *examples,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        # What usage lines have always named (argv[0] is now the package's __main__.py).
        prog="python -m mailbridge_tools.localapi",
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
        tokens = mint_dev_tokens(api)
        print(welcome_text(api, tokens), flush=True)
        if sandbox is not None:
            print(f"\n{sandbox.describe(api.url, DEMO_AGENT_ID)}")
            client_agent = email_tab_url(api, tokens.person, CLIENT_AGENT_ID)
            print(f"  An agent of client organization {CLIENT_ORG_ID}: {client_agent}")
        print("\nEverything lives in memory and is gone after Ctrl-C.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("\nstopped", file=sys.stderr)
