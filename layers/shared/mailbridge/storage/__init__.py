"""DynamoDB and Secrets Manager: the only package that imports boto3. The domain types its
stores against `protocols`; the handlers build the implementations below.

Table layout (one table, see template.yaml):
    pk = "AGENT#<agent_id>", sk = "AGENT"         the agent: org, optional client org, name
    pk = "AGENT#<agent_id>", sk = "EMAIL_CONFIG"  its email connection (no secret in it)
    pk = "AGENT#<agent_id>", sk = "EMAIL_CONFIG_DISCONNECTED"  the last one's version
    pk = "AGENT#<agent_id>", sk = "TOKEN_REFRESH_LOCK"  held while its OAuth token refreshes
    pk = "OAUTH_STATE#<sha256 of state>", sk = "OAUTH_STATE"  a started authorization (TTL)
    pk = "ORG#<org>#CLIENT_ORG#<id>", sk = "CLIENT_ORG"  a client organization, its policy
    pk = "SENDING#<org>#<client org>", sk = "SENT#<window>#<key>"  messages sent (TTL)
    pk = "RATE#AGENT#<id>" or "RATE#ORG#<id>", sk = "TESTS#<window>#<key>"  tests run (TTL)
    pk = "RATE#ORG#<id>", sk = "DISCOVERY#<window>#<key>"  email discoveries looked up (TTL)
    pk = "DISCOVERY#<domain>", sk = "DISCOVERY"  email discovery's findings for a domain (TTL)
    pk = "ORG#<org>" or "ORG#<org>#CLIENT_ORG#<id>", sk = "OAUTH_APP#<provider>"  a shared app
    pk = "IDEMPOTENCY#<agent_id>", sk = "send#<hash of the key>"  a send by its key (TTL)
Indexes: connected configs by provider (`connected_provider`, new mail's rounds), OAuth
configs by the grant they hold (`oauth_grant`, before revoking it), audit entries by agent.
An agent and its config share a partition, so both come back in one Query. A client
organization lives inside its organization's keys: ids are the platform's, and two
organizations may well both have a client called "acme".

Secrets live at fixed names per agent (and per shared app), and records pin the version
they were written with (`secrets`).

    aws.py             the clients, reused across invocations, and the one translation of
                       their failures into `storage_unavailable`
    protocols.py       what the domain may ask of each store
    agents.py          agents, their email-config records and token-refresh locks
    agent_keys.py      where an agent's items lie (its partition, the connected and grant
                       indexes), apart, so new mail's store loads nothing of the agent
                       records
    authorizations.py  started OAuth sign-ins
    orgs.py            client organizations and shared OAuth apps
    counters.py        counting windows (rate and sending limits)
    discovery.py       email discovery's findings, cached by domain
    secrets.py         Secrets Manager, with a per-instance cache of secret versions
    idempotency.py     the agent's sends by Idempotency-Key (Powertools idempotency)
    entries.py         the one transaction that writes a change with its audit entries
    audit.py           the audit trail read, and refusals recorded alone
    newmail.py         new mail's feeds, announcement notes, queue (SQS) and bus (EventBridge)
"""
