"""New mail from Gmail, pushed: a sign-in has the worker start Gmail's watch of the inbox,
Gmail's notification comes through Pub/Sub to the public push route (its OIDC token verified
before anything else), and the worker turns what history.list says was added into one event
per message. Real parts throughout: the fake Google (watch, history, a Pub/Sub push signed by
its own key), moto's SQS, EventBridge and DynamoDB, the functions as the local run runs
them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from conftest import GMAIL_PUSH_PARAMETERS
from mailbridge_tools.sandbox import FakeGoogle
from mailbridge_tools.sandbox.identity.base import unsigned_jwt
from mailbridge_tools.sandbox.identity.pubsub import OidcSigner
from support import ApiClient, ApiResponse, MailAgent, Mailbox, OAuthAgent, Org

PUSH_ROUTE = "/api/engine/push/google"
ROUND = ("NewMailDispatchFunction", "PollGoogle")
HISTORY = ("GET", "/gmail/v1/users/me/history")
WATCH = ("POST", "/gmail/v1/users/me/watch")
STOP = ("POST", "/gmail/v1/users/me/stop")


@pytest.fixture(autouse=True)
def quiet_queue(local_api: Any) -> None:
    """Each test starts with what earlier ones queued delivered, and sees only its own."""
    local_api.process_queue()


@dataclass
class GmailAgent:
    """An org's agent signed in to a Gmail account of its own (so pushes are its alone)."""

    oauth: OAuthAgent
    mail: MailAgent
    address: str

    @property
    def agent_id(self) -> str:
        return self.mail.agent_id

    def deliver(self, subject: str, *, at: datetime | None = None) -> str:
        """A message arrives in the inbox (received at `at`); its Gmail id."""
        fake = self.oauth.fake
        return fake.deliver(self.address, _raw(subject, self.address), received_at=at)


def _raw(subject: str, to: str) -> bytes:
    return (
        f"From: Alice <alice@example.net>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\n"
        "Date: Mon, 30 Nov 2026 09:00:00 +0000\r\n\r\nHello.\r\n"
    ).encode()


def _account(org: Org, local_api: Any, google: FakeGoogle) -> GmailAgent:
    address = f"agent-{uuid.uuid4().hex[:10]}@Gmail.example"  # Google's case: kept as is
    google.add_account(address, inbox_total=0, inbox_unread=0)
    oauth = OAuthAgent(org, local_api, google)

    def deliver(login: str, raw: bytes, *, unseen: bool) -> object:
        return google.deliver(login, raw, unread=unseen)

    mail = MailAgent(local_api, org, Mailbox(address, ""), deliver=deliver)
    return GmailAgent(oauth, mail, address)


def _connect(agent: GmailAgent, local_api: Any) -> None:
    """Signs in (the callback queues the connected mailbox) and lets the worker look."""
    page = agent.oauth.connect()
    assert page.status == 200, page.text
    assert agent.oauth.get()["status"] == "connected"
    local_api.process_queue()


@pytest.fixture
def gmail_agent(org: Org, local_api: Any, google: FakeGoogle) -> GmailAgent:
    agent = _account(org, local_api, google)
    _connect(agent, local_api)
    return agent


def _events_of(local_api: Any, agent: GmailAgent) -> list[dict[str, Any]]:
    return [
        event["detail"]
        for event in local_api.mail_events()
        if event["detail"]["agent_id"] == agent.agent_id
    ]


def _listed(agent: GmailAgent) -> dict[str, dict[str, Any]]:
    page = agent.mail.runtime.get(agent.mail.messages_path(limit=100))
    assert page.status == 200, page.text
    return {message["subject"]: message for message in page.json()["messages"]}


def _push(local_api: Any, body: Any, token: str | None, *, raw: bytes | None = None) -> ApiResponse:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return ApiClient(local_api.url, None).request(
        "POST", PUSH_ROUTE, body, raw=raw, headers=headers
    )


def _subscribers(address: str) -> list[str]:
    from mailbridge.storage.newmail import DynamoFeedStore

    return DynamoFeedStore().subscribers(address.lower())


