"""A real Dovecot IMAP server on loopback, run as a child process with its own config: its
Sent, Drafts and Trash folders carry their RFC 6154 special-use flags, and tests put mail in
(Maildir files), read folders back (IMAP), and may read the commands clients sent (Dovecot's
rawlog)."""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .network import LOOPBACK, free_port, wait_for_port


def _children(pid: int) -> list[int]:
    """The processes `pid` started (Dovecot's login, IMAP and helper processes)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def dovecot_binary() -> str | None:
    found = shutil.which("dovecot")
    if found:
        return found
    return "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None


def _accounts() -> tuple[str, str]:
    """(internal user, login user). As root Dovecot drops privileges to its own users; as
    anyone else it runs everything as that user."""
    if os.geteuid() == 0:
        return "dovecot", "dovenull"
    me = pwd.getpwuid(os.geteuid()).pw_name
    return me, me


_PASSWD_RECHECK_SECONDS = 1.1
# How long a recorded session may take to end once its client is done.
_SESSION_END_SECONDS = 5.0


def _listener(name: str, port: int, extra: str = "") -> str:
    return f"  inet_listener {name} {{\n    address = {LOOPBACK}\n    port = {port}\n{extra}  }}\n"


def _special_mailbox(name: str, flag: str) -> str:
    """A folder with a special-use flag (RFC 6154), made and subscribed when its user first
    logs in, as a provider's new account comes with them."""
    return f"  mailbox {_quoted(name)} {{\n    special_use = {flag}\n    auto = subscribe\n  }}\n"


def _quoted(mailbox: str) -> str:
    """A mailbox name as an IMAP quoted string."""
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class FolderMessage:
    """A message as IMAP gives it back: its UID, flags and exact bytes."""

    uid: int
    flags: tuple[str, ...]
    raw: bytes


