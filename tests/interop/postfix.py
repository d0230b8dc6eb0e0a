#!/usr/bin/env python3
"""Interop tests against real Postfix (Debian's package): Tern relays to it, it relays to Tern.

    python3 tests/interop/run.py -k postfix      (run.py collects these tests)

Each test runs its own Postfix instance (`postfix -c DIR`): a private config_directory,
queue_directory and data_directory in a temporary folder, its own master.cf with only the
services it needs, no chroot, logging to a file in that folder (maillog_file). The system
instance in /etc/postfix (the one bench/postfix-baseline.sh drives) is neither read nor
changed, and may run at the same time on other ports. Postfix only runs as root, so these
tests need root. Besides Python's standard library they need the postfix and openssl packages.
"""

import email
import email.policy
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
from harness import Tern, wait_for_port  # noqa: E402
from peers import DNS  # noqa: E402
from run import delivery_report, outbound_delivery, wait_for_empty_queue  # noqa: E402

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

# The services a Postfix instance needs to receive, queue, relay, deliver to a virtual Maildir,
# bounce and log (postconf -M of Debian's master.cf, trimmed); every one outside a chroot.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def free_port_on(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Postfix:
    """One private Postfix instance whose smtpd listens on `host:port`; `main` is added to its
    main.cf, with {conf}, {mail}, {uid} and {gid} replaced by the instance's own; `files`
    ({name: text}) are written to its conf/ (lookup tables). `folder` holds conf/
    (config_directory), queue/, data/, mail/ (virtual Maildirs, owned by nobody) and maillog."""

    def __init__(self, main, host="127.0.0.1", port=None, files=None):
        assert os.geteuid() == 0, "Postfix runs only as root: run the Postfix interop tests as root"
        assert os.path.exists(POSTFIX), "postfix is not installed (apt-get install postfix)"
        self.host, self.port = host, port or free_port_on(host)
        self.folder = tempfile.mkdtemp(prefix="postfix-interop-")
        os.chmod(self.folder, 0o755)   # the virtual delivery agent runs as nobody below it
        self.conf = os.path.join(self.folder, "conf")
        self.queue = os.path.join(self.folder, "queue")
        self.data = os.path.join(self.folder, "data")
        self.mail = os.path.join(self.folder, "mail")
        self.log_path = os.path.join(self.folder, "maillog")
        for path in (self.conf, self.queue, self.data, self.mail):
            os.mkdir(path, 0o755)
        owner = pwd.getpwnam("postfix")
        os.chown(self.data, owner.pw_uid, owner.pw_gid)   # master.lock, caches: mail_owner's
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
        os.chown(self.mail, self.uid, self.gid)
        for token, value in (("{conf}", self.conf), ("{mail}", self.mail), ("{uid}", self.uid), ("{gid}", self.gid)):
            main = main.replace(token, str(value))
        for name, text in (files or {}).items():
            with open(os.path.join(self.conf, name), "w") as f:
                f.write(text)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