def test_a_sign_in_watches_the_inbox_and_mail_already_there_is_never_announced(
    org: Org, local_api: Any, google: FakeGoogle
) -> None:
    agent = _account(org, local_api, google)
    agent.deliver("Long there", at=datetime.now(UTC) - timedelta(days=3))
    agent.deliver("Just before")
    _connect(agent, local_api)

    watch = google.watch_of(agent.address)
    assert watch is not None
    assert watch.topic == GMAIL_PUSH_PARAMETERS["GmailPushTopic"]
    assert (watch.label_ids, watch.include) == ({"INBOX"}, True)
    assert watch.expires_at - time.time() > 6.9 * 24 * 3600
    assert _subscribers(agent.address) == [agent.agent_id]
    assert agent.oauth.get()["delivery"]["state"] == "active"
    local_api.process_queue()
    assert _events_of(local_api, agent) == []


def test_a_pushed_message_is_one_event_with_the_mail_apis_ids(
    local_api: Any, google: FakeGoogle, gmail_agent: GmailAgent
) -> None:
    before = len(google.pushes)
    gmail_agent.deliver("Pushed news")
    (push,) = google.pushes[before:]
    assert (push.address, push.status) == (gmail_agent.address, 204)
    local_api.process_queue()
    local_api.process_queue()  # nothing new: nothing more

    (event,) = _events_of(local_api, gmail_agent)
    message = _listed(gmail_agent)["Pushed news"]
    assert event["message_id"] == message["id"]  # read or reply with it
    assert event["thread_id"] == message["thread_id"]
    assert event["sender"] == {"address": "alice@example.net", "name": "Alice"}
    assert event["received_at"] == message["received_at"]
    read = gmail_agent.mail.runtime.get(gmail_agent.mail.message_path(event["message_id"]))
    assert read.status == 200 and read.json()["subject"] == "Pushed news"


def test_an_unchanged_mailbox_costs_one_history_call(
    local_api: Any, google: FakeGoogle, gmail_agent: GmailAgent
) -> None:
    from mailbridge.newmail.models import SyncReason, SyncRequest
    from mailbridge.storage.newmail import SqsSyncQueue

    before = len(google.requests)
    SqsSyncQueue().send([SyncRequest(agent_id=gmail_agent.agent_id, reason=SyncReason.NOTIFIED)])
    local_api.process_queue()
    assert google.requests[before:] == [HISTORY]


def test_a_push_and_a_round_for_one_message_announce_it_once_and_renew_a_watch_near_its_end(
    local_api: Any, google: FakeGoogle, gmail_agent: GmailAgent
) -> None:
    from mailbridge.storage.newmail import DynamoFeedStore

    watched = google.watch_of(gmail_agent.address)
    assert watched is not None
    gmail_agent.deliver("Seen twice")  # pushed: a look queued
    local_api.run_schedule(*ROUND)  # and the catch-up round queues another
    watches = google.requests.count(WATCH)
    local_api.process_queue()
    assert [e["subject"] for e in _events_of(local_api, gmail_agent)] == ["Seen twice"]
    assert google.requests.count(WATCH) == watches  # a week left: not renewed yet

    # A watch with a day left is renewed by the next round.
    feeds = DynamoFeedStore()
    feed = feeds.get(gmail_agent.agent_id)
    assert feed is not None and feed.subscription is not None
    ending = feed.subscription.model_copy(
        update={"expires_at": datetime.now(UTC) + timedelta(days=1)}
    )
    assert feeds.put(feed.model_copy(update={"subscription": ending}))
    local_api.run_schedule(*ROUND)
    local_api.process_queue()
    assert google.requests.count(WATCH) == watches + 1
    renewed = google.watch_of(gmail_agent.address)
    assert renewed is not None and renewed.expires_at >= watched.expires_at
    stored = feeds.get(gmail_agent.agent_id)
    assert stored is not None and stored.subscription is not None
    assert stored.subscription.expires_at > ending.expires_at
    assert _subscribers(gmail_agent.address) == [gmail_agent.agent_id]


