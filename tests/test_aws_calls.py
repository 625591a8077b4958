"""AWS calls per request, counted through botocore's event hooks (issue 7: every AWS call is
latency and money). The budgets:
- GET email-config: at most two DynamoDB round trips (the agent with its config, then the
  shared apps with the client organization) and no Secrets Manager call;
- PUT email-config: at most one Secrets Manager write and one DynamoDB write;
- POST .../test: at most one Secrets Manager read, plus one write when a token was
  refreshed; a warm instance reads no secret version it has read before.
The mail routes are held to the same: a read of the agent, one of its secret on a new
instance, and for a send its idempotency record (written, then completed) and a counter
write per limit of the client organization's policy. A new-mail look at an unchanged inbox
reads the agent and its feed and writes nothing; a new message costs its claim, its event,
its note and the feed's move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aws_calls import AwsCall, AwsCalls
from mailbridge_tools.sandbox import FakeGoogle
from support import (
    CALLBACK,
    REPORTS,
    MailAgent,
    OAuthAgent,
    Org,
    age_tokens,
    make_org,
    register_agent,
)

Body = Callable[..., dict[str, Any]]
_SECRET_READS = {"GetSecretValue", "BatchGetSecretValue"}
_FIGURES: list[str] = []


@pytest.fixture(scope="module")
def aws_calls(local_api: Any) -> AwsCalls:
    from mailbridge.storage.aws import dynamodb, events, secretsmanager, sqs

    return AwsCalls([dynamodb(), secretsmanager(), events(), sqs()])


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    REPORTS["AWS calls per request"] = [f"{'request':<56} calls", *_FIGURES]


@pytest.fixture
def cold() -> Callable[[], None]:
    """Forget the secret values this process has read: a new Lambda instance."""
    from mailbridge.storage import secrets

    return secrets._values.clear


def counted(aws_calls: AwsCalls, label: str, request: Callable[[], Any]) -> list[AwsCall]:
    with aws_calls.recording() as calls:
        request()
    made = list(calls)
    _FIGURES.append(f"{label:<56} {', '.join(str(call) for call in made) or 'none'}")
    return made


def dynamodb(calls: list[AwsCall]) -> list[AwsCall]:
    return [call for call in calls if call.service == "dynamodb"]


def secrets(calls: list[AwsCall], *, writes: bool) -> list[AwsCall]:
    return [
        call
        for call in calls
        if call.service == "secretsmanager"
        and (call.writes if writes else call.operation in _SECRET_READS)
    ]


@pytest.fixture
def shared_google_app(org: Org, local_api: Any, google: FakeGoogle) -> str:
    """The organization's Google app, with a client organization holding a policy."""
    client_id = "shared.apps.googleusercontent.com"
    google.register_app(client_id, "shared-secret", [local_api.url + CALLBACK])
    body = {"client_id": client_id, "client_secret": "shared-secret"}
    assert org.client.put(f"/bridge/orgs/{org.org_id}/email-oauth-apps/google", body).status == 200
    policy = {"name": "Acme", "email_domain": "workspace.example"}
    assert org.client.put("/bridge/client-orgs/acme/email-policy", policy).status == 200
    return client_id


def test_reading_a_config_costs_two_dynamodb_round_trips(
    org: Org, imap_body: Body, aws_calls: AwsCalls, shared_google_app: str
) -> None:
    assert org.client.put(org.config_path, imap_body()).status == 200
    inside_client_org = register_agent(org.org_id, client_org_id="acme")
    path = f"/bridge/agents/{inside_client_org}/email-config"
    assert org.client.put(path, {"provider": "google"}).status == 200
    for label, target in (("GET, IMAP", org.config_path), ("GET, client org, shared app", path)):
        calls = counted(aws_calls, label, lambda target=target: org.client.get(target))
        assert [call.operation for call in dynamodb(calls)] == ["Query", "BatchGetItem"]
        assert not [call for call in calls if call.service == "secretsmanager"]


def test_saving_writes_once_to_each_store(
    org: Org, imap_body: Body, aws_calls: AwsCalls, local_api: Any, google: FakeGoogle
) -> None:
    oauth = OAuthAgent(make_org(local_api), local_api, google)
    saves = [
        ("PUT, a new IMAP connection", org, imap_body()),
        ("PUT, a new password", org, imap_body(password="another-password")),
        ("PUT, the same settings", org, imap_body(password=None)),
        ("PUT, a new Google app", oauth.org, oauth.body()),
    ]
    for label, owner, body in saves:
        calls = counted(aws_calls, label, lambda o=owner, b=body: o.client.put(o.config_path, b))
        assert len(secrets(calls, writes=True)) <= 1, calls
        assert len([call for call in dynamodb(calls) if call.writes]) == 1, calls
        assert not secrets(calls, writes=False), calls


def test_a_connection_test_reads_one_secret_at_most(
    org: Org, imap_body: Body, aws_calls: AwsCalls, cold: Callable[[], None]
) -> None:
    assert org.client.put(org.config_path, imap_body()).status == 200
    cold()

    def test() -> Any:
        return org.client.post(org.config_path + "/test")

    first = counted(aws_calls, "test, IMAP, a new instance", test)
    assert [call.operation for call in secrets(first, writes=False)] == ["GetSecretValue"]
    again = counted(aws_calls, "test, IMAP, the same instance", test)
    assert not [call for call in again if call.service == "secretsmanager"]


