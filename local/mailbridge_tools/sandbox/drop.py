"""`python -m mailbridge_tools.sandbox.drop --port N --password P "Subject" ["text"]`: new
mail in the sandbox's demo mailbox, put in its INBOX unseen through Dovecot (an IMAP APPEND
on loopback), as a message arriving. `make sandbox` prints the line with its port and
password; with the demo agent connected by IMAP, the next poll announces the message on the
bus."""

from __future__ import annotations

import argparse
import datetime
import imaplib
import time

from .mail import DEMO_MAILBOX, _demo_message

SENDER = "Dana Reyes <dana@workspace.example>"
_TIMEOUT_SECONDS = 10


def drop(port: int, password: str, subject: str, text: str) -> None:
    """Appends a message from SENDER to the demo mailbox's INBOX, unseen."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    message = _demo_message(DEMO_MAILBOX, now, True, SENDER, subject, text)
    with imaplib.IMAP4("127.0.0.1", port, timeout=_TIMEOUT_SECONDS) as client:
        client.login(DEMO_MAILBOX, password)
        status, answer = client.append(
            "INBOX", "", imaplib.Time2Internaldate(time.time()), message.raw
        )
        if status != "OK":
            raise SystemExit(f"Dovecot refused the message: {answer!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mailbridge_tools.sandbox.drop",
        description=f"Drop a new message in the sandbox's demo mailbox ({DEMO_MAILBOX}).",
    )
    parser.add_argument("--port", type=int, required=True, help="the sandbox's IMAP port")
    parser.add_argument("--password", required=True, help="the demo mailbox's password")
    parser.add_argument("subject")
    parser.add_argument("text", nargs="?", default="Dropped in the sandbox's mailbox.")
    args = parser.parse_args(argv)
    drop(args.port, args.password, args.subject, args.text)
    print(f"dropped in {DEMO_MAILBOX}: {args.subject}")


if __name__ == "__main__":
    main()
