"""Deployment settings: the functions' environment, validated once per Lambda instance.

Every handler validates them as it loads (`mailbridge.http.app.create_app`), so a bad value
stops the instance at start with a message naming the variable, rather than failing the
first request that happens to read it.

Plain Python rather than a pydantic model: every function loads them at each cold start, and
a model of 36 fields cost 2.9 ms to define and validate there, a NamedTuple and its readers
0.7 ms (docs/benchmarks.md). Numbers are written in ASCII digits: no sign, no exponent, and a
whole number without a decimal point.
"""

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Annotated, Any, NamedTuple

# Submission, IMAP and their TLS variants; SMTP relay (25) and the common alternative 2525.
MAIL_PORTS = frozenset({25, 143, 465, 587, 993, 2525})


class SettingsError(ValueError):
    """The environment is wrong: the deployment's mistake, raised while the instance starts,
    never in answer to a request."""


# Each field's reader turns its variable's text into the value, or raises a ValueError whose
# text says what the variable must be.


def _digits(value: str) -> int:
    """A whole number in ASCII digits, as a template parameter writes one: int() would also
    take other scripts' digits ("١٢" is 12), signs, spaces and underscores."""
    if not re.fullmatch(r"[0-9]+", value):
        raise ValueError("not digits")
    return int(value)


def _url(value: str) -> str:
    return value.rstrip("/")


