"""New mail from Microsoft 365: a sign-in subscribes to the inbox's new messages (Graph's
validation request answered by the public notification route), each change notification
queues a look, the look's delta query finds what is new, and each message becomes one event
with the mail API's id. Lifecycle notifications renew, recreate or resync; a lost delta
state resyncs; a disconnect deletes the subscription. Real parts: the fake Microsoft (which
validates, notifies and keeps delta state as Graph does), moto, the functions as the local
run runs them."""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from aws_calls import AwsCalls
from mailbridge_tools.sandbox import FakeMicrosoft
from mailbridge_tools.sandbox.identity.graph_changes import GraphSubscription
from support import MS_ACCOUNT, MailAgent, Mailbox, OAuthAgent, age_tokens

ROUTE = "/api/engine/push/microsoft"
ROUND = ("NewMailDispatchFunction", "PollMicrosoft")


@pytest.fixture(scope="module")
def aws_calls(local_api: Any) -> AwsCalls:
    from mailbridge.storage.aws import dynamodb

    return AwsCalls([dynamodb()])


@pytest.fixture(autouse=True)
def quiet_queue(local_api: Any) -> Iterator[None]:
    """Each test starts with what earlier ones queued delivered, and sees only its own."""
    local_api.process_queue()
    yield


@dataclass
class Connected:
    agent: OAuthAgent
    mail: MailAgent  # its runtime, reading the mailbox through the mail API
    subscription: GraphSubscription  # at the fake, as Graph keeps it

    @property
    def agent_id(self) -> str:
        return self.agent.org.agent_id


def _connect(agent: OAuthAgent, local_api: Any, microsoft: FakeMicrosoft) -> Connected:
    """Signs in, then runs what the sign-in queued: the first look, which subscribes."""
    page = agent.connect()
    assert page.status == 200 and '"status": "connected"' in page.text, page.text
    local_api.process_queue()
    (subscription,) = microsoft.subscriptions_of(MS_ACCOUNT)
    mail = MailAgent(local_api, agent.org, Mailbox(MS_ACCOUNT, ""), deliver=lambda *_, **__: None)
    return Connected(agent, mail, subscription)


@pytest.fixture
def connected(microsoft_agent: OAuthAgent, local_api: Any, microsoft: FakeMicrosoft) -> Connected:
    return _connect(microsoft_agent, local_api, microsoft)


def _raw(subject: str) -> bytes:
    return (
        f"From: Alice <alice@example.net>\r\nTo: {MS_ACCOUNT}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\n"
        "Date: Mon, 30 Nov 2026 09:00:00 +0000\r\n\r\nHello there.\r\n"
    ).encode()


def _events_of(local_api: Any, agent_id: str) -> list[dict[str, Any]]:
    return [e["detail"] for e in local_api.mail_events() if e["detail"]["agent_id"] == agent_id]


def _subjects(local_api: Any, agent_id: str) -> list[str]:
    return sorted(event["subject"] for event in _events_of(local_api, agent_id))


def _feed(agent_id: str) -> Any:
    from mailbridge.storage.newmail import DynamoFeedStore

    return DynamoFeedStore().get(agent_id)


