"""An agent's email connection: its settings and status, the provider presets, saving, reading
and disconnecting, and the connection test (IMAP and SMTP through the `mail_servers` port,
OAuth through the `oauth` package)."""
