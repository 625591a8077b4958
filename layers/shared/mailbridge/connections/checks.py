"""The connection test: each check of the saved connection, run and timed, and the outcome
recorded as the agent's status."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from ..agents.access import load_owned_agent
from ..agents.models import Agent, Caller
from ..audit.models import Actor, AuditAction
from ..audit.service import connection_entry
from ..core.errors import ErrorCode, LimitReached, MailbridgeError, MailServerError, ProviderError
from ..core.settings import settings
from ..core.windows import window
from ..oauth.scopes import grant_problems
from ..orgs.sending_policy import policy_refusal
from .mail_servers import mail_servers
from .models import ConnectionTestResponse
from .records import (
    CheckName,
    CheckResult,
    ConnectionTestResult,
    ImapConnection,
    LastError,
    OAuthConnection,
    Problem,
    Status,
    StoredConfig,
)

if TYPE_CHECKING:
    from ..storage.protocols import AgentStore, CounterStore, OrgStore, SecretStore

T = TypeVar("T")

# The IMAP and SMTP checks run side by side; module level so a warm Lambda reuses the threads.
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mail-check")


def run_connection_test(
    agents: AgentStore,
    secrets: SecretStore,
    orgs: OrgStore,
    counters: CounterStore,
    caller: Caller,
    agent_id: str,
) -> ConnectionTestResponse:
    """Test the agent's saved connection and record the outcome as its status."""
    agent, config = load_owned_agent(agents, caller, agent_id)
    if config is None:
        raise MailbridgeError(
            ErrorCode.NOT_CONFIGURED,
            "This agent has no email configuration to test.",
            hint="Save a configuration first.",
        )
    _count_test(counters, agent.org_id, agent_id)
    if isinstance(config.connection, ImapConnection):
        assert config.secret is not None  # an IMAP connection is saved with its password
        password = secrets.read(config.secret)[0]["password"]
        result = check_mail_servers(config.connection, password, settings().mail_timeout_seconds)
    else:
        result = _check_oauth(agents, secrets, orgs, agent, config)
    # The status records what the servers or provider said; the policy's verdict is
    # worked out at each read (it changes with the policy), and shown in the test's checks.
    last_error = (
        LastError(**result.error.model_dump(), at=result.tested_at) if result.error else None
    )
    status = Status.CONNECTED if result.ok else Status.ERROR
    if result.ok and agent.client_org_id is not None:
        client_org = orgs.get(agent.org_id, agent.client_org_id)
        result = _check_policy(result, policy_refusal(agent, client_org, config.addresses))
    recorded = config.with_status(status, last_error, last_test=result)
    entry = connection_entry(agent, Actor.of(caller), AuditAction.TESTED, config, recorded)
    if result.error is not None:
        entry = entry.failed(result.error.code, result.error.message)
    if agents.update_status(recorded, entry):
        status = recorded.status
    else:
        # A concurrent save replaced the settings: this result describes the old ones, so it
        # is returned but not recorded, and the status reported is the current record's.
        _, latest = agents.load(agent_id)
        status = latest.status if latest else Status.NOT_CONNECTED
    if not result.ok and status is Status.CONNECTED:
        status = Status.ERROR  # outside the policy: what every read shows
    return ConnectionTestResponse(**result.model_dump(), status=status)


def _check_policy(
    result: ConnectionTestResult, refused_by_policy: MailbridgeError | None
) -> ConnectionTestResult:
    """The mailbox works; the policy as it is now may still refuse it (a domain set or
    changed since the connection was saved, the client organization deleted)."""
    if refused_by_policy is None:
        return result
    problem = Problem.of(refused_by_policy)
    refused = CheckResult(name="policy", ok=False, latency_ms=0, error=problem)
    return result.model_copy(
        update={"ok": False, "checks": [*result.checks, refused], "error": problem}
    )


