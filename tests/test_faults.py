"""Fault injection: DynamoDB and Secrets Manager failing at each step of every request that
writes state (save, authorize, callback, refresh, disconnect, the organization routes).

For each flow, a healthy run lists the AWS calls the request makes; then, on fresh state
each time, every one of those calls fails in every way of aws_calls.FAULTS. After each fault:
- the API answered a retryable error (or, where the failed step is best effort, succeeded);
- the stored state is wholly the old one or wholly the new one, and every secret version a
  record points at exists (no config pointing at a missing secret);
- the audit trail goes with it: the change's entry is there if and only if the change is
  (both are written in one transaction);
- doing it again succeeds, and then no secret is left that nothing references (whatever the
  fault left behind lies at a fixed name that the retry takes over or deletes), and the
  connection still works (no lost refresh token).
The table of every fault and what was checked after it is printed at the end of the run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_calls import FAULTS, AwsCall, AwsCalls
from mailbridge_tools.sandbox import FakeGoogle, FakeMicrosoft, SmtpServer
from support import (
    GOOGLE_ACCOUNT,
    MAILBOX_PASSWORD,
    MS_ACCOUNT,
    REPORTS,
    ApiClient,
    ApiResponse,
    OAuthAgent,
    Org,
    age_tokens,
    empty_table,
    make_org,
    posted,
    secret_value,
)

Body = Callable[..., dict[str, Any]]
_TABLE: list[str] = []


@pytest.fixture(scope="module")
def aws_calls(local_api: Any) -> AwsCalls:
    from mailbridge.storage.aws import dynamodb, secretsmanager

    return AwsCalls([dynamodb(), secretsmanager()])


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore retries each failing call as in production for one fault, without sleeping
    between tries (hundreds of faults would otherwise wait minutes), and with the retry
    quota a single fault finds (hundreds of faults in a row would otherwise exhaust it, and
    later faults would not be retried at all)."""
    from botocore.retries.quota import RetryQuota
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)
    monkeypatch.setattr(RetryQuota, "acquire", lambda self, capacity_amount: True)


@pytest.fixture(autouse=True)
def empty_table_first(local_api: Any) -> None:
    """Each flow fails hundreds of calls, each on a fresh organization: the next flow starts
    on an empty table (see `empty_table`)."""
    empty_table(local_api.table_name)


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    header = f"{'flow':<24} {'step':>4} {'AWS call':<36} {'fault':<13} {'answer':<26} after"
    REPORTS["Fault injection: every AWS call of every writing request, failed"] = [
        header,
        *_TABLE,
    ]


@dataclass
class Run:
    """One flow on fresh state: what to do, and how to read the state it changes."""

    org: Org
    agent: OAuthAgent | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Flow:
    name: str
    prepare: Callable[[Run], None]
    request: Callable[[Run], ApiResponse]
    state: Callable[[Run], Hashable]  # what the user can see, free of timestamps and ids
    retry: Callable[[Run], ApiResponse]  # what a user does after a retryable error
    secrets_prefix: Callable[[Run], str]  # the flow's secrets live under it
    connected_after: bool = False  # the agent's connection must work after the retry
    # A send: a lost write of its idempotency record leaves the key held (409
    # request_in_progress, to the request and its retries) until it expires; never twice.
    holds_key: bool = False
    # The record the flow's audit entries go with, when it is not `state`.
    audited: Callable[[Run], Hashable] | None = None

    def with_trail(self, run: Run) -> Hashable:
        """The audited record and the organization's audit trail."""
        return ((self.audited or self.state)(run), _trail(run))

    def ok(self, response: ApiResponse) -> bool:
        if response.headers.get("Content-Type", "").startswith("text/html"):
            return posted(response)[0]["status"] == "connected"
        return response.status < 300


# ---- reading state ---------------------------------------------------------------------


def _referenced_secrets(run: Run) -> set[tuple[str, str]]:
    """Every (name, version) the flow's records point at."""
    from mailbridge.storage.agents import DynamoAgentStore
    from mailbridge.storage.orgs import DynamoOrgStore

    refs: set[tuple[str, str]] = set()
    _, config = DynamoAgentStore().load(run.org.agent_id)
    for ref in (config.secret, config.tokens) if config else ():
        if ref is not None:
            refs.add((ref.name, ref.version))
    client_org = run.context.get("client_org")
    for provider in ("microsoft", "google"):
        for owner in (None, client_org) if client_org else (None,):
            app = DynamoOrgStore().get_app(run.org.org_id, owner, provider)
            if app is not None:
                refs.add((app.secret.name, app.secret.version))
    return refs