class DovecotServer:
    """Dovecot serving `users` ({address: password}) over IMAPS and IMAP+STARTTLS.

    With `offer_starttls=False` it runs without TLS at all (no IMAPS port), to show what a
    client does when a server does not offer STARTTLS. The Sent folder is called
    `sent_folder`: a client must find it by its \\Sent flag, whatever its name.

    `capabilities` replaces what it advertises after login (Dovecot's `imap_capability`), to
    play a server without some extension; it still serves them to a client that asks anyway.
    With `record=True` it keeps the commands of every session, for `commands()`.
    """

    def __init__(
        self,
        cert: Path,
        key: Path,
        users: dict[str, str],
        *,
        offer_starttls: bool = True,
        sent_folder: str = "Sent",
        capabilities: str | None = None,
        record: bool = False,
    ) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("Dovecot is not installed (Debian package dovecot-imapd)")
        self._binary = binary
        self._cert, self._key = cert, key
        self._users = users
        self._tls = offer_starttls
        self.sent_folder = sent_folder
        self._capabilities = capabilities
        self._record = record
        self.imap_port = free_port()
        self._imaps_port = free_port() if offer_starttls else None
        self._process: subprocess.Popen[bytes] | None = None
        # Its own directory under /tmp: Dovecot's unprivileged processes must traverse it,
        # which pytest's private temp directories do not allow.
        self.root = Path(tempfile.mkdtemp(prefix="mailbridge-dovecot-"))
        self.root.chmod(0o755)

    @property
    def imaps_port(self) -> int:
        if self._imaps_port is None:
            raise RuntimeError("this server runs without TLS and has no IMAPS port")
        return self._imaps_port

    def __enter__(self) -> DovecotServer:
        self._config = self._write_config()
        self._process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own config
            [self._binary, "-F", "-c", str(self._config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.imap_port, alive=lambda: self._process_alive())
            if self._imaps_port is not None:
                wait_for_port(self._imaps_port, alive=lambda: self._process_alive())
        except KeyboardInterrupt:  # stopped while starting (SIGTERM too): not left running
            self.stop()
            raise
        except Exception as error:
            self.stop()
            raise RuntimeError(f"Dovecot did not start: {self.log_tail()}") from error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None
        shutil.rmtree(self.root, ignore_errors=True)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """A server that hangs: every Dovecot process stopped (SIGSTOP), so the kernel still
        accepts connections and nothing greets them, until the block ends."""
        assert self._process is not None
        pids = [self._process.pid, *_children(self._process.pid)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def _process_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self) -> str:
        log = self.root / "dovecot.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"

    def add_messages(self, login: str, count: int, *, unseen: int = 0) -> None:
        """Delivers `count` messages to `login`'s INBOX, the last `unseen` of them unread,
        by writing Maildir files directly (thousands per second, no SMTP needed)."""
        maildir = self._maildir(login)
        stamp = int(time.time())
        for number in range(count):
            flags = "" if number >= count - unseen else "S"
            body = (
                f"From: sender{number}@example.test\r\n"
                f"To: {login}\r\n"
                f"Subject: Message {number}\r\n"
                f"Message-ID: <{uuid.uuid4()}@example.test>\r\n"
                "\r\n"
                f"Body of message {number}.\r\n"
            )
            name = f"{stamp}.M{number}P{os.getpid()}.sandbox:2,{flags}"
            (maildir / "cur" / name).write_text(body)
        self._hand_mail_to_dovecot()
        # A live server has its index already; build it now, not in the first client's STATUS.
        self._sync_inbox(login)

    def set_password(self, login: str, password: str) -> None:
        """Adds the user (at once), or changes its password (a password changed at the
        provider, say), and returns once Dovecot takes it."""
        changed = login in self._users
        self._users[login] = password
        self._write_passwd(login)
        if changed:
            # Dovecot looks at a passwd file it has read again at most once a second.
            time.sleep(_PASSWD_RECHECK_SECONDS)

    def _write_passwd(self, login: str) -> None:
        """One file per user: a new user's file is read at its first login, with no wait."""
        passwd = self.root / "passwd.d" / login
        staged = passwd.with_suffix(".new")
        staged.write_text(f"{login}:{self._users[login]}::::::\n")
        staged.replace(passwd)  # whole, or not at all, for a reader in between
        recorded = self.root / "rawlog" / login
        if self._record and not recorded.exists():
            recorded.mkdir(parents=True)  # Dovecot records only into a directory that exists
            self._hand_to_dovecot(recorded)

    def commands(self, login: str) -> list[str]:
        """What clients sent in `login`'s sessions since the server started (with
        `record=True`), oldest session first, without tags: once every session has logged
        out. Recording starts after LOGIN, so no password is in it; an APPEND's message is."""
        if not self._record:
            raise RuntimeError("this server does not record sessions")
        ends_at = time.monotonic() + _SESSION_END_SECONDS
        while True:
            sessions = [
                path.read_bytes().decode("utf-8", "replace").splitlines()
                for path in sorted((self.root / "rawlog" / login).glob("*.in"))
            ]
            if all(lines and lines[-1].upper().endswith(" LOGOUT") for lines in sessions):
                break
            if time.monotonic() > ends_at:
                raise TimeoutError(f"a session of {login} did not log out")
            time.sleep(0.02)
        # Each line: the time it was read, then what the client sent (a command: its tag first).
        sent = [line.partition(" ")[2] for lines in sessions for line in lines]
        return [line.partition(" ")[2] or line for line in sent]

    def deliver(self, login: str, raw: bytes, *, unseen: bool = True) -> None:
        """Puts the exact message `raw` in `login`'s INBOX, as a delivery agent does (a
        Maildir file written in tmp/ and moved into place). IMAP gives back the same bytes
        when their lines end in CRLF (Dovecot adds a CR to bare LFs)."""
        maildir = self._maildir(login)
        name = f"{time.time_ns()}.M{secrets.token_hex(6)}P{os.getpid()}.sandbox"
        written = maildir / "tmp" / name
        written.write_bytes(raw)
        self._hand_to_dovecot(written)
        # An unseen message arrives in new/; a seen one goes to cur/ with the S flag.
        written.rename(maildir / "new" / name if unseen else maildir / "cur" / f"{name}:2,S")
        self._sync_inbox(login)

    def uidvalidity(self, login: str) -> int:
        with imaplib.IMAP4(LOOPBACK, self.imap_port, timeout=60) as client:
            client.login(login, self._users[login])
            _, answer = client.status("INBOX", "(UIDVALIDITY)")
        found = re.search(rb"UIDVALIDITY (\d+)", answer[0] or b"")
        assert found, answer
        return int(found[1])

    def set_uidvalidity(self, login: str, uidvalidity: int) -> None:
        """What two mailboxes made in the same second have (Dovecot takes the time for it):
        the same UIDVALIDITY, so the same UIDs name different messages."""
        doveadm = shutil.which("doveadm")  # Dovecot's own package has it
        assert doveadm is not None
        update = ["mailbox", "update", "-u", login, "--uid-validity", str(uidvalidity), "INBOX"]
        subprocess.run(  # noqa: S603 - a fixed binary and our own config
            [doveadm, "-c", str(self._config), *update],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def folder_messages(self, login: str, folder: str) -> list[FolderMessage]:
        """What `folder` (its IMAP name) of `login` holds, through IMAP, without marking
        anything seen."""
        with imaplib.IMAP4(LOOPBACK, self.imap_port, timeout=60) as client:
            client.login(login, self._users[login])
            status, answer = client.select(_quoted(folder), readonly=True)
            if status != "OK":
                raise LookupError(f"{login} has no folder {folder}: {answer!r}")
            _, fetched = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        messages = []
        for item in fetched:
            if not isinstance(item, tuple):
                continue  # the closing parenthesis of each message
            head = item[0].decode()
            uid = re.search(r"UID (\d+)", head)
            flags = re.search(r"FLAGS \(([^)]*)\)", head)
            assert uid and flags, head
            # \Recent says which session saw a message first, not what it is: left out.
            kept = tuple(flag for flag in flags[1].split() if flag != "\\Recent")
            messages.append(FolderMessage(int(uid[1]), kept, item[1]))
        return messages

    def _maildir(self, login: str) -> Path:
        """`login`'s Maildir, made (and handed to Dovecot) if it is not there yet."""
        maildir = self.root / "mail" / login / "Maildir"
        for directory in (
            maildir.parent,
            maildir,
            *(maildir / sub for sub in ("cur", "new", "tmp")),
        ):
            if not directory.exists():
                directory.mkdir()
                self._hand_to_dovecot(directory)
        return maildir

    def _sync_inbox(self, login: str) -> None:
        """Makes Dovecot look at the Maildir now (a STATUS rescans what changed)."""
        with imaplib.IMAP4(LOOPBACK, self.imap_port, timeout=60) as client:
            client.login(login, self._users[login])
            client.status("INBOX", "(MESSAGES)")

    def _hand_to_dovecot(self, path: Path) -> None:
        account = pwd.getpwnam(_accounts()[0])
        os.chown(path, account.pw_uid, account.pw_gid)

    def _hand_mail_to_dovecot(self) -> None:
        account = pwd.getpwnam(_accounts()[0])
        for path in [self.root / "mail", *(self.root / "mail").rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _write_config(self) -> Path:
        internal_user, login_user = _accounts()
        (self.root / "passwd.d").mkdir()
        for login in self._users:
            self._write_passwd(login)
        (self.root / "mail").mkdir()
        self._hand_mail_to_dovecot()
        account = pwd.getpwnam(internal_user)
        if self._tls:
            tls = (
                "ssl = yes\n"
                f"ssl_cert = <{self._cert}\n"
                f"ssl_key = <{self._key}\n"
                "ssl_min_protocol = TLSv1.2\n"
            )
            imaps = _listener("imaps", self.imaps_port, "    ssl = yes\n")
        else:
            tls, imaps = "ssl = no\n", ""
        special_folders = "".join(
            _special_mailbox(name, flag)
            for name, flag in (
                (self.sent_folder, "\\Sent"),
                ("Drafts", "\\Drafts"),
                ("Trash", "\\Trash"),
            )
        )
        options = ""
        if self._capabilities is not None:
            options += f"imap_capability = {self._capabilities}\n"
        if self._record:
            options += f"rawlog_dir = {self.root}/rawlog/%u\n"
        config = self.root / "dovecot.conf"
        config.write_text(
            f"base_dir = {self.root}/run\n"
            f"state_dir = {self.root}/state\n"
            f"log_path = {self.root}/dovecot.log\n"
            "protocols = imap\n"
            f"listen = {LOOPBACK}\n"
            f"default_internal_user = {internal_user}\n"
            f"default_login_user = {login_user}\n"
            "auth_mechanisms = plain login\n"
            "disable_plaintext_auth = no\n"
            # Wrong-password tests would otherwise wait two seconds each.
            "auth_failure_delay = 0\n"
            # Nor the next login after one (Dovecot's per-IP auth penalty): no penalty socket.
            "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n"
            f"{tls}"
            f"{options}"
            "passdb {\n"
            "  driver = passwd-file\n"
            f"  args = scheme=PLAIN username_format=%u {self.root}/passwd.d/%u\n"
            "}\n"
            "userdb {\n"
            "  driver = static\n"
            f"  args = uid={account.pw_uid} gid={account.pw_gid} home={self.root}/mail/%u\n"
            "}\n"
            "mail_location = maildir:~/Maildir\n"
            "namespace inbox {\n"
            "  inbox = yes\n"
            f"{special_folders}"
            "}\n"
            # System accounts such as dovecot's sit below the default floor of 500.
            f"first_valid_uid = {account.pw_uid}\n"
            "service imap-login {\n"
            f"{_listener('imap', self.imap_port)}"
            f"{imaps}"
            "}\n"
        )
        return config