def _count_test(counters: CounterStore, org_id: str, agent_id: str) -> None:
    """One test against the agent's and the organization's limits; a test refused by either
    counts against neither. (Counters have partitions of their own: an agent's is read with
    every request, and should hold only the agent and its config.)"""
    now = datetime.now(UTC)
    limits = settings()
    agent_scope, org_scope = f"RATE#AGENT#{agent_id}", f"RATE#ORG#{org_id}"
    try:
        counters.count(
            "TESTS",
            [
                (agent_scope, window("minute", limits.tests_per_agent_per_minute, now)),
                (org_scope, window("minute", limits.tests_per_org_per_minute, now)),
            ],
        )
    except LimitReached as reached:
        whose = "this agent" if reached.scope == agent_scope else "your organization"
        raise reached.refusal(
            now, f"Too many connection tests for {whose}: at most {reached.window.limit} a minute."
        ) from None


def check_mail_servers(
    connection: ImapConnection, password: str, timeout: float
) -> ConnectionTestResult:
    """The IMAP and SMTP checks, side by side, each within `timeout` seconds."""
    servers = mail_servers()
    imap = _start("imap", servers.check_imap, connection, password, timeout)
    smtp = _start("smtp", servers.check_smtp, connection, password, timeout)
    (imap_check, inbox), (smtp_check, _) = imap.result(), smtp.result()
    checks = [imap_check, smtp_check]
    error = next((check.error for check in checks if check.error), None)
    # What the IMAP server confirmed is the login, which may differ from the address saved.
    login = connection.username if imap_check.ok else None
    return ConnectionTestResult(
        ok=error is None,
        email=login if login and "@" in login else None,
        login=login,
        inbox=inbox,
        checks=checks,
        error=error,
        tested_at=datetime.now(UTC),
    )


def _check_oauth(
    agents: AgentStore, secrets: SecretStore, orgs: OrgStore, agent: Agent, config: StoredConfig
) -> ConnectionTestResult:
    """A fresh access token, then the address and inbox counts through the provider's mail
    API, then the granted permissions (reading required, sending warned of): each a check,
    stopping at the first failure."""
    # The token path and the provider's port: OAuth's alone, an IMAP test never loads them.
    from ..oauth.providers import provider_client
    from ..oauth.tokens import fresh_access_token

    assert isinstance(config.connection, OAuthConnection)
    provider = config.connection.provider
    checks: list[CheckResult] = []
    mailbox = None
    try:
        with _check("authorization", checks):
            grant = fresh_access_token(agents, secrets, orgs, agent, config)
        with _check("mailbox", checks):
            mailbox = provider_client(provider).mailbox(grant.access_token)
        with _check("permissions", checks):
            # Without sending the connection still works: the view warns of it.
            problem, _ = grant_problems(provider, grant.granted_scopes)
            if problem is not None:
                raise problem
    except ProviderError:
        pass  # recorded in `checks` by _check
    error = next((check.error for check in checks if check.error), None)
    return ConnectionTestResult(
        ok=error is None,
        email=mailbox.email if mailbox else None,
        inbox=mailbox.inbox if mailbox else None,
        checks=checks,
        error=error,
        tested_at=datetime.now(UTC),
    )


@contextmanager
def _check(name: CheckName, checks: list[CheckResult]) -> Iterator[None]:
    """Times the block and appends its outcome; a ProviderError ends the test."""
    started = time.monotonic()
    problem = None
    try:
        yield
    except ProviderError as failure:
        problem = Problem.of(failure)
        raise
    finally:
        latency_ms = round((time.monotonic() - started) * 1000)
        checks.append(
            CheckResult(name=name, ok=problem is None, latency_ms=latency_ms, error=problem)
        )


def _start(
    name: CheckName,
    check: Callable[[ImapConnection, str, float], T],
    connection: ImapConnection,
    password: str,
    timeout: float,
) -> Future[tuple[CheckResult, T | None]]:
    # In the caller's context, so the invocation's deadline bounds the check too.
    return _executor.submit(
        contextvars.copy_context().run, _timed, name, check, connection, password, timeout
    )


def _timed(
    name: CheckName,
    check: Callable[[ImapConnection, str, float], T],
    connection: ImapConnection,
    password: str,
    timeout: float,
) -> tuple[CheckResult, T | None]:
    started = time.monotonic()
    try:
        value: T | None = check(connection, password, timeout)
        problem = None
    except MailServerError as failure:
        value, problem = None, Problem.of(failure)
    latency_ms = round((time.monotonic() - started) * 1000)
    return CheckResult(name=name, ok=problem is None, latency_ms=latency_ms, error=problem), value
