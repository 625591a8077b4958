"""The suite-wide search for secrets (conftest.py runs it over every response and log line
of the run): it finds a canary wherever it stands in what was kept, glued to other text
too, and nothing else."""

from __future__ import annotations

import json
import secrets

from secret_hygiene import SecretHygiene


def test_a_leaked_canary_is_found_and_named_by_where_it_was() -> None:
    hygiene = SecretHygiene()
    hygiene.test = "test_something"
    token = secrets.token_urlsafe(32)
    verifier = f"{secrets.token_urlsafe(16)}.~{secrets.token_urlsafe(16)}"  # PKCE's alphabet
    password = "app-pass-7f3a9c"
    hygiene.keep("response", json.dumps({"error": {"message": f"token {token} refused"}}))
    hygiene.keep("log line", f"GET /callback?code_verifier={verifier}&x=1")
    hygiene.keep("response", f"Set-Cookie: session=bad\\n{password}x; Path=/")  # glued on
    hygiene.keep("log line", "nothing secret here, only example.com and agent-123")

    found = hygiene.leaks({token, verifier, password, secrets.token_urlsafe(32)})

    assert found == {
        token: "response during test_something",
        verifier: "log line during test_something",
        password: "response during test_something",
    }
    assert hygiene.kept == {"response": 2, "log line": 2}