maillog_file = {self.log_path}
maillog_file_prefixes = {self.folder}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
{main}
""")
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(f"{self.host}:{self.port} inet n - n - - smtpd\n" + MASTER_CF)
        self.master_pid = None

    def postfix(self, *args, check=True):
        result = subprocess.run([POSTFIX, "-c", self.conf, *args], capture_output=True, timeout=30,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"postfix -c {self.conf} {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.decode()}\n---- postfix log ----\n{self.read_log()}")
        return result

    def start(self):
        self.postfix("start")   # returns when the master daemon has initialised (master -w)
        with open(os.path.join(self.queue, "pid", "master.pid")) as f:
            self.master_pid = int(f.read().split()[0])
        wait_for_port(self.port, host=self.host)
        return self

    def processes(self):
        """Pids of live processes of this instance: Postfix daemons inherit MAIL_CONFIG."""
        marker = f"MAIL_CONFIG={self.conf}".encode()
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    environment = f.read().split(b"\0")
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in environment and state != "Z":
                found.append(int(name))
        return found

    def stop(self):
        """Stops the instance (postfix stop) and checks that its master and daemons are gone."""
        self.postfix("stop", check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.1)
        left = self.processes()
        for pid in left:   # ours, by pid: never leave a Postfix running
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        assert not left, f"Postfix processes still running after postfix stop: {left}"
        if self.master_pid:
            try:
                with open(f"/proc/{self.master_pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                state = "gone"
            assert state in ("gone", "Z"), f"Postfix master {self.master_pid} still running ({state})"

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def maildir(self, user):
        path = os.path.join(self.mail, user, "new")
        if not os.path.isdir(path):
            return []
        messages = []
        for name in sorted(os.listdir(path), key=lambda n: os.stat(os.path.join(path, n)).st_mtime_ns):
            with open(os.path.join(path, name), "rb") as f:
                messages.append(f.read())
        return messages

    def wait_for_maildir(self, user, count, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.maildir(user)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"Postfix maildir {user}: {len(self.maildir(user))} messages, expected {count}"
                             f"\n---- postfix log ----\n{self.read_log()[-6000:]}")

    def wait_for_log(self, text, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.read_log():
                return self.read_log()
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the Postfix log after {timeout}s:\n{self.read_log()[-6000:]}")

    def queued(self):
        return sum(len(files) for queue in ("incoming", "active", "deferred", "hold", "maildrop")
                   for _, _, files in os.walk(os.path.join(self.queue, queue)))

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            if exc[0] is not None:
                print("---- postfix log ----\n" + self.read_log()[-8000:])
            shutil.rmtree(self.folder, ignore_errors=True)


def self_signed_certificate(folder, name):
    """(certificate, key) files for `name`, made by openssl: a P-256 key, valid two days."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"],
                   check=True, capture_output=True, timeout=30)
    os.chmod(key, 0o600)
    return cert, key


# Content exercising transparency and 8-bit transport: lines starting with a dot (one that is
# only a dot would end the message early if stuffing were lost on either hop) and UTF-8 text.
DOTTED_BODY = ("First line.\r\n"
               ".leading dot line\r\n"
               "..two leading dots\r\n"
               ".\r\n"
               "Grüße aus Köln, naïve café, 日本語, ☃\r\n"
               "Last line.\r\n")


def eight_bit_message(sender, recipient, subject):
    return (f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + DOTTED_BODY).encode("utf-8")


def body_of(message_bytes):
    """The content after the header section, with LF line ends (a Maildir file's)."""
    text = message_bytes.replace(b"\r\n", b"\n")
    return text.split(b"\n\n", 1)[1]


# ---- Tern -> Postfix ----------------------------------------------------------------------

