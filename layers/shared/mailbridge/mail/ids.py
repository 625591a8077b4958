"""Opaque ids and cursors: what a provider needs to find a message again (an IMAP folder,
UIDVALIDITY and UID; a Gmail id; a Graph immutable id), packed into one URL-safe string.

Callers must not read them, and a tampered one finds nothing: a value that does not decode to
what its kind expects is `message_not_found` (or an invalid cursor), never an error of ours.
"""

from __future__ import annotations

import base64
import binascii
import re

from ..core.errors import ErrorCode, InvalidField, MailbridgeError
from ..core.types import OPAQUE_ID_PATTERN

_SEPARATOR = "\x1f"  # the ASCII unit separator: in no folder name, id or token


def pack(kind: str, *parts: str) -> str:
    """The parts as one opaque value; ValueError if it is longer than the API takes back (a
    provider's id or page token that long is not one: the provider's error where its answer
    is read)."""
    text = _SEPARATOR.join([kind, *parts])
    packed = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    if re.fullmatch(OPAQUE_ID_PATTERN, packed) is None:
        raise ValueError("too long to be an id or cursor")
    return packed


def _unpack(value: str, kind: str, count: int) -> list[str] | None:
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    found, *parts = text.split(_SEPARATOR)
    if found != kind or len(parts) != count or not all(parts):
        return None
    return parts


def message_not_found() -> MailbridgeError:
    return MailbridgeError(ErrorCode.MESSAGE_NOT_FOUND, "No such message in this mailbox.")


def unpack_message_id(value: str, kind: str, count: int) -> list[str]:
    parts = _unpack(value, kind, count)
    if parts is None:
        raise message_not_found()
    return parts


def pack_cursor(kind: str, listing: tuple[str, ...], position: str) -> str:
    """Where the next page starts, bound to the list it pages through (`listing`: the folder,
    the filter, whatever else makes the list what it is)."""
    return pack(kind, *listing, position)


def unpack_cursor(value: str, kind: str, listing: tuple[str, ...]) -> str:
    """The position a cursor holds, if it was made for this very list."""
    parts = _unpack(value, kind, len(listing) + 1)
    if parts is None or tuple(parts[:-1]) != listing:
        raise invalid_cursor()
    return parts[-1]


def invalid_cursor() -> InvalidField:
    return InvalidField(
        "cursor",
        "cursor is not one this API gave for this list, or the list changed since.",
        hint="List again without a cursor.",
    )