def _stored_secrets(prefix: str) -> dict[str, set[str]]:
    """Secrets under a prefix, with their versions (read around the functions' clients)."""
    client = boto3.client("secretsmanager")
    pages = client.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "name", "Values": [prefix]}]
    )
    found: dict[str, set[str]] = {}
    for page in pages:
        for secret in page["SecretList"]:
            versions = client.list_secret_version_ids(SecretId=secret["Name"])["Versions"]
            found[secret["Name"]] = {version["VersionId"] for version in versions}
    return found


def _dangling(run: Run, flow: Flow) -> list[str]:
    stored = _stored_secrets(flow.secrets_prefix(run))
    return [f"{n}@{v}" for n, v in _referenced_secrets(run) if v not in stored.get(n, set())]


def _orphans(run: Run, flow: Flow) -> list[str]:
    referenced = {name for name, _ in _referenced_secrets(run)}
    return sorted(set(_stored_secrets(flow.secrets_prefix(run))) - referenced)


def _config_state(run: Run) -> Hashable:
    """Status, settings (no timestamps, versions or ids) and the password the record uses."""
    from mailbridge.storage.agents import DynamoAgentStore

    _, config = DynamoAgentStore().load(run.org.agent_id)
    if config is None:
        return None
    # Client ids are made up per run; what matters is the rest.
    connection = config.connection.model_dump(
        mode="json", exclude={"client_id": True, "authorization": {"authorized_at", "client_id"}}
    )
    secret = secret_value(config.secret) if config.secret else None
    tokens = "tokens" if config.tokens else "no tokens"
    return (config.status, repr(connection), repr(secret), tokens)


def _trail(run: Run) -> Hashable:
    """The organization's audit entries, newest first: what was done, and how it went."""
    from mailbridge.storage.audit import DynamoAuditLog

    entries, _ = DynamoAuditLog().history(
        run.org.org_id, None, since=None, until=None, after=None, limit=100
    )
    return tuple((entry.action.value, entry.outcome) for entry in entries)


def _tested(run: Run) -> Hashable:
    """Whether a connection test's outcome is recorded (not when: states are compared
    across runs)."""
    from mailbridge.storage.agents import DynamoAgentStore

    _, config = DynamoAgentStore().load(run.org.agent_id)
    return config is not None and config.last_test is not None


def _agent_prefix(run: Run) -> str:
    return f"mailbridge/agents/{run.org.agent_id}/"


def _org_prefix(run: Run) -> str:
    return f"mailbridge/orgs/{run.org.org_id}/"


# ---- the flows -------------------------------------------------------------------------


def imap_flows(imap_body: Body) -> list[Flow]:
    def save(password: str, **changes: Any) -> Callable[[Run], ApiResponse]:
        return lambda run: run.org.client.put(
            run.org.config_path, imap_body(password=password, **changes)
        )

    def connected(run: Run) -> None:
        assert save(MAILBOX_PASSWORD)(run).status == 200
        assert run.org.client.post(run.org.config_path + "/test").json()["ok"] is True

    def saved_wrong(run: Run) -> None:
        assert save("not-the-password")(run).status == 200

    def test(run: Run) -> ApiResponse:
        return run.org.client.post(run.org.config_path + "/test")

    rotate = save("a-new-password", imap_security="starttls")
    return [
        Flow("save a new connection", lambda run: None, save(MAILBOX_PASSWORD), _config_state,
             save(MAILBOX_PASSWORD), _agent_prefix),
        Flow("save a new password", connected, rotate, _config_state, rotate, _agent_prefix),
        Flow("test a connection", saved_wrong, test, _config_state, test, _agent_prefix),
    ]  # fmt: skip