def test_tern_relays_to_postfix():
    """Tern delivers outbound to Postfix as the MX of example.net: opportunistic STARTTLS with
    a self-signed certificate, one recipient refused at RCPT (bounced to the sender), a dotted
    8BITMIME message delivered byte for byte."""
    with tempfile.TemporaryDirectory(prefix="postfix-tls-") as tls_folder:
        cert, key = self_signed_certificate(tls_folder, "mx.example.net")
        main = f"""\
myhostname = mx.example.net
mydestination =
virtual_mailbox_domains = example.net
virtual_mailbox_base = {{mail}}
virtual_mailbox_maps = texthash:{{conf}}/vmailbox
virtual_uid_maps = static:{{uid}}
virtual_gid_maps = static:{{gid}}
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_loglevel = 1
debug_peer_list = 127.0.0.1
debug_peer_level = 1
"""
        # Only bob has a mailbox (a trailing slash: a Maildir); nobody@ is refused at RCPT.
        postfix = Postfix(main, host="127.0.0.2", files={"vmailbox": "bob@example.net bob/\n"})
        records = {"example.net": [("MX", 10, "mx.example.net")], "mx.example.net": [("A", "127.0.0.2")]}
        with postfix, DNS(records) as dns:
            with Tern(dns_port=dns.port, delivery=outbound_delivery(postfix.port)) as tern:
                client = smtplib.SMTP("127.0.0.1", tern.port, local_hostname="client.example.test", timeout=10)
                first = (b"From: <alice@example.test>\r\nTo: <bob@example.net>, <nobody@example.net>\r\n"
                         b"Subject: two recipients\r\n\r\nOne known, one not.\r\n")
                refused = client.sendmail("alice@example.test", ["bob@example.net", "nobody@example.net"], first)
                assert refused == {}, refused
                second = eight_bit_message("alice@example.test", "bob@example.net", "dots and 8bit")
                client.sendmail("alice@example.test", ["bob@example.net"], second,
                                mail_options=["BODY=8BITMIME"])
                client.quit()

                delivered = postfix.wait_for_maildir("bob", 2)
                by_subject = {email.message_from_bytes(m, policy=email.policy.default)["Subject"]: m
                              for m in delivered}
                assert sorted(by_subject) == ["dots and 8bit", "two recipients"], list(by_subject)
                plain = by_subject["two recipients"]
                assert body_of(plain) == b"One known, one not.\n", plain
                assert b"Delivered-To: bob@example.net" in plain, plain[:600]
                assert b"Return-Path: <alice@example.test>" in plain, plain[:600]
                dotted = by_subject["dots and 8bit"]
                assert body_of(dotted) == DOTTED_BODY.replace("\r\n", "\n").encode("utf-8"), dotted
                assert b"Content-Transfer-Encoding: 8bit" in dotted, dotted[:800]
                # Postfix's Received header: TLS on the hop from Tern, Tern's EHLO name.
                parsed = email.message_from_bytes(dotted, policy=email.policy.default)
                received = str(parsed.get_all("Received")[0])
                assert "from mx.example.test" in received and "by mx.example.net (Postfix)" in received, received
                assert "with ESMTPS" in received, received

                [bounce] = tern.wait_for_maildir("alice", 1)
                message, blocks = delivery_report(bounce)
                assert message["To"].addresses[0].addr_spec == "alice@example.test", message["To"]
                assert len(blocks) == 1, blocks
                block = blocks[0]
                assert block["Final-Recipient"] == "rfc822; nobody@example.net", block
                assert block["Action"] == "failed" and block["Status"] == "5.1.1", block
                assert block["Diagnostic-Code"].startswith("smtp;"), block
                assert "550 5.1.1" in block["Diagnostic-Code"] and "User unknown" in block["Diagnostic-Code"], block
                assert block["Remote-MTA"] == "dns; mx.example.net", block
                returned = [p for p in message.iter_parts()
                            if p.get_content_type() in ("message/rfc822", "text/rfc822-headers")]
                assert returned, [p.get_content_type() for p in message.iter_parts()]
                wait_for_empty_queue(tern)

                log = postfix.wait_for_log("status=sent")
                assert "Anonymous TLS connection established from" in log, log[-4000:]
                assert "reject: RCPT from localhost[127.0.0.1]: 550 5.1.1 <nobody@example.net>" in log, log[-4000:]
                # debug_peer_list logs every command smtpd read from Tern, after STARTTLS too.
                assert "< localhost[127.0.0.1]: STARTTLS" in log, log[-4000:]
                mails = [line for line in log.splitlines() if ": MAIL FROM:<alice@example.test>" in line]
                assert len(mails) == 2, mails
                assert sum("BODY=8BITMIME" in line for line in mails) == 1, mails
                tern_log = tern.read_log()
                relay = f"relay=mx.example.net[127.0.0.2]:{postfix.port}"
                sent = [line for line in tern_log.splitlines()
                        if "status=sent" in line and "to=<bob@example.net>" in line]
                assert len(sent) == 2 and all(relay in line for line in sent), tern_log[-4000:]
                assert all(" tls=TLS" in line for line in sent), sent
                [bounced] = [line for line in tern_log.splitlines() if "to=<nobody@example.net>" in line]
                assert "status=bounced" in bounced and "dsn=5.1.1" in bounced and relay in bounced, bounced
    assert not postfix.processes()


