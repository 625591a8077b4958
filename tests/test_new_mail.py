"""New mail as events, over IMAP: the scheduler's round queues the connected mailboxes, the
worker looks at each from where its feed left off, and each new message becomes one event
on the bus, with the mail API's ids. Real parts throughout: Dovecot receiving mail, moto's
SQS, EventBridge and DynamoDB, the functions as the local run runs them."""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_calls import AwsCalls
from mailbridge_tools.sandbox import DovecotServer
from support import ApiClient, MailAgent, Org, alice_says

POLL = ("NewMailDispatchFunction", "PollImap")


@pytest.fixture(scope="module")
def aws_calls(local_api: Any) -> AwsCalls:
    from mailbridge.storage.aws import dynamodb, events, secretsmanager, sqs

    return AwsCalls([dynamodb(), secretsmanager(), events(), sqs()])


@pytest.fixture(autouse=True)
def quiet_queue(local_api: Any) -> Iterator[None]:
    """Each test starts with what earlier ones queued delivered, and sees only its own."""
    local_api.process_queue()
    yield


def _connect(agent: MailAgent) -> None:
    tested = agent.org.client.post(agent.org.config_path + "/test")
    assert tested.status == 200 and tested.json()["status"] == "connected", tested.text


def _queue(agent: MailAgent) -> None:
    """What the scheduler's round queues for this agent (the round itself would queue every
    IMAP agent of the session: `test_the_round_queues_only_connected_imap_mailboxes`)."""
    from mailbridge.newmail.models import SyncReason, SyncRequest
    from mailbridge.storage.newmail import SqsSyncQueue

    SqsSyncQueue().send([SyncRequest(agent_id=agent.agent_id, reason=SyncReason.POLL)])


def _round(local_api: Any, agent: MailAgent) -> None:
    """A round's look at this agent's mailbox, and the worker until the queue is empty."""
    _queue(agent)
    local_api.process_queue()


def _events_of(local_api: Any, agent: MailAgent) -> list[dict[str, Any]]:
    return [
        event["detail"]
        for event in local_api.mail_events()
        if event["detail"]["agent_id"] == agent.agent_id
    ]


def _listed(agent: MailAgent) -> dict[str, dict[str, Any]]:
    """The inbox as the mail API lists it, by subject."""
    page = agent.runtime.get(agent.messages_path(limit=100))
    assert page.status == 200, page.text
    return {message["subject"]: message for message in page.json()["messages"]}


def _config(agent: MailAgent) -> dict[str, Any]:
    config: dict[str, Any] = agent.org.client.get(agent.org.config_path).json()
    return config


def test_each_new_message_is_one_event_with_the_mail_apis_ids_and_old_mail_none(
    local_api: Any, imap_agent: MailAgent
) -> None:
    imap_agent.deliver(alice_says("There before"))
    time.sleep(1)  # arrival times are whole seconds: the connection's own second is new
    _connect(imap_agent)
    _round(local_api, imap_agent)
    assert _events_of(local_api, imap_agent) == []  # what was there before is not news
    imap_agent.deliver(alice_says("First news"))
    imap_agent.deliver(alice_says("Second news"))
    _round(local_api, imap_agent)
    _round(local_api, imap_agent)  # nothing new: nothing more

    events = _events_of(local_api, imap_agent)
    assert [event["subject"] for event in events] == ["First news", "Second news"]
    listed = _listed(imap_agent)
    for event in events:
        message = listed[event["subject"]]
        assert event["message_id"] == message["id"]  # read or reply with it
        assert event["thread_id"] == message["thread_id"]
        assert event["sender"] == {"address": "alice@example.net", "name": "Alice"}
        assert event["org_id"] == imap_agent.org.org_id
        assert event["client_org_id"] is None
        assert event["received_at"] == message["received_at"]
    assert len({event["event_id"] for event in events}) == 2
    full = next(e for e in local_api.mail_events() if e["detail"] == events[0])
    assert (full["source"], full["detail-type"]) == ("mailbridge", "Mail Received")
    assert _config(imap_agent)["delivery"] == {
        "state": "active",
        "of": None,
        "problem": None,
        "since": None,
        "failures": 0,
    }


def test_more_new_mail_than_one_look_takes_arrives_whole_and_in_order(
    local_api: Any, imap_agent: MailAgent
) -> None:
    from mailbridge.newmail.service import LOOK_LIMIT

    _connect(imap_agent)
    _round(local_api, imap_agent)
    count = LOOK_LIMIT + 7
    for number in range(count):
        imap_agent.deliver(alice_says(f"Bulk {number}"))
    _round(local_api, imap_agent)
    subjects = [event["subject"] for event in _events_of(local_api, imap_agent)]
    assert subjects == [f"Bulk {number}" for number in range(count)]


