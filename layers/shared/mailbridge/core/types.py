"""Value types more than one feature uses: platform ids, the OAuth providers' names, references
to secrets, and the base of request models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

# Agent, organization and client-organization ids are the platform's; this is what we
# accept in a path, a token or a registration, and store. Every character is allowed in a
# Secrets Manager name, and none is the '#' our table keys use as a separator.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
PlatformId = Annotated[str, Field(pattern=ID_PATTERN)]

OAuthProvider = Literal["microsoft", "google"]
OAUTH_PROVIDERS: tuple[OAuthProvider, ...] = get_args(OAuthProvider)
PROVIDER_NAMES: dict[str, str] = {"microsoft": "Microsoft", "google": "Google"}
# Every connection method: IMAP/SMTP with a password, or an OAuth provider.
CONNECTION_METHODS = frozenset({"imap", *OAUTH_PROVIDERS})


class StrictModel(BaseModel):
    """A request body: unknown fields are refused, so a typo is a 422 naming the field rather
    than a setting silently ignored."""

    model_config = ConfigDict(extra="forbid")


def example(value: dict[str, Any]) -> ConfigDict:
    """A request model's example, for the API's contract: documentation, and a valid start
    for contract fuzzing."""
    return ConfigDict(json_schema_extra={"examples": [value]})


class SecretRef(BaseModel):
    """A secret in Secrets Manager, pinned to the version its record was written with: a
    write that fails half-way leaves the record on the version it had, never on a value
    that belongs to settings it does not hold."""

    name: str
    version: str


class SecretState(BaseModel):
    """What a response says of a secret: whether one is stored, and since when; never it."""

    set: bool
    updated_at: datetime | None
