"""Interop: Tern delivering local mail over LMTP (RFC 2033) to a real Dovecot LMTP server.

    cd tests/interop && python3 -c 'import harness; harness.TERN = "/path/to/tern"; \
        import dovecot; dovecot.test_lmtp_delivery_to_dovecot(); \
        dovecot.test_lmtp_unknown_user_bounces_only_that_recipient(); \
        dovecot.test_lmtp_over_quota_after_data_bounces_only_that_recipient()'

Needs Debian's `dovecot-core` and `dovecot-lmtpd` (installed by scripts/install-test-deps);
the tests print a "skipped" line and return when /usr/sbin/dovecot is absent. Each test runs
its own private Dovecot from a temporary folder (its own dovecot.conf, base_dir, state_dir,
log file, passwd-file and Maildirs); nothing of the system's /etc/dovecot is used, and the
instance is stopped and its folder removed at the end. Only the Python standard library.
"""

import email
import email.policy
import grp
import os
import pwd
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Tern, free_port  # noqa: E402
from run import delivery_report  # noqa: E402

DOVECOT = "/usr/sbin/dovecot"
DOMAIN = "example.test"


class Dovecot:
    """A private Dovecot with only the LMTP protocol, on a unix socket and on 127.0.0.1:port.

    Users live in a passwd-file as full addresses (`alice@example.test`), all with one fixed
    uid/gid: the current user's, or nobody's when the tests run as root, because Dovecot never
    touches mail as root ("Mail access not allowed for root", whatever first_valid_uid says)
    and its passwd-file refuses uid 0. `auth_username_format = %Lu`, so `%d`/`%n` in
    mail_location give TMP/mail/example.test/alice. Works as root and as an ordinary user (no
    chroot for anvil, internal and login users = the current user).
    """

    def __init__(self, users=("alice", "bob", "postmaster"), quota=None):
        """`quota`: {user: Dovecot quota rule}, e.g. {"bob": "*:storage=1B"} (quota plugin,
        Maildir++ backend); Dovecot then refuses that user's copy after DATA (RFC 2033 §4.2)."""
        self.folder = tempfile.mkdtemp(prefix="tern-dovecot-")
        self.socket = os.path.join(self.folder, "run", "lmtp")
        self.port = free_port()
        self.config = os.path.join(self.folder, "dovecot.conf")
        self.log_path = os.path.join(self.folder, "dovecot.log")
        self.mail = os.path.join(self.folder, "mail")
        uid, gid = os.getuid(), os.getgid()
        user = _user_name(uid)
        group = _group_name(gid)
        self.mail_uid, self.mail_gid = (uid, gid) if uid != 0 else _nobody()
        passwd = os.path.join(self.folder, "users")
        with open(passwd, "w") as f:
            for name in users:
                extra = f"userdb_quota_rule={quota[name]}" if quota and name in quota else ""
                f.write(f"{name}@{DOMAIN}:{{PLAIN}}secret:{self.mail_uid}:{self.mail_gid}::::{extra}\n")
        for directory in ("run", "state", "mail"):
            os.makedirs(os.path.join(self.folder, directory))
        os.chmod(self.folder, 0o711)
        os.chown(self.mail, self.mail_uid, self.mail_gid)
        quota_plugin = "mail_plugins = quota\nplugin {\n  quota = maildir:User quota\n}" if quota else ""
        with open(self.config, "w") as f:
            f.write(f"""\
base_dir = {self.folder}/run
state_dir = {self.folder}/state
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
protocols = lmtp
listen = 127.0.0.1
ssl = no
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = {min(self.mail_uid, 500)}
first_valid_gid = {min(self.mail_gid, 500)}
mail_location = maildir:{self.mail}/%d/%n
auth_username_format = %Lu
lmtp_save_to_detail_mailbox = no
{quota_plugin}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service anvil {{
  chroot =
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
""")
        self.process = None

    def start(self, timeout=10.0):
        self.log = open(os.path.join(self.folder, "dovecot.stderr"), "ab")
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", self.config], stdout=self.log,
                                        stderr=self.log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.read_log()
                self.cleanup()
                raise AssertionError(f"dovecot exited {self.process.returncode}:\n{log}")
            if self._answers():
                return self
            time.sleep(0.05)
        log = self.read_log()
        self.cleanup()
        raise AssertionError(f"dovecot's LMTP listeners did not answer after {timeout}s:\n{log}")

    def _answers(self):
        """Both listeners greet with 220 (LMTP greeting)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(self.socket)
                if not s.recv(512).startswith(b"220 "):
                    return False
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(512).startswith(b"220 ")
        except OSError:
            return False

    def stop(self, timeout=10):
        if self.process and self.process.poll() is None:
            self.process.terminate()          # the master stops its children and exits
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"dovecot did not stop within {timeout}s of SIGTERM")
        if self.process:
            self.log.close()

    def cleanup(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def read_log(self):
        text = ""
        for name in ("dovecot.log", "dovecot.stderr"):
            try:
                with open(os.path.join(self.folder, name), "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except OSError:
                pass
        return text

    def errors(self):
        return [line for line in self.read_log().splitlines() if "Error:" in line or "Fatal:" in line]

    def maildir(self, user):
        path = os.path.join(self.mail, DOMAIN, user, "new")
        if not os.path.isdir(path):
            return []
        messages = []
        for name in sorted(os.listdir(path)):
            with open(os.path.join(path, name), "rb") as f:
                messages.append(f.read())
        return messages

    def wait_for_maildir(self, user, count, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.maildir(user)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"dovecot maildir {user}@{DOMAIN}: {len(self.maildir(user))} messages, "
                             f"expected {count}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if exc[0] is not None:
            print("---- dovecot log ----\n" + self.read_log()[-4000:])
        self.cleanup()


def _user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _nobody():
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def dovecot_missing():
    if not os.path.exists(DOVECOT):
        print(f"    skipped: {DOVECOT} is absent (apt-get install dovecot-core dovecot-lmtpd)")
        return True
    return False


def submit(tern, sender, recipients, subject, body="Hello over LMTP.\r\n"):
    message = (f"From: <{sender}>\r\nTo: <{recipients[0]}>\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject}@client.example>\r\n\r\n{body}")
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as client:
        refused = client.sendmail(sender, recipients, message.encode())
    assert refused == {}, refused


def wait_for_empty_queue(tern, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not tern.queue():
            return
        time.sleep(0.2)
    raise AssertionError(f"tern's queue not empty after {timeout}s: {tern.queue()}")


def wait_for_log(tern, text, count=1, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in tern.read_log().splitlines() if text in line]
        if len(lines) >= count:
            return lines
        time.sleep(0.1)
    raise AssertionError(f"tern's log has fewer than {count} lines with {text!r}:\n{tern.read_log()[-4000:]}")


def subject_of(message_bytes):
    return email.message_from_bytes(message_bytes, policy=email.policy.default)["Subject"]


def lmtp_received(message_bytes):
    """(LHLO name, LMTP session id) from the Received field Dovecot's LMTP server puts on top."""
    text = message_bytes.decode("utf-8", "replace")
    found = re.search(r"^Received: from (\S+)[^\r\n]*\r?\n\tby \S+ with LMTP\r?\n\tid (\S+)", text, re.M)
    assert found, text[:600]
    return found.group(1), found.group(2)


