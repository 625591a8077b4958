"""Email discovery's network, behind the `discovery.lookups.DomainLookups` port: DNS with
dnspython (the deployment's resolver, or the server DISCOVERY_DNS_SERVER names), and https
GETs of autoconfig documents and OpenID configurations.

An https GET resolves the host itself, checks every address by the rule the connection test
applies (`core.addresses.address_allowed`), and connects to the address it checked, with TLS
verifying the certificate for the host: a DNS answer that changes between the check and the
connection (rebinding) cannot take it elsewhere. It takes a body of at most
MAX_DOCUMENT_BYTES, and reads at most MAX_RESPONSE_BYTES from the socket whatever the answer
says (its headers, its chunk sizes, a negative one included). It follows no redirect
(wherever one points, nothing is fetched from there) and ends by the current deadline, its
sockets watched.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Iterable
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import dns.name
import dns.resolver
from defusedxml import ElementTree
from pydantic import ValidationError

from ..connections.records import Security, ServerSettings
from ..core.addresses import address_allowed
from ..core.deadline import seconds_left, watch
from ..core.fields import GUID_PATTERN
from ..core.settings import settings
from ..discovery.lookups import LookupUnanswered
from ..discovery.models import MailConfig, SrvTarget
from .mailnet import tls_context

# Autoconfig documents and OpenID configurations are a few kilobytes.
MAX_DOCUMENT_BYTES = 64 * 1024
# All an answer may send: the document, its status line, headers and chunk framing.
MAX_RESPONSE_BYTES = MAX_DOCUMENT_BYTES + 16 * 1024
# At most, for one DNS query or one socket operation; the deadline usually ends them sooner.
_STEP_SECONDS = 3.0
# Autoconfig's socketType values this service connects with (never "plain").
_SECURITY = {"SSL": Security.TLS, "STARTTLS": Security.STARTTLS}
_TENANT_IN_ISSUER = re.compile(rf"/({GUID_PATTERN})/")


@cache
def _resolver() -> dns.resolver.Resolver:
    address = settings().discovery_dns_address
    if address is None:
        return dns.resolver.Resolver()  # the system's: in Lambda, the VPC's or AWS's
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [address[0]]
    resolver.port = address[1]
    return resolver


def _records(name: str, kind: str) -> list[Any]:
    """The records of `kind` at `name`; none when the name or the records do not exist."""
    lifetime = seconds_left(_STEP_SECONDS)
    if lifetime <= 0:
        raise LookupUnanswered(f"{kind} {name}: the deadline passed")
    try:
        return list(_resolver().resolve(name, kind, lifetime=lifetime, search=False))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
        # No answer in time, or only failures (SERVFAIL): maybe later.
        raise LookupUnanswered(f"{kind} {name}") from error
    except dns.exception.DNSException:
        return []  # a name DNS cannot hold (a label too long...): nothing there


def _host(name: dns.name.Name) -> str | None:
    """A record's target as a host name; None for the root ("."), which says "none"."""
    return None if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def _addresses(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    return [str(record.address) for kind in ("A", "AAAA") for record in _records(host, kind)]


class _Oversized(Exception):
    """The answer sent more than MAX_RESPONSE_BYTES."""


class _CappedReader:
    """The response's socket file, refusing to read past `limit` bytes in all: http.client
    reads as much as a chunk size says, and reads to the end for a chunk size of -1."""

    def __init__(self, raw: Any, limit: int) -> None:
        self._raw = raw
        self._left = limit

    def _counted(self, size: int) -> int:
        self._left -= size
        if self._left < 0:
            raise _Oversized
        return size

    def _cap(self, size: int | None) -> int:
        # One byte past the limit, so that an answer reaching it is told from one at it.
        return self._left + 1 if size is None or size < 0 else min(size, self._left + 1)

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._raw.read(self._cap(size))
        self._counted(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        data: bytes = self._raw.read1(self._cap(size))
        self._counted(len(data))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self._raw.readline(self._cap(size))
        self._counted(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as view:
            return self._counted(self._raw.readinto(view[: self._cap(len(view))]))

    def __getattr__(self, name: str) -> Any:  # close, fileno, peek...: the file's own
        return getattr(self._raw, name)


class _CappedResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = _CappedReader(self.fp, MAX_RESPONSE_BYTES)  # type: ignore[assignment]


class _CheckedAddressConnection(http.client.HTTPSConnection):
    """HTTPS to `address`, already checked, with SNI, certificate and Host for `host`."""

    response_class = _CappedResponse

    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=seconds_left(_STEP_SECONDS))
        self._address = address
        self._tls = tls_context()

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            watch(sock)
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _get(url: str, *, allow_private: bool) -> bytes | None:
    """The body of a 200 answer to GET `url`, from the first allowed address that answers;
    None for anything else (another status, a body over the cap, a refused address, a
    certificate not for the host). Raises LookupUnanswered when no address answered because
    of the network (a timeout, a refused or reset connection): maybe later."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    port = parts.port or settings().discovery_https_port
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    failed: OSError | None = None
    for address in _addresses(parts.hostname):
        if not address_allowed(address, allow_private=allow_private):
            continue
        connection = _CheckedAddressConnection(parts.hostname, port, address)
        try:
            connection.request("GET", target, headers={"User-Agent": "mailbridge-discovery"})
            answer = connection.getresponse()
            if answer.status != 200:
                return None  # redirects too: never followed
            length = answer.getheader("Content-Length", "")
            if length.isdigit() and int(length) > MAX_DOCUMENT_BYTES:
                return None
            body = answer.read(MAX_DOCUMENT_BYTES + 1)
            return body if len(body) <= MAX_DOCUMENT_BYTES else None
        except _Oversized:
            return None
        except ssl.SSLCertVerificationError:
            continue  # a certificate not for the host: that answer lasts
        except OSError as error:
            if seconds_left(_STEP_SECONDS) <= 0:
                raise LookupUnanswered(url) from error
            failed = error
        except http.client.HTTPException:
            continue  # not HTTP: a server that is no web server
        finally:
            connection.close()
    if failed is not None:
        raise LookupUnanswered(url) from failed
    return None


def parse_mail_config(document: bytes, domain: str) -> MailConfig | None:
    """The first IMAP and SMTP servers of an autoconfig document (config-v1.1) this service
    can use; None for a document that is not one, or holds a DTD or an entity."""
    try:
        root = ElementTree.fromstring(document, forbid_dtd=True)
    except (ElementTree.ParseError, ValueError):  # defusedxml's refusals are ValueErrors
        return None
    provider = root.find("emailProvider")
    if root.tag != "clientConfig" or provider is None:
        return None
    imap = _server(provider.iterfind("incomingServer"), "imap", domain)
    smtp = _server(provider.iterfind("outgoingServer"), "smtp", domain)
    return MailConfig(imap, smtp) if imap or smtp else None


def _server(elements: Iterable[Any], kind: str, domain: str) -> ServerSettings | None:
    for element in elements:
        security = _SECURITY.get((element.findtext("socketType") or "").strip())
        host = (element.findtext("hostname") or "").strip().replace("%EMAILDOMAIN%", domain)
        port = (element.findtext("port") or "").strip()
        if element.get("type") != kind or security is None or not port.isdecimal():
            continue
        try:
            return ServerSettings(host=host, port=int(port), security=security)
        except ValidationError:
            continue
    return None


class DiscoveryAdapter:
    def mail_exchangers(self, domain: str) -> list[str]:
        records = sorted(_records(domain, "MX"), key=lambda record: record.preference)
        return [host for record in records if (host := _host(record.exchange))]

    def srv_targets(self, name: str) -> list[SrvTarget]:
        records = sorted(_records(name, "SRV"), key=lambda r: (r.priority, -r.weight))
        return [SrvTarget(host, r.port) for r in records if (host := _host(r.target))]

    def mail_config(self, url: str, domain: str, *, allow_private: bool) -> MailConfig | None:
        document = _get(url, allow_private=allow_private)
        return None if document is None else parse_mail_config(document, domain)

    def microsoft_tenant(self, domain: str, *, allow_private: bool) -> str | None:
        authority = settings().microsoft_authority_host
        url = f"{authority}/{domain}/v2.0/.well-known/openid-configuration"
        document = _get(url, allow_private=allow_private)
        try:
            issuer = json.loads(document)["issuer"] if document else None
        except (ValueError, KeyError, TypeError, RecursionError):  # nested past the stack
            return None
        found = _TENANT_IN_ISSUER.search(issuer) if isinstance(issuer, str) else None
        return found[1].lower() if found else None


ADAPTER = DiscoveryAdapter()
