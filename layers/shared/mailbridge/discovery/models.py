"""Email discovery's answer: who hosts an address's mail, how to connect to it, and where
each finding came from; and what the sources give the service to weigh."""

from datetime import datetime
from enum import StrEnum
from typing import Literal, NamedTuple

from pydantic import Field

from ..connections.records import PresetId, ServerSettings
from ..core.types import Model

MailProvider = Literal["microsoft365", "google", "yahoo", "zoho", "fastmail", "other"]
Method = Literal["microsoft", "google", "imap"]


class Source(StrEnum):
    """Where a finding came from, in the order the service trusts them for servers."""

    PRESET = "preset"  # the provider's own domain (gmail.com...)
    AUTOCONFIG = "autoconfig"  # the domain's own autoconfig, over https
    ISPDB = "ispdb"  # Thunderbird's database of providers
    SRV = "srv"  # RFC 6186 and 8314 SRV records
    MX = "mx"  # the domain's mail exchangers, mapped to a provider
    TENANT = "openid_configuration"  # the Microsoft tenant's OpenID configuration


class Confidence(StrEnum):
    HIGH = "high"  # said by the provider or the domain itself for this purpose
    # Inferred (a provider's preset servers from its mail exchangers or its tenant, a
    # provider from the servers' host or a tenant alone), or a third party's word (the ISPDB).
    MEDIUM = "medium"


class ProviderFinding(Model):
    id: MailProvider
    source: Source | None = Field(description="None for `other`: nothing named a provider.")
    confidence: Confidence | None


class ServerFinding(ServerSettings):
    source: Source
    confidence: Confidence


class TenantFinding(Model):
    id: str = Field(
        description="The Microsoft Entra directory (tenant) id, a GUID; `consumers` for "
        "Microsoft's own domains (personal accounts: outlook.com, hotmail.com...)."
    )
    source: Source
    confidence: Confidence


class Recommendation(Model):
    method: Method = Field(description="The connection method to choose in the Email tab.")
    preset: PresetId = Field(
        description="The preset to fill the IMAP/SMTP form with: the provider's when every "
        "server returned is its preset's, else `custom` (filled with the servers returned)."
    )
    reason: str


class EmailDiscovery(Model):
    """What discovery found for an address's domain; the same for every address of it."""

    domain: str
    provider: ProviderFinding
    recommended: Recommendation
    imap: ServerFinding | None
    smtp: ServerFinding | None
    tenant: TenantFinding | None = Field(
        description="For Microsoft 365: the tenant, to fill the Microsoft OAuth form with."
    )
    unanswered: list[Source] = Field(
        description="Sources that gave no answer in time, in the order they are trusted: a "
        "later lookup may find more."
    )
    looked_up_at: datetime


class MailConfig(NamedTuple):
    """The servers an autoconfig document (the domain's own, or the ISPDB's) names."""

    imap: ServerSettings | None
    smtp: ServerSettings | None


class SrvTarget(NamedTuple):
    host: str
    port: int
