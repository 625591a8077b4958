"""Real servers on loopback for the tests and the offline sandbox: a certificate authority,
Dovecot (IMAP), aiosmtpd (SMTP), fake Microsoft and Google identity providers, and a black
hole that never answers."""

from .dovecot import DovecotServer, FolderMessage, dovecot_binary
from .identity import FakeGoogle, FakeMicrosoft
from .mail import DEMO_MAILBOX, Sandbox
from .network import BlackholeServer, ScriptedImapServer, SlowDripServer, free_port
from .smtp import ReceivedMessage, SmtpServer
from .tls import CertificateAuthority

__all__ = [
    "DEMO_MAILBOX",
    "BlackholeServer",
    "CertificateAuthority",
    "DovecotServer",
    "FakeGoogle",
    "FakeMicrosoft",
    "FolderMessage",
    "ReceivedMessage",
    "Sandbox",
    "ScriptedImapServer",
    "SlowDripServer",
    "SmtpServer",
    "dovecot_binary",
    "free_port",
]
