"""What an attacker controls: the hosts and ports the service connects to, and the timing of
concurrent writes."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from mailbridge.adapters.mailnet import AddressNotAllowed, open_connection
from mailbridge.core.addresses import address_allowed, host_refused
from support import MAILBOX, Org, saved_entry, secret_value

Body = Callable[..., dict[str, Any]]


@pytest.mark.parametrize(
    ("address", "by_default", "with_private_allowed"),
    [
        ("8.8.8.8", True, True),
        ("2001:4860:4860::8888", True, True),
        ("127.0.0.1", False, True),
        ("::1", False, True),
        ("10.1.2.3", False, True),
        ("172.16.0.1", False, True),
        ("192.168.1.1", False, True),
        ("fd00::1", False, True),
        ("100.64.0.1", False, True),  # carrier-grade NAT
        ("169.254.169.254", False, False),  # cloud metadata: never
        ("::ffff:169.254.169.254", False, False),
        ("fe80::1", False, False),
        ("fd00:ec2::254", False, False),  # EC2's IPv6 metadata, in a private range
        ("2002:a9fe:a9fe::", False, False),  # 6to4 of 169.254.169.254
        ("64:ff9b::a9fe:a9fe", False, False),  # NAT64 of 169.254.169.254
        ("64:ff9b::a00:1", False, True),  # NAT64 of 10.0.0.1
        ("64:ff9b::808:808", True, True),  # NAT64 of 8.8.8.8
        ("224.0.0.1", False, False),
        ("0.0.0.0", False, False),  # noqa: S104 - the address under test
        ("240.0.0.1", False, False),
        ("255.255.255.255", False, False),
    ],
)
def test_which_addresses_may_be_reached(
    address: str, by_default: bool, with_private_allowed: bool
) -> None:
    assert address_allowed(address, allow_private=False) is by_default
    assert address_allowed(address, allow_private=True) is with_private_allowed


def test_a_refused_address_is_never_connected_to() -> None:
    """The name is resolved once and every answer checked before any connect: a name that
    points inside (or is rebound to point inside) gets no packet."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        with pytest.raises(AddressNotAllowed):
            open_connection("localhost", listener.getsockname()[1], 2, allow_private=False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected


@pytest.mark.parametrize(
    ("host", "by_default", "with_private_allowed"),
    [
        ("imap.example.com", False, False),  # a name: DNS answers at the connection
        ("8.8.8.8", False, False),
        ("localhost", True, False),
        ("127.0.0.1", True, False),
        ("127.1", True, False),  # the resolver's short and whole-number forms of 127.0.0.1
        ("2130706433", True, False),
        ("0x7f000001", True, False),
        ("10.0.0.7", True, False),
        ("169.254.169.254", True, True),
        ("::ffff:169.254.169.254", True, True),
        ("0.0.0.0", True, True),  # noqa: S104 - the address under test
    ],
)
def test_which_hosts_are_refused_without_asking_dns(
    host: str, by_default: bool, with_private_allowed: bool
) -> None:
    assert host_refused(host, allow_private=False) is by_default
    assert host_refused(host, allow_private=True) is with_private_allowed


def test_the_metadata_address_is_refused_at_save_as_at_test(org: Org, imap_body: Body) -> None:
    """The user learns it on saving, with the code and words the test would give; a
    connection saved before (by an earlier version) is still refused by its test, before
    any connection attempt."""
    from mailbridge.connections.records import ServerSettings
    from mailbridge.storage.agents import DynamoAgentStore

    for protocol, host, port in (
        ("imap", "169.254.169.254", 993),
        ("smtp", "::ffff:169.254.169.254", 465),
    ):
        body = imap_body()
        body[protocol] = {"host": host, "port": port, "security": "tls"}
        refused = org.client.put(org.config_path, body)
        assert (refused.status, refused.error["code"], refused.error["field"]) == (
            409,
            "address_not_allowed",
            f"{protocol}.host",
        ), refused.text
        assert f"{host}:{port}" in refused.error["message"]
    assert org.client.get(org.config_path).json()["config"] is None

    assert org.client.put(org.config_path, imap_body()).status == 200
    agents = DynamoAgentStore()
    _, stored = agents.load(org.agent_id)
    assert stored is not None
    metadata = ServerSettings(host="169.254.169.254", port=993, security="tls")
    earlier = stored.model_copy(
        update={
            "connection": stored.connection.model_copy(update={"imap": metadata, "smtp": metadata}),
            "version": stored.version + 1,
        }
    )
    entry = saved_entry(org.org_id, org.agent_id)
    agents.put_config(earlier, replaces_version=stored.version, org_id=org.org_id, entry=entry)
    started = time.monotonic()
    result = org.client.post(org.config_path + "/test").json()
    assert time.monotonic() - started < 1  # refused before any connection attempt
    assert [check["error"]["code"] for check in result["checks"]] == ["address_not_allowed"] * 2


@pytest.mark.parametrize("port", [22, 80, 110, 443, 636])
def test_only_mail_ports_are_accepted(org: Org, port: int) -> None:
    body = {"provider": "imap", "preset": "gmail", "email": MAILBOX, "password": "x"}
    response = org.client.put(org.config_path, body | {"imap": {"port": port}})
    assert (response.status, response.error["field"]) == (422, "imap.port")


# ---- concurrent writes --------------------------------------------------------------------


def test_a_new_connection_cannot_take_the_version_a_removed_one_had(
    org: Org, imap_body: Body
) -> None:
    # A save that read the agent before a save and a disconnect made version 1 and removed
    # it would write version 1 again: what a sign-in or test begun on the removed one took.
    from mailbridge.core.errors import StaleWrite
    from mailbridge.storage.agents import DynamoAgentStore

    store = DynamoAgentStore()
    assert org.client.put(org.config_path, imap_body()).status == 200
    _, record = store.load(org.agent_id)
    assert record is not None and record.version == 1
    assert org.client.request("DELETE", org.config_path).status == 200
    with pytest.raises(StaleWrite):
        store.put_config(
            record,
            replaces_version=None,
            org_id=org.org_id,
            entry=saved_entry(org.org_id, org.agent_id),
        )


def test_if_match_refuses_a_stale_version(org: Org, imap_body: Body) -> None:
    first = org.client.put(org.config_path, imap_body())
    assert first.headers["ETag"] == '"1"'
    assert org.client.get(org.config_path).headers["ETag"] == '"1"'
    second = org.client.request("PUT", org.config_path, imap_body(), headers={"If-Match": '"1"'})
    assert (second.status, second.headers["ETag"]) == (200, '"2"')
    stale = org.client.request("PUT", org.config_path, imap_body(), headers={"If-Match": '"1"'})
    assert (stale.status, stale.error["code"]) == (412, "version_mismatch")
    # Not an ETag of ours: "²" is a digit to str.isdigit() (and a 500 once), 19 digits none we
    # give.
    for bad in ["*x", '"²"', 'W/"¹"', '"' + "1" * 19 + '"', '"' + "9" * 5000 + '"']:
        refused = org.client.request("PUT", org.config_path, imap_body(), headers={"If-Match": bad})
        assert (refused.status, refused.error["field"]) == (422, "If-Match"), refused.text
    assert org.client.get(org.config_path).json()["version"] == 2
    # Disconnected and saved again, the version goes on: "1" names no version of the new one.
    assert org.client.request("DELETE", org.config_path).status == 200
    assert org.client.put(org.config_path, imap_body()).headers["ETag"] == '"3"'
    again = org.client.request("PUT", org.config_path, imap_body(), headers={"If-Match": '"1"'})
    assert (again.status, again.error["code"]) == (412, "version_mismatch")


def test_fifty_concurrent_saves_leave_one_whole_record(org: Org, imap_body: Body) -> None:
    """Without If-Match, the last writer wins; no save is lost half-way, no record is torn,
    and the password the record uses is the one saved with its settings. Threads calling
    the save path stand in for Lambda's concurrent instances, many more than the local run's
    gateway would start for a few clients."""
    from mailbridge.agents.models import Caller
    from mailbridge.connections.request_models import ImapConfigRequest
    from mailbridge.connections.saving import save_email_config
    from mailbridge.core.errors import MailbridgeError
    from mailbridge.storage.agents import DynamoAgentStore
    from mailbridge.storage.audit import DynamoAuditLog
    from mailbridge.storage.orgs import DynamoOrgStore
    from mailbridge.storage.secrets import SecretsManagerStore

    org.client.put(org.config_path, imap_body())
    caller = Caller(subject="user", org_id=org.org_id)

    def save(number: int) -> bool:
        body = imap_body(password=f"password-{number}", username=f"user-{number}")
        body["imap"]["host"] = body["smtp"]["host"] = f"host-{number}.example"
        request = ImapConfigRequest.model_validate(body)
        try:
            save_email_config(
                DynamoAgentStore(),
                SecretsManagerStore(),
                DynamoOrgStore(),
                DynamoAuditLog(),
                caller,
                org.agent_id,
                request,
            )
        except MailbridgeError as error:  # three tries, each beaten by another save
            assert error.code == "concurrent_update"
            return False
        return True

    with ThreadPoolExecutor(max_workers=10) as pool:
        saved = list(pool.map(save, range(50)))
    final = org.client.get(org.config_path).json()
    winner = final["config"]["username"].removeprefix("user-")
    assert final["config"]["imap"]["host"] == f"host-{winner}.example"
    assert final["config"]["smtp"]["host"] == f"host-{winner}.example"
    # Every save that said so is in the history: none overwrote another unseen.
    assert final["version"] == 1 + saved.count(True)
    _, record = DynamoAgentStore().load(org.agent_id)
    assert record is not None and record.secret is not None
    assert secret_value(record.secret)["password"] == f"password-{winner}"


def test_connection_tests_are_rate_limited_per_agent(org: Org, imap_body: Body) -> None:
    """Ten a minute: enough for a person, too few for a password oracle or a port scan."""
    from mailbridge_tools.sandbox import free_port

    body = imap_body()
    body["imap"]["port"] = body["smtp"]["port"] = free_port()  # refused at once: fast
    org.client.put(org.config_path, body)
    while time.gmtime().tm_sec > 50:  # all eleven inside one calendar minute
        time.sleep(0.5)
    statuses = [org.client.post(org.config_path + "/test").status for _ in range(10)]
    assert statuses == [200] * 10
    limited = org.client.post(org.config_path + "/test")
    assert (limited.status, limited.error["code"]) == (429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "this agent" in limited.error["message"]


# What pydantic would read as an integer but a JSON client did not send as one.
NOT_INTEGERS = [True, "993", 1.5]


def _integer_fields(document: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every integer field of every request body of the API's contract: (method, path,
    dotted field)."""
    schemas = document["components"]["schemas"]
    found: set[tuple[str, str, str]] = set()

    def walk(
        schema: dict[str, Any], field: str, seen: frozenset[str], route: tuple[str, str]
    ) -> None:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name not in seen:
                walk(schemas[name], field, seen | {name}, route)
            return
        for alternative in schema.get("anyOf", []) + schema.get("oneOf", []):
            walk(alternative, field, seen, route)
        if schema.get("type") == "integer":
            found.add((*route, field.lstrip(".")))
        for name, property_schema in schema.get("properties", {}).items():
            walk(property_schema, f"{field}.{name}", seen, route)

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                walk(content["schema"], "", frozenset(), (method.upper(), path))
    return found


def test_an_integer_is_a_json_integer_in_every_request(org: Org, imap_body: Body) -> None:
    """`"port": true` was port 1, `"993"` port 993: every integer field of the contract
    refuses booleans, numeric strings and fractions, naming the field."""
    import json
    from pathlib import Path

    document = json.loads((Path(__file__).parent.parent / "openapi.json").read_text())
    config, policy = org.config_path, "/bridge/client-orgs/strict/email-policy"
    valid = {
        ("PUT", "/bridge/agents/{agentId}/email-config"): (config, imap_body()),
        ("PUT", "/bridge/client-orgs/{clientOrgId}/email-policy"): (
            policy,
            {"name": "Strict", "limits": {"per_hour": 5, "per_day": 50}},
        ),
    }
    fields = _integer_fields(document)
    assert {(method, path) for method, path, _ in fields} == set(valid), fields
    for method, route, field in sorted(fields):
        path, body = valid[(method, route)]
        for value in NOT_INTEGERS:
            changed = json.loads(json.dumps(body))
            *parents, last = field.split(".")
            target = changed
            for name in parents:
                target = target[name]
            target[last] = value
            answer = org.client.request(method, path, changed)
            assert (answer.status, answer.error["field"]) == (422, field), (field, value)
        assert org.client.request(method, path, body).status == 200, (route, field)