def _forged_tokens(google: FakeGoogle) -> dict[str, str | None]:
    now = int(time.time())
    claims = GMAIL_PUSH_PARAMETERS
    return {
        "no token": None,
        "not a token": "not-a-jwt",
        "signed by another key, same key id": google.push_token(OidcSigner(google.signer.kid)),
        "signed by another key": google.push_token(OidcSigner()),
        "unsigned": unsigned_jwt(
            {"iss": "https://accounts.google.com", "aud": claims["GmailPushAudience"]}
        ),
        "wrong audience": google.push_token(aud="https://elsewhere.example/push"),
        "no audience": google.push_token(aud=None),
        "wrong email": google.push_token(email="someone@attacker.iam.gserviceaccount.com"),
        "email not verified": google.push_token(email_verified=False),
        "no email": google.push_token(email=None),
        "wrong issuer": google.push_token(iss="https://attacker.example"),
        "expired": google.push_token(iat=now - 7200, exp=now - 3600),
        "issued in the future": google.push_token(iat=now + 3600, exp=now + 7200),
    }


def test_a_forged_push_is_refused_and_queues_nothing(
    local_api: Any, google: FakeGoogle, gmail_agent: GmailAgent
) -> None:
    body = google.push_body(gmail_agent.address)
    for name, token in _forged_tokens(google).items():
        refused = _push(local_api, body, token)
        assert (refused.status, refused.error["code"]) == (401, "push_unauthorized"), name
    basic = ApiClient(local_api.url, None).request(
        "POST", PUSH_ROUTE, body, headers={"Authorization": "Basic Z29vZ2xlOnB1c2g="}
    )
    assert basic.status == 401
    assert local_api.process_queue() == 0
    genuine = _push(local_api, body, google.push_token())
    assert genuine.status == 204
    assert local_api.process_queue() == 1


def test_a_push_that_is_not_a_gmail_notification_is_a_400_never_a_500(
    local_api: Any, google: FakeGoogle, gmail_agent: GmailAgent
) -> None:
    token = google.push_token()
    good = google.push_body(gmail_agent.address)

    def data(value: bytes) -> dict[str, Any]:
        return {**good, "message": {**good["message"], "data": base64.b64encode(value).decode()}}

    bodies: dict[str, Any] = {
        "no message": {"subscription": good["subscription"]},
        "message not an object": {**good, "message": "news"},
        "data not base64": {**good, "message": {**good["message"], "data": "%%%"}},
        "data not JSON": data(b"\xff\xfe"),
        "data a list": data(b"[1, 2]"),
        "no address": data(json.dumps({"historyId": 5}).encode()),
        "address not one": data(json.dumps({"emailAddress": "x", "historyId": 5}).encode()),
        "history id not one": data(
            json.dumps({"emailAddress": gmail_agent.address, "historyId": "soon"}).encode()
        ),
        "a list": [good],
    }
    for name, body in bodies.items():
        refused = _push(local_api, body, token)
        assert (refused.status, refused.error["code"]) == (400, "notification_invalid"), name
    for raw in (b"{", b"not json at all", b"\x00\x01"):
        refused = _push(local_api, None, token, raw=raw)
        assert refused.status == 400, raw
    huge = {**good, "padding": "x" * 20_000}
    assert _push(local_api, huge, token).status == 413
    assert local_api.process_queue() == 0


def test_a_push_for_an_address_nobody_watches_is_taken_and_does_nothing(
    local_api: Any, google: FakeGoogle
) -> None:
    body = google.push_body("nobody@gmail.example", history_id=77)
    assert _push(local_api, body, google.push_token()).status == 204
    assert local_api.process_queue() == 0