# ---- tests --------------------------------------------------------------------------------

# A line that is only a dot and one that starts with a dot: Tern has to dot-stuff again when it
# sends DATA over LMTP, or Dovecot ends the message early / drops a dot.
DOTTED_BODY = "First line.\r\n.\r\n..two dots\r\n.one dot\r\nLast line.\r\n"


def test_lmtp_delivery_to_dovecot():
    """Two messages, one for alice and bob, one for alice only, over the unix socket and then
    over TCP: both land in Dovecot's Maildirs, each message in a single LMTP transaction."""
    if dovecot_missing():
        return
    for form in ("unix", "inet"):
        with Dovecot() as dovecot:
            target = f"unix:{dovecot.socket}" if form == "unix" else f"127.0.0.1:{dovecot.port}"
            with Tern(delivery=f'retry = ["1s"]\nlocal = "lmtp:{target}"') as tern:
                submit(tern, "sender@client.example", ["alice@example.test", "bob@example.test"],
                       f"both-{form}")
                submit(tern, "sender@client.example", ["alice@example.test"], f"alice-{form}",
                       body=DOTTED_BODY)
                dovecot.wait_for_maildir("alice", 2)
                dovecot.wait_for_maildir("bob", 1)
                wait_for_empty_queue(tern)
                sent = wait_for_log(tern, "status=sent", 3)
                time.sleep(0.3)                         # nothing more may arrive
                alice, bob = dovecot.maildir("alice"), dovecot.maildir("bob")
                by_subject = {subject_of(m): m for m in alice}
                assert sorted(by_subject) == [f"alice-{form}", f"both-{form}"], alice
                assert [subject_of(m) for m in bob] == [f"both-{form}"], bob
                for message in alice + bob:
                    text = message.decode()
                    assert text.startswith("Return-Path: <sender@client.example>\n"), text[:600]
                    assert text.count("Return-Path:") == 1, text[:600]
                    assert "by mx.example.test (Tern) with ESMTP id" in text, text[:600]
                    assert lmtp_received(message)[0] == "mx.example.test", text[:600]   # LHLO name
                # The copy for alice and the copy for bob came in the same LMTP transaction.
                assert lmtp_received(by_subject[f"both-{form}"])[1] == lmtp_received(bob[0])[1], \
                    (by_subject[f"both-{form}"][:400], bob[0][:400])
                body = by_subject[f"alice-{form}"].decode().split("\n\n", 1)[1]
                assert body == DOTTED_BODY.replace("\r\n", "\n"), repr(body)
                assert tern.maildir("alice") == [] and tern.maildir("bob") == [], \
                    "Tern wrote into its own Maildirs although local = lmtp"
                assert len(sent) == 3, sent
                for line in sent:
                    assert f"relay=lmtp:{target} " in line or line.endswith(f"relay=lmtp:{target}"), line
                    assert "250 2.0.0" in line and "Saved" in line, line
                assert len([line for line in sent if "to=<alice@example.test>" in line]) == 2, sent
                assert len([line for line in sent if "to=<bob@example.test>" in line]) == 1, sent
            assert dovecot.errors() == [], dovecot.errors()


