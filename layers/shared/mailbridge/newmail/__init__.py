"""New mail reaches the agent: one event per new message on the stack's EventBridge bus,
whichever way the mailbox says it has news (IMAP polling, Gmail push, Graph notifications)."""
