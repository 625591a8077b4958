"""Email discovery (GET /bridge/email-discovery) against real parts on loopback: the test
domains' DNS server (dnslib: MX, SRV, A records) and their https server (the test CA:
autoconfig documents and the ISPDB), the fake Microsoft's OpenID configuration for the
tenant, moto's table for the cache and the counters. Each test has a domain of its own, so
that one test's cached findings are never another's."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from mailbridge.core.deadline import Deadline
from mailbridge_tools.sandbox import FakeMicrosoft
from mailbridge_tools.sandbox.domains import Page
from mailbridge_tools.sandbox.identity.base import Reply
from support import REPORTS, ApiClient, ApiResponse, MailDomains, Org, make_org

ROUTE = "/bridge/email-discovery"
AUTOCONFIG = "/mail/config-v1.1.xml"
WELL_KNOWN = "/.well-known/autoconfig/mail/config-v1.1.xml"
# The route's deadline on its sources (the route's own is 3 s), and what a request may take
# beyond it on this shared machine (the local API, the cache and the counters).
DEADLINE_SECONDS = 2.6
SLACK_SECONDS = 1.5


def discover(client: ApiClient, email: str) -> ApiResponse:
    return client.get(f"{ROUTE}?email={quote(email)}")


def config_document(
    imap: tuple[str, int, str] | None = None, smtp: tuple[str, int, str] | None = None
) -> str:
    """An autoconfig document (config-v1.1) naming these (host, port, socketType)."""

    def server(element: str, kind: str, host: str, port: int, socket_type: str) -> str:
        return (
            f'<{element} type="{kind}"><hostname>{host}</hostname><port>{port}</port>'
            f"<socketType>{socket_type}</socketType><username>%EMAILADDRESS%</username>"
            f"<authentication>password-cleartext</authentication></{element}>"
        )

    servers = (server("incomingServer", "imap", *imap) if imap else "") + (
        server("outgoingServer", "smtp", *smtp) if smtp else ""
    )
    return (
        '<?xml version="1.0"?><clientConfig version="1.1"><emailProvider id="p">'
        f"<domain>p</domain>{servers}</emailProvider></clientConfig>"
    )


def server(host: str, port: int, security: str, source: str, confidence: str) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "security": security,
        "source": source,
        "confidence": confidence,
    }


def timed(client: ApiClient, email: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    answer = discover(client, email)
    assert answer.status == 200, answer.text
    return answer.json(), time.monotonic() - started


# ---- each source -------------------------------------------------------------------------


def test_a_providers_own_domain_is_its_preset_and_asks_the_network_nothing(
    org: Org, mail_domains: MailDomains
) -> None:
    found = discover(org.client, "jane@gmail.com").json()
    assert found["provider"] == {"id": "google", "source": "preset", "confidence": "high"}
    assert found["recommended"]["method"] == "google"
    assert found["recommended"]["preset"] == "gmail"
    assert found["imap"] == server("imap.gmail.com", 993, "tls", "preset", "high")
    assert found["smtp"] == server("smtp.gmail.com", 587, "starttls", "preset", "high")
    assert (found["tenant"], found["unanswered"]) == (None, [])
    assert [name for name, _ in mail_domains.dns.queries if "gmail" in name] == []


def test_microsofts_own_domains_are_personal_accounts_of_the_consumers_tenant(
    org: Org, mail_domains: MailDomains
) -> None:
    found = discover(org.client, "jane@Hotmail.com").json()
    assert found["provider"] == {"id": "microsoft365", "source": "preset", "confidence": "high"}
    assert (found["recommended"]["method"], found["recommended"]["preset"]) == (
        "microsoft",
        "microsoft365",
    )
    assert found["tenant"] == {"id": "consumers", "source": "preset", "confidence": "high"}
    reason = found["recommended"]["reason"]
    assert "consumers" in reason and "Exchange Online" not in reason
    assert [name for name, _ in mail_domains.dns.queries if "hotmail" in name] == []


def test_microsoft_365_behind_a_custom_domain_by_its_mx_and_its_tenant(
    org: Org, mail_domains: MailDomains, microsoft: FakeMicrosoft
) -> None:
    """The fake Microsoft knows contoso.example as a domain of its tenant."""
    mail_domains.dns.add(
        "contoso.example. 300 IN MX 0 contoso-example.mail.protection.outlook.com."
    )
    found = discover(org.client, "jane@contoso.example").json()
    assert found["provider"] == {"id": "microsoft365", "source": "mx", "confidence": "high"}
    recommended = found["recommended"]
    assert (recommended["method"], recommended["preset"]) == ("microsoft", "microsoft365")
    assert "Exchange Online" in recommended["reason"]
    # Servers inferred from the provider: what the user gets if they choose IMAP anyway.
    assert found["imap"] == server("outlook.office365.com", 993, "tls", "mx", "medium")
    assert found["tenant"] == {
        "id": microsoft.tenant_id,
        "source": "openid_configuration",
        "confidence": "high",
    }
    assert ("GET", "/contoso.example/v2.0/.well-known/openid-configuration") in microsoft.requests


def test_google_workspace_behind_a_custom_domain_by_its_mx(
    org: Org, mail_domains: MailDomains, microsoft: FakeMicrosoft
) -> None:
    mail_domains.dns.add(
        "workspace.test. 300 IN MX 1 aspmx.l.google.com.",
        "workspace.test. 300 IN MX 5 alt1.aspmx.l.google.com.",
    )
    found = discover(org.client, "jane@workspace.test").json()
    assert found["provider"] == {"id": "google", "source": "mx", "confidence": "high"}
    assert (found["recommended"]["method"], found["recommended"]["preset"]) == ("google", "gmail")
    assert found["imap"] == server("imap.gmail.com", 993, "tls", "mx", "medium")
    # Microsoft is asked about every domain, and knows none of this one's tenant.
    assert found["tenant"] is None
    assert ("GET", "/workspace.test/v2.0/.well-known/openid-configuration") in microsoft.requests


def test_microsoft_365_behind_a_mail_filter_by_its_tenant(
    org: Org, mail_domains: MailDomains, microsoft: FakeMicrosoft
) -> None:
    """The MX names a filter (Mimecast), no provider: the domain's tenant says Microsoft 365."""
    microsoft.tenants.add("filtered.test")
    mail_domains.dns.add("filtered.test. 300 IN MX 10 eu-smtp-inbound-1.mimecast.com.")
    found = discover(org.client, "jane@filtered.test").json()
    assert found["provider"] == {
        "id": "microsoft365",
        "source": "openid_configuration",
        "confidence": "medium",
    }
    assert (found["recommended"]["method"], found["recommended"]["preset"]) == (
        "microsoft",
        "microsoft365",
    )
    tenant = {"id": microsoft.tenant_id, "source": "openid_configuration", "confidence": "high"}
    assert found["tenant"] == tenant
    assert found["imap"] == server(
        "outlook.office365.com", 993, "tls", "openid_configuration", "medium"
    )


