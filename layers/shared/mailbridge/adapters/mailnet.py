"""What the IMAP and SMTP adapters share: the TLS context and the failure classification.

Every failure becomes a `ConnectionProblem` built from the catalogue below, so the user sees
a stable code, our own sentence and a fix hint, never the server's raw text (the original
product echoed it, which turned the test into an oracle) and never a credential.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from functools import cache

from ..deadline import watch
from ..models import Problem, ServerSettings
from ..settings import settings

_CATALOGUE: dict[str, tuple[str, str]] = {
    "auth_failed": (
        "{proto} server {server} rejected the username or password.",
        "Regenerate the app password and paste it again. Use an app password, not the "
        "account password: most providers require one when 2-step verification is on.",
    ),
    "auth_unavailable": (
        "{proto} server {server} does not offer password login.",
        "The provider may have turned off password access for this account; use its OAuth "
        "connection method if there is one.",
    ),
    "connection_refused": (
        "Nothing accepted a connection at {server}.",
        "Check the host and port. The usual ports are {ports}.",
    ),
    "connection_failed": (
        "Could not reach {server}.",
        "Check the host and port, and that outgoing {proto} traffic is allowed by firewalls.",
    ),
    "timeout": (
        "{server} did not answer within {timeout:g} seconds.",
        "Check the host and port; a firewall that silently drops {proto} traffic looks like this.",
    ),
    "dns_failure": (
        "The host name of {server} could not be resolved.",
        "Check the spelling of the {proto} server host.",
    ),
    "tls_certificate_invalid": (
        "The TLS certificate of {server} could not be verified.",
        "Check that the host is the provider's own name (the certificate must match it). "
        "Certificates are always verified; a self-signed server needs a trusted CA.",
    ),
    "tls_handshake_failed": (
        "The TLS handshake with {server} failed.",
        "Check the security setting: TLS for ports {tls_ports}, STARTTLS for {starttls_ports}.",
    ),
    "starttls_unavailable": (
        "{proto} server {server} does not offer STARTTLS, so nothing was sent: the password "
        "would have travelled unencrypted.",
        "Use the implicit-TLS port ({tls_ports}) with security TLS.",
    ),
    "address_not_allowed": (
        "{server} resolves to a private, loopback or reserved address, which this service "
        "does not connect to.",
        "Use the provider's public host name. A self-hosted server on a private network "
        "needs the deployment's AllowPrivateMailServers setting.",
    ),
    "server_error": (
        "{proto} server {server} answered with an unexpected error.",
        "Try again in a few minutes; if it persists, check the provider's status page.",
    ),
}

_PORTS = {"IMAP": ("993", "143"), "SMTP": ("465", "587")}


class ConnectionProblem(Exception):
    def __init__(self, code: str, protocol: str, server: ServerSettings) -> None:
        tls_port, starttls_port = _PORTS[protocol]
        values = {
            "proto": protocol,
            "server": f"{server.host}:{server.port}",
            "timeout": settings().mail_timeout_seconds,
            "tls_ports": tls_port,
            "starttls_ports": starttls_port,
            "ports": f"{tls_port} (TLS) and {starttls_port} (STARTTLS)",
        }
        message, hint = _CATALOGUE[code]
        self.problem = Problem(
            code=code, message=message.format(**values), hint=hint.format(**values)
        )
        super().__init__(self.problem.message)


@cache
def tls_context() -> ssl.SSLContext:
    """Verifying context (hostname and chain), TLS 1.2+, plus the deployment's extra CA."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    extra_ca = settings().mail_extra_ca_file
    if extra_ca:
        context.load_verify_locations(cafile=extra_ca)
    return context


class AddressNotAllowed(OSError):
    """The host resolved to an address outside what the deployment may connect to."""


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """Public addresses only, unless the deployment allows private networks (self-hosted
    servers, the sandbox); link-local (cloud metadata), multicast, reserved and unspecified
    addresses never."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return False
    if ip.is_loopback:  # before reserved: ::1 is in IPv6's reserved ::/8
        return allow_private
    if ip.is_reserved:
        return False
    if ip.is_global:
        return True
    return allow_private and (ip.is_private or ip in _SHARED_ADDRESS_SPACE)


_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT


def open_connection(
    host: str, port: int, timeout: float | None, *, allow_private: bool | None = None
) -> socket.socket:
    """socket.create_connection, but every address is checked before it is used, and the
    connection goes to the checked address itself: a DNS answer that changes between a
    check and a connect (rebinding) cannot slip through."""
    if allow_private is None:
        allow_private = settings().mail_allow_private_networks
    last_error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if not address_allowed(str(address[0]), allow_private=allow_private):
            last_error = AddressNotAllowed(f"{host} resolves to a refused address")
            continue
        sock = socket.socket(family, kind, proto)
        try:
            watch(sock)
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as error:
            sock.close()
            last_error = error
    raise last_error or OSError(f"{host} has no address")


def classify_network_error(
    error: OSError, protocol: str, server: ServerSettings
) -> ConnectionProblem:
    # Most specific first: the SSL errors and TimeoutError are all OSErrors.
    if isinstance(error, AddressNotAllowed):
        return ConnectionProblem("address_not_allowed", protocol, server)
    if isinstance(error, ssl.SSLCertVerificationError):
        code = "tls_certificate_invalid"
    elif isinstance(error, ssl.SSLError):
        code = "tls_handshake_failed"
    elif isinstance(error, TimeoutError):
        code = "timeout"
    elif isinstance(error, socket.gaierror):
        code = "dns_failure"
    elif isinstance(error, ConnectionRefusedError):
        code = "connection_refused"
    else:
        code = "connection_failed"
    return ConnectionProblem(code, protocol, server)
