"""Which network addresses the service may connect to for mail: the one rule the adapters
apply to every address a host name resolves to when they connect, and that a save applies
to a host it can judge without asking DNS."""

from __future__ import annotations

import ipaddress
import socket

_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
# EC2's IPv6 instance metadata (fd00:ec2::254), DNS and time: a private range, refused always.
_EC2_SERVICES = ipaddress.ip_network("fd00:ec2::/32")
# NAT64 prefixes (RFC 6052 and 8215): the IPv4 address in the last 32 bits is the one reached.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# Resolved from /etc/hosts to loopback everywhere, Lambda included: no DNS answer changes it.
_LOOPBACK_NAMES = frozenset({"localhost"})


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """Public addresses only, unless the deployment allows private networks (self-hosted
    servers, the sandbox); link-local and cloud metadata, multicast, reserved and unspecified
    addresses never. An IPv6 address that carries an IPv4 one (mapped, 6to4, NAT64) is judged
    by the IPv4 address it reaches."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0]
    )
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _EC2_SERVICES:
            return False
        ip = _carried_ipv4(ip) or ip  # ::ffff:169.254.169.254 is 169.254.169.254
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return False
    if ip.is_loopback:  # before reserved: ::1 is in IPv6's reserved ::/8
        return allow_private
    if ip.is_reserved:
        return False
    if ip.is_global:
        return True
    return allow_private and (ip.is_private or ip in _SHARED_ADDRESS_SPACE)


def _carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if any(ip in prefix for prefix in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.ipv4_mapped or ip.sixtofour


def host_refused(host: str, *, allow_private: bool) -> bool:
    """Whether a connection to `host` is certain to be refused by `address_allowed`: an
    address in any form the resolver reads as one (`127.1` and `2130706433` are 127.0.0.1),
    or `localhost`. Any other name is left to the connection, which checks what DNS answers
    then (the answer may change; a save does not wait on DNS)."""
    if host in _LOOPBACK_NAMES:
        return not allow_private
    try:
        # Numeric forms only: never a DNS query.
        found = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return False
    return not all(address_allowed(str(info[4][0]), allow_private=allow_private) for info in found)