NESTED = "[" * 30_000 + "]" * 30_000  # deeper than Python's recursion limit, within the cap


@pytest.mark.parametrize(
    ("domain", "answer"),
    [
        ("tenant-no-guid.test", Reply(200, '{"issuer": "https://login.test/acme/v2.0"}')),
        ("tenant-not-an-object.test", Reply(200, '["issuer"]')),
        ("tenant-nested.test", Reply(200, NESTED)),
        ("tenant-unknown.test", None),
    ],
    ids=["issuer-without-a-guid", "not-an-object", "nested-past-the-stack", "unknown-domain"],
)
def test_an_openid_configuration_without_a_tenant_gives_none(
    org: Org, mail_domains: MailDomains, microsoft: FakeMicrosoft, domain: str, answer: Reply | None
) -> None:
    """The MX names Microsoft 365; its answer for the domain names no tenant (for an unknown
    domain, the fake answers 400 as Entra does): no tenant, and an answer all the same."""
    if answer is not None:
        microsoft.openid_configurations[domain] = answer
    mail_domains.dns.add(f"{domain}. 300 IN MX 0 x.mail.protection.outlook.com.")
    found = discover(org.client, f"jane@{domain}")
    assert found.status == 200, found.text
    assert found.json()["provider"]["id"] == "microsoft365"
    assert (found.json()["tenant"], found.json()["unanswered"]) == (None, [])
    assert ("GET", f"/{domain}/v2.0/.well-known/openid-configuration") in microsoft.requests


