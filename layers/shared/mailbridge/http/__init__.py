"""The HTTP edge every handler shares: the resolver and the Lambda entry point (`app`), the
caller from the verified JWT (`caller`), the one mapping from error codes to HTTP statuses
and bodies (`errors`), and what routes declare for the OpenAPI document (`contract`).

The domain knows nothing of this package: it raises `MailbridgeError`s, and only here do
they become statuses.
"""
