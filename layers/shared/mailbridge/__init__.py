"""mailbridge: connect AI agents to real mailboxes (models, domain services, adapters, storage)."""