def _post(local_api: Any, body: Any, *, query: str = "", raw: bytes | None = None) -> Any:
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(
        f"{local_api.url}{ROUTE}{query}",
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def _notification(subscription: GraphSubscription, **changes: Any) -> dict[str, Any]:
    return {
        "subscriptionId": subscription.id,
        "changeType": "created",
        "clientState": subscription.client_state,
        "resource": "Users/x/Messages/y",
    } | changes


def _deliveries(microsoft: FakeMicrosoft, kind: str, subscription_id: str) -> list[Any]:
    return [
        d for d in microsoft.deliveries if d.kind == kind and d.subscription_id == subscription_id
    ]


# ---- subscribing -----------------------------------------------------------------------


def test_a_sign_in_subscribes_through_graphs_validation_of_the_route(
    connected: Connected, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    subscription = connected.subscription
    assert subscription.notification_url == subscription.lifecycle_url == local_api.url + ROUTE
    assert subscription.change_types == {"created"}
    assert subscription.folder == "inbox" and subscription.immutable_ids
    left = subscription.expires_at - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=48) < left < datetime.timedelta(minutes=4230)
    # Graph created it only once the route echoed its validation token, as text/plain.
    validations = [d for d in microsoft.deliveries if d.kind == "validation"]
    assert validations and validations[-1].url.startswith(local_api.url + ROUTE)
    assert validations[-1].status == 200
    # The feed keeps the secret's hash, never the secret; the route finds the agent by it.
    assert subscription.client_state is not None and len(subscription.client_state) <= 128
    feed = _feed(connected.agent_id)
    assert feed.subscription.id == subscription.id
    expected = hashlib.sha256(subscription.client_state.encode()).hexdigest()
    assert feed.subscription.client_state_sha256 == expected
    assert subscription.client_state not in json.dumps(feed.model_dump(mode="json"))


def test_the_validation_request_gets_its_token_back_exactly_and_nothing_else(
    local_api: Any,
) -> None:
    token = "Validation: Testing reachability 100% + café & more=1 Request-Id: 6ff2a2a3"
    answer = requests.post(
        f"{local_api.url}{ROUTE}",
        params={"validationToken": token},
        headers={"Content-Type": "text/plain; charset=utf-8"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.content.decode() == token  # decoded once, echoed as is
    # A validation request carries no body; and a token is not a novel.
    with_body = _post(local_api, {"value": []}, query="?validationToken=abc")
    too_long = _post(local_api, None, query="?validationToken=" + "a" * 1025, raw=b"")
    for refused in (with_body, too_long):
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "notification_invalid"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"value": []}',
        b'{"value": [{"clientState": "x"}]}',
        b'{"value": [{"subscriptionId": 42}]}',
        b'{"value": "everything"}',
        b"[]",
    ],
)
def test_what_is_not_graphs_notifications_is_refused_with_400(local_api: Any, body: bytes) -> None:
    answer = _post(local_api, None, raw=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] in {"invalid_json", "notification_invalid"}
    assert local_api.process_queue() == 0