@pytest.mark.parametrize(
    ("exchanger", "provider", "preset"),
    [
        ("smtp.google.com", "google", "gmail"),
        ("aspmx2.googlemail.com", "google", "gmail"),
        ("contoso-test.mail.protection.outlook.com", "microsoft365", "microsoft365"),
        ("mta6.am0.yahoodns.net", "yahoo", "yahoo"),
        ("mx.zoho.eu", "zoho", "zoho"),
        ("in1-smtp.messagingengine.com", "fastmail", "fastmail"),
        ("mx.hosting.test", "other", "custom"),
    ],
)
def test_mail_exchangers_name_their_provider(
    org: Org, mail_domains: MailDomains, exchanger: str, provider: str, preset: str
) -> None:
    domain = f"mx-{provider}-{exchanger.replace('.', '-')}.test"
    mail_domains.dns.add(f"{domain}. 300 IN MX 10 {exchanger}.")
    found = discover(org.client, f"jane@{domain}").json()
    assert found["provider"]["id"] == provider
    assert found["recommended"]["preset"] == preset
    expected_method = {"microsoft365": "microsoft", "google": "google"}.get(provider, "imap")
    assert found["recommended"]["method"] == expected_method
    if provider == "other":  # nothing else knows the domain
        assert (found["imap"], found["smtp"]) == (None, None)
        assert "No settings were found" in found["recommended"]["reason"]


def test_the_domains_own_autoconfig_from_one_resolution_of_its_host(
    org: Org, mail_domains: MailDomains
) -> None:
    web, dns = mail_domains.web, mail_domains.dns
    web.put(
        "autoconfig.autoconf.test",
        AUTOCONFIG,
        config_document(
            ("imap.%EMAILDOMAIN%", 993, "SSL"), ("smtp.autoconf.test", 587, "STARTTLS")
        ),
    )
    found = discover(org.client, "Jane.Doe@AutoConf.TEST.").json()
    assert found["imap"] == server("imap.autoconf.test", 993, "tls", "autoconfig", "high")
    assert found["smtp"] == server("smtp.autoconf.test", 587, "starttls", "autoconfig", "high")
    assert found["provider"] == {"id": "other", "source": None, "confidence": None}
    assert (found["recommended"]["method"], found["recommended"]["preset"]) == ("imap", "custom")
    # Asked as Thunderbird asks, of the domain's own server only, with the address normalised.
    assert web.asked("autoconfig.autoconf.test") == [
        f"{AUTOCONFIG}?emailaddress=Jane.Doe%40autoconf.test"
    ]
    # The host was resolved once, by the discovery's resolver, and the request went to the
    # address it gave (the system's resolver knows no .test name: nothing else could reach it).
    assert dns.asked("autoconfig.autoconf.test") == ["A", "AAAA"]


def test_the_domains_well_known_autoconfig(org: Org, mail_domains: MailDomains) -> None:
    mail_domains.web.put(
        "wellknown.test",
        WELL_KNOWN,
        config_document(("mail.wellknown.test", 993, "SSL"), ("mail.wellknown.test", 465, "SSL")),
    )
    found = discover(org.client, "jane@wellknown.test").json()
    assert found["imap"] == server("mail.wellknown.test", 993, "tls", "autoconfig", "high")
    assert found["smtp"] == server("mail.wellknown.test", 465, "tls", "autoconfig", "high")


def test_thunderbirds_ispdb(org: Org, mail_domains: MailDomains) -> None:
    mail_domains.web.put(
        "ispdb.test",
        "/v1.1/listed.test",
        config_document(("imap.listed.test", 993, "SSL"), ("smtp.listed.test", 587, "STARTTLS")),
    )
    found = discover(org.client, "jane@listed.test").json()
    # A third party's word on the domain: medium.
    assert found["imap"] == server("imap.listed.test", 993, "tls", "ispdb", "medium")
    assert found["smtp"] == server("smtp.listed.test", 587, "starttls", "ispdb", "medium")
    # The ISPDB is asked about the domain, never the address.
    assert mail_domains.web.asked("ispdb.test").count("/v1.1/listed.test") == 1


