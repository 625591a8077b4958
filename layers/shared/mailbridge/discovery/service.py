"""Settings from the address alone: the provider, the recommended connection method and the
servers of an address's domain, each with where it came from.

The sources are asked side by side, all within DEADLINE_SECONDS; for each finding the
first good answer by priority wins (a source of higher priority is waited for, until the
deadline). For the servers: the domain's own autoconfig (its `autoconfig.` host, then its
`.well-known`), Thunderbird's ISPDB, SRV records, then the preset of the provider the MX
records (or the tenant) name. For the provider: the MX records, else the servers found, else
a Microsoft tenant for the domain. The recommended preset agrees with the servers returned:
the provider's when they are all its preset's, else custom. A provider's own domains
(gmail.com...) are presets, and ask nothing of the network.

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
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from pydantic import ValidationError

from ..agents.access import require_person
from ..agents.models import Caller
from ..connections.presets import PRESET_DOMAINS, PRESETS, resolve_server
from ..connections.records import PresetId, Security, ServerSettings
from ..connections.request_models import ServerOverride
from ..core.deadline import Deadline
from ..core.errors import InvalidField, LimitReached, MailbridgeError
from ..core.fields import email_address
from ..core.observability import logger
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

# On the sources: with the cache and the counter around them, the route answers within 3 s.
DEADLINE_SECONDS = 2.6
CACHED_FOR = timedelta(days=1)
# A result some source did not answer for: kept long enough to absorb a burst, short enough
# that the source's answer is soon taken into account.
CACHED_UNANSWERED_FOR = timedelta(minutes=10)

# The mail exchangers that name a provider (the hosts, lower-cased, without the final dot).
MX_PROVIDERS: list[tuple[str, MailProvider]] = [
    (r"(?:^|\.)mail\.protection\.outlook\.com$|(?:^|\.)mx\.microsoft$", "microsoft365"),
    (r"(?:^|\.)aspmx\.l\.google\.com$|^smtp\.google\.com$|(?:^|\.)googlemail\.com$", "google"),
    (r"(?:^|\.)yahoodns\.net$", "yahoo"),
    (r"(?:^|\.)zoho\.(?:com|eu|in|com\.au|com\.cn|jp|sa|ca|uk)$", "zoho"),
    (r"(?:^|\.)messagingengine\.com$", "fastmail"),
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
_CONSUMER_REASON = (
    "Outlook.com, Hotmail, Live and MSN accounts connect with Microsoft OAuth, tenant "
    "consumers (an app that accepts personal Microsoft accounts): Microsoft no longer takes "
    "their passwords for IMAP and SMTP."
)
# The servers a source names for this purpose are high; the ISPDB's, a third party's, medium.
_CONFIDENCE = {
    Source.AUTOCONFIG: Confidence.HIGH,
    Source.ISPDB: Confidence.MEDIUM,
    Source.SRV: Confidence.HIGH,
}
_NOTHING_FOUND = (
    " No settings were found for this domain: ask the mail provider for its IMAP and SMTP servers."
)

# The sources run side by side, on threads a warm Lambda instance keeps.
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="discovery")


def discover_email_settings(
    cache: DiscoveryCache, counters: CounterStore, caller: Caller, email: str
) -> EmailDiscovery:
    """What the Email tab proposes for `email`: a provider's own domain from the presets
    (nothing looked up, so nothing counted or cached); else from the cache when its domain
    was looked up lately, else looked up (and counted against the organization's limit)."""
    require_person(caller)
    address = _address(email)
    domain = address.rpartition("@")[2]
    known = PRESET_DOMAINS.get(domain)
    if known is not None:
        return _preset_domain(domain, known)
    cached = cache.get(domain, datetime.now(UTC))
    if cached is not None:
        return cached
    _count_lookup(counters, caller.org_id)
    found = discover_domain(
        domain_lookups(), domain, address, allow_private=settings().mail_allow_private_networks
    )
    kept_for = CACHED_UNANSWERED_FOR if found.unanswered else CACHED_FOR
    cache.put(found, found.looked_up_at + kept_for)
    return found


def _address(email: str) -> str:
    """The address, its domain lower-cased and without a final dot."""
    try:
        address = email_address(email)
    except ValueError:
        raise InvalidField(
            "email",
            "Enter an email address like name@example.com to look up its settings.",
            hint=None
            if email.isascii()
            else "Write a domain with letters beyond ASCII in its xn-- form.",
        ) from None
    domain = address.rpartition("@")[2]
    # Names that resolve to this machine whatever DNS says (RFC 6761): nothing to ask.
    if domain.rpartition(".")[2] == "localhost":
        raise InvalidField("email", f"{domain} is not a domain that receives mail.")
    return address


def _count_lookup(counters: CounterStore, org_id: str) -> None:
    now = datetime.now(UTC)
    limit = window("minute", settings().discoveries_per_org_per_minute, now)
    try:
        counters.count("DISCOVERY", [(f"RATE#ORG#{org_id}", limit)])
    except LimitReached as reached:
        raise reached.refusal(
            now,
            f"Too many settings lookups for your organization: at most {limit.limit} a minute.",
            ", or enter the settings yourself",
        ) from None


def _preset_domain(domain: str, preset: PresetId) -> EmailDiscovery:
    """A provider's own domain (gmail.com, outlook.com...): its preset, asking nothing."""
    provider = ProviderFinding(
        id=_PROVIDER_OF[preset], source=Source.PRESET, confidence=Confidence.HIGH
    )
    found = _answer(domain, provider, _preset_servers(preset, Source.PRESET, Confidence.HIGH))
    if preset != "microsoft365":
        return found
    # Microsoft's own domains are its consumer accounts' (Outlook.com): no organization's
    # tenant, and not Exchange Online's reason.
    tenant = TenantFinding(id="consumers", source=Source.PRESET, confidence=Confidence.HIGH)
    recommended = found.recommended.model_copy(update={"reason": _CONSUMER_REASON})
    return found.model_copy(update={"tenant": tenant, "recommended": recommended})


def discover_domain(
    lookups: DomainLookups, domain: str, email: str, *, allow_private: bool
) -> EmailDiscovery:
    """The findings for `domain`, which is no provider's own (see PRESET_DOMAINS). `email`,
    normalised, goes to the domain's own autoconfig only, as Thunderbird sends it; only the
    servers of its answer are kept, which are the domain's."""
    run = _Run(time.monotonic() + DEADLINE_SECONDS)

    def config_at(url: str) -> Callable[[], MailConfig | None]:
        return lambda: lookups.mail_config(url, domain, allow_private=allow_private)

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
    # Asked for every domain: Microsoft 365 behind a mail filter (Mimecast, Proofpoint) has
    # mail exchangers that name no provider, and only its tenant tells.
    tenant_lookup = run.start(lambda: lookups.microsoft_tenant(domain, allow_private=allow_private))

    by_mx = run.first([(Source.MX, exchangers)], _provider_of_exchangers)
    servers: dict[str, ServerFinding | None] = {}
    for protocol in ("imap", "smtp"):
        found = run.first(by_priority, partial(_usable, protocol=protocol))
        servers[protocol] = (
            None
            if found is None
            else ServerFinding(
                **found[1].model_dump(), source=found[0], confidence=_CONFIDENCE[found[0]]
            )
        )
    tenant_id = run.answer(Source.TENANT, tenant_lookup)
    provider = ProviderFinding(id="other", source=None, confidence=None)
    if by_mx is not None:
        provider = ProviderFinding(id=by_mx[1], source=Source.MX, confidence=Confidence.HIGH)
    elif (imap := servers["imap"]) and (by_servers := _provider_of_servers(imap)):
        provider = ProviderFinding(id=by_servers, source=imap.source, confidence=Confidence.MEDIUM)
    elif tenant_id is not None:
        provider = ProviderFinding(
            id="microsoft365", source=Source.TENANT, confidence=Confidence.MEDIUM
        )
    if provider.source in (Source.MX, Source.TENANT):
        # The provider's own servers, where no source of higher priority named others.
        preset = _preset_servers(PRESET_OF[provider.id], provider.source, Confidence.MEDIUM)
        servers = {protocol: servers[protocol] or preset[protocol] for protocol in servers}
    found_tenant = (
        TenantFinding(id=tenant_id, source=Source.TENANT, confidence=Confidence.HIGH)
        if tenant_id is not None and provider.id == "microsoft365"
        else None
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

    def answer(self, source: Source, future: Future[T]) -> T | None:
        """The source's answer; None, and the source unanswered, when it has not answered by
        the deadline or could not."""
        try:
            return future.result(timeout=max(0.0, self.ends_at - time.monotonic()))
        except (FutureTimeout, LookupUnanswered):
            pass
        except Exception as error:  # a hostile domain must never make a 500
            # Its type only: an exception's text may quote the autoconfig URL, which holds
            # the address, kept out of the logs.
            logger.warning(
                "a discovery source failed",
                extra={"source": source, "error_type": type(error).__name__},
            )
        self.unanswered.add(source)
        return None

    def first(
        self, sources: list[tuple[Source, Future[T]]], pick: Callable[[T], V | None]
    ) -> tuple[Source, V] | None:
        """The first source, by priority, whose answer gives what `pick` picks; a source
        that has not answered by the deadline, or could not, is passed over."""
        for source, future in sources:
            answer = self.answer(source, future)
            if answer is not None and (picked := pick(answer)) is not None:
                return source, picked
        return None


def _srv_config(lookups: DomainLookups, domain: str) -> MailConfig | None:
    """RFC 6186's IMAP over TLS; RFC 8314's submission over TLS, else with STARTTLS."""

    def first(service: str, protocol: str, security: Security) -> ServerSettings | None:
        # In RFC 2782's order, passing over a target no save would take (a name no mail
        # client takes, "_imap.example"; an address the service may not reach).
        for target in lookups.srv_targets(f"_{service}._tcp.{domain}"):
            server = {"host": target.host, "port": target.port, "security": security}
            if (usable := _allowed(server, protocol)) is not None:
                return usable
        return None

    imap = first("imaps", "imap", Security.TLS)
    smtp = first("submissions", "smtp", Security.TLS) or first(
        "submission", "smtp", Security.STARTTLS
    )
    return MailConfig(imap, smtp) if imap or smtp else None


def _usable(config: MailConfig | None, *, protocol: str) -> ServerSettings | None:
    """The config's server for `protocol` if a save would take it: a mail port, a host the
    service may reach (a document naming 127.0.0.1 or the metadata address is passed over)."""
    server = getattr(config, protocol) if config else None
    return None if server is None else _allowed(server.model_dump(), protocol)


def _allowed(server: dict[str, Any], protocol: str) -> ServerSettings | None:
    try:
        return resolve_server("custom", protocol, ServerOverride(**server))
    except (MailbridgeError, ValidationError):
        return None


def _provider_of_exchangers(hosts: list[str]) -> MailProvider | None:
    for host in hosts:
        for pattern, provider in MX_PROVIDERS:
            if re.search(pattern, host):
                return provider
    return None


def _provider_of_servers(imap: ServerFinding) -> MailProvider | None:
    """The provider whose preset's IMAP host the servers found name (an autoconfig that
    points at imap.gmail.com is Google's)."""
    for preset in PRESETS.values():
        if preset.imap is not None and preset.imap.host == imap.host:
            return _PROVIDER_OF[preset.id]
    return None


def _preset_servers(
    preset: PresetId, source: Source, confidence: Confidence
) -> dict[str, ServerFinding | None]:
    return {
        protocol: ServerFinding(**server.model_dump(), source=source, confidence=confidence)
        if (server := getattr(PRESETS[preset], protocol))
        else None
        for protocol in ("imap", "smtp")
    }


def _recommendation(
    provider: MailProvider, servers: dict[str, ServerFinding | None]
) -> Recommendation:
    preset = PRESET_OF[provider]
    if not _are_presets(preset, servers):
        # Servers a source named that are not the preset's: the form is filled with those.
        preset = "custom"
    if provider == "microsoft365":
        # The preset's note says why: Exchange Online refuses passwords.
        note = PRESETS["microsoft365"].note or ""
        return Recommendation(method="microsoft", preset=preset, reason=note)
    if provider == "google":
        return Recommendation(method="google", preset=preset, reason=_GOOGLE_REASON)
    reason = (PRESETS[PRESET_OF[provider]].note if provider != "other" else None) or _OTHER_REASON
    if servers["imap"] is None:
        reason = f"{reason}{_NOTHING_FOUND}"
    return Recommendation(method="imap", preset=preset, reason=reason)


def _are_presets(preset: PresetId, servers: dict[str, ServerFinding | None]) -> bool:
    """Whether each server found is the preset's own (host, port and security)."""
    for protocol, server in servers.items():
        own = getattr(PRESETS[preset], protocol)
        if server is not None and (
            own is None
            or (own.host, own.port, own.security) != (server.host, server.port, server.security)
        ):
            return False
    return True


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
        recommended=_recommendation(provider.id, servers),
        imap=servers["imap"],
        smtp=servers["smtp"],
        tenant=tenant,
        # In the order the sources are trusted.
        unanswered=sorted(unanswered or (), key=list(Source).index),
        looked_up_at=datetime.now(UTC),
    )
