"""Settings from the address alone: the provider, the recommended connection method and the
servers of an address's domain, each with where it came from.

The sources are asked side by side, all within DEADLINE_SECONDS; for each finding the
first good answer by priority wins (a source of higher priority is waited for, until the
deadline). For the servers: the domain's own autoconfig (its `autoconfig.` host, then its
`.well-known`), Thunderbird's ISPDB, SRV records, then the preset of the provider the MX
records name. For the provider: the MX records, else the servers found. A provider's own
domains (gmail.com...) are presets, and ask nothing of the network.

Results are cached per domain (never per address) for a day, or briefly when a source did not
answer; lookups that miss the cache are rate-limited per organization.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from pydantic import ValidationError

from ..agents.access import require_person
from ..agents.models import Caller
from ..connections.models import PresetId, Security, ServerOverride, ServerSettings
from ..connections.presets import PRESET_DOMAINS, PRESETS, resolve_server
from ..core.deadline import Deadline
from ..core.errors import ErrorCode, InvalidField, LimitReached, MailbridgeError
from ..core.fields import email_address
from ..core.settings import settings
from ..core.windows import window
from .lookups import DomainLookups, LookupUnanswered, domain_lookups
from .models import (
    Confidence,
    EmailDiscovery,
    MailConfig,
    MailProvider,
    ProviderFinding,
    Recommendation,
    ServerFinding,
    Source,
    TenantFinding,
)

if TYPE_CHECKING:
    from ..storage.protocols import CounterStore, DiscoveryCache

T = TypeVar("T")
V = TypeVar("V")

DEADLINE_SECONDS = 3.0
CACHED_FOR = timedelta(days=1)
# A result some source did not answer for: kept long enough to absorb a burst, short enough
# that the source's answer is soon taken into account.
CACHED_UNANSWERED_FOR = timedelta(minutes=10)

# The mail exchangers that name a provider (the hosts, lower-cased, without the final dot).
MX_PROVIDERS: list[tuple[re.Pattern[str], MailProvider]] = [
    (re.compile(r"(?:^|\.)mail\.protection\.outlook\.com$|(?:^|\.)mx\.microsoft$"), "microsoft365"),
    (
        re.compile(r"(?:^|\.)aspmx\.l\.google\.com$|^smtp\.google\.com$|(?:^|\.)googlemail\.com$"),
        "google",
    ),
    (re.compile(r"(?:^|\.)yahoodns\.net$"), "yahoo"),
    (re.compile(r"(?:^|\.)zoho\.(?:com|eu|in|com\.au|com\.cn|jp|sa|ca|uk)$"), "zoho"),
    (re.compile(r"(?:^|\.)messagingengine\.com$"), "fastmail"),
]
PRESET_OF: dict[MailProvider, PresetId] = {
    "microsoft365": "microsoft365",
    "google": "gmail",
    "yahoo": "yahoo",
    "zoho": "zoho",
    "fastmail": "fastmail",
    "other": "custom",
}
_PROVIDER_OF: dict[PresetId, MailProvider] = {
    preset: provider for provider, preset in PRESET_OF.items()
}
_GOOGLE_REASON = (
    "Google Workspace and Gmail accounts connect with Google OAuth: no app password, and it "
    "keeps working where an administrator turns app passwords off."
)
_OTHER_REASON = (
    "Connect with IMAP/SMTP and the mailbox's password or an app password: OAuth is for "
    "Microsoft 365 and Google accounts."
)
_NOTHING_FOUND = (
    " No settings were found for this domain: ask the mail provider for its IMAP and SMTP servers."
)

# The sources run side by side, on threads a warm Lambda instance keeps.
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="discovery")


def discover_email_settings(
    cache: DiscoveryCache, counters: CounterStore, caller: Caller, email: str
) -> EmailDiscovery:
    """What the Email tab proposes for `email`: from the cache when its domain was looked up
    lately, else looked up (and counted against the organization's limit)."""
    require_person(caller)
    domain = _domain_of(email)
    cached = cache.get(domain, datetime.now(UTC))
    if cached is not None:
        return cached
    _count_lookup(counters, caller.org_id)
    found = discover_domain(
        domain_lookups(), domain, email, allow_private=settings().mail_allow_private_networks
    )
    kept_for = CACHED_UNANSWERED_FOR if found.unanswered else CACHED_FOR
    cache.put(found, found.looked_up_at + kept_for)
    return found


def _domain_of(email: str) -> str:
    try:
        domain = email_address(email).rpartition("@")[2]
    except ValueError:
        raise InvalidField(
            "email",
            "Enter an email address like name@example.com to look up its settings.",
            hint=None
            if email.isascii()
            else "Write a domain with letters beyond ASCII in its xn-- form.",
        ) from None
    # Names that resolve to this machine whatever DNS says (RFC 6761): nothing to ask.
    if domain.rpartition(".")[2] == "localhost":
        raise InvalidField("email", f"{domain} is not a domain that receives mail.")
    return domain


def _count_lookup(counters: CounterStore, org_id: str) -> None:
    now = datetime.now(UTC)
    limit = window("minute", settings().discoveries_per_org_per_minute, now)
    try:
        counters.count("DISCOVERY", [(f"RATE#ORG#{org_id}", limit)])
    except LimitReached as reached:
        retry_after = reached.window.retry_after(now)
        raise MailbridgeError(
            ErrorCode.RATE_LIMITED,
            f"Too many settings lookups for your organization: at most {limit.limit} a minute.",
            hint=f"Try again in {retry_after} seconds, or enter the settings yourself.",
            retry_after=retry_after,
        ) from None


def discover_domain(
    lookups: DomainLookups, domain: str, email: str, *, allow_private: bool
) -> EmailDiscovery:
    """The findings for `domain`; `email` goes to the domain's own autoconfig only, as
    Thunderbird sends it."""
    known = PRESET_DOMAINS.get(domain)
    if known is not None:
        provider = ProviderFinding(
            id=_PROVIDER_OF[known], source=Source.PRESET, confidence=Confidence.HIGH
        )
        return _answer(domain, provider, _preset_servers(known, Source.PRESET, Confidence.HIGH))
    run = _Run(time.monotonic() + DEADLINE_SECONDS)

    def config_at(url: str) -> Callable[[], MailConfig | None]:
        return lambda: lookups.mail_config(url, domain, allow_private=allow_private)

    def tenant() -> str | None:
        return lookups.microsoft_tenant(domain, allow_private=allow_private)

    own = f"https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={quote(email, safe='')}"
    by_priority = [
        (Source.AUTOCONFIG, run.start(config_at(own))),
        (
            Source.AUTOCONFIG,
            run.start(config_at(f"https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml")),
        ),
        (Source.ISPDB, run.start(config_at(f"{settings().discovery_ispdb_url}/{domain}"))),
        (Source.SRV, run.start(lambda: _srv_config(lookups, domain))),
    ]
    exchangers = run.start(lambda: lookups.mail_exchangers(domain))

    by_mx: tuple[Source, MailProvider] | None = run.first(
        [(Source.MX, exchangers)], _provider_of_exchangers
    )
    # Microsoft's answer is asked for as soon as the provider is known to be Microsoft.
    tenant_lookup = run.start(tenant) if by_mx and by_mx[1] == "microsoft365" else None
    servers: dict[str, ServerFinding | None] = {}
    for protocol in ("imap", "smtp"):
        found = run.first(by_priority, partial(_usable, protocol=protocol))
        servers[protocol] = (
            None
            if found is None
            else ServerFinding(**found[1].model_dump(), source=found[0], confidence=Confidence.HIGH)
        )
    provider = ProviderFinding(id="other", source=None, confidence=None)
    if by_mx is not None:
        provider = ProviderFinding(id=by_mx[1], source=Source.MX, confidence=Confidence.HIGH)
        # The provider's own servers, where no source of higher priority named others.
        preset = _preset_servers(PRESET_OF[by_mx[1]], Source.MX, Confidence.MEDIUM)
        servers = {protocol: servers[protocol] or preset[protocol] for protocol in servers}
    elif (imap := servers["imap"]) and (by_servers := _provider_of_servers(imap)):
        provider = ProviderFinding(id=by_servers, source=imap.source, confidence=Confidence.MEDIUM)
    if provider.id == "microsoft365" and tenant_lookup is None:
        tenant_lookup = run.start(tenant)
    tenant_id = run.first([(Source.TENANT, tenant_lookup)], _as_found) if tenant_lookup else None
    found_tenant = (
        None
        if tenant_id is None
        else TenantFinding(id=tenant_id[1], source=Source.TENANT, confidence=Confidence.HIGH)
    )
    return _answer(domain, provider, servers, found_tenant, run.unanswered)


@dataclass
class _Run:
    """One lookup's sources, started side by side, each under the lookup's deadline (which
    outlives the request: a source no longer waited for still ends by it)."""

    ends_at: float
    unanswered: set[Source] = field(default_factory=set)

    def start(self, call: Callable[[], T]) -> Future[T]:
        # In the caller's context: the invocation's deadline bounds the source too.
        return _executor.submit(contextvars.copy_context().run, self._within, call)

    def _within(self, call: Callable[[], T]) -> T:
        with Deadline(max(0.0, self.ends_at - time.monotonic())):
            return call()

    def first(
        self, sources: list[tuple[Source, Future[T]]], pick: Callable[[T], V | None]
    ) -> tuple[Source, V] | None:
        """The first source, by priority, whose answer gives what `pick` picks; a source
        that has not answered by the deadline, or could not, is passed over."""
        for source, future in sources:
            try:
                answer = future.result(timeout=max(0.0, self.ends_at - time.monotonic()))
            except (FutureTimeout, LookupUnanswered):
                self.unanswered.add(source)
                continue
            picked = pick(answer)
            if picked is not None:
                return source, picked
        return None


def _srv_config(lookups: DomainLookups, domain: str) -> MailConfig | None:
    """RFC 6186's IMAP over TLS; RFC 8314's submission over TLS, else with STARTTLS."""

    def first(service: str, security: Security) -> ServerSettings | None:
        for target in lookups.srv_targets(f"_{service}._tcp.{domain}")[:1]:
            try:
                return ServerSettings(host=target.host, port=target.port, security=security)
            except ValidationError:
                return None  # a name DNS holds and no mail client takes ("_imap.example")
        return None

    imap = first("imaps", Security.TLS)
    smtp = first("submissions", Security.TLS) or first("submission", Security.STARTTLS)
    return MailConfig(imap, smtp) if imap or smtp else None


def _usable(config: MailConfig | None, *, protocol: str) -> ServerSettings | None:
    """The config's server for `protocol` if a save would take it: a mail port, a host the
    service may reach (a document naming 127.0.0.1 or the metadata address is passed over)."""
    server = getattr(config, protocol) if config else None
    if server is None:
        return None
    try:
        return resolve_server("custom", protocol, ServerOverride(**server.model_dump()))
    except (MailbridgeError, ValidationError):
        return None


def _provider_of_exchangers(hosts: list[str]) -> MailProvider | None:
    for host in hosts:
        for pattern, provider in MX_PROVIDERS:
            if pattern.search(host):
                return provider
    return None


def _provider_of_servers(imap: ServerFinding) -> MailProvider | None:
    """The provider whose preset's IMAP host the servers found name (an autoconfig that
    points at imap.gmail.com is Google's)."""
    for preset in PRESETS.values():
        if preset.imap is not None and preset.imap.host == imap.host:
            return _PROVIDER_OF[preset.id]
    return None


def _as_found(tenant: str | None) -> str | None:
    return tenant


def _preset_servers(
    preset: PresetId, source: Source, confidence: Confidence
) -> dict[str, ServerFinding | None]:
    return {
        protocol: ServerFinding(**server.model_dump(), source=source, confidence=confidence)
        if (server := getattr(PRESETS[preset], protocol))
        else None
        for protocol in ("imap", "smtp")
    }


def _recommendation(provider: MailProvider, servers_found: bool) -> Recommendation:
    preset = PRESET_OF[provider]
    if provider == "microsoft365":
        # The preset's note says why: Exchange Online refuses passwords.
        return Recommendation(method="microsoft", preset=preset, reason=PRESETS[preset].note or "")
    if provider == "google":
        return Recommendation(method="google", preset=preset, reason=_GOOGLE_REASON)
    reason = PRESETS[preset].note if provider != "other" else _OTHER_REASON
    if not servers_found:
        reason = f"{reason}{_NOTHING_FOUND}"
    return Recommendation(method="imap", preset=preset, reason=reason or "")


def _answer(
    domain: str,
    provider: ProviderFinding,
    servers: dict[str, ServerFinding | None],
    tenant: TenantFinding | None = None,
    unanswered: set[Source] | None = None,
) -> EmailDiscovery:
    return EmailDiscovery(
        domain=domain,
        provider=provider,
        recommended=_recommendation(provider.id, servers["imap"] is not None),
        imap=servers["imap"],
        smtp=servers["smtp"],
        tenant=tenant,
        unanswered=sorted(unanswered or ()),
        looked_up_at=datetime.now(UTC),
    )