def test_srv_records_submission_over_tls_first(org: Org, mail_domains: MailDomains) -> None:
    mail_domains.dns.add(
        "_imaps._tcp.srv.test. 300 IN SRV 0 1 993 mail.srv.test.",
        "_submission._tcp.srv.test. 300 IN SRV 0 1 587 mail.srv.test.",
        "_submissions._tcp.srv.test. 300 IN SRV 5 1 465 submit.srv.test.",
        "_submissions._tcp.srv.test. 300 IN SRV 0 1 465 mail.srv.test.",
    )
    found = discover(org.client, "jane@srv.test").json()
    assert found["imap"] == server("mail.srv.test", 993, "tls", "srv", "high")
    assert found["smtp"] == server("mail.srv.test", 465, "tls", "srv", "high")


def test_an_srv_target_the_service_may_not_reach_is_passed_over_for_the_next(
    org: Org, mail_domains: MailDomains
) -> None:
    mail_domains.dns.add(
        "_imaps._tcp.srv-literal.test. 300 IN SRV 0 1 993 169.254.169.254.",
        "_imaps._tcp.srv-literal.test. 300 IN SRV 5 1 993 mail.srv-literal.test.",
    )
    found = discover(org.client, "jane@srv-literal.test").json()
    assert found["imap"] == server("mail.srv-literal.test", 993, "tls", "srv", "high")


def test_each_finding_takes_the_first_source_by_priority_that_has_it(
    org: Org, mail_domains: MailDomains
) -> None:
    """Autoconfig names IMAP only, the ISPDB both, SRV both, the MX Google: IMAP is
    autoconfig's, SMTP the ISPDB's, the provider the MX's; and the preset is custom, the
    servers found being no Gmail's."""
    web, dns = mail_domains.web, mail_domains.dns
    web.put(
        "autoconfig.everything.test",
        AUTOCONFIG,
        config_document(("own.everything.test", 993, "SSL")),
    )
    web.put(
        "ispdb.test",
        "/v1.1/everything.test",
        config_document(
            ("ispdb-imap.everything.test", 993, "SSL"), ("ispdb-smtp.everything.test", 465, "SSL")
        ),
    )
    dns.add(
        "_imaps._tcp.everything.test. 300 IN SRV 0 1 993 srv.everything.test.",
        "_submissions._tcp.everything.test. 300 IN SRV 0 1 465 srv.everything.test.",
        "everything.test. 300 IN MX 1 smtp.google.com.",
    )
    found = discover(org.client, "jane@everything.test").json()
    assert found["imap"] == server("own.everything.test", 993, "tls", "autoconfig", "high")
    assert found["smtp"] == server("ispdb-smtp.everything.test", 465, "tls", "ispdb", "medium")
    assert found["provider"] == {"id": "google", "source": "mx", "confidence": "high"}
    assert (found["recommended"]["method"], found["recommended"]["preset"]) == ("google", "custom")


def test_servers_that_name_a_provider_name_it(org: Org, mail_domains: MailDomains) -> None:
    """No MX names a provider, but the domain's autoconfig points at Gmail's servers."""
    mail_domains.web.put(
        "ispdb.test",
        "/v1.1/hosted-at-google.test",
        config_document(("imap.gmail.com", 993, "SSL"), ("smtp.gmail.com", 465, "SSL")),
    )
    found = discover(org.client, "jane@hosted-at-google.test").json()
    assert found["provider"] == {"id": "google", "source": "ispdb", "confidence": "medium"}
    # Gmail's IMAP, and an SMTP port its preset does not use: the servers as found.
    assert (found["recommended"]["method"], found["recommended"]["preset"]) == ("google", "custom")


# ---- the deadline --------------------------------------------------------------------------


