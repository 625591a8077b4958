"""What tests share besides fixtures: the servers' accounts, an HTTP client for the API,
and the rule for missing real components."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import requests
from mailbridge_tools.sandbox import DnsServer, DomainWebServer, FakeGoogle, FakeMicrosoft

MAILBOX = "agent@example.com"
SENT_FOLDER = "Gesendete Elemente"  # the test Dovecot's folder marked \Sent
MAIL_SCOPES = ("mail.read", "mail.send")
MAILBOX_PASSWORD = "app-pass-7f3a9c"  # the canary: must never be seen outside the servers
BULK_MAILBOX = "bulk@example.com"
MAIL_TIMEOUT_SECONDS = 2.0
CALLBACK = "/api/engine/oauth/callback"
# Email discovery's test domains (each <name>.test, with its autoconfig.<name>.test host;
# one a test, so that the cache of one is not another's), and the ISPDB's host.
DISCOVERY_DOMAINS = [
    f"{name}.test"
    for name in (
        "autoconf",
        "wellknown",
        "listed",
        "srv",
        "everything",
        "silent",
        "oversized",
        "laughs",
        "entity",
        "dtd",
        "unsafe",
        "redirect",
        "refused",
        "cached",
    )
]
ISPDB_HOST = "ispdb.test"


@dataclass(frozen=True)
class MailDomains:
    dns: DnsServer
    web: DomainWebServer


# Tables the tests measured, by title: printed at the end of the run (conftest.py).
REPORTS: dict[str, list[str]] = {}


def alice_says(subject: str) -> bytes:
    """A short message from Alice, with a Message-ID of its own, to deliver to a mailbox."""
    return (
        "From: Alice <alice@example.net>\r\n"
        "To: agent@example.com\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\n"
        "Date: Mon, 30 Nov 2026 09:00:00 +0000\r\n"
        "\r\n"
        "Words.\r\n"
    ).encode()


def require_component(available: bool, what: str) -> None:
    """A missing real component fails the run in CI; on a laptop it skips with the reason."""
    if available:
        return
    message = f"{what} is not installed (run `make test`, which installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.json()["error"]
        return error


class ApiClient:
    """A caller of the local API with one organization's token."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> ApiResponse:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers or {}
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return ApiResponse(
                    response.status, dict(response.headers), response.read().decode()
                )
        except urllib.error.HTTPError as error:
            return ApiResponse(error.code, dict(error.headers), error.read().decode())

    def get(self, path: str) -> ApiResponse:
        return self.request("GET", path)

    def put(self, path: str, body: Any = None, *, raw: bytes | None = None) -> ApiResponse:
        return self.request("PUT", path, body, raw=raw)

    def post(self, path: str, body: Any = None) -> ApiResponse:
        return self.request("POST", path, body)

    def delete(self, path: str) -> ApiResponse:
        return self.request("DELETE", path)


@dataclass
class Org:
    """An organization with a member's API client and a fresh agent of its own."""

    org_id: str
    client: ApiClient
    agent_id: str

    @property
    def config_path(self) -> str:
        return f"/bridge/agents/{self.agent_id}/email-config"


def register_agent(
    org_id: str,
    *,
    client_org_id: str | None = None,
    agent_id: str | None = None,
    name: str = "Support agent",
) -> str:
    """An agent registered as the platform would (a fresh id unless given)."""
    from mailbridge.agents.models import Agent
    from mailbridge.audit.models import Actor
    from mailbridge.audit.service import agent_entry
    from mailbridge.storage.agents import DynamoAgentStore

    agent_id = agent_id or f"agent-{uuid.uuid4().hex[:10]}"
    agent = Agent(agent_id=agent_id, org_id=org_id, name=name, client_org_id=client_org_id)
    platform = Actor(kind="person", subject="platform")
    assert DynamoAgentStore().put_agent(agent, agent_entry(platform, None, agent))
    return agent_id


def make_org(local_api: Any) -> Org:
    """An organization with an admin's client, as the Email tab has it (the mail scopes
    too: the tab sends test messages)."""
    org_id = f"org-{uuid.uuid4().hex[:8]}"
    token = local_api.issuer.mint(sub=f"user-{org_id}", org_id=org_id, scopes=MAIL_SCOPES)
    return Org(org_id, ApiClient(local_api.url, token), register_agent(org_id))


