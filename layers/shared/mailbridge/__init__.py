"""mailbridge: connect AI agents to real mailboxes.

One package per feature (`agents`, `connections`, `oauth`, `orgs`), the HTTP edge (`http`),
the stores (`storage`), the outside world's mail systems (`adapters`) and what they all share
(`core`); docs/architecture.md is the map.
"""