def test_a_silent_autoconfig_host_is_waited_for_until_the_deadline_only(
    org: Org, mail_domains: MailDomains
) -> None:
    """It accepts the connection and never answers; SRV's answer is taken at the deadline,
    and the finding is kept only briefly."""
    mail_domains.web.silent.add("autoconfig.silent.test")
    mail_domains.dns.add(
        "_imaps._tcp.silent.test. 300 IN SRV 0 1 993 mail.silent.test.",
        "_submissions._tcp.silent.test. 300 IN SRV 0 1 465 mail.silent.test.",
    )
    found, seconds = timed(org.client, "jane@silent.test")
    assert found["imap"] == server("mail.silent.test", 993, "tls", "srv", "high")
    assert found["unanswered"] == ["autoconfig"]
    assert DEADLINE_SECONDS - 0.1 <= seconds <= DEADLINE_SECONDS + SLACK_SECONDS
    assert mail_domains.web.asked("autoconfig.silent.test")  # it was asked, and said nothing
    expires_in = _cached_item("silent.test")["expires_at"] - time.time()
    assert 500 <= expires_in <= 600
    REPORTS.setdefault("Email discovery", []).append(
        f"a silent autoconfig host: answered in {seconds:.2f} s (deadline {DEADLINE_SECONDS} s)"
    )


def test_a_silent_dns_server_for_the_domain_holds_the_deadline(
    org: Org, mail_domains: MailDomains
) -> None:
    mail_domains.dns.silence("silent-dns.test")
    mail_domains.dns.silence("_imaps._tcp.silent-dns.test")
    found, seconds = timed(org.client, "jane@silent-dns.test")
    # In the order the sources are trusted (the .well-known host is the domain's own name).
    assert found["unanswered"] == ["autoconfig", "srv", "mx"]
    assert found["provider"]["id"] == "other"
    assert seconds <= DEADLINE_SECONDS + SLACK_SECONDS
    REPORTS.setdefault("Email discovery", []).append(
        f"a domain whose DNS never answers: answered in {seconds:.2f} s"
    )


def test_a_domain_that_answers_at_once_is_not_held_to_the_deadline(
    org: Org, mail_domains: MailDomains
) -> None:
    found, seconds = timed(org.client, "jane@nothing-here.test")
    assert (found["provider"]["id"], found["imap"], found["unanswered"]) == ("other", None, [])
    assert seconds < DEADLINE_SECONDS / 2
    REPORTS.setdefault("Email discovery", []).append(
        f"a domain every source answers at once (nothing found): {seconds:.2f} s"
    )


# ---- hostile answers -----------------------------------------------------------------------

LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE clientConfig [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    + ']><clientConfig version="1.1"><emailProvider id="p"><incomingServer type="imap">'
    "<hostname>&j;</hostname><port>993</port><socketType>SSL</socketType></incomingServer>"
    "</emailProvider></clientConfig>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE clientConfig [<!ENTITY host SYSTEM "file:///etc/hostname">]>'
    '<clientConfig version="1.1"><emailProvider id="p"><incomingServer type="imap">'
    "<hostname>&host;</hostname><port>993</port><socketType>SSL</socketType></incomingServer>"
    "</emailProvider></clientConfig>"
)
# Harmless to expand, and what a parser that takes entities would read as a good server.
ENTITY_IN_DTD = (
    '<?xml version="1.0"?><!DOCTYPE clientConfig [<!ENTITY host "imap.smuggled.test">]>'
    '<clientConfig version="1.1"><emailProvider id="p"><incomingServer type="imap">'
    "<hostname>&host;</hostname><port>993</port><socketType>SSL</socketType></incomingServer>"
    "</emailProvider></clientConfig>"
)
OVERSIZED = config_document(("imap.oversized.test", 993, "SSL")).replace(
    "<domain>", "<!--" + "x" * 70_000 + "--><domain>"
)


