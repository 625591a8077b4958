"""The agent's mailbox, through its connection: listing and reading messages and their
attachments, marking them read, and sending and replying under the client organization's
policy. Every provider is reached through the `mailboxes` port; messages are parsed and
composed here, once, as RFC 5322."""
