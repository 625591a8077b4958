"""What the domain may ask of each store. The domain is typed against these, never against
boto3 or the implementations; a failed AWS call is `storage_unavailable` everywhere, and a
conditional write that lost a race is `StaleWrite` where a method says so. A method taking an
`entry` writes it in the same transaction as its change: both or neither."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Protocol

from ..agents.models import Agent
from ..audit.models import AuditEntry
from ..connections.records import StoredConfig, TokenRef
from ..core.types import SecretRef
from ..core.windows import Window
from ..discovery.models import EmailDiscovery
from ..mail.models import SentMessage
from ..newmail.events import MailReceived
from ..newmail.models import Feed, SyncRequest
from ..oauth.models import PendingAuthorization
from ..orgs.records import AppOwner, ClientOrg, SharedApp


class AgentStore(Protocol):
    """Agents, their email-config records and their token-refresh locks."""

    def load(self, agent_id: str) -> tuple[Agent | None, StoredConfig | None]:
        """The agent and its config, in one round trip."""
        ...

    def put_agent(self, agent: Agent, entry: AuditEntry) -> bool:
        """Register or update it; False (nothing written) if its id is another
        organization's, or it is being removed."""
        ...

    def delete_agent(self, agent_id: str) -> None:
        """The agent and everything kept under its id: config, lock, counters, idempotency
        records. Its secrets are the SecretStore's."""
        ...

    def mark_deleting(self, agent_id: str, org_id: str) -> bool:
        """Mark the agent as being removed, if it is there and the organization's (False
        otherwise): from then on no config can be written for it."""
        ...

    def put_config(
        self,
        config: StoredConfig,
        *,
        replaces_version: int | None,
        org_id: str,
        entry: AuditEntry,
    ) -> None:
        """Write the whole record if it is still at `replaces_version` (None: must not
        exist) and its agent is there, `org_id`'s, and not being removed; else
        `StaleWrite`."""
        ...

    def update_status(self, config: StoredConfig, entry: AuditEntry) -> bool:
        """Record status, last error and last test if the record is still that version;
        False (nothing written) if a save replaced it meanwhile."""
        ...

    def update_degraded(self, config: StoredConfig) -> bool:
        """Record how new mail's delivery fails (or that it works again), as update_status."""
        ...

    def update_tokens(self, config: StoredConfig, tokens: TokenRef) -> bool:
        """Point the record at refreshed tokens if its settings are still that version."""
        ...

    def update_grant(
        self, config: StoredConfig, tokens: TokenRef, granted_scopes: list[str], entry: AuditEntry
    ) -> bool:
        """...and record the scopes they grant, which changed."""
        ...

    def grant_holders(self, config: StoredConfig) -> set[str]:
        """The agents whose connections hold `config`'s OAuth grant (its provider, app and
        account), as last written: an index, a moment behind."""
        ...

    def delete_config(self, config: StoredConfig, entry: AuditEntry) -> None:
        """If the record is still that version; else `StaleWrite` (gone, or saved since)."""
        ...

    def try_lock(self, agent_id: str, holder: str, lease_seconds: int) -> bool:
        """Take the agent's token-refresh lock unless another holder's lease is running."""
        ...

    def unlock(self, agent_id: str, holder: str) -> None: ...


class AuthorizationStore(Protocol):
    """Started OAuth sign-ins, by the hash of their state."""

    def put(self, state_hash: str, pending: PendingAuthorization) -> None: ...

    def take(self, state_hash: str) -> PendingAuthorization | None:
        """Remove and return it in one atomic step, so a replayed state finds nothing."""
        ...


class OrgStore(Protocol):
    """Client organizations (their email policy) and shared OAuth apps."""

    def agent_context(
        self, org_id: str, client_org_id: str | None
    ) -> tuple[dict[tuple[AppOwner, str], SharedApp], ClientOrg | None]:
        """The shared apps an agent may inherit and its client organization: one round trip."""
        ...

    def get_app(
        self, org_id: str, client_org_id: str | None, provider: str
    ) -> SharedApp | None: ...

    def put_app(self, app: SharedApp, *, replaces_version: int | None, entry: AuditEntry) -> None:
        """Else `StaleWrite` (see AgentStore.put_config)."""
        ...

    def mark_app_secret_expired(self, app: SharedApp, at: datetime, entry: AuditEntry) -> None:
        """Record that the provider refused the app's secret, once, and only over the
        app's version as read: else `StaleWrite` (a save since, or marked already)."""
        ...

    def delete_app(self, app: SharedApp, entry: AuditEntry) -> None:
        """If it is still that version; else `StaleWrite` (gone, or saved since)."""
        ...

    def get(self, org_id: str, client_org_id: str) -> ClientOrg | None: ...

    def put(
        self, client_org: ClientOrg, *, replaces_version: int | None, entry: AuditEntry
    ) -> None:
        """Else `StaleWrite` (see AgentStore.put_config)."""
        ...

    def delete(
        self, client_org: ClientOrg | None, apps: list[SharedApp], entries: list[AuditEntry]
    ) -> None:
        """The client organization (if given) and these shared apps with their entries, in
        one transaction, if each is still the version read; else `StaleWrite`."""
        ...


