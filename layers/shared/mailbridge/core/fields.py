"""Request field types more than one feature validates: host names, email addresses, secrets
and OAuth app credentials, each checked the same way wherever it is accepted."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr

# Patterns are strings that `re` compiles at first use and caches, here and in every module a
# handler imports: compiled at import, each cold start would pay for them all (about 2 ms).
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = rf"^(?:{_LABEL}\.)*{_LABEL}\.?$"


def hostname(value: str) -> str:
    """A host name (lower-cased, without the final dot) or an IP address."""
    value = value.lower()
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if len(value) > 253 or not re.fullmatch(_HOSTNAME, value):
        raise ValueError("must be a host name (letters, digits, hyphens and dots) or an IP")
    return value.rstrip(".")


# What one line of text may not hold: control characters (Unicode's Cc: C0, DEL and C1), line
# and paragraph separators (Zl, Zp: with Cc, every break str.splitlines() knows) and lone
# surrogates (Cs, which no UTF-8 can carry). A header or a log line would end at the first,
# or fail to be written at all.
NOT_IN_ONE_LINE = r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]"
LONE_SURROGATES = r"[\ud800-\udfff]"


def printable(value: str) -> str:
    """One line of text: no control character, line break or lone surrogate."""
    if re.search(NOT_IN_ONE_LINE, value):
        raise ValueError("must be one line of text, without control characters or line breaks")
    return value


def encodable(value: str) -> str:
    """Text that UTF-8 can carry: JSON's \\ud800 escapes can make lone surrogates."""
    if re.search(LONE_SURROGATES, value):
        raise ValueError("must be valid Unicode text: it holds a lone surrogate")
    return value


# An RFC 2047 encoded word, "=?charset?Q or B?text?=". The standard library decodes one
# wherever it stands in a header it writes, an address or a quoted name too (where RFC 2047
# forbids one), and writes what it decodes to: a line break there starts a header of the
# writer's choosing (mail.compose).
_ENCODED_WORD = r"=\?[^?]*\?[bBqQ]\?[^?]*\?="


def holds_encoded_word(text: str) -> bool:
    return re.search(_ENCODED_WORD, text) is not None


def display_name(value: str) -> str:
    """A name written with an address (From): one line, as plain text."""
    printable(value)
    if holds_encoded_word(value):
        raise ValueError('must be plain text, without an RFC 2047 encoded word ("=?...?=")')
    return value


# What may stand before the @ (RFC 5322's dot-atom: quoted local parts are not worth their
# trouble for a mailbox login). Our own check rather than email-validator: it costs each cold
# start 15 ms and the layer 2 MB (dnspython), and the mail server confirms the address anyway.
_LOCAL_PART = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$"


def email_address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    domain = domain.lower().rstrip(".")
    # A host name with a top-level domain (never all digits, unlike an IP address's last part),
    # in ASCII from the start: lower() makes the Kelvin sign a "k".
    named = value.isascii() and len(domain) <= 253 and bool(re.fullmatch(_HOSTNAME, domain))
    has_tld = "." in domain and not domain.rpartition(".")[2].isdigit()
    local_part = len(local) <= 64 and re.fullmatch(_LOCAL_PART, local)
    if not (at and local_part and not holds_encoded_word(local) and named and has_tld):
        raise ValueError("must be an email address like name@example.com")
    return f"{local}@{domain}"


# What a login or password may not hold: control and format characters, surrogates,
# private-use and unassigned code points, line and paragraph separators. Spaces of any
# script (a Japanese keyboard's U+3000) are fine.
_NOT_IN_A_LOGIN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _login_text(value: str) -> str:
    """One line a login can carry: beyond ASCII only through AUTH PLAIN (UTF-8), which the
    adapters use then, and refuse where the server does not offer it."""
    # Loaded by the first login checked: only saves check one, and every other function
    # starts without this extension module (0.25 to 1.2 ms).
    import unicodedata

    if any(unicodedata.category(ch) in _NOT_IN_A_LOGIN for ch in value):
        raise ValueError("must be one line of letters, digits, punctuation and spaces")
    return value


def _password(value: SecretStr) -> SecretStr:
    # The message says the rule, never the value.
    _login_text(value.get_secret_value())
    return value


def _ascii_secret(value: SecretStr) -> SecretStr:
    """Microsoft's and Google's client secrets are ASCII: anything else is a paste error,
    said now rather than as invalid_client after a sign-in."""
    text = value.get_secret_value()
    if not all(" " < ch <= "~" for ch in text):
        raise ValueError("must be the secret as the provider shows it: ASCII, no spaces")
    return value


Hostname = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(hostname)]
DisplayName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(display_name)]
EmailAddress = Annotated[
    str,
    Field(max_length=320, json_schema_extra={"format": "email"}),
    AfterValidator(email_address),
]


def _whole_number(value: Any) -> Any:
    """An integer as JSON writes one: pydantic would also take true (1) and "993"."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number without quotes, not true or false")
    return value


# An integer of a request (what storage gives back, a Decimal, passes too). The bounds go
# before the validator, or the contract loses its minimum and maximum.
WholeNumber = BeforeValidator(_whole_number)
Port = Annotated[int, Field(ge=1, le=65535), WholeNumber]
Username = Annotated[str, Field(min_length=1, max_length=320), AfterValidator(_login_text)]
Password = Annotated[SecretStr, Field(max_length=1024), AfterValidator(_password)]
ClientSecret = Annotated[SecretStr, Field(max_length=1024), AfterValidator(_ascii_secret)]
# Microsoft application ids are GUIDs; Google's look like 1234-abc.apps.googleusercontent.com.
ClientId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._-]+$")]
# Entra's directory ids and Graph's subscription ids.
GUID_PATTERN = r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
# A directory (tenant) GUID, one of its verified domains, or a multi-tenant audience.
TENANT_PATTERN = (
    rf"^(?:{GUID_PATTERN}"
    r"|organizations|common|consumers"
    r"|(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63})$"
)
Tenant = Annotated[str, Field(max_length=253, pattern=TENANT_PATTERN)]
