"""Real servers on loopback for the tests and the offline sandbox: a certificate authority,
Dovecot (IMAP), aiosmtpd (SMTP), fake Microsoft and Google identity providers, and a black
hole that never answers, and mail domains (a DNS server and an https server for their
autoconfig) for email discovery."""

from .domains import DnsServer, DomainWebServer, address_records
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
    "DnsServer",
    "DomainWebServer",
    "DovecotServer",
    "FakeGoogle",
    "FakeMicrosoft",
    "FolderMessage",
    "ReceivedMessage",
    "Sandbox",
    "ScriptedImapServer",
    "SlowDripServer",
    "SmtpServer",
    "address_records",
    "dovecot_binary",
    "free_port",
]