def _renumber(dovecot: DovecotServer, login: str) -> None:
    """What a server does when it rebuilds a folder: every message gets a new UID under a
    new UIDVALIDITY (Dovecot takes the time for it: a second later, a new one)."""
    maildir = Path(dovecot.root) / "mail" / login / "Maildir"
    time.sleep(1.1)
    for index in [maildir / "dovecot-uidlist", *maildir.glob("dovecot.index*")]:
        index.unlink(missing_ok=True)


def test_a_uidvalidity_change_announces_only_what_arrived_since(
    local_api: Any, imap_agent: MailAgent, dovecot: DovecotServer
) -> None:
    _connect(imap_agent)
    _round(local_api, imap_agent)
    imap_agent.deliver(alice_says("Before the change"))
    _round(local_api, imap_agent)
    old_ids = {event["message_id"] for event in _events_of(local_api, imap_agent)}
    _renumber(dovecot, imap_agent.login)
    imap_agent.deliver(alice_says("After the change"))
    _round(local_api, imap_agent)
    events = _events_of(local_api, imap_agent)
    assert [event["subject"] for event in events] == ["Before the change", "After the change"]
    listed = _listed(imap_agent)
    assert listed["Before the change"]["id"] not in old_ids  # renumbered, and not re-sent
    assert events[1]["message_id"] == listed["After the change"]["id"]


def test_another_mailbox_with_the_same_uids_has_its_own_events(
    local_api: Any,
    imap_agent: MailAgent,
    dovecot: DovecotServer,
    mailbox_factory: Any,
    imap_body: Any,
) -> None:
    _connect(imap_agent)
    _round(local_api, imap_agent)
    imap_agent.deliver(alice_says("To the first"))
    _round(local_api, imap_agent)
    # Another mailbox, whose UIDVALIDITY is the first one's: its first message's id is the
    # id of the first mailbox's first message.
    other = mailbox_factory()
    dovecot.set_uidvalidity(other.login, dovecot.uidvalidity(imap_agent.login))
    body = imap_body(email=other.login, password=other.password)
    assert imap_agent.org.client.put(imap_agent.org.config_path, body).status == 200
    time.sleep(1)  # arrival times are whole seconds: the connection's own second is new
    _connect(imap_agent)
    _round(local_api, imap_agent)
    dovecot.deliver(other.login, alice_says("To the second"))
    _round(local_api, imap_agent)
    events = _events_of(local_api, imap_agent)
    assert [event["subject"] for event in events] == ["To the first", "To the second"]
    assert events[0]["message_id"] == events[1]["message_id"]  # the same UID, then
    assert events[0]["event_id"] != events[1]["event_id"]


def test_a_look_that_dies_before_moving_the_feed_is_repeated_without_a_duplicate(
    local_api: Any, imap_agent: MailAgent, aws_calls: AwsCalls
) -> None:
    _connect(imap_agent)
    _round(local_api, imap_agent)
    imap_agent.deliver(alice_says("Once only"))
    _queue(imap_agent)
    # The feed's move is the look's last write: fail it, as a worker dying there would.
    with aws_calls.recording() as calls:
        local_api.process_queue()
    names = [str(call) for call in calls]
    feed_write = max(i for i, name in enumerate(names) if name == "dynamodb.PutItem")
    assert _events_of(local_api, imap_agent)[-1]["subject"] == "Once only"

    imap_agent.deliver(alice_says("Twice seen"))
    _queue(imap_agent)
    with aws_calls.failing(feed_write, "server_error"):
        local_api.process_queue()  # fails once, and is tried again
    events = _events_of(local_api, imap_agent)
    assert [event["subject"] for event in events] == ["Once only", "Twice seen"]


def test_concurrent_looks_at_one_mailbox_announce_each_message_once(
    local_api: Any, imap_agent: MailAgent
) -> None:
    """A push and a poll, or a redelivery, at the same moment: the claims decide."""
    from mailbridge.newmail.models import SyncReason, SyncRequest
    from mailbridge.newmail.service import FeedStores, look_for_new_mail
    from mailbridge.storage.agents import DynamoAgentStore
    from mailbridge.storage.newmail import DynamoFeedStore, EventBridgeBus, SqsSyncQueue
    from mailbridge.storage.orgs import DynamoOrgStore
    from mailbridge.storage.secrets import SecretsManagerStore

    _connect(imap_agent)
    _round(local_api, imap_agent)
    for number in range(5):
        imap_agent.deliver(alice_says(f"Raced {number}"))
    stores = FeedStores(
        DynamoAgentStore(),
        SecretsManagerStore(),
        DynamoOrgStore(),
        DynamoFeedStore(),
        EventBridgeBus(),
        SqsSyncQueue(),
    )
    request = SyncRequest(agent_id=imap_agent.agent_id, reason=SyncReason.NOTIFIED)
    with local_api.acting_as("NewMailWorkerFunction"), ThreadPoolExecutor(6) as pool:
        # Each look with the worker's role, as its own invocation would have it.
        contexts = [contextvars.copy_context() for _ in range(6)]
        announced = list(
            pool.map(lambda context: context.run(look_for_new_mail, stores, request), contexts)
        )
    assert sum(announced) == 5
    subjects = sorted(event["subject"] for event in _events_of(local_api, imap_agent))
    assert subjects == [f"Raced {number}" for number in range(5)]


