"""Deployment settings, read once per Lambda instance from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Settings:
    table_name: str
    secret_name_prefix: str
    org_claim: str
    # Per network operation (connect, each read); well under the functions' 29 s timeout so
    # a dead server becomes a `timeout` result, never a Lambda timeout.
    mail_timeout_seconds: float
    # An extra CA bundle that mail servers' certificates may chain to (self-hosted servers,
    # the local sandbox). It adds trust; verification itself is never turned off.
    mail_extra_ca_file: str | None
    max_body_bytes: int


@cache
def settings() -> Settings:
    env = os.environ
    return Settings(
        table_name=env["TABLE_NAME"],
        secret_name_prefix=env.get("SECRET_NAME_PREFIX", "mailbridge").rstrip("/"),
        org_claim=env.get("ORG_CLAIM", "org_id"),
        mail_timeout_seconds=float(env.get("MAIL_TIMEOUT_SECONDS", "10")),
        mail_extra_ca_file=env.get("MAIL_EXTRA_CA_FILE") or None,
        max_body_bytes=int(env.get("MAX_BODY_BYTES", str(64 * 1024))),
    )