def test_an_expired_history_id_resyncs_from_the_newest_seen_without_gap_or_duplicate(
    local_api: Any, google: FakeGoogle, gmail_agent: GmailAgent
) -> None:
    start = datetime.now(UTC)
    gmail_agent.deliver("A", at=start + timedelta(seconds=1))
    local_api.process_queue()
    with google.pushes_lost():
        gmail_agent.deliver("B", at=start + timedelta(seconds=2))
        gmail_agent.deliver("C", at=start + timedelta(seconds=3))
    google.forget_history(gmail_agent.address)  # the feed's history id is now too old
    gmail_agent.deliver("D", at=start + timedelta(seconds=4))  # pushed
    before = len(google.requests)
    local_api.process_queue()
    assert HISTORY in google.requests[before:]
    assert ("GET", "/gmail/v1/users/me/profile") in google.requests[before:]  # resynced
    gmail_agent.deliver("E", at=start + timedelta(seconds=5))  # from the fresh history id
    local_api.process_queue()

    events = _events_of(local_api, gmail_agent)
    assert [event["subject"] for event in events] == ["A", "B", "C", "D", "E"]
    assert len({event["message_id"] for event in events}) == 5


def test_more_new_mail_than_a_look_takes_arrives_whole_in_order_once(
    local_api: Any, google: FakeGoogle, gmail_agent: GmailAgent
) -> None:
    start = datetime.now(UTC)
    subjects = [f"Bulk {number:03}" for number in range(62)]
    with google.pushes_lost():
        for number, subject in enumerate(subjects[:-1]):
            gmail_agent.deliver(subject, at=start + timedelta(milliseconds=10 * number))
    google.history_page_size = 7  # Gmail pages history as it likes
    before = len(google.requests)
    try:
        gmail_agent.deliver(subjects[-1], at=start + timedelta(seconds=1))  # the one push
        local_api.process_queue()  # a look takes 50, then queues the rest
    finally:
        google.history_page_size = 500
    assert google.requests[before:].count(HISTORY) >= 9  # 62 records, 7 a page
    assert [event["subject"] for event in _events_of(local_api, gmail_agent)] == subjects


def test_mail_arriving_before_the_first_look_is_announced_whole_in_order_once(
    org: Org, local_api: Any, google: FakeGoogle
) -> None:
    agent = _account(org, local_api, google)
    assert agent.oauth.connect().status == 200  # connected, not looked at yet
    start = datetime.now(UTC) + timedelta(seconds=1)
    subjects = [f"Early {number:03}" for number in range(55)]
    for number, subject in enumerate(subjects):
        agent.deliver(subject, at=start + timedelta(milliseconds=10 * number))
    local_api.process_queue()  # the first look: 50 by time, then the rest
    agent.deliver("Later")  # pushed, from the history id the first look kept
    local_api.process_queue()
    assert [e["subject"] for e in _events_of(local_api, agent)] == [*subjects, "Later"]


def test_disconnecting_stops_the_watch_and_later_pushes_find_no_agent(
    local_api: Any, google: FakeGoogle, gmail_agent: GmailAgent
) -> None:
    stops = google.requests.count(STOP)
    deleted = gmail_agent.oauth.org.client.delete(gmail_agent.oauth.path)
    assert deleted.status == 200, deleted.text
    assert google.requests.count(STOP) == stops + 1
    assert google.watch_of(gmail_agent.address) is None
    assert _subscribers(gmail_agent.address) == []
    body = google.push_body(gmail_agent.address)
    assert _push(local_api, body, google.push_token()).status == 204
    assert local_api.process_queue() == 0


def test_a_topic_gmail_may_not_publish_to_shows_delivery_degraded_with_the_fix(
    org: Org, local_api: Any, google: FakeGoogle
) -> None:
    topic = GMAIL_PUSH_PARAMETERS["GmailPushTopic"]
    agent = _account(org, local_api, google)
    google.topics[topic] = False  # Gmail's push account lost the Publisher role
    try:
        _connect(agent, local_api)
    finally:
        google.topics[topic] = True
    config = agent.oauth.get()
    assert config["status"] == "connected"  # the mailbox itself is fine
    assert (config["delivery"]["state"], config["delivery"]["of"]) == ("degraded", "push")
    assert config["delivery"]["problem"]["code"] == "push_topic_refused"
    assert "gmail-api-push@system.gserviceaccount.com" in config["delivery"]["problem"]["hint"]
    assert [body for body in local_api.dead_letters() if agent.agent_id in body]
    local_api.run_schedule(*ROUND)  # the next round, with the role granted again
    local_api.process_queue()
    assert agent.oauth.get()["delivery"]["state"] == "active"
    assert google.watch_of(agent.address) is not None


