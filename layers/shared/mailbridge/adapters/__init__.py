"""Adapters: the only modules that speak to the outside world's mail systems and import their
libraries (imapclient and smtplib for IMAP and SMTP, msal for Microsoft, google-auth for
Google, requests for their HTTP APIs).

Each implements a port of the domain (`oauth.providers.OAuthProviderClient`,
`connections.mail_servers.MailServers`) with an `ADAPTER` object, which the port loads by
name at first use (`core.adapters.load_adapter`): never import them directly.
"""
