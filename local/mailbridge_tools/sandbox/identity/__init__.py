"""Fake Microsoft (Entra ID + a Microsoft Graph subset) and Google (OAuth + a Gmail API
subset) identity providers on loopback, over verified HTTPS.

They check what the real ones check, so a wrong request fails the test that made it: the
client secret, the exact registered redirect URI, PKCE (S256), single-use and short-lived
codes, live refresh tokens (Microsoft hands out a new one at each use and, as its
documentation says, leaves the old one valid), and bearer tokens and their scopes on the
mail APIs. Signing in is automatic: the authorize endpoint redirects back at once as the
current account, or with an error if a test asked. A test can also make the next request to
an endpoint hang or drip its answer one byte at a time.
"""

from .google import FakeGoogle
from .microsoft import FakeMicrosoft

__all__ = ["FakeGoogle", "FakeMicrosoft"]