@pytest.mark.parametrize(
    ("domain", "document"),
    [
        ("oversized.test", OVERSIZED),
        ("laughs.test", LAUGHS),
        ("entity.test", EXTERNAL_ENTITY),
        ("dtd.test", ENTITY_IN_DTD),
    ],
    ids=["oversized", "billion-laughs", "external-entity", "entity-in-a-dtd"],
)
def test_a_hostile_autoconfig_is_passed_over_for_the_next_source(
    org: Org, mail_domains: MailDomains, domain: str, document: str
) -> None:
    mail_domains.web.put(f"autoconfig.{domain}", AUTOCONFIG, document)
    mail_domains.web.put(
        "ispdb.test", f"/v1.1/{domain}", config_document(("imap.ispdb.example", 993, "SSL"))
    )
    found, seconds = timed(org.client, f"jane@{domain}")
    assert mail_domains.web.asked(f"autoconfig.{domain}")  # read, and refused
    assert found["imap"] == server("imap.ispdb.example", 993, "tls", "ispdb", "medium")
    assert found["unanswered"] == []
    assert seconds < DEADLINE_SECONDS  # no expansion ran


def test_an_answer_over_the_cap_is_refused_at_the_socket(
    local_api: Any, mail_domains: MailDomains
) -> None:
    """A chunk size of -1 would have http.client read to the end of the connection: the
    socket's reader stops the answer near the cap, whatever it says."""
    from mailbridge.discovery.lookups import domain_lookups

    endless = Page(
        raw=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        repeat=b"x" * 65536,
        repeats=1024,  # 64 MiB
    )
    mail_domains.web.pages[("oversized.test", "/chunked")] = endless
    started = time.monotonic()
    with Deadline(DEADLINE_SECONDS):
        found = domain_lookups().mail_config(
            "https://oversized.test/chunked", "oversized.test", allow_private=True
        )
    assert found is None
    assert time.monotonic() - started < DEADLINE_SECONDS / 2
    # What the client did not read stayed in the sockets' buffers, a few MiB at most.
    assert endless.sent < 32 * 1024 * 1024


def test_a_document_over_the_cap_without_a_length_is_refused(
    local_api: Any, mail_domains: MailDomains
) -> None:
    """No Content-Length to refuse it by: the body read stops one byte past the cap."""
    from mailbridge.discovery.lookups import domain_lookups

    unannounced = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + OVERSIZED.encode()
    mail_domains.web.pages[("oversized.test", "/unannounced")] = Page(raw=unannounced)
    with Deadline(DEADLINE_SECONDS):
        found = domain_lookups().mail_config(
            "https://oversized.test/unannounced", "oversized.test", allow_private=True
        )
    assert found is None
    assert mail_domains.web.asked("oversized.test").count("/unannounced") == 1


def test_servers_the_service_may_not_reach_are_passed_over(
    org: Org, mail_domains: MailDomains
) -> None:
    """The metadata address, a port that is no mail port: what a save would refuse."""
    mail_domains.web.put(
        "autoconfig.unsafe.test",
        AUTOCONFIG,
        config_document(("169.254.169.254", 993, "SSL"), ("smtp.unsafe.test", 22, "SSL")),
    )
    mail_domains.web.put(
        "ispdb.test",
        "/v1.1/unsafe.test",
        config_document(("imap.unsafe.test", 993, "SSL"), ("smtp.unsafe.test", 465, "SSL")),
    )
    found = discover(org.client, "jane@unsafe.test").json()
    assert found["imap"] == server("imap.unsafe.test", 993, "tls", "ispdb", "medium")
    assert found["smtp"] == server("smtp.unsafe.test", 465, "tls", "ispdb", "medium")


def test_a_redirect_is_not_followed(org: Org, mail_domains: MailDomains) -> None:
    web = mail_domains.web
    web.put(
        "autoconfig.redirect.test",
        AUTOCONFIG,
        "",
        status=302,
        headers={"Location": "https://ispdb.test/v1.1/redirected.test"},
    )
    web.put(
        "ispdb.test", "/v1.1/redirected.test", config_document(("imap.elsewhere.test", 993, "SSL"))
    )
    found = discover(org.client, "jane@redirect.test").json()
    assert web.asked("autoconfig.redirect.test")
    assert "/v1.1/redirected.test" not in web.asked("ispdb.test")
    assert found["imap"] is None


