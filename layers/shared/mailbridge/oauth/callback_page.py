"""The page the OAuth popup lands on: it posts the result to the one UI origin recorded when
the authorization started, then closes; opened without an opener it just shows the result.

Everything in it that came from outside is escaped for where it goes: HTML text through
html.escape, data for the script as JSON inside a non-executable <script type=
"application/json"> block, with <, > and & written as \\u escapes so no value can close
the element. Only the nonce-bearing script runs (Content-Security-Policy).
"""

from __future__ import annotations

import html
import json
import secrets
from typing import Any

from .flow import CallbackOutcome

_SCRIPT = """
const read = (id) => JSON.parse(document.getElementById(id).textContent);
const result = read("result"), origin = read("origin");
if (window.opener && origin) {
  window.opener.postMessage(result, origin);
  window.close();
}
"""

_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; margin: 3rem auto; max-width: 32rem; padding: 0 1rem;
       color: #1f2933; }
h1 { font-size: 1.25rem; }
.connected h1 { color: #1c7c54; }
.error h1 { color: #b42318; }
code { background: #f1f3f5; padding: 0 .25rem; }
"""


def _json_for_script(value: Any) -> str:
    text = json.dumps(value)
    for character, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(character, escape)
    return text


def render_callback_page(outcome: CallbackOutcome) -> tuple[str, dict[str, str]]:
    """The page's HTML and its security headers."""
    nonce = secrets.token_urlsafe(16)
    message = outcome.message
    if message.status == "connected":
        title = "Mailbox connected"
        detail = f"The agent now uses {message.email}."
    else:
        assert message.error is not None
        title = "Sign-in failed"
        detail = f"{message.error.message} (code {message.error.code})"
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style nonce="{nonce}">{_STYLE}</style>
</head>
<body class="{message.status}">
<h1>{html.escape(title)}</h1>
<p>{html.escape(detail)}</p>
{f'<p class="hint">{html.escape(outcome.hint)}</p>' if outcome.hint else ""}
<p>You can close this window and return to the Email tab.</p>
<script type="application/json" id="result">{_json_for_script(message.model_dump())}</script>
<script type="application/json" id="origin">{_json_for_script(outcome.ui_origin)}</script>
<script nonce="{nonce}">{_SCRIPT}</script>
</body>
</html>
"""
    headers = {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        # The URL carried an authorization code: keep it out of caches and referrers.
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return page, headers
