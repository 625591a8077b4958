"""Value types more than one feature uses: platform ids, the OAuth providers' names, references
to secrets, and the base of request models."""

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

# Agent, organization and client-organization ids are the platform's; this is what we
# accept in a path, a token or a registration, and store. Every character is allowed in a
# Secrets Manager name, and none is the '#' our table keys use as a separator.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
PlatformId = Annotated[str, Field(pattern=ID_PATTERN)]
# Opaque ids and cursors: base64url, as `mail.ids` makes them.
OPAQUE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,2048}$"

OAuthProvider = Literal["microsoft", "google"]
OAUTH_PROVIDERS: tuple[OAuthProvider, ...] = get_args(OAuthProvider)
PROVIDER_NAMES: dict[str, str] = {"microsoft": "Microsoft", "google": "Google"}
# Every connection method: IMAP/SMTP with a password, or an OAuth provider.
CONNECTION_METHODS = frozenset({"imap", *OAUTH_PROVIDERS})


class Model(BaseModel):
    """Every model of the layer. Its validation schema is built at its first use, not when
    the class is defined: a handler imports many models and uses a few per request, and
    building them all cost the GET config function's cold start about 20 ms (BENCHMARKS.md).

    Model modules do without `from __future__ import annotations`: pydantic would compile and
    evaluate every annotation from its string, a fifth of what defining a model costs."""

    model_config = ConfigDict(defer_build=True)


class StrictModel(Model):
    """A request body: unknown fields are refused, so a typo is a 422 naming the field rather
    than a setting silently ignored."""

    model_config = ConfigDict(extra="forbid")


def example(value: dict[str, Any]) -> ConfigDict:
    """A request model's example, for the API's contract: documentation, and a valid start
    for contract fuzzing."""
    return ConfigDict(json_schema_extra={"examples": [value]})


class SecretRef(Model):
    """A secret in Secrets Manager, pinned to the version its record was written with: a
    write that fails half-way leaves the record on the version it had, never on a value
    that belongs to settings it does not hold."""

    name: str
    version: str


class SecretState(Model):
    """What a response says of a secret: whether one is stored, and since when; never it."""

    set: bool
    updated_at: datetime | None