def oauth_flows(local_api: Any, microsoft: FakeMicrosoft, google: FakeGoogle) -> list[Flow]:
    def agent_of(fake: FakeMicrosoft | FakeGoogle) -> Callable[[Run], None]:
        def prepare(run: Run) -> None:
            run.agent = OAuthAgent(run.org, local_api, fake)
            run.agent.save()

        return prepare

    def started(fake: FakeMicrosoft | FakeGoogle) -> Callable[[Run], None]:
        def prepare(run: Run) -> None:
            agent_of(fake)(run)
            assert run.agent is not None
            run.context["location"] = run.agent.sign_in(run.agent.authorization_url())

        return prepare

    def connected(fake: FakeMicrosoft | FakeGoogle, *, aged: bool) -> Callable[[Run], None]:
        def prepare(run: Run) -> None:
            agent_of(fake)(run)
            assert run.agent is not None
            assert posted(run.agent.connect())[0]["status"] == "connected"
            if aged:
                age_tokens(run.org.agent_id)

        return prepare

    def agent(run: Run) -> OAuthAgent:
        assert run.agent is not None
        return run.agent

    def authorize(run: Run) -> ApiResponse:
        return agent(run).org.client.post(agent(run).path + "/authorize", {"origin": local_api.url})

    def pending_states(run: Run) -> Hashable:
        table = boto3.client("dynamodb").scan(
            TableName=local_api.table_name,
            FilterExpression="begins_with(pk, :state) AND contains(document, :agent)",
            ExpressionAttributeValues={
                ":state": {"S": "OAUTH_STATE#"},
                ":agent": {"S": run.org.agent_id},
            },
        )
        return (_config_state(run), min(len(table["Items"]), 1))

    def test(run: Run) -> ApiResponse:
        return run.org.client.post(run.org.config_path + "/test")

    def refresh_state(run: Run) -> Hashable:
        """Old: the record still points at the tokens that need a refresh; new: at fresh
        ones. (The test's own outcome is recorded separately, like any test's.)"""
        from mailbridge.storage.agents import DynamoAgentStore

        _, config = DynamoAgentStore().load(run.org.agent_id)
        assert config is not None and config.tokens is not None
        return "refresh due" if config.tokens.expires_at - time.time() <= 300 else "fresh"

    return [
        Flow("authorize (Microsoft)", agent_of(microsoft), authorize, pending_states,
             authorize, _agent_prefix),
        Flow("callback (Microsoft)", started(microsoft),
             lambda run: agent(run).callback(run.context["location"]), _config_state,
             lambda run: agent(run).connect(), _agent_prefix, connected_after=True),
        Flow("callback (Google)", started(google),
             lambda run: agent(run).callback(run.context["location"]), _config_state,
             lambda run: agent(run).connect(), _agent_prefix, connected_after=True),
        Flow("refresh (Microsoft)", connected(microsoft, aged=True), test, refresh_state,
             test, _agent_prefix, connected_after=True, audited=_tested),
        Flow("disconnect (Google)", connected(google, aged=False),
             lambda run: run.org.client.delete(run.org.config_path), _config_state,
             lambda run: run.org.client.delete(run.org.config_path), _agent_prefix),
    ]  # fmt: skip


def agent_flows(local_api: Any, imap_body: Body, smtp: SmtpServer) -> list[Flow]:
    def platform(run: Run) -> ApiClient:
        token = local_api.issuer.mint(
            sub="platform", org_id=run.org.org_id, scopes=("agents.manage",)
        )
        return ApiClient(local_api.url, token)

    def new_agent(run: Run) -> None:
        run.context["agent"] = f"agent-{uuid.uuid4().hex[:10]}"

    def register(run: Run) -> ApiResponse:
        return platform(run).put(f"/bridge/agents/{run.context['agent']}", {"name": "Added"})

    def registered(run: Run) -> Hashable:
        from mailbridge.storage.agents import DynamoAgentStore

        agent, _ = DynamoAgentStore().load(run.context["agent"])
        # Each run is another organization: the state says the agent is the run's.
        return (agent.org_id == run.org.org_id, agent.name) if agent else None

    def configured(run: Run) -> None:
        assert run.org.client.put(run.org.config_path, imap_body()).status == 200
        run.context |= {"agent": run.org.agent_id, "key": uuid.uuid4().hex}
        run.context["subject"] = f"Fault run {run.context['key']}"

    def connected(run: Run) -> None:
        configured(run)
        assert run.org.client.post(run.org.config_path + "/test").json()["ok"] is True

    def configured_under_policy(run: Run) -> None:
        """The agent in a client organization whose policy counts each message, its
        connection saved and never used: the send also records it connected."""
        policy = {"name": "Acme", "allowed_recipients": ["example.org"], "limits": {"per_hour": 50}}
        assert run.org.client.put("/bridge/client-orgs/acme/email-policy", policy).status == 200
        member = {"name": "Agent", "client_org_id": "acme"}
        assert platform(run).put(f"/bridge/agents/{run.org.agent_id}", member).status == 200
        configured(run)

    def remove(run: Run) -> ApiResponse:
        return platform(run).delete(f"/bridge/agents/{run.org.agent_id}")

    def send(run: Run) -> ApiResponse:
        message = {"to": ["someone@example.org"], "subject": run.context["subject"], "text": "x"}
        return run.org.client.request(
            "POST",
            f"/bridge/agents/{run.org.agent_id}/mail/send",
            message,
            headers={"Idempotency-Key": run.context["key"]},
        )

    def times_sent(run: Run) -> Hashable:
        subject = f"Subject: {run.context['subject']}".encode()
        return sum(1 for received in smtp.messages if subject in received.content)

    return [
        Flow("register an agent", new_agent, register, registered, register, _agent_prefix),
        Flow("remove an agent", connected, remove, registered, remove, _agent_prefix,
             audited=_config_state),
        Flow("send under a policy", configured_under_policy, send, times_sent, send,
             _agent_prefix, holds_key=True, audited=_config_state),
    ]  # fmt: skip


