"""The one way into `mailbridge.adapters`: each port (`oauth.providers`, `connections.
mail_servers`) loads its adapter by name at first use, so a handler's cold start, and a
connection that never uses a provider, never pay for imapclient, msal or google-auth."""

from __future__ import annotations

import importlib
from typing import Any


def load_adapter(name: str) -> Any:
    """The `ADAPTER` object of the module `mailbridge.adapters.<name>`, imported once."""
    return importlib.import_module(f"mailbridge.adapters.{name}").ADAPTER