def test_hosts_on_refused_addresses_are_never_contacted(
    local_api: Any, mail_domains: MailDomains
) -> None:
    """With private networks off (as deployed by default), the domain's hosts resolving to
    loopback get no request; with them on (the tests' setting), the same lookup reads them."""
    from mailbridge.discovery.lookups import domain_lookups
    from mailbridge.discovery.service import discover_domain

    web = mail_domains.web
    web.put(
        "autoconfig.refused.test", AUTOCONFIG, config_document(("imap.refused.test", 993, "SSL"))
    )
    web.put("refused.test", WELL_KNOWN, config_document(("imap.refused.test", 993, "SSL")))
    refused = discover_domain(
        domain_lookups(), "refused.test", "jane@refused.test", allow_private=False
    )
    assert web.asked("autoconfig.refused.test") == web.asked("refused.test") == []
    assert (refused.imap, refused.unanswered) == (None, [])
    allowed = discover_domain(
        domain_lookups(), "refused.test", "jane@refused.test", allow_private=True
    )
    assert allowed.imap is not None and allowed.imap.host == "imap.refused.test"
    assert web.asked("autoconfig.refused.test")


def test_metadata_and_link_local_addresses_are_refused_even_with_private_networks_on(
    local_api: Any, mail_domains: MailDomains
) -> None:
    """The autoconfig hosts resolve to the metadata address, in IPv4 and mapped into IPv6,
    and to a link-local address: none is connected to (a connection to any would fail or
    time out, and leave autoconfig unanswered)."""
    from mailbridge.discovery.lookups import domain_lookups
    from mailbridge.discovery.service import discover_domain

    dns = mail_domains.dns
    dns.add(
        "autoconfig.metadata.test. 300 IN A 169.254.169.254",
        "autoconfig.metadata.test. 300 IN AAAA ::ffff:a9fe:a9fe",  # ::ffff:169.254.169.254
        "autoconfig.metadata.test. 300 IN AAAA fe80::1",
        "metadata.test. 300 IN AAAA ::ffff:a9fe:a9fe",
    )
    found = discover_domain(
        domain_lookups(), "metadata.test", "jane@metadata.test", allow_private=True
    )
    assert (found.imap, found.unanswered) == (None, [])
    assert dns.asked("autoconfig.metadata.test") == ["A", "AAAA"]
    assert dns.asked("metadata.test").count("AAAA") == 1
    assert mail_domains.web.asked("autoconfig.metadata.test") == []


def test_a_host_that_refuses_the_connection_has_not_answered(
    local_api: Any, mail_domains: MailDomains
) -> None:
    """Nothing listens there: maybe later, so the findings are kept briefly."""
    from mailbridge.discovery.lookups import domain_lookups
    from mailbridge.discovery.service import discover_domain

    mail_domains.dns.add("autoconfig.closed.test. 300 IN A 127.0.0.2")
    found = discover_domain(domain_lookups(), "closed.test", "jane@closed.test", allow_private=True)
    assert found.unanswered == ["autoconfig"]


# ---- the cache and the rate limit ---------------------------------------------------------


def _cached_item(domain: str) -> dict[str, Any]:
    table = boto3.resource("dynamodb").Table(_table_name())
    item: dict[str, Any] = table.get_item(Key={"pk": f"DISCOVERY#{domain}", "sk": "DISCOVERY"})[
        "Item"
    ]
    return {**item, "expires_at": int(item["expires_at"])}


def _table_name() -> str:
    import os

    return os.environ["TABLE_NAME"]


def test_a_domain_is_looked_up_once_for_every_address_and_organization(
    org: Org, other_org: Org, mail_domains: MailDomains
) -> None:
    web, dns = mail_domains.web, mail_domains.dns
    web.put("autoconfig.cached.test", AUTOCONFIG, config_document(("imap.cached.test", 993, "SSL")))
    first = discover(org.client, "jane@cached.test").json()
    again = [
        discover(client, address).json()
        for client, address in (
            (org.client, "john@cached.test"),
            (other_org.client, "ann@cached.test"),
            (org.client, "JANE@Cached.TEST."),  # the same domain, written otherwise
        )
    ]
    assert again == [first, first, first]
    assert len(web.asked("autoconfig.cached.test")) == 1
    assert dns.asked("cached.test").count("MX") == 1
    item = _cached_item("cached.test")
    # The domain's findings, never the address: no local part is kept.
    assert "jane" not in str(item) and item["pk"] == "DISCOVERY#cached.test"
    assert 86400 - 60 <= item["expires_at"] - time.time() <= 86400