# ---- Postfix -> Tern ----------------------------------------------------------------------

def test_postfix_relays_to_tern():
    """Postfix takes a message on its smtpd and relays it to Tern (relayhost); Tern delivers it
    to alice's Maildir with Postfix's trace header and the content intact."""
    with Tern() as tern:
        main = f"""\
myhostname = postfix.example.net
mydestination =
relayhost = [127.0.0.1]:{tern.port}
default_transport = smtp
smtp_tls_security_level = none
debug_peer_list = 127.0.0.1
debug_peer_level = 1
"""
        with Postfix(main, host="127.0.0.1") as postfix:
            client = smtplib.SMTP("127.0.0.1", postfix.port, local_hostname="client.example.net", timeout=10)
            message = eight_bit_message("carol@example.net", "alice@example.test", "through postfix")
            refused = client.sendmail("carol@example.net", ["alice@example.test"], message,
                                      mail_options=["BODY=8BITMIME"])
            assert refused == {}, refused
            client.quit()

            [arrived] = tern.wait_for_maildir("alice", 1)
            assert body_of(arrived) == DOTTED_BODY.replace("\r\n", "\n").encode("utf-8"), arrived
            parsed = email.message_from_bytes(arrived, policy=email.policy.default)
            assert parsed["Subject"] == "through postfix", parsed["Subject"]
            received = [str(r) for r in parsed.get_all("Received")]
            assert len(received) >= 2, received
            # Newest first: Tern's, naming Postfix's EHLO; then Postfix's own.
            assert "from postfix.example.net" in received[0] and "mx.example.test" in received[0], received
            assert "by postfix.example.net (Postfix)" in received[1], received
            assert "from client.example.net" in received[1], received

            log = postfix.wait_for_log("status=sent")
            sent = [line for line in log.splitlines() if "status=sent" in line]
            assert len(sent) == 1 and f"relay=127.0.0.1[127.0.0.1]:{tern.port}" in sent[0], sent
            assert "queued as" in sent[0], sent
            # debug_peer_list: Postfix's smtp client logs its dialogue with Tern, "> " what it
            # sent, "< " what it read. PIPELINING: MAIL, RCPT and DATA go out before any reply.
            pattern = re.compile(r"postfix/smtp\[\d+\]: ([<>]) 127\.0\.0\.1\[127\.0\.0\.1\]:%d: (.*)$" % tern.port)
            dialogue = [f"{m[1]} {m[2]}" for m in map(pattern.search, log.splitlines()) if m]
            assert "> EHLO postfix.example.net" in dialogue and "< 250-PIPELINING" in dialogue, dialogue
            assert "< 250-8BITMIME" in dialogue, dialogue
            assert "Using ESMTP PIPELINING" in log, log[-4000:]
            mail = [n for n, line in enumerate(dialogue) if line.startswith("> MAIL FROM:<carol@example.net>")]
            assert len(mail) == 1 and "BODY=8BITMIME" in dialogue[mail[0]], dialogue
            assert dialogue[mail[0] + 1].startswith("> RCPT TO:<alice@example.test>"), dialogue
            assert dialogue[mail[0] + 2] == "> DATA", dialogue
            assert dialogue[mail[0] + 3].startswith("< 250 2.1.0"), dialogue
            assert postfix.queued() == 0

        # Tern's log shows the session from Postfix's smtp client; it does not name the
        # EHLO (Tern's Received header above does), nor whether commands came pipelined.
        tern_log = [line for line in tern.read_log().splitlines() if "component=smtpd" in line]
        queued = [line for line in tern_log if "event=queued" in line]
        assert len(queued) == 1, tern_log
        assert "client=127.0.0.1" in queued[0] and "from=<carol@example.net>" in queued[0], queued
        assert "nrcpt=1" in queued[0] and "proto=ESMTP" in queued[0], queued
        assert any("event=disconnect" in line and "messages=1" in line for line in tern_log), tern_log
        assert not postfix.processes()