def test_the_fake_refuses_what_gmail_refuses_and_signs_what_google_auth_verifies(
    google: FakeGoogle, ca: Any
) -> None:
    """The fake's own checks: a test that asks wrongly fails as it would against Gmail."""
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    address = f"fake-{uuid.uuid4().hex[:8]}@gmail.example"
    google.add_account(address, inbox_total=0, inbox_unread=0)
    gmail = f"{google.base_url}/gmail/v1/users/me"
    session = requests.Session()
    session.verify = str(ca.ca_path)

    def call(method: str, path: str, scopes: list[str], **options: Any) -> requests.Response:
        token = google.issue_token(address, scopes)
        headers = {"Authorization": f"Bearer {token}"}
        return session.request(method, gmail + path, headers=headers, timeout=10, **options)

    modify = ["https://www.googleapis.com/auth/gmail.modify"]
    topic = GMAIL_PUSH_PARAMETERS["GmailPushTopic"]
    watch = {"topicName": topic, "labelIds": ["INBOX"], "labelFilterBehavior": "include"}
    assert call("POST", "/watch", ["openid", "email"], json=watch).status_code == 403
    assert call("POST", "/watch", modify, json={**watch, "topicName": "t"}).status_code == 400
    unknown = {**watch, "topicName": "projects/p/topics/nobody-made-it"}
    assert call("POST", "/watch", modify, json=unknown).status_code == 404
    google.topics["projects/p/topics/not-granted"] = False
    ungranted = {**watch, "topicName": "projects/p/topics/not-granted"}
    assert call("POST", "/watch", modify, json=ungranted).status_code == 403
    started = call("POST", "/watch", modify, json=watch)
    assert started.status_code == 200
    expiration = int(started.json()["expiration"]) / 1000
    assert 6.9 * 24 * 3600 < expiration - time.time() <= 7 * 24 * 3600

    first = int(call("GET", "/profile", modify).json()["historyId"])
    ids = [google.deliver(address, _raw(f"H{n}", address)) for n in range(3)]
    # Each pushed to the local run's route, which finds no agent of the address.
    assert [push.status for push in google.pushes if push.address == address] == [204] * 3
    history = call(
        "GET",
        "/history",
        modify,
        params={"startHistoryId": first, "historyTypes": "messageAdded", "maxResults": 2},
    ).json()
    assert [r["messagesAdded"][0]["message"]["id"] for r in history["history"]] == ids[:2]
    assert history["history"][0]["messagesAdded"][0]["message"]["labelIds"] == ["INBOX", "UNREAD"]
    rest = call(
        "GET",
        "/history",
        modify,
        params={"startHistoryId": first, "pageToken": history["nextPageToken"]},
    ).json()
    assert [r["messagesAdded"][0]["message"]["id"] for r in rest["history"]] == ids[2:]
    current = int(rest["historyId"])
    assert first < int(history["history"][0]["id"]) < current
    assert call("GET", "/history", modify, params={}).status_code == 400
    google.forget_history(address)
    expired = call("GET", "/history", modify, params={"startHistoryId": first})
    assert expired.status_code == 404
    assert call("GET", "/history", modify, params={"startHistoryId": current}).status_code == 200
    assert call("POST", "/stop", modify).status_code == 204
    assert google.watch_of(address) is None

    claims = id_token.verify_token(
        google.push_token(),
        Request(session),
        audience=GMAIL_PUSH_PARAMETERS["GmailPushAudience"],
        certs_url=f"{google.base_url}/oauth2/v1/certs",
    )
    assert claims["email"] == GMAIL_PUSH_PARAMETERS["GmailPushServiceAccount"]
    assert claims["iss"] == "https://accounts.google.com" and claims["email_verified"] is True