def empty_table(table_name: str) -> None:
    """Deletes every item, through DynamoDB's own API. moto reads every item of a table to
    answer any Query, and new mail's rounds poll every connected agent the table holds: on
    a table the whole suite had filled, requests at its end cost several times what they
    cost at its start (the fault flows took 89 s in a full run, 18 s alone)."""
    table = boto3.resource("dynamodb").Table(table_name)
    try:
        page = table.scan(ProjectionExpression="pk, sk")
        keys = page["Items"]
        while "LastEvaluatedKey" in page:  # all read, then deleted
            page = table.scan(
                ProjectionExpression="pk, sk", ExclusiveStartKey=page["LastEvaluatedKey"]
            )
            keys += page["Items"]
        with table.batch_writer() as batch:
            for key in keys:
                batch.delete_item(Key=key)
    finally:
        table.meta.client.close()


def posted(page: ApiResponse) -> tuple[dict[str, Any], str | None]:
    """What the callback page posts, and to which origin."""

    def block(name: str) -> Any:
        match = re.search(rf'<script type="application/json" id="{name}">(.*?)</script>', page.text)
        assert match, page.text
        return json.loads(match[1])

    return block("result"), block("origin")


def secret_value(ref: Any) -> dict[str, Any]:
    """A secret version's value, read around the functions' clients and their cache (so
    what a test looks at never changes what the functions do next)."""
    answer = boto3.client("secretsmanager").get_secret_value(
        SecretId=ref.name, VersionId=ref.version
    )
    value: dict[str, Any] = json.loads(answer["SecretString"])
    return value


def age_tokens(agent_id: str) -> None:
    """Make the stored access token expire in a minute (time cannot be sped up): a new
    version of the token document, and the record pointing at it, as a refresh would."""
    from mailbridge.connections.records import TokenRef
    from mailbridge.storage.agents import DynamoAgentStore
    from mailbridge.storage.secrets import SecretsManagerStore

    agents = DynamoAgentStore()
    _, config = agents.load(agent_id)
    assert config is not None and config.tokens is not None
    tokens = secret_value(config.tokens)
    soon = int(time.time()) + 60
    if "token_cache" in tokens:
        cache = json.loads(tokens["token_cache"])
        for entry in cache["AccessToken"].values():
            entry["expires_on"] = entry["extended_expires_on"] = str(soon)
        tokens["token_cache"] = json.dumps(cache)
    else:
        tokens["expires_at"] = soon
    written = SecretsManagerStore().write(config.tokens.name, tokens, exists=True, org_id="")
    assert agents.update_tokens(config, TokenRef(**written.model_dump(), expires_at=soon))


def saved_entry(org_id: str, agent_id: str | None = None) -> Any:
    """The audit entry of a change a test writes to a store itself, as a person would."""
    from mailbridge.audit.models import Actor, AuditAction, AuditEntry

    return AuditEntry(
        org_id=org_id,
        actor=Actor(kind="person", subject="test"),
        action=AuditAction.CONNECTION_SAVED if agent_id else AuditAction.SHARED_APP_SAVED,
        target="connection" if agent_id else "shared_app",
        agent_id=agent_id,
    )


CLIENT_SECRET = "client-secret-c4n4ry-91e2"  # a canary, like the mailbox password
TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
MS_ACCOUNT, GOOGLE_ACCOUNT = "agent@contoso.example", "agent@workspace.example"


