"""Real servers on loopback for the tests and the offline sandbox: a certificate authority,
Dovecot (IMAP), aiosmtpd (SMTP) and a black hole that never answers."""

from .dovecot import DovecotServer, dovecot_binary
from .mail import DEMO_MAILBOX, MailSandbox
from .network import BlackholeServer, free_port
from .smtp import ReceivedMessage, SmtpServer
from .tls import CertificateAuthority

__all__ = [
    "DEMO_MAILBOX",
    "BlackholeServer",
    "CertificateAuthority",
    "DovecotServer",
    "MailSandbox",
    "ReceivedMessage",
    "SmtpServer",
    "dovecot_binary",
    "free_port",
]