def test_a_cached_item_that_no_longer_reads_is_looked_up_again(
    org: Org, mail_domains: MailDomains
) -> None:
    """An item an older version wrote, in a shape this one does not read: a miss."""
    table = boto3.resource("dynamodb").Table(_table_name())
    stale = {"domain": "stale.test", "provider": "google"}
    table.put_item(
        Item={
            "pk": "DISCOVERY#stale.test",
            "sk": "DISCOVERY",
            "discovery": json.dumps(stale),
            "expires_at": int(time.time()) + 3600,
        }
    )
    mail_domains.dns.add("stale.test. 300 IN MX 10 mx.hosting.test.")
    found = discover(org.client, "jane@stale.test")
    assert found.status == 200, found.text
    assert found.json()["provider"]["id"] == "other"
    assert mail_domains.dns.asked("stale.test").count("MX") == 1
    assert json.loads(_cached_item("stale.test")["discovery"])["provider"]["id"] == "other"


def test_lookups_are_rate_limited_per_organization_and_cached_answers_are_not_counted(
    local_api: Any, org: Org, mail_domains: MailDomains
) -> None:
    """30 a minute (DISCOVERIES_PER_ORG_PER_MINUTE): the 31st new domain waits; a domain in the
    cache still answers, and another organization is not held back."""
    while time.gmtime().tm_sec > 40:  # every lookup inside one calendar minute
        time.sleep(0.5)
    run = f"{time.monotonic_ns()}"
    statuses = [discover(org.client, f"jane@limit-{i}-{run}.test").status for i in range(30)]
    assert statuses == [200] * 30
    limited = discover(org.client, f"jane@limit-30-{run}.test")
    assert (limited.status, limited.error["code"]) == (429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert discover(org.client, f"john@limit-0-{run}.test").status == 200  # cached
    assert discover(org.client, f"JOHN@Limit-0-{run}.TEST.").status == 200  # the same domain
    # A provider's own domain asks nothing: neither counted nor cached.
    assert discover(org.client, "jane@gmail.com").status == 200
    table = boto3.resource("dynamodb").Table(_table_name())
    assert "Item" not in table.get_item(Key={"pk": "DISCOVERY#gmail.com", "sk": "DISCOVERY"})
    assert discover(make_org(local_api).client, f"jane@limit-30-{run}.test").status == 200


# ---- who may ask, and what --------------------------------------------------------------


def test_only_a_person_of_an_organization_may_ask(local_api: Any, org: Org) -> None:
    assert discover(ApiClient(local_api.url, None), "jane@gmail.com").status == 401
    agent_token = local_api.issuer.mint(sub="runtime", org_id=org.org_id, agent_id=org.agent_id)
    refused = discover(ApiClient(local_api.url, agent_token), "jane@gmail.com")
    assert (refused.status, refused.error["code"]) == (403, "agent_token_not_allowed")


@pytest.mark.parametrize(
    "email",
    [
        "jane",
        "jane@",
        "@acme.test",
        "jane@localhost",
        "jane@mail.localhost",
        "jane@127.0.0.1",
        "jane@[127.0.0.1]",
        "jane@[::1]",
        "jane@2130706433",
        "jane@acme.test\r\nX-Injected: 1",
        "jane@straße.test",
        "jane@acme..test",
    ],
)
def test_an_address_that_is_not_one_is_refused_before_anything_is_asked(
    org: Org, mail_domains: MailDomains, email: str
) -> None:
    asked_before = len(mail_domains.dns.queries)
    refused = discover(org.client, email)
    assert (refused.status, refused.error["code"], refused.error["field"]) == (
        422,
        "invalid_field",
        "email",
    )
    if not email.isascii():
        assert "xn--" in refused.error["hint"]
    assert len(mail_domains.dns.queries) == asked_before


def test_the_address_is_required(org: Org) -> None:
    refused = org.client.get(ROUTE)
    assert (refused.status, refused.error["code"]) == (422, "missing_field")