def org_flows(google: FakeGoogle) -> list[Flow]:
    app_path = "/bridge/orgs/{org}/email-oauth-apps/google"
    policy_path = "/bridge/client-orgs/{client_org}/email-policy"

    def put_app(run: Run) -> ApiResponse:
        body = {"client_id": run.context["client_id"], "client_secret": run.context["secret"]}
        return run.org.client.put(app_path.format(org=run.org.org_id), body)

    def delete_app(run: Run) -> ApiResponse:
        return run.org.client.delete(app_path.format(org=run.org.org_id))

    def new_app(run: Run) -> None:
        # Each run is another organization: the same client id everywhere is no clash.
        run.context |= {"client_id": "shared.apps.googleusercontent.com", "secret": "s-1"}

    def registered(run: Run) -> None:
        new_app(run)
        assert put_app(run).status == 200
        run.context["secret"] = "s-2"  # the PUT under test rotates it

    def app_state(run: Run) -> Hashable:
        from mailbridge.storage.orgs import DynamoOrgStore

        app = DynamoOrgStore().get_app(run.org.org_id, None, "google")
        return (app.client_id, repr(secret_value(app.secret))) if app else None

    def policy(run: Run) -> str:
        return policy_path.format(client_org=run.context["client_org"])

    def put_policy(run: Run) -> ApiResponse:
        return run.org.client.put(policy(run), {"name": "Acme", "email_domain": "acme.example"})

    def delete_policy(run: Run) -> ApiResponse:
        return run.org.client.delete(policy(run))

    def client_org(run: Run) -> None:
        run.context["client_org"] = f"acme-{uuid.uuid4().hex[:6]}"

    def client_org_with_app(run: Run) -> None:
        client_org(run)
        assert put_policy(run).status == 200
        path = f"/bridge/client-orgs/{run.context['client_org']}/email-oauth-apps/google"
        assert run.org.client.put(path, {"client_id": "c.apps", "client_secret": "s"}).status == 200

    def policy_state(run: Run) -> Hashable:
        from mailbridge.storage.orgs import DynamoOrgStore

        stored = DynamoOrgStore().get(run.org.org_id, run.context["client_org"])
        app = DynamoOrgStore().get_app(run.org.org_id, run.context["client_org"], "google")
        return (stored.name if stored else None, app.client_id if app else None)

    return [
        Flow("register a shared app", new_app, put_app, app_state, put_app, _org_prefix),
        Flow("rotate its secret", registered, put_app, app_state, put_app, _org_prefix),
        Flow("delete a shared app", registered, delete_app, app_state, delete_app, _org_prefix),
        Flow("save a client-org policy", client_org, put_policy, policy_state, put_policy,
             _org_prefix),
        Flow("delete a client org", client_org_with_app, delete_policy, policy_state,
             delete_policy, _org_prefix),
    ]  # fmt: skip


@pytest.fixture
def flows(
    imap_body: Body,
    local_api: Any,
    microsoft: FakeMicrosoft,
    google: FakeGoogle,
    smtp: SmtpServer,
) -> dict[str, Flow]:
    microsoft.add_account(MS_ACCOUNT, inbox_total=42, inbox_unread=7)
    google.add_account(GOOGLE_ACCOUNT, inbox_total=1200, inbox_unread=31)
    every = (
        imap_flows(imap_body)
        + oauth_flows(local_api, microsoft, google)
        + org_flows(google)
        + agent_flows(local_api, imap_body, smtp)
    )
    return {flow.name: flow for flow in every}


FLOW_NAMES = [
    "save a new connection",
    "save a new password",
    "test a connection",
    "authorize (Microsoft)",
    "callback (Microsoft)",
    "callback (Google)",
    "refresh (Microsoft)",
    "disconnect (Google)",
    "register a shared app",
    "rotate its secret",
    "delete a shared app",
    "save a client-org policy",
    "delete a client org",
    "register an agent",
    "remove an agent",
    "send under a policy",
]