class CounterStore(Protocol):
    def count(self, kind: str, windows: list[tuple[str, Window]]) -> None:
        """Count one event in every window (each of a scope), each only while below its
        limit; `LimitReached` names the first full one, and nothing is counted then."""
        ...

    def give_back(self, kind: str, windows: list[tuple[str, Window]]) -> None:
        """Uncount one event counted in these windows (it did not happen after all)."""
        ...


class DiscoveryCache(Protocol):
    """Email discovery's findings by domain, each until it expires."""

    def get(self, domain: str, now: datetime) -> EmailDiscovery | None:
        """The findings for `domain` if they have not expired by `now`."""
        ...

    def put(self, discovery: EmailDiscovery, expires_at: datetime) -> None: ...


class SendRecords(Protocol):
    """An agent's sends by Idempotency-Key, so that each runs once."""

    def once(
        self, agent_id: str, key: str, request: dict[str, Any], send: Callable[[], SentMessage]
    ) -> SentMessage:
        """`send()`, unless a send under this key ran (its result, without running) or runs
        (`request_in_progress`); `idempotency_key_reused` if the key went with another
        request."""
        ...


class SecretStore(Protocol):
    """Secret values by pinned version; names are fixed per agent and per shared app."""

    def name_for(self, agent_id: str) -> str:
        """The agent's password or client secret."""
        ...

    def token_name_for(self, agent_id: str) -> str:
        """The agent's OAuth tokens."""
        ...

    def shared_name_for(self, org_id: str, client_org_id: str | None, provider: str) -> str:
        """A shared app's client secret."""
        ...

    def read(self, *refs: SecretRef) -> list[dict[str, Any]]:
        """The values of these versions, in order; `secret_missing` if one was deleted."""
        ...

    def write(
        self,
        name: str,
        value: dict[str, Any],
        *,
        exists: bool,
        org_id: str,
        agent_id: str | None = None,
    ) -> SecretRef:
        """Create or replace the secret (an agent's names it): the reference to the version
        written."""
        ...

    def replace(self, name: str, value: dict[str, Any]) -> SecretRef:
        """A new version of a secret that exists; `StaleWrite` if it was deleted (it is not
        brought back)."""
        ...

    def delete(self, name: str) -> None:
        """Delete the secret, if there is one."""
        ...


class FeedStore(Protocol):
    """Each agent's place in its inbox, and the note of every message announced."""

    def connected_agents(self, provider: str) -> Iterator[list[str]]:
        """The ids of the agents connected through `provider`, a page at a time."""
        ...

    def get(self, agent_id: str) -> Feed | None: ...

    def put(self, feed: Feed) -> bool:
        """Store `feed` as the next version of the one read (version 0: none was); False if
        another worker moved it meanwhile."""
        ...

    def claim_delivery(self, agent_id: str, message_id: str, lease_seconds: int) -> str | None:
        """Claim the announcement of a message; the claim's token, or None if it was
        announced or another worker holds the claim (which lapses after `lease_seconds` if
        its holder died)."""
        ...

    def confirm_delivery(self, agent_id: str, message_id: str) -> None: ...

    def release_delivery(self, agent_id: str, message_id: str, claim: str) -> None:
        """Give up a claim whose announcement failed, for the next attempt, if it is still
        this one."""
        ...

    def add_subscriber(self, subscription_id: str, agent_id: str) -> None: ...

    def remove_subscriber(self, subscription_id: str, agent_id: str) -> None: ...

    def subscribers(self, subscription_id: str) -> list[str]:
        """The agents a push provider's notification naming this subscription is for."""
        ...


class EventBus(Protocol):
    def publish(self, event: MailReceived) -> None: ...


class SyncQueue(Protocol):
    def send(self, requests: list[SyncRequest]) -> None: ...


class AuditLog(Protocol):
    """The audit trail's entries that go with no change of their own, and the histories."""

    def record(self, entry: AuditEntry) -> None:
        """An entry alone: a refusal, which changed nothing."""
        ...

    def history(
        self,
        org_id: str,
        agent_id: str | None,
        *,
        since: datetime | None,
        until: datetime | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[AuditEntry], str | None]:
        """The organization's (or one agent's) entries in the time range, newest first,
        after the sort key `after`; and the sort key to go on from, None after the last."""
        ...