@pytest.mark.parametrize("app", ["own", "shared"])
def test_an_oauth_test_reads_one_secret_and_writes_only_a_refreshed_token(
    app: str,
    org: Org,
    local_api: Any,
    google: FakeGoogle,
    aws_calls: AwsCalls,
    cold: Callable[[], None],
    request: pytest.FixtureRequest,
) -> None:
    agent = OAuthAgent(org, local_api, google)
    google.add_account("agent@workspace.example", inbox_total=3, inbox_unread=1)
    if app == "shared":
        request.getfixturevalue("shared_google_app")
        assert org.client.put(org.config_path, {"provider": "google"}).status == 200
        page = agent.callback(agent.sign_in(agent.authorization_url()))
    else:
        page = agent.connect()
    assert '"status": "connected"' in page.text
    test = agent.test

    cold()
    calls = counted(aws_calls, f"test, Google ({app} app), a new instance", test)
    assert [call.operation for call in secrets(calls, writes=False)] == ["GetSecretValue"]
    assert not secrets(calls, writes=True)

    age_tokens(org.agent_id)
    cold()
    calls = counted(aws_calls, f"test, Google ({app} app), a refresh, a new instance", test)
    # The tokens and the app's secret in one call, the refreshed tokens in one write.
    assert [call.operation for call in secrets(calls, writes=False)] == ["BatchGetSecretValue"]
    assert [call.operation for call in secrets(calls, writes=True)] == ["PutSecretValue"]

    age_tokens(org.agent_id)
    calls = counted(aws_calls, f"test, Google ({app} app), a refresh, the same instance", test)
    # The app's secret version was read before: only the new tokens.
    assert [call.operation for call in secrets(calls, writes=False)] == ["GetSecretValue"]
    assert [call.operation for call in secrets(calls, writes=True)] == ["PutSecretValue"]


def test_the_mail_routes_read_the_agent_once_and_its_secret_once_per_instance(
    imap_agent: MailAgent, aws_calls: AwsCalls, cold: Callable[[], None]
) -> None:
    imap_agent.deliver(b"From: a@example.net\r\nSubject: Hi\r\n\r\nHello.\r\n")
    # Connected already: a use that changes no status writes nothing.
    assert imap_agent.org.client.post(imap_agent.org.config_path + "/test").json()["ok"]
    cold()

    def page() -> Any:
        return imap_agent.runtime.get(imap_agent.messages_path(limit=10))

    first = counted(aws_calls, "list messages, IMAP, a new instance", page)
    assert [str(call) for call in first] == ["dynamodb.Query", "secretsmanager.GetSecretValue"]
    again = counted(aws_calls, "list messages, IMAP, the same instance", page)
    assert [str(call) for call in again] == ["dynamodb.Query"]

    message = {"to": ["someone@example.org"], "subject": "Hi", "text": "Hello."}
    sent = counted(
        aws_calls, "send, IMAP, the secret read before", lambda: imap_agent.send(message, key="k")
    )
    # The agent (who may send is checked first), the key's record, the shared apps and client
    # organization, the record completed (and with a policy, one counter write per limit).
    operations = [str(call) for call in sent]
    assert operations == [
        "dynamodb.Query",
        "dynamodb.PutItem",
        "dynamodb.BatchGetItem",
        "dynamodb.UpdateItem",
    ], operations
    retried = counted(
        aws_calls, "send, the same key again", lambda: imap_agent.send(message, key="k")
    )
    # The agent, then the key's conditional put, which fails and hands back the stored result.
    assert [str(call) for call in retried] == ["dynamodb.Query", "dynamodb.PutItem"]


def test_a_look_for_new_mail_writes_only_when_there_is_news(
    local_api: Any, imap_agent: MailAgent, aws_calls: AwsCalls
) -> None:
    from mailbridge.newmail.models import SyncReason, SyncRequest
    from mailbridge.storage.newmail import SqsSyncQueue

    assert imap_agent.org.client.post(imap_agent.org.config_path + "/test").json()["ok"]
    request = SyncRequest(agent_id=imap_agent.agent_id, reason=SyncReason.POLL)

    def look() -> None:
        SqsSyncQueue().send([request])
        local_api.process_queue()

    look()  # its first: where the inbox is
    unchanged = counted(aws_calls, "new mail: a look, nothing new", look)
    assert [str(call) for call in unchanged if call.service != "sqs"] == [
        "dynamodb.Query",  # the agent and its config
        "dynamodb.GetItem",  # its feed
    ]
    imap_agent.deliver(b"From: a@example.net\r\nSubject: News\r\n\r\nHello.\r\n")
    news = counted(aws_calls, "new mail: a look, one new message", look)
    assert [str(call) for call in news if call.service != "sqs"] == [
        "dynamodb.Query",
        "dynamodb.GetItem",
        "dynamodb.PutItem",  # the message claimed
        "events.PutEvents",
        "dynamodb.UpdateItem",  # ...and noted as announced
        "dynamodb.PutItem",  # the feed moved past it
    ]