def _answer(response: ApiResponse) -> str:
    if response.headers.get("Content-Type", "").startswith("text/html"):
        result = posted(response)[0]
        code = result["error"]["code"] if result["error"] else result["status"]
        return f"{response.status} page {code}"
    if response.status >= 400:
        return f"{response.status} {response.error['code']}"
    return str(response.status)


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_a_failing_aws_call_leaves_whole_state(
    name: str, flows: dict[str, Flow], local_api: Any, aws_calls: AwsCalls
) -> None:
    flow = flows[name]

    def fresh() -> Run:
        run = Run(make_org(local_api))
        flow.prepare(run)
        return run

    healthy = fresh()
    old, old_trail = flow.state(healthy), flow.with_trail(healthy)
    with aws_calls.recording() as calls:
        assert flow.ok(flow.request(healthy))
    new, new_trail = flow.state(healthy), flow.with_trail(healthy)
    assert new != old, "the flow must change something"
    steps: list[AwsCall] = list(calls)
    assert steps

    for index, call in enumerate(steps):
        for fault in FAULTS:
            if fault == "lost_response" and not call.writes:
                continue  # a read that is lost is a read that failed
            run = fresh()
            with aws_calls.failing(index, fault):
                response = flow.request(run)
            state = flow.state(run)
            answer = _answer(response)
            where = f"{name}, {call} failing ({fault})"
            if flow.ok(response):
                assert state == new, f"{where}: succeeded without the new state"
            elif answer == "400 page state_invalid":
                # The state was taken (single use) and the answer lost: the page says to
                # click Authorize again, which the retry does.
                assert (call.operation, fault) == ("DeleteItem", "lost_response"), where
            elif flow.holds_key and answer == "409 request_in_progress":
                # The idempotency record was written and its answer lost: the key stays
                # held until the record's time runs out, and nothing was sent.
                assert (call.operation, fault) == ("PutItem", "lost_response"), where
                assert response.headers["Retry-After"], where
            else:
                # Retryable, and says so: a hint (JSON or page) and, for JSON, Retry-After.
                assert response.status == 503, f"{where}: answered {answer}"
                if response.headers.get("Content-Type", "").startswith("text/html"):
                    assert '<p class="hint">' in response.text, where
                else:
                    assert response.error["hint"] and response.headers["Retry-After"], where
            assert state in (old, new), f"{where}: state {state} is neither old nor new"
            trail = flow.with_trail(run)
            assert trail in (old_trail, new_trail), f"{where}: change and entry apart: {trail}"
            assert not _dangling(run, flow), f"{where}: a record points at a missing secret"
            left = _orphans(run, flow)
            retried = flow.retry(run)
            held = flow.holds_key and _answer(retried) == "409 request_in_progress"
            assert flow.ok(retried) or held, f"{where}: the retry answered {_answer(retried)}"
            # Done once, whatever failed on the way: never twice, never half (a key still
            # held may or may not have sent: its record's write, or its answer, was lost).
            expected = (old, new) if held else (new,)
            assert flow.state(run) in expected, f"{where}: after the retry"
            assert not _orphans(run, flow), f"{where}: secrets left: {_orphans(run, flow)}"
            if flow.connected_after:
                # No lost refresh token, no broken record: the connection still works.
                assert run.agent is not None
                assert run.agent.test()["ok"] is True, f"{where}: the connection broke"
            after = "old" if state == old else "new"
            _TABLE.append(
                f"{name:<24} {index + 1:>4} {call!s:<36} {fault:<13} {answer:<26} "
                f"{after}, {len(left)} left for the retry, retry ok"
            )


def test_keys_left_unprocessed_never_read_as_absent(
    org: Org, imap_body: Body, aws_calls: AwsCalls
) -> None:
    """DynamoDB may answer a batch read, under throttling, with keys it did not process.
    Read as "no such item", a client organization's policy would be skipped: an address
    outside its domain would be saved."""
    from support import register_agent

    policy = {"name": "Acme", "email_domain": "acme.example"}
    assert org.client.put("/bridge/client-orgs/acme/email-policy", policy).status == 200
    agent = register_agent(org.org_id, client_org_id="acme")
    path = f"/bridge/agents/{agent}/email-config"
    outside = imap_body(email="someone@elsewhere.example")
    assert org.client.put(path, outside).error["field"] == "email"  # the policy, healthy

    with aws_calls.unprocessing():
        refused = org.client.put(path, outside)
    assert (refused.status, refused.error["code"]) == (503, "storage_unavailable")
    assert org.client.get(path).json()["config"] is None