def test_lmtp_unknown_user_bounces_only_that_recipient():
    """bob is a mailbox for Tern but not a user for Dovecot. Dovecot 2.3 refuses him at RCPT
    (`550 5.1.1 <bob@example.test> User doesn't exist: bob@example.test`), not after DATA; Tern
    still sends DATA for alice, takes the 550 as final for bob only and bounces to the sender,
    postmaster@example.test, whose notice goes over LMTP to Dovecot's postmaster user too."""
    if dovecot_missing():
        return
    with Dovecot(users=("alice", "postmaster")) as dovecot:
        target = f"unix:{dovecot.socket}"
        with Tern(delivery=f'retry = ["1s"]\nlocal = "lmtp:{target}"') as tern:
            submit(tern, "postmaster@example.test", ["alice@example.test", "bob@example.test"], "half")
            [copy] = dovecot.wait_for_maildir("alice", 1)
            assert subject_of(copy) == "half", copy[:400]
            [bounce] = dovecot.wait_for_maildir("postmaster", 1)
            wait_for_empty_queue(tern)
            time.sleep(0.5)                             # no second notice, nothing for bob
            assert len(dovecot.maildir("postmaster")) == 1 and len(dovecot.maildir("alice")) == 1
            assert dovecot.maildir("bob") == []
            assert bounce.decode().startswith("Return-Path: <>\n"), bounce[:300]
            message, blocks = delivery_report(bounce)
            assert message["To"].addresses[0].addr_spec == "postmaster@example.test", message["To"]
            assert len(blocks) == 1, blocks                # alice is not in the report
            [block] = blocks
            assert block["Final-Recipient"] == "rfc822; bob@example.test", block
            assert block["Action"] == "failed" and block["Status"] == "5.1.1", block
            diagnostic = " ".join(block["Diagnostic-Code"].split())
            assert diagnostic == "smtp; 550 5.1.1 <bob@example.test> User doesn't exist: bob@example.test", \
                diagnostic
            returned = [p for p in message.iter_parts() if p.get_content_type() in
                        ("message/rfc822", "text/rfc822-headers")]
            assert returned and "Subject: half" in returned[0].as_string(), message.as_string()[-800:]
            log = tern.read_log().splitlines()
            [sent] = [line for line in log if "status=sent" in line and "to=<alice@example.test>" in line]
            assert f"relay=lmtp:{target}" in sent, sent
            [bounced] = [line for line in log if "status=bounced" in line]
            assert "to=<bob@example.test>" in bounced and "dsn=5.1.1" in bounced, bounced
            assert f"relay=lmtp:{target}" in bounced and "User doesn't exist" in bounced, bounced
            [notice] = [line for line in log if "status=sent" in line and "to=<postmaster@example.test>" in line]
            assert f"relay=lmtp:{target}" in notice, notice
            assert tern.maildir("postmaster") == [] and tern.maildir("alice") == []
        assert dovecot.errors() == [], dovecot.errors()


