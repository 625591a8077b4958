"""The README's run command: `python -m mailbridge_tools.localapi` serves a usable API."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import ApiClient


@pytest.fixture(scope="module")
def welcome() -> Iterator[list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mailbridge_tools.localapi", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Everything lives in memory"):
                break
        yield lines
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_the_printed_token_reaches_the_demo_agent(welcome: list[str]) -> None:
    url = welcome[0].removeprefix("mailbridge local API: ")
    token = next(line for line in welcome if "export MAILBRIDGE_TOKEN=" in line).split("=", 1)[1]
    response = ApiClient(url, token).get("/bridge/agents/demo-agent/email-config")
    assert response.status == 200, response.text
    assert response.json()["status"] == "not_connected"
    example = next(line for line in welcome if "curl" in line and "demo-agent" in line)
    assert f"{url}/bridge/agents/demo-agent/email-config" in example