def _queued_agents(local_api: Any) -> set[str]:
    """The agents one round queues (taken off the queue, unprocessed)."""
    from mailbridge.core.settings import settings

    sqs = boto3.client("sqs")
    queue_url = settings().sync_queue_url
    local_api.run_schedule(*POLL)
    seen: set[str] = set()
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            seen.add(json.loads(message["Body"])["agent_id"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return seen


def test_the_round_queues_only_connected_imap_mailboxes(
    local_api: Any, imap_agent: MailAgent, org: Org
) -> None:
    assert imap_agent.agent_id not in _queued_agents(local_api)  # saved, untested: Configured
    _connect(imap_agent)
    assert imap_agent.agent_id in _queued_agents(local_api)
    assert org.client.delete(org.config_path).status == 200
    assert imap_agent.agent_id not in _queued_agents(local_api)


def test_a_wrong_password_turns_the_agent_to_error_and_stops_its_polling(
    local_api: Any, imap_agent: MailAgent, dovecot: DovecotServer
) -> None:
    _connect(imap_agent)
    _round(local_api, imap_agent)
    dovecot.set_password(imap_agent.login, "changed-at-the-provider")
    _round(local_api, imap_agent)
    config = _config(imap_agent)
    assert config["status"] == "error"
    assert config["last_error"]["code"] == "auth_failed"
    assert config["last_error"]["during"] == "reading"
    assert config["delivery"] is None
    # Not dead-lettered: the retry found the agent in Error and left it alone.
    assert not [body for body in local_api.dead_letters() if imap_agent.agent_id in body]
    # And no further logins with a password that fails (which invite a lockout).
    assert imap_agent.agent_id not in _queued_agents(local_api)


def test_a_failing_poll_shows_delivery_degraded_then_dead_letters_then_recovers(
    local_api: Any, imap_agent: MailAgent, dovecot: DovecotServer
) -> None:
    _connect(imap_agent)
    _round(local_api, imap_agent)
    with dovecot.paused():  # the server hangs: each look times out
        _round(local_api, imap_agent)
    delivery = _config(imap_agent)["delivery"]
    assert (delivery["state"], delivery["of"]) == ("degraded", "look")
    assert delivery["problem"]["code"] == "timeout"
    assert delivery["failures"] == 3  # SQS tried it three times
    assert [body for body in local_api.dead_letters() if imap_agent.agent_id in body]
    assert _config(imap_agent)["status"] == "connected"  # the connection itself is not blamed
    imap_agent.deliver(alice_says("After the outage"))
    _round(local_api, imap_agent)
    assert _config(imap_agent)["delivery"]["state"] == "active"
    assert _events_of(local_api, imap_agent)[-1]["subject"] == "After the outage"


def test_removing_the_agent_removes_its_feed_and_notes(
    local_api: Any, imap_agent: MailAgent, org: Org
) -> None:
    _connect(imap_agent)
    _round(local_api, imap_agent)
    imap_agent.deliver(alice_says("Noted"))
    _round(local_api, imap_agent)
    table = boto3.client("dynamodb")
    from mailbridge.core.settings import settings

    def items(partition: str) -> list[dict[str, Any]]:
        return table.query(
            TableName=settings().table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": partition}},
        )["Items"]

    assert items(f"DELIVERED#{imap_agent.agent_id}")
    assert any(i["sk"]["S"] == "MAIL_FEED" for i in items(f"AGENT#{imap_agent.agent_id}"))
    platform = ApiClient(
        local_api.url,
        local_api.issuer.mint(sub="platform", org_id=org.org_id, scopes=("agents.manage",)),
    )
    assert platform.delete(f"/bridge/agents/{imap_agent.agent_id}").status == 204
    assert items(f"DELIVERED#{imap_agent.agent_id}") == []
    assert items(f"AGENT#{imap_agent.agent_id}") == []