def _whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    def read(value: str) -> int:
        try:
            number = _digits(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if number < low or (high is not None and number > high):
            raise ValueError(f"must be at least {low}" if high is None else f"must be {low}-{high}")
        return number

    return read


def _seconds(value: str) -> float:
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
        raise ValueError("must be a number of seconds")
    seconds = float(value)
    if not 0 < seconds <= 900:
        raise ValueError("must be more than 0 and at most 900 seconds")
    return seconds


def _true_or_false(value: str) -> bool:
    """Exactly "true" or "false", as the template allows: a switch that loosens a security
    rule is not turned on by a typo."""
    if value not in ("true", "false"):
        raise ValueError('must be "true" or "false"')
    return value == "true"


def _comma_separated(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _urls(value: str) -> frozenset[str]:
    return frozenset(_url(part) for part in _comma_separated(value))


def _port_ranges(value: str) -> frozenset[int]:
    """ "1025, 8143" or ranges like "1024-65535"."""
    ports: set[int] = set()
    for part in _comma_separated(value):
        low, _, high = (bound.strip() for bound in part.partition("-"))
        try:
            first, last = _digits(low), _digits(high or low)
        except ValueError:
            raise ValueError("must be ports or ranges, like 1143,1587 or 1024-65535") from None
        if not 1 <= first <= last <= 65535:  # checked before a range is spelled out
            raise ValueError("ports are 1-65535, a range's first port before its last")
        ports.update(range(first, last + 1))
    return frozenset(ports)


def _push_topic(value: str) -> str:
    if not re.fullmatch(r"projects/[^/\s]+/topics/[^/\s]+", value):
        raise ValueError("must be a Pub/Sub topic: projects/<project>/topics/<topic>")
    return value


def _dns_server(value: str) -> tuple[str, int]:
    """ "10.0.0.2", "127.0.0.1:5353" or "[::1]:5353": an address and a port (53 unless given)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = value.partition(":")
    ipaddress.ip_address(host)  # ValueError unless an address
    number = _digits(port or "53")
    if not 1 <= number <= 65535:
        raise ValueError("the port must be 1-65535")
    return host, number


def _valid_dns_server(value: str) -> str:
    try:
        _dns_server(value)
    except ValueError:
        raise ValueError(
            'must be an IP address and maybe a port: "10.0.0.2", "127.0.0.1:5353", "[::1]:5353"'
        ) from None
    return value


Url = Annotated[str, _url]
Seconds = Annotated[float, _seconds]
PerMinute = Annotated[int, _whole_number(1)]
Bytes = Annotated[int, _whole_number(1)]
Port = Annotated[int, _whole_number(1, 65535)]


class Settings(NamedTuple):
    """Each field is read from the environment variable of its name in capitals; an
    `Annotated` field's reader parses it (`load_settings`), any other is text as given."""

    table_name: str
    secret_name_prefix: Url = "mailbridge"  # noqa: S105 (a name, not a secret)
    org_claim: str = "org_id"
    # The claim carrying the caller's role, and the value that makes an org admin.
    role_claim: str = "role"
    admin_role: str = "admin"
    # The claim of an agent runtime's token naming the one agent it may act for.
    agent_claim: str = "agent_id"
    # The largest accepted body of a message to send (attachments in base64 within JSON);
    # other routes keep MAX_BODY_BYTES.
    max_send_bytes: Bytes = 5 * 1024 * 1024
    # For each whole mail check (connect, TLS, login, each read); well under the functions'
    # 29 s timeout, so a dead server becomes a `timeout` result, never a Lambda timeout.
    mail_timeout_seconds: Seconds = 10.0
    # An extra CA bundle that mail servers' certificates may chain to (self-hosted servers,
    # the local sandbox). It adds trust; verification itself is never turned off.
    mail_extra_ca_file: str | None = None
    # Self-hosted mail servers on private networks (and the sandbox on loopback); off by
    # default, so that a user cannot make the service probe the network it runs in.
    mail_allow_private_networks: Annotated[bool, _true_or_false] = False
    mail_extra_ports: Annotated[frozenset[int], _port_ranges] = frozenset()
    max_body_bytes: Bytes = 64 * 1024
    # Connection tests per minute, per agent and per organization: enough for a person,
    # too few to use the service as a password oracle or a port scanner.
    tests_per_agent_per_minute: PerMinute = 10
    tests_per_org_per_minute: PerMinute = 100
    # Where the OAuth providers send the browser back: the deployment's public URL, never
    # taken from a request. Empty when OAuth is not set up.
    public_base_url: Url = ""
    # UI origins that may receive an OAuth result by postMessage (comma-separated).
    allowed_ui_origins: Annotated[frozenset[str], _urls] = frozenset()
    # For each whole HTTP request to a provider.
    provider_timeout_seconds: Seconds = 10.0
    # The providers' endpoints: the real services by default, loopback fakes in tests.
    microsoft_authority_host: Url = "https://login.microsoftonline.com"
    graph_base_url: Url = "https://graph.microsoft.com/v1.0"
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 (an endpoint)
    google_revoke_url: str = "https://oauth2.googleapis.com/revoke"
    gmail_base_url: Url = "https://gmail.googleapis.com/gmail/v1"
    # Gmail push: the Pub/Sub topic `users.watch` publishes to (empty: push off,
    # Google mailboxes are looked at by the scheduler's rounds only).
    gmail_push_topic: Annotated[str, _push_topic] = ""
    # The audience the push subscription's OIDC token must carry (empty: every push refused).
    gmail_push_audience: str = ""
    # The service account the push subscription's token must be issued for (its `email`).
    gmail_push_service_account: str = ""
    # Google's keys that sign those tokens (PEM certificates by key id).
    google_push_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    # New mail: the bus its events go to and the queue of mailboxes to look at (set for the
    # functions that use them).
    event_bus_name: str = ""
    sync_queue_url: str = ""
    # How long the audit trail keeps an entry (DynamoDB's TTL deletes it after).
    audit_retention_days: Annotated[int, _whole_number(1, 36500)] = 400
    # Email discovery: the DNS server it asks ("host" or "host:port", an IP address; none:
    # the system's resolver), Thunderbird's ISPDB, and the port of the https servers it asks
    # for autoconfig (443; the sandbox's and the tests' servers listen on loopback ports).
    discovery_dns_server: Annotated[str | None, _valid_dns_server] = None
    discovery_ispdb_url: Url = "https://autoconfig.thunderbird.net/v1.1"
    discovery_https_port: Port = 443
    # Lookups that miss the cache, per organization and minute: a person typing addresses
    # needs a few; more would make the service a prober of other people's servers.
    discoveries_per_org_per_minute: PerMinute = 30
    # The deployment's stack: a tag of each secret it creates, which finds them once the
    # stack is deleted (the secrets are not the stack's resources).
    stack_name: str = ""
    # The customer-managed KMS key new secrets are encrypted with (empty: AWS-managed).
    secrets_kms_key_id: str = ""

    @property
    def mail_allowed_ports(self) -> frozenset[int]:
        return MAIL_PORTS | self.mail_extra_ports

    @property
    def discovery_dns_address(self) -> tuple[str, int] | None:
        """The discovery's DNS server as an address and a port, or None: the system's."""
        return None if self.discovery_dns_server is None else _dns_server(self.discovery_dns_server)

    @property
    def oauth_redirect_uri(self) -> str:
        return f"{self.public_base_url}/api/engine/oauth/callback"


def load_settings(environment: Mapping[str, str]) -> Settings:
    """The settings an environment gives, or a SettingsError naming each wrong variable."""
    # Any: each value is its field's reader's (tests/test_settings.py holds every field to a
    # reader, or to text).
    values: dict[str, Any] = {}
    problems = []
    for name, annotation in Settings.__annotations__.items():
        variable = name.upper()
        value = environment.get(variable, "")
        if value == "":  # an empty variable is an unset one (a template parameter left blank)
            if name not in Settings._field_defaults:
                problems.append(f"{variable}: required")
            continue
        read = getattr(annotation, "__metadata__", (str,))[0]
        try:
            values[name] = read(value)
        except ValueError as error:
            problems.append(f"{variable}: {error} (it is {value!r})")
    if problems:
        raise SettingsError("Invalid settings: " + "; ".join(problems))
    return Settings(**values)


@cache
def settings() -> Settings:
    return load_settings(os.environ)
