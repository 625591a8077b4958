"""Disconnecting an agent's mailbox: its push of new mail stopped, its grant revoked where
the provider allows, its configuration and secrets deleted. The Email tab's DELETE and an
agent's removal both end this way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..agents.models import Agent
from ..audit.models import Actor, AuditAction
from ..audit.service import connection_entry
from ..core.errors import WRITE_ATTEMPTS, StaleWrite, kept_changing
from .records import StoredConfig

if TYPE_CHECKING:
    from ..storage.protocols import AgentStore, FeedStore, OrgStore, SecretStore


def disconnect(
    agents: AgentStore,
    secrets: SecretStore,
    orgs: OrgStore,
    feeds: FeedStore,
    agent: Agent,
    current: StoredConfig | None,
    actor: Actor,
    action: AuditAction = AuditAction.DISCONNECTED,
) -> None:
    """Stop the provider's push of new mail and revoke where the provider allows, then
    delete the record (with its entry: `action`, by `actor`) and the agent's secrets."""
    if current is not None:
        # Only a disconnect needs the mail feature (a push to stop): loaded here, the email
        # config's other routes start without it.
        from ..mail.service import Stores
        from ..newmail.service import stop_new_mail

        stop_new_mail(Stores(agents, secrets, orgs), feeds, agent, current)
        if current.tokens is not None:
            # An OAuth grant's: the token path loads for it alone.
            from ..oauth.tokens import revoke_tokens

            revoke_tokens(agents, secrets, current)
        # The record first: a failure after it leaves secrets nothing reads, at the agent's
        # fixed names, which the retry deletes; never a record pointing at a missing secret.
        # Over the version read, so that the entry says what was deleted; a save meanwhile
        # is deleted in its turn (its tokens are the agent's, deleted below).
        for _ in range(WRITE_ATTEMPTS):
            try:
                agents.delete_config(current, connection_entry(agent, actor, action, current, None))
                break
            except StaleWrite:
                _, current = agents.load(agent.agent_id)
                if current is None:
                    break
        else:
            raise kept_changing("configuration")
    secrets.delete(secrets.name_for(agent.agent_id))
    secrets.delete(secrets.token_name_for(agent.agent_id))