def test_lmtp_over_quota_after_data_bounces_only_that_recipient():
    """The per-recipient replies after DATA (RFC 2033 §4.2): bob, first of two recipients, is
    over his Dovecot quota, so Dovecot accepts his RCPT and answers `552 5.2.2 … Quota exceeded`
    for him after DATA, then 250 for alice. Tern must pair each reply with its recipient."""
    if dovecot_missing():
        return
    with Dovecot(quota={"bob": "*:storage=1B"}) as dovecot:
        target = f"unix:{dovecot.socket}"
        with Tern(delivery=f'retry = ["1s"]\nlocal = "lmtp:{target}"') as tern:
            submit(tern, "postmaster@example.test", ["bob@example.test", "alice@example.test"], "full")
            [copy] = dovecot.wait_for_maildir("alice", 1)
            assert subject_of(copy) == "full", copy[:400]
            [bounce] = dovecot.wait_for_maildir("postmaster", 1)
            wait_for_empty_queue(tern)
            time.sleep(0.5)
            assert len(dovecot.maildir("postmaster")) == 1 and len(dovecot.maildir("alice")) == 1
            assert dovecot.maildir("bob") == []
            # Dovecot did take bob's RCPT and refused his copy only after DATA.
            assert "save failed to INBOX: Quota exceeded" in dovecot.read_log(), dovecot.read_log()
            message, [block] = delivery_report(bounce)
            assert block["Final-Recipient"] == "rfc822; bob@example.test", block
            assert block["Action"] == "failed" and block["Status"] == "5.2.2", block
            diagnostic = " ".join(block["Diagnostic-Code"].split())
            assert diagnostic.startswith("smtp; 552 5.2.2 <bob@example.test> Quota exceeded"), diagnostic
            log = tern.read_log().splitlines()
            [sent] = [line for line in log if "status=sent" in line and "to=<alice@example.test>" in line]
            assert "250 2.0.0 <alice@example.test>" in sent and f"relay=lmtp:{target}" in sent, sent
            [bounced] = [line for line in log if "status=bounced" in line]
            assert "to=<bob@example.test>" in bounced and "dsn=5.2.2" in bounced, bounced
            assert "552 5.2.2 <bob@example.test>" in bounced, bounced
        assert dovecot.errors() == [], dovecot.errors()
