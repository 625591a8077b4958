"""The local run's command line: its options, the welcome it prints once the API is up (URLs,
a development token, calls to try) and, with --sandbox, the demo mailbox and identity
providers around it. The schedules fire at their rates and the queues are delivered as AWS
would (LocalApi's background); each event put on the bus is logged as one line. SIGINT and
SIGTERM stop it all; --invoke runs one sample event instead of serving."""

from __future__ import annotations

import argparse
import errno
import json
import signal
import socket
import sys
import time
from contextlib import ExitStack, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import LocalApi
from .aws import set_env
from .gateway import PATH_PARAMETER
from .seed import CLIENT_AGENT_ID, CLIENT_ORG_ID, DEMO_AGENT_ID, DEMO_ORG_ID, seed_demo_agent
from .web import MAIL_EVENTS_ROUTE, OPENAPI_ROUTE

MAIL_SCOPES = ("mail.read", "mail.send")
# The template parameter of the IMAP polling schedule, which --poll-seconds overrides.
POLL_RATE_PARAMETER = "NewMailPollRate"
# The sandbox's polling period unless --poll-seconds says: a dropped message is news at once.
SANDBOX_POLL_SECONDS = 5.0
# How soon, at most, a signal another thread received stops the run.
_SIGNAL_CHECK_SECONDS = 0.2


# What the welcome's calls fill a route's path parameters with: the demo's own ids; and the
# query a route needs (a provider's own domain: discovered without the network).
_DEMO_IDS = {"agentId": DEMO_AGENT_ID, "orgId": DEMO_ORG_ID}
_DEMO_QUERIES = {"/bridge/email-discovery": "?email=jane@gmail.com"}


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
    # The reads that answer as printed, with the admin's token: no id but the demo's to
    # fill in, and no mail route (a mailbox must be connected first: the sandbox's lines).
    examples = [
        f'  curl -s {auth} "{api.url}{PATH_PARAMETER.sub(lambda n: _DEMO_IDS[n[1]], route.path)}'
        f'{_DEMO_QUERIES.get(route.path, "")}"'
        for route in api.routes
        if route.method == "GET"
        and route.authorized
        and not route.scopes
        and set(PATH_PARAMETER.findall(route.path)) <= _DEMO_IDS.keys()
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
            f"Events put on the mail event bus (this run's own page, not in AWS): "
            f"{api.url}{MAIL_EVENTS_ROUTE}",
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


def log_mail_event(event: dict[str, Any]) -> None:
    """One line per event put on the bus: its kind, the agent and the subject."""
    detail = event.get("detail")
    if not isinstance(detail, dict):
        detail = {}
    print(
        f"[{time.strftime('%d/%b/%Y %H:%M:%S')}] {event.get('detail-type')}: agent "
        f"{detail.get('agent_id')}, subject {json.dumps(detail.get('subject'))}",
        file=sys.stderr,
        flush=True,
    )


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so that everything started closes in order
    (Dovecot is a process of its own, which would outlive us): also SIGTERM, which would end
    the process at once, and SIGINT when started in the background, where it is ignored."""

    def stop_once(number: int, frame: object) -> None:
        # A second signal must not interrupt the stopping the first one began.
        for each in (signal.SIGINT, signal.SIGTERM):
            signal.signal(each, signal.SIG_IGN)
        raise KeyboardInterrupt

    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, stop_once)


def _port_taken(host: str, port: int) -> bool:
    if port == 0:
        return False
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As the API's server binds: a port some closed connection lingers on is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def invoke_event(path: Path, parameters: dict[str, str]) -> None:
    """`make invoke`: the event in `path` through its function, in process, against the demo
    agents' store; the handler's answer on stdout, the function's logs on stderr, as `sam
    local invoke` does."""
    event = json.loads(path.read_text())
    answer = sys.stdout
    # The layer's logger writes to the stdout it finds when it is made, at the first load.
    with redirect_stdout(sys.stderr), LocalApi(seed=seed_demo_agent, parameters=parameters) as api:
        result = api.invoke(event)
    print(json.dumps(result, indent=2), file=answer)


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
    parser.add_argument(
        "--poll-seconds",
        type=float,
        metavar="N",
        help=f"look at IMAP inboxes for new mail every N seconds instead of {POLL_RATE_PARAMETER}"
        f" (rate() takes minutes at least); the sandbox's default is {SANDBOX_POLL_SECONDS:g}",
    )
    parser.add_argument(
        "--invoke",
        type=Path,
        metavar="EVENT_FILE",
        help="instead of serving: run the event (a file of events/) through its function "
        "against a store with the demo agents, and print the answer",
    )
    args = parser.parse_args(argv)
    if args.poll_seconds is not None and args.poll_seconds <= 0:
        parser.error("--poll-seconds must be positive")
    overrides = dict(override.partition("=")[::2] for override in args.parameter_overrides)
    if args.invoke is not None:
        if not args.invoke.is_file():
            parser.error(f"no event file {args.invoke} (the samples are in events/)")
        invoke_event(args.invoke, overrides)
        return
    if _port_taken(args.host, args.port):
        parser.exit(
            1,
            f"mailbridge: port {args.port} on {args.host} is taken (another run?); choose "
            f"another: make run PORT={args.port + 1}, make sandbox PORT={args.port + 1}\n",
        )
    _stop_on_signals()
    try:
        serve(args, overrides)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)


def serve(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    """Everything the options ask for, until interrupted; all of it stopped on the way out."""
    poll_seconds = args.poll_seconds or (SANDBOX_POLL_SECONDS if args.sandbox else None)
    with ExitStack() as stack:
        sandbox = None
        if args.sandbox:
            from ..sandbox import Sandbox

            sandbox = stack.enter_context(Sandbox())
            # Read once per process by the functions, so set before the API starts.
            for name, value in sandbox.environment().items():
                set_env(stack, name, value)
        parameters = (sandbox.parameters() if sandbox else {}) | overrides
        api = LocalApi(
            args.host,
            args.port,
            seed=seed_demo_agent,
            parameters=parameters,
            background=True,
            schedule_periods={POLL_RATE_PARAMETER: poll_seconds} if poll_seconds else None,
        )
        api.mail_event_observers.append(log_mail_event)
        stack.enter_context(api)
        tokens = mint_dev_tokens(api)
        states: dict[str, str] = {}
        if sandbox is not None:
            sandbox.register_apps(api.url)
            sandbox.seed(api.url, api.issuer.mint(sub="dev-admin", org_id=DEMO_ORG_ID))
            states = sandbox.seed_states(api.url, tokens.person, tokens.platform)
        print(welcome_text(api, tokens), flush=True)
        if sandbox is not None:
            print(f"\n{sandbox.describe(api.url, DEMO_AGENT_ID)}")
            client_agent = email_tab_url(api, tokens.person, CLIENT_AGENT_ID)
            print(f"  An agent of client organization {CLIENT_ORG_ID}: {client_agent}")
            print("  The other states of a connection, an agent in each (its Email tab):")
            for agent_id, state in states.items():
                print(f"    {state}: {email_tab_url(api, tokens.person, agent_id)}")
        print("\nEverything lives in memory and is gone after Ctrl-C.", flush=True)
        while True:
            # Awake now and then: Python runs a signal's handler in this thread, and when
            # another thread took the signal, a wait without end would never get to it.
            time.sleep(_SIGNAL_CHECK_SECONDS)
