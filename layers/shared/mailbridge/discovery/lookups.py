"""The port to what email discovery asks of the network: DNS records, autoconfig documents
and a Microsoft tenant's OpenID configuration; the adapter (`adapters.discovery`) is loaded
at first use, so no handler pays for dnspython at cold start.

Every call ends by the current deadline. An empty answer (None, []) is the source's answer:
nothing there, or nothing usable (a refused address, an oversized or malformed document).
`LookupUnanswered` is no answer at all (a timeout): a later lookup may find more.
"""

from __future__ import annotations

from typing import Protocol

from ..core.adapters import load_adapter
from .models import MailConfig, SrvTarget


class LookupUnanswered(Exception):
    """The source did not answer in time."""


class DomainLookups(Protocol):
    def mail_exchangers(self, domain: str) -> list[str]:
        """The domain's MX hosts, most preferred first."""
        ...

    def srv_targets(self, name: str) -> list[SrvTarget]:
        """The SRV record's targets, in the order RFC 2782 says to try them."""
        ...

    def mail_config(self, url: str, domain: str, *, allow_private: bool) -> MailConfig | None:
        """The autoconfig document at `url` (https only) for `domain`, from an address
        `allow_private` allows, size-capped and parsed without DTDs or entities."""
        ...

    def microsoft_tenant(self, domain: str, *, allow_private: bool) -> str | None:
        """The id of the Entra tenant that verified `domain`, from its OpenID
        configuration."""
        ...


def domain_lookups() -> DomainLookups:
    """The discovery adapter, loaded at first use."""
    adapter: DomainLookups = load_adapter("discovery")
    return adapter