def test_the_fake_graph_refuses_what_graph_refuses(
    microsoft_agent: OAuthAgent, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    """A subscription needs Mail.Read, a lifetime Graph allows, and notification URLs that
    answer the validation request (a route that does not echo the token does not)."""
    graph = f"{microsoft.base_url}/v1.0/subscriptions"
    reader = microsoft.issue_token(MS_ACCOUNT, ["Mail.Read"])
    sender = microsoft.issue_token(MS_ACCOUNT, ["Mail.Send"])
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    too_late = soon + datetime.timedelta(days=3)
    good = {
        "changeType": "created",
        "resource": "me/mailFolders('inbox')/messages",
        "notificationUrl": local_api.url + ROUTE,
        "expirationDateTime": soon.isoformat(),
        "clientState": "a-secret",
    }
    cases = [
        (sender, good, 403),
        (reader, good | {"notificationUrl": local_api.url + "/bridge/email-presets"}, 400),
        (reader, good | {"expirationDateTime": too_late.isoformat()}, 400),
        (reader, good | {"notificationUrl": "http://example.com/hook"}, 400),
        (reader, good | {"clientState": "x" * 129}, 400),
    ]
    for token, body, status in cases:
        answer = requests.post(
            graph, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=20
        )
        assert answer.status_code == status, (body, answer.text)
    created = requests.post(
        graph, json=good, headers={"Authorization": f"Bearer {reader}"}, timeout=20
    )
    assert created.status_code == 201, created.text
    # Renewed within the limit, unknown ones 404.
    path = f"{graph}/{created.json()['id']}"
    auth = {"Authorization": f"Bearer {reader}"}
    later = {"expirationDateTime": soon.isoformat()}
    renewed = requests.patch(path, json=later, headers=auth, timeout=10)
    assert renewed.status_code == 200
    assert requests.delete(path, headers=auth, timeout=10).status_code == 204
    assert requests.delete(path, headers=auth, timeout=10).status_code == 404


# ---- notifications -----------------------------------------------------------------------


def test_a_new_message_is_one_event_with_the_mail_apis_id_and_old_mail_none(
    microsoft_agent: OAuthAgent, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    # There before the sign-in (a minute before: Graph's received times are to the second).
    a_minute_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    microsoft.deliver(MS_ACCOUNT, _raw("There before"), received_at=a_minute_ago)
    connected = _connect(microsoft_agent, local_api, microsoft)
    assert _events_of(local_api, connected.agent_id) == []

    microsoft.deliver(MS_ACCOUNT, _raw("News"))
    (notified,) = _deliveries(microsoft, "created", connected.subscription.id)
    assert notified.status == 202
    assert local_api.process_queue() == 1
    (event,) = _events_of(local_api, connected.agent_id)
    listed = connected.mail.runtime.get(connected.mail.messages_path(limit=10)).json()
    news = next(m for m in listed["messages"] if m["subject"] == "News")
    assert event["message_id"] == news["id"]  # read or reply with it
    assert event["thread_id"] == news["thread_id"]
    assert event["sender"] == {"address": "alice@example.net", "name": "Alice"}
    assert event["received_at"] == news["received_at"]
    read = connected.mail.runtime.get(connected.mail.message_path(event["message_id"]))
    assert read.status == 200

    # Reading it, a round, another look: no news, no second event.
    connected.mail.runtime.request("PATCH", connected.mail.message_path(news["id"]), {"read": True})
    local_api.run_schedule(*ROUND)
    local_api.process_queue()
    assert _subjects(local_api, connected.agent_id) == ["News"]


def test_a_notification_and_a_renewal_racing_for_one_message_announce_it_once(
    connected: Connected, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    from mailbridge.newmail.models import SyncReason, SyncRequest
    from mailbridge.newmail.service import FeedStores, look_for_new_mail
    from mailbridge.storage.agents import DynamoAgentStore
    from mailbridge.storage.newmail import DynamoFeedStore, EventBridgeBus, SqsSyncQueue
    from mailbridge.storage.orgs import DynamoOrgStore
    from mailbridge.storage.secrets import SecretsManagerStore

    before = connected.subscription.expires_at
    microsoft.deliver(MS_ACCOUNT, _raw("Raced"))  # its notification queues a look
    local_api.run_schedule(*ROUND)  # and the round queues a look
    local_api.process_queue()
    assert _subjects(local_api, connected.agent_id) == ["Raced"]

    # The same race, truly at once: a renewal and two notified looks in parallel.
    microsoft.deliver(MS_ACCOUNT, _raw("Raced again"))
    local_api.process_queue()
    microsoft.deliver(MS_ACCOUNT, _raw("Raced a third time"))
    stores = FeedStores(
        DynamoAgentStore(),
        SecretsManagerStore(),
        DynamoOrgStore(),
        DynamoFeedStore(),
        EventBridgeBus(),
        SqsSyncQueue(),
    )
    reasons = [SyncReason.RENEW, SyncReason.NOTIFIED, SyncReason.NOTIFIED]
    requests_ = [SyncRequest(agent_id=connected.agent_id, reason=r) for r in reasons]
    with local_api.acting_as("NewMailWorkerFunction"), ThreadPoolExecutor(3) as pool:
        announced = list(pool.map(lambda request: look_for_new_mail(stores, request), requests_))
    local_api.process_queue()  # the notification's own look: nothing left
    assert sum(announced) == 1
    assert _subjects(local_api, connected.agent_id) == [
        "Raced",
        "Raced a third time",
        "Raced again",
    ]
    # Renewed, not replaced.
    (subscription,) = microsoft.subscriptions_of(MS_ACCOUNT)
    assert subscription.id == connected.subscription.id and subscription.expires_at >= before
    assert ("PATCH", f"/v1.0/subscriptions/{subscription.id}") in microsoft.requests


def test_a_notification_without_the_subscriptions_client_state_queues_nothing(
    connected: Connected, local_api: Any, logs: list[str]
) -> None:
    subscription = connected.subscription
    forged = "forged-" + uuid.uuid4().hex
    for body in (
        {"value": [_notification(subscription, clientState=forged)]},
        {"value": [_notification(subscription, clientState=None)]},
        {"value": [_notification(subscription, subscriptionId=str(uuid.uuid4()))]},
        {"value": [_notification(subscription, clientState=forged, lifecycleEvent="missed")]},
    ):
        answer = _post(local_api, body)
        assert answer.status_code == 202, answer.text
    assert local_api.process_queue() == 0
    assert any("clientState does not match" in line for line in logs)
    assert not any(forged in line for line in logs)  # dropped, and logged without it
    # The real one, twice in a batch: one look.
    both = [_notification(subscription), _notification(subscription)]
    assert _post(local_api, {"value": both}).status_code == 202
    assert local_api.process_queue() == 1


def test_a_request_costs_one_lookup_per_subscription_and_at_most_a_few(
    connected: Connected, local_api: Any, aws_calls: AwsCalls, logs: list[str]
) -> None:
    """The route is public: what a stranger posts must not cost a read per line of it."""
    from mailbridge.newmail.graph_notifications import MAX_SUBSCRIPTIONS

    subscription = connected.subscription
    # Guesses at a real subscription's clientState, the real one among them: its agents and
    # its feed are read once, and the real one still queues its look.
    guesses = [_notification(subscription, clientState=f"guess-{n}") for n in range(999)]
    with aws_calls.recording() as calls:
        answer = _post(local_api, {"value": [*guesses, _notification(subscription)]})
    assert answer.status_code == 202, answer.text
    assert [str(call) for call in calls] == ["dynamodb.Query", "dynamodb.GetItem"]
    assert local_api.process_queue() == 1
    # Made-up subscription ids: a lookup each, up to the bound; the rest are dropped unread.
    strangers = [
        _notification(subscription, subscriptionId=str(uuid.uuid4()), clientState="x")
        for _ in range(1000)
    ]
    with aws_calls.recording() as calls:
        assert _post(local_api, {"value": strangers}).status_code == 202
    assert [str(call) for call in calls] == ["dynamodb.Query"] * MAX_SUBSCRIPTIONS
    assert any("too many subscriptions" in line for line in logs)
    # What can name none of ours (no clientState, not a GUID) costs no read at all.
    nameless = [_notification(subscription, clientState=None)] * 500 + [
        _notification(subscription, subscriptionId=f"not-a-guid-{n}") for n in range(500)
    ]
    with aws_calls.recording() as calls:
        assert _post(local_api, {"value": nameless}).status_code == 202
    assert calls == []
    assert local_api.process_queue() == 0


# ---- lifecycle notifications ---------------------------------------------------------------


def test_reauthorization_required_renews_the_subscription(
    connected: Connected, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    renewed_before = _feed(connected.agent_id).subscription.renewed_at
    renewal = ("PATCH", f"/v1.0/subscriptions/{connected.subscription.id}")
    assert renewal not in microsoft.requests
    delivery = microsoft.send_lifecycle_notification(
        connected.subscription.id, "reauthorizationRequired"
    )
    assert delivery.status == 202
    local_api.process_queue()
    (subscription,) = microsoft.subscriptions_of(MS_ACCOUNT)
    assert subscription.id == connected.subscription.id
    assert renewal in microsoft.requests  # renewing reauthorizes too
    assert _feed(connected.agent_id).subscription.renewed_at > renewed_before


def test_subscription_removed_makes_a_new_one_that_notifies(
    connected: Connected, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    old = connected.subscription
    assert microsoft.send_lifecycle_notification(old.id, "subscriptionRemoved").status == 202
    local_api.process_queue()
    (new,) = microsoft.subscriptions_of(MS_ACCOUNT)
    assert new.id != old.id and new.client_state != old.client_state
    assert _feed(connected.agent_id).subscription.id == new.id
    # The old one's notifications (still in flight at Graph) find no agent now.
    assert _post(local_api, {"value": [_notification(old)]}).status_code == 202
    assert local_api.process_queue() == 0
    microsoft.deliver(MS_ACCOUNT, _raw("Through the new one"))
    assert local_api.process_queue() == 1
    assert _subjects(local_api, connected.agent_id) == ["Through the new one"]


def test_a_new_subscription_is_kept_when_another_look_moves_the_feed_meanwhile(
    connected: Connected, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    """Graph dropped the subscription; the look that makes a new one loses the feed's
    version to a look that announced a message meanwhile. The new subscription is recorded
    all the same (over the other look's position), not stopped and forgotten."""
    from aws_calls import AwsCalls
    from mailbridge.newmail.models import SyncReason, SyncRequest
    from mailbridge.newmail.service import FeedStores, look_for_new_mail
    from mailbridge.storage.agents import DynamoAgentStore
    from mailbridge.storage.aws import dynamodb
    from mailbridge.storage.newmail import DynamoFeedStore, EventBridgeBus, SqsSyncQueue
    from mailbridge.storage.orgs import DynamoOrgStore
    from mailbridge.storage.secrets import SecretsManagerStore

    old = connected.subscription
    assert microsoft.send_lifecycle_notification(old.id, "subscriptionRemoved").status == 202
    microsoft.deliver(MS_ACCOUNT, _raw("Meanwhile"))  # its notification: no agent has it yet
    stores = FeedStores(
        DynamoAgentStore(),
        SecretsManagerStore(),
        DynamoOrgStore(),
        DynamoFeedStore(),
        EventBridgeBus(),
        SqsSyncQueue(),
    )
    other = SyncRequest(agent_id=connected.agent_id, reason=SyncReason.NOTIFIED)
    # The renewal's first write is the new subscription's route: the other look runs then
    # (within the renewal's invocation: as the worker).
    with AwsCalls([dynamodb()]).before("PutItem", lambda: look_for_new_mail(stores, other)):
        local_api.process_queue()
    (live,) = microsoft.subscriptions_of(MS_ACCOUNT)
    feed = _feed(connected.agent_id)
    assert live.id != old.id and feed.subscription.id == live.id
    assert _subjects(local_api, connected.agent_id) == ["Meanwhile"]
    microsoft.deliver(MS_ACCOUNT, _raw("Through it"))
    assert local_api.process_queue() == 1
    assert _subjects(local_api, connected.agent_id) == ["Meanwhile", "Through it"]


def _unreachable(subscription: GraphSubscription) -> Iterator[None]:
    """Graph cannot deliver this subscription's change notifications meanwhile."""
    url = subscription.notification_url
    subscription.notification_url = "http://127.0.0.1:9/unreachable"
    try:
        yield
    finally:
        subscription.notification_url = url


def test_missed_notifications_resync_by_delta_without_gap_or_duplicate(
    connected: Connected, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    microsoft.deliver(MS_ACCOUNT, _raw("Notified"))
    local_api.process_queue()
    # More than one look takes (50), none notified.
    lost = iter(_unreachable(connected.subscription))
    next(lost)
    for number in range(55):
        microsoft.deliver(MS_ACCOUNT, _raw(f"Missed {number:02}"))
    next(lost, None)
    assert local_api.process_queue() == 0
    assert microsoft.send_lifecycle_notification(connected.subscription.id, "missed").status == 202
    local_api.process_queue()
    microsoft.deliver(MS_ACCOUNT, _raw("After"))
    local_api.process_queue()
    expected = sorted(["Notified", "After", *(f"Missed {n:02}" for n in range(55))])
    assert _subjects(local_api, connected.agent_id) == expected


def test_a_delta_state_graph_lost_resyncs_without_gap_or_duplicate(
    connected: Connected, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    microsoft.deliver(MS_ACCOUNT, _raw("Before the loss"))
    local_api.process_queue()
    microsoft.expire_delta_tokens(MS_ACCOUNT)
    before = len(microsoft.mail_requests)
    microsoft.deliver(MS_ACCOUNT, _raw("After the loss"))
    local_api.process_queue()
    assert _subjects(local_api, connected.agent_id) == ["After the loss", "Before the loss"]
    deltas = [r.path for r in microsoft.mail_requests[before:] if r.path.endswith("/delta")]
    assert len(deltas) == 2  # the refused link (410), then a new round
    # And it goes on from the new round.
    microsoft.deliver(MS_ACCOUNT, _raw("Later"))
    local_api.process_queue()
    assert _subjects(local_api, connected.agent_id) == [
        "After the loss",
        "Before the loss",
        "Later",
    ]


def test_an_unchanged_inbox_costs_one_delta_request(
    connected: Connected, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    _post(local_api, {"value": [_notification(connected.subscription)]})
    before = len(microsoft.mail_requests)
    local_api.process_queue()
    (delta,) = microsoft.mail_requests[before:]
    assert (delta.method, delta.immutable_ids) == ("GET", True)
    assert delta.path.endswith("/messages/delta")


# ---- disconnecting ------------------------------------------------------------------------


def test_a_disconnect_deletes_the_subscription_and_its_notifications_find_no_agent(
    connected: Connected, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    subscription = connected.subscription
    assert connected.agent.org.client.delete(connected.agent.path).status == 200
    assert microsoft.subscriptions_of(MS_ACCOUNT) == []
    assert ("DELETE", f"/v1.0/subscriptions/{subscription.id}") in microsoft.requests
    assert _post(local_api, {"value": [_notification(subscription)]}).status_code == 202
    assert local_api.process_queue() == 0
    assert _events_of(local_api, connected.agent_id) == []


# ---- keeping the grant alive -----------------------------------------------------------------


def test_the_catch_up_round_keeps_an_idle_grant_alive_and_tells_a_dead_one(
    connected: Connected, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    """A grant is refreshed at least hourly while the agent is connected, whatever the agent
    does: the round's look takes a fresh access token through the one refresh path, keeping
    rotated tokens, long inside Microsoft's 90 idle days. One the provider ended turns the
    agent to Error with the fix, without anyone clicking Test."""
    from mailbridge.storage.agents import DynamoAgentStore

    def stored_tokens() -> Any:
        _, config = DynamoAgentStore().load(connected.agent_id)
        assert config is not None and config.tokens is not None
        return config

    before, refreshes = stored_tokens().tokens, microsoft.refresh_count
    age_tokens(connected.agent_id)  # its access token expires: the agent idle an hour
    aged = stored_tokens().tokens
    local_api.run_schedule(*ROUND)
    local_api.process_queue()
    assert microsoft.refresh_count == refreshes + 1
    kept = stored_tokens()
    assert kept.tokens.version not in (before.version, aged.version)  # the rotated ones
    assert kept.status == "connected"

    age_tokens(connected.agent_id)
    microsoft.refuse_next_token(65001)  # an administrator removed the app's consent
    local_api.run_schedule(*ROUND)
    local_api.process_queue()
    ended = connected.agent.get()
    assert (ended["status"], ended["last_error"]["code"]) == ("error", "reauthorization_required")
    assert ended["last_error"]["during"] == "reading"
    assert "Re-authorize" in ended["last_error"]["hint"]