class OAuthAgent:
    """An org's agent with its own registered OAuth app at a fake provider."""

    def __init__(self, org: Org, local_api: Any, fake: FakeMicrosoft | FakeGoogle) -> None:
        self.org, self.api, self.fake = org, local_api, fake
        self.provider = "microsoft" if isinstance(fake, FakeMicrosoft) else "google"
        self.client_id = (
            f"{uuid.uuid4()}"
            if self.provider == "microsoft"
            else (f"{uuid.uuid4().hex[:12]}.apps.googleusercontent.com")
        )
        fake.register_app(self.client_id, CLIENT_SECRET, [local_api.url + CALLBACK])

    @property
    def path(self) -> str:
        return self.org.config_path

    def body(self, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "provider": self.provider,
            "client_id": self.client_id,
            "client_secret": CLIENT_SECRET,
        }
        if self.provider == "microsoft":
            body["tenant"] = TENANT_ID
        return body | changes

    def save(self, **changes: Any) -> dict[str, Any]:
        response = self.org.client.put(self.path, self.body(**changes))
        assert response.status == 200, response.text
        saved: dict[str, Any] = response.json()
        return saved

    def authorization_url(self, route: str = "authorize") -> str:
        response = self.org.client.post(f"{self.path}/{route}", {"origin": self.api.url})
        assert response.status == 200, response.text
        url: str = response.json()["authorization_url"]
        return url

    def sign_in(self, url: str) -> str:
        """The user's browser at the provider: it answers with a redirect to our callback."""
        answer = requests.get(url, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        location: str = answer.headers["Location"]
        assert location.startswith(self.api.url + CALLBACK)
        return location

    def callback(self, location: str) -> ApiResponse:
        """The browser following that redirect: no token, it is a public route."""
        return ApiClient(self.api.url, None).get(location.removeprefix(self.api.url))

    def connect(self) -> ApiResponse:
        self.save()
        return self.callback(self.sign_in(self.authorization_url()))

    def test(self) -> dict[str, Any]:
        response = self.org.client.post(self.path + "/test")
        assert response.status == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def get(self) -> dict[str, Any]:
        config: dict[str, Any] = self.org.client.get(self.path).json()
        return config


@dataclass
class FuzzFigures:
    """What the contract fuzzing did, by operation ("PUT /bridge/..."), for the run's summary."""

    statuses: dict[str, Counter[int]] = field(default_factory=dict)  # responses by status
    failures: Counter[str] = field(default_factory=Counter)  # responses that failed a check
    seconds: float = 0.0

    def answered(self, operation: str, status: int) -> None:
        self.statuses.setdefault(operation, Counter())[status] += 1

    def summary(self) -> list[str]:
        requests = sum(counts.total() for counts in self.statuses.values())
        lines = [
            f"{len(self.statuses)} operations, {requests} requests, "
            f"{self.failures.total()} failures, {self.seconds:.0f} s"
        ]
        for operation, counts in sorted(self.statuses.items()):
            by_status = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))
            lines.append(
                f"  {operation}: {counts.total()} requests ({by_status}), "
                f"{self.failures[operation]} failures"
            )
        return lines


@dataclass(frozen=True)
class Mailbox:
    login: str
    password: str


class MailAgent:
    """An org's agent connected to a mailbox, with its runtime's API client (a token naming
    the agent, with the mail scopes); `deliver` puts a message in its inbox."""

    def __init__(
        self,
        local_api: Any,
        org: Org,
        mailbox: Mailbox,
        *,
        deliver: Callable[..., object],
        agent_id: str | None = None,
    ) -> None:
        self.org, self.login, self.password = org, mailbox.login, mailbox.password
        self.agent_id = agent_id or org.agent_id
        self._deliver = deliver
        token = local_api.issuer.mint(
            sub=f"runtime-{self.agent_id}",
            org_id=org.org_id,
            agent_id=self.agent_id,
            scopes=MAIL_SCOPES,
        )
        self.runtime = ApiClient(local_api.url, token)

    def deliver(self, raw: bytes, *, unseen: bool = True) -> None:
        self._deliver(self.login, raw, unseen=unseen)

    @property
    def send_path(self) -> str:
        return f"/bridge/agents/{self.agent_id}/mail/send"

    def messages_path(self, **query: Any) -> str:
        given = {name: value for name, value in query.items() if value is not None}
        suffix = f"?{urllib.parse.urlencode(given)}" if given else ""
        return f"/bridge/agents/{self.agent_id}/mail/messages{suffix}"

    def message_path(self, message_id: str) -> str:
        return f"/bridge/agents/{self.agent_id}/mail/messages/{message_id}"

    def send(self, body: dict[str, Any], *, key: str) -> dict[str, Any]:
        response = self.runtime.request(
            "POST", self.send_path, body, headers={"Idempotency-Key": key}
        )
        assert response.status == 200, response.text
        sent: dict[str, Any] = response.json()
        return sent
