"""Provider adapters: the only modules that speak IMAP and SMTP."""
