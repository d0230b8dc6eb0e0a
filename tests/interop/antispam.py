"""Interop: anti-spam and sender authentication (SPEC §2.6, issue 5) with real peers.

Clients connect from chosen loopback addresses (127.0.0.0/8) so that DNS lists, SPF and
rate limits see different clients; a DNS server in the test (peers.DNS) serves the lists,
SPF, DKIM and DMARC records. dkimpy signs and verifies, opendkim-testmsg verifies, a real
SpamAssassin spamd scores. Nobody is in trusted_networks unless a test says so.
"""

import base64
import os
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
from harness import Tern  # noqa: E402
from peers import DNS  # noqa: E402

MESSAGE = (b"From: %s\r\nTo: alice@example.test\r\nSubject: %s\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <%s@client.example>\r\n\r\nHello.\r\n")


def message(subject, sender="someone@client.example"):
    return MESSAGE % (sender.encode(), subject.encode(), subject.replace(" ", "-").encode())


def send(tern, sender, recipients, data, source="127.0.0.1", helo="client.example"):
    """Sends one message from `source`; returns None when taken, else the refusal as
    (stage, code, text)."""
    with smtplib.SMTP("127.0.0.1", tern.port, local_hostname=helo, source_address=(source, 0), timeout=30) as smtp:
        code, text = smtp.ehlo(helo)
        code, text = smtp.mail(sender)
        if code != 250:
            return ("mail", code, text.decode())
        for recipient in recipients:
            code, text = smtp.rcpt(recipient)
            if code not in (250, 251):
                return ("rcpt", code, text.decode())
        code, text = smtp.data(data)
        if code != 250:
            return ("data", code, text.decode())
    return None


def wait_for_log(tern, needle, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in tern.read_log():
            return
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in the log:\n{tern.read_log()[-3000:]}")


# ---- connection stage ---------------------------------------------------------------------

def test_early_talker_refused():
    with Tern(trusted="", extra='[checks]\ngreet_pause = "1s"\n') as tern:
        with socket.create_connection(("127.0.0.1", tern.port), timeout=10) as s:
            s.sendall(b"EHLO spam.example\r\n")
            reply = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"554 5.5.1"), reply
        assert b"220" not in reply, reply
        # A patient client is greeted after the pause and served.
        started = time.monotonic()
        assert send(tern, "a@client.example", ["alice@example.test"], message("patient")) is None
        assert time.monotonic() - started >= 0.9
        tern.wait_for_maildir("alice", 1)
        assert "early_talker" in tern.read_log()


def test_dnsbl_refuses_and_dnswl_lets_through():
    records = {
        "2.0.0.127.bl.test": [("A", "127.0.0.2"), ("TXT", "Listed for spam, see https://bl.test/127.0.0.2")],
        "3.0.0.127.bl.test": [("A", "127.0.0.2")],
        "3.0.0.127.wl.test": [("A", "127.0.0.15")],
        # Spamhaus's "you queried through a public resolver": never a listing.
        "5.0.0.127.bl.test": [("A", "127.255.255.254")],
    }
    extra = '''[checks]
dnsbl = [{ zone = "bl.test", weight = 10 }]
dnswl = [{ zone = "wl.test", weight = -10 }]
reject_score = 10
'''
    with DNS(records) as dns, Tern(trusted="", dns_port=dns.port, extra=extra) as tern:
        refused = send(tern, "a@client.example", ["alice@example.test"], message("listed"), source="127.0.0.2")
        assert refused and refused[0] == "rcpt" and refused[1] == 550 and "5.7.1" in refused[2], refused
        assert send(tern, "a@client.example", ["alice@example.test"], message("allowed"), source="127.0.0.3") is None
        assert send(tern, "a@client.example", ["alice@example.test"], message("clean"), source="127.0.0.4") is None
        assert send(tern, "a@client.example", ["alice@example.test"], message("error code"), source="127.0.0.5") is None
        tern.wait_for_maildir("alice", 3)
        log = tern.read_log()
        assert "event=dnsbl" in log and "bl.test=127.0.0.2" in log, log[-3000:]
        assert "dnsbl_error" in log   # the 127.255.255.254 answer is reported, not counted


def test_greylisting_defers_then_passes():
    with Tern(trusted="", extra='[checks]\ngreylisting = "2s"\n') as tern:
        first = send(tern, "list@client.example", ["alice@example.test"], message("grey 1"), source="127.0.0.6")
        assert first and first[:2] == ("rcpt", 451) and "4.7.1" in first[2], first
        early = send(tern, "list@client.example", ["alice@example.test"], message("grey 2"), source="127.0.0.6")
        assert early and early[1] == 451, early
        time.sleep(2.2)
        assert send(tern, "list@client.example", ["alice@example.test"], message("grey 3"), source="127.0.0.6") is None
        # The triplet is known now; another sender from the same network is new.
        assert send(tern, "list@client.example", ["alice@example.test"], message("grey 4"), source="127.0.0.6") is None
        other = send(tern, "other@client.example", ["alice@example.test"], message("grey 5"), source="127.0.0.6")
        assert other and other[1] == 451, other
        tern.wait_for_maildir("alice", 2)
        # The store survives a restart.
        tern.stop()
        tern.start()
        assert send(tern, "list@client.example", ["alice@example.test"], message("grey 6"), source="127.0.0.6") is None
        tern.wait_for_maildir("alice", 3)
        assert "reason=greylisted" in tern.read_log()


def test_rate_limits():
    limits = 'connection_rate = "3/1m"\nmessage_rate = "2/1m"\nrecipient_rate = "3/1m"\n'
    with Tern(trusted="", limits=limits) as tern:
        assert send(tern, "a@client.example", ["alice@example.test", "bob@example.test"], message("r1"), source="127.0.0.7") is None
        refused = send(tern, "a@client.example", ["alice@example.test", "bob@example.test"], message("r2"), source="127.0.0.7")
        assert refused and refused[:2] == ("rcpt", 450), refused       # the fourth recipient
        refused = send(tern, "a@client.example", ["alice@example.test"], message("r3"), source="127.0.0.7")
        assert refused and refused[:2] == ("mail", 450), refused       # the third message
        # Three connections so far: the fourth is refused at once.
        with socket.create_connection(("127.0.0.1", tern.port), timeout=10, source_address=("127.0.0.7", 0)) as s:
            greeting = s.recv(512)
        assert greeting.startswith(b"421 4.7.0"), greeting
        # Another client has its own counters.
        assert send(tern, "a@client.example", ["alice@example.test"], message("r4"), source="127.0.0.8") is None
        log = tern.read_log()
        assert "reason=recipient_rate" in log and "reason=message_rate" in log and "reason=connection_rate" in log


def test_helo_checks():
    with Tern(trusted="", extra='[checks]\nhelo = "reject"\n') as tern:
        # From loopback, naming us or localhost is true, so only the other findings can be tried.
        for helo, taken in [("client", False), ("127.0.0.9", False), ("bad_name!", False), ("[127.0.0.9]", True),
                            ("[127.0.0.10]", False), ("mail.client.example", True), ("mx.example.test", True)]:
            result = send(tern, "a@client.example", ["alice@example.test"], message("helo " + helo), source="127.0.0.9",
                          helo=helo)
            assert (result is None) == taken, (helo, result)
            if not taken:
                assert result[:2] == ("rcpt", 550) and "Helo command rejected" in result[2], (helo, result)


# ---- rules and actions --------------------------------------------------------------------

RULES = '''
[[rules]]
name = "hold"
if = { header = { Subject = "*hold me*" } }
action = "quarantine"

[[rules]]
name = "lottery"
if = { header = { Subject = "*lottery*" } }
action = "reject"
reply = "550 5.7.1 No lotteries here"

[[rules]]
name = "later"
if = { sender = "slow@*" }
action = "defer"
reply = "450 4.7.1 Come back tomorrow"

[[rules]]
name = "mark"
if = { header = { Subject = "*cheap*" } }
action = "tag"
header = "X-Spam-Flag: YES"
subject_prefix = "[SPAM] "

[[rules]]
name = "old address"
if = { recipient = "sales@example.test" }
action = "redirect"
redirect = "bob@example.test"

[[rules]]
name = "void"
if = { header = { Subject = "*drop me*" } }
action = "discard"
'''


def test_rules_tag_refuse_defer_redirect_discard():
    with Tern(trusted="", extra=RULES) as tern:
        refused = send(tern, "a@client.example", ["alice@example.test"], message("win the lottery"))
        assert refused == ("data", 550, "5.7.1 No lotteries here"), refused
        deferred = send(tern, "slow@client.example", ["alice@example.test"], message("x"))
        assert deferred == ("mail", 450, "4.7.1 Come back tomorrow"), deferred
        assert send(tern, "a@client.example", ["alice@example.test"], message("cheap pills")) is None
        [tagged] = tern.wait_for_maildir("alice", 1)
        assert b"\r\nX-Spam-Flag: YES\r\n" in tagged or tagged.startswith(b"X-Spam-Flag: YES\r\n"), tagged
        assert b"\nSubject: [SPAM] cheap pills\r\n" in tagged, tagged
        assert send(tern, "a@client.example", ["sales@example.test"], message("for sales")) is None
        [redirected] = tern.wait_for_maildir("bob", 1)
        assert b"for sales" in redirected
        assert send(tern, "a@client.example", ["alice@example.test"], message("please drop me")) is None
        time.sleep(1)
        assert len(tern.maildir("alice")) == 1
        log = tern.read_log()
        assert "event=discard" in log and "event=redirect" in log and 'rules=mark' in log, log[-3000:]


def test_quarantine_and_release():
    with Tern(trusted="", extra=RULES) as tern:
        assert send(tern, "a@client.example", ["alice@example.test"], message("hold me please")) is None
        time.sleep(1)
        assert tern.maildir("alice") == []
        [listing] = tern.queue()
        assert listing["held"], listing
        listed = tern.tern("queue", "list").stdout.decode()
        assert f"{listing['id']}!" in listed, listed
        tern.tern("queue", "release", listing["id"])
        [released] = tern.wait_for_maildir("alice", 1)
        assert b"hold me please" in released
        assert "event=quarantine" in tern.read_log()


def test_forged_authentication_results_removed():
    forged = (b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=ceo@example.test\r\n"
              b"Authentication-Results: (comment) MX.Example.Test; dkim=pass\r\n"
              b"Authentication-Results: other.example; spf=fail\r\n")
    with Tern(trusted="", extra=RULES) as tern:
        assert send(tern, "a@client.example", ["alice@example.test"], forged + message("forged")) is None
        [delivered] = tern.wait_for_maildir("alice", 1)
        assert b"mx.example.test; spf=pass" not in delivered and b"MX.Example.Test" not in delivered, delivered
        assert b"Authentication-Results: other.example; spf=fail" in delivered


# ---- SPF ------------------------------------------------------------------------------------

def spf_zone():
    records = {
        "pass.test": [("TXT", "v=spf1 ip4:127.0.0.20 -all")],
        "fail.test": [("TXT", "v=spf1 -all")],
        "soft.test": [("TXT", "v=spf1 ~all")],
        "neutral.test": [("TXT", "v=spf1 ?all")],
        "temp.test": [("SERVFAIL",)],
        "include.test": [("TXT", "v=spf1 include:pass.test -all")],
        "redirect.test": [("TXT", "v=spf1 redirect=include.test")],
        "broken-include.test": [("TXT", "v=spf1 include:nothing.test -all")],
        "limit.test": [("TXT", "v=spf1 " + " ".join(f"a:h{n}.test" for n in range(1, 12)) + " ip4:127.0.0.20 -all")],
        "ten.test": [("TXT", "v=spf1 " + " ".join(f"a:h{n}.test" for n in range(1, 11)) + " ip4:127.0.0.20 -all")],
        "void.test": [("TXT", "v=spf1 a:v1.test a:v2.test a:v3.test ip4:127.0.0.20 -all")],
    }
    for n in range(1, 12):
        records[f"h{n}.test"] = [("A", "127.0.0.99")]
    return records


def test_spf_results_and_limits():
    with DNS(spf_zone()) as dns, Tern(trusted="", dns_port=dns.port, extra='[checks]\nspf = "reject"\n') as tern:
        refused = send(tern, "x@fail.test", ["alice@example.test"], message("spf fail"), source="127.0.0.20")
        assert refused and refused[:2] == ("mail", 550) and refused[2].startswith("5.7.23"), refused
        expected = [("pass.test", "pass"), ("soft.test", "softfail"), ("neutral.test", "neutral"),
                    ("temp.test", "temperror"), ("include.test", "pass"), ("redirect.test", "pass"),
                    ("broken-include.test", "permerror"), ("limit.test", "permerror"), ("ten.test", "pass"),
                    ("void.test", "permerror"), ("nospf.test", "none")]
        for number, (domain, _) in enumerate(expected):
            result = send(tern, f"x@{domain}", ["alice@example.test"], message(f"spf {number}"), source="127.0.0.20")
            assert result is None, (domain, result)
        delivered = tern.wait_for_maildir("alice", len(expected))
        for number, (domain, result) in enumerate(expected):
            [found] = [m for m in delivered if f"Subject: spf {number}\r\n".encode() in m]
            header = found.split(b"\r\n\r\n")[0].decode()
            assert f"Received-SPF: {result} " in header, (domain, header)
            assert f"spf={result} smtp.mailfrom=x@{domain}" in header.replace("\r\n\t", " "), (domain, header)


# ---- DMARC ----------------------------------------------------------------------------------

def test_dmarc_reject_quarantine_none():
    records = spf_zone()
    for name, policy in [("rej", "p=reject"), ("quar", "p=quarantine"), ("none", "p=none"),
                         ("sampled", "p=reject; pct=0")]:
        records[f"{name}.test"] = [("TXT", "v=spf1 -all")]
        records[f"_dmarc.{name}.test"] = [("TXT", f"v=DMARC1; {policy}")]
    records["_dmarc.pass.test"] = [("TXT", "v=DMARC1; p=reject")]
    extra = '[checks]\nspf = "tag"\ndmarc = "enforce"\n'
    with DNS(records) as dns, Tern(trusted="", dns_port=dns.port, extra=extra) as tern:
        def attempt(domain, subject):
            return send(tern, f"x@{domain}", ["alice@example.test"], message(subject, sender=f"boss@{domain}"),
                        source="127.0.0.20")
        refused = attempt("rej.test", "dmarc reject")
        assert refused and refused[:2] == ("data", 550) and "5.7.1" in refused[2] and "DMARC" in refused[2], refused
        assert attempt("quar.test", "dmarc quarantine") is None
        assert attempt("sampled.test", "dmarc sampled out") is None   # pct=0: reject becomes quarantine
        assert attempt("none.test", "dmarc none") is None
        assert attempt("pass.test", "dmarc pass") is None
        delivered = tern.wait_for_maildir("alice", 2)
        time.sleep(0.5)
        assert len(tern.maildir("alice")) == 2
        text = b"\n".join(delivered).decode()
        assert "dmarc=fail" in text and "header.from=none.test" in text, text
        assert "dmarc=pass" in text and "header.from=pass.test" in text, text
        held = [m for m in tern.queue() if m["held"]]
        assert len(held) == 2, tern.queue()


# ---- DKIM -----------------------------------------------------------------------------------

SYSTEM_PYTHON = "/usr/bin/python3"   # Debian's, with python3-dkim (dkimpy)


def dkimpy(script, stdin):
    result = subprocess.run([SYSTEM_PYTHON, "-c", script], input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def rsa_key(folder, name):
    """An RSA 2048 key made by openssl: (private key path, DKIM record text)."""
    key = os.path.join(folder, f"{name}.pem")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return key, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def keygen_record(output):
    """The record text of `tern dkim keygen`'s zone-file lines: its quoted strings joined."""
    return "".join(re.findall(r'"([^"]*)"', output.split("\n\n")[0]))


def test_dkimpy_signatures_verified():
    with DNS({}) as dns, Tern(trusted="", dns_port=dns.port, extra="[checks]\ndkim_verify = true\n") as tern:
        key, record = rsa_key(tern.folder, "signer")
        dns.records["sel._domainkey.signer.test"] = [("TXT", record)]
        sign = ("import sys, dkim; m = sys.stdin.buffer.read(); "
                f"sys.stdout.buffer.write(dkim.sign(m, b'sel', b'signer.test', open('{key}','rb').read(), "
                "canonicalize=(b'relaxed', b'simple'), include_headers=[b'from', b'to', b'subject']) + m)")
        signed = dkimpy(sign, message("signed by dkimpy", sender="news@signer.test"))
        tampered = dkimpy(sign, message("tampered", sender="news@signer.test")).replace(b"Hello.", b"Hello!")
        assert send(tern, "news@signer.test", ["alice@example.test"], signed) is None
        assert send(tern, "news@signer.test", ["alice@example.test"], tampered) is None
        assert send(tern, "news@signer.test", ["alice@example.test"], message("unsigned")) is None
        delivered = tern.wait_for_maildir("alice", 3)
        results = {}
        for found in delivered:
            header = found.split(b"\r\n\r\n")[0].decode().replace("\r\n\t", " ")
            subject = header.split("Subject: ")[1].split("\r\n")[0]
            results[subject] = header.split("Authentication-Results: mx.example.test;")[1].split("\r\n")[0]
        assert "dkim=pass" in results["signed by dkimpy"] and "header.d=signer.test" in results["signed by dkimpy"], results
        assert "dkim=fail" in results["tampered"], results
        assert "dkim=none" in results["unsigned"], results


def opendkim_verifies(folder, signed, name, record):
    """opendkim-testmsg reads keys from the DNS only (through glibc and /etc/resolv.conf), so it
    runs in its own mount and network namespace with dnsmasq serving the one record."""
    script = os.path.join(folder, "opendkim.sh")
    with open(os.path.join(folder, "signed.eml"), "wb") as f:
        f.write(signed)
    with open(os.path.join(folder, "resolv.conf"), "w") as f:
        f.write("nameserver 127.0.0.1\n")
    chunks = ",".join(record[i:i + 200] for i in range(0, len(record), 200))
    with open(script, "w") as f:
        f.write(f'''ip link set lo up
mount --bind {folder}/resolv.conf /etc/resolv.conf
dnsmasq --keep-in-foreground --no-resolv --no-hosts --listen-address=127.0.0.1 --bind-interfaces --port=53 \\
  --user=root --pid-file={folder}/dnsmasq.pid "--txt-record={name},{chunks}" &
DNS=$!
sleep 0.5
opendkim-testmsg < {folder}/signed.eml; status=$?
kill $DNS
exit $status
''')
    result = subprocess.run(["unshare", "-mn", "bash", script], capture_output=True, timeout=60)
    return result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_tern_signatures_verify_with_dkimpy_and_opendkim():
    folder = tempfile.mkdtemp(prefix="tern-dkim-")
    keys = {}
    for kind in ("rsa", "ed25519"):
        path = os.path.join(folder, f"{kind}.pem")
        out = subprocess.run([harness.TERN, "dkim", "keygen", "example.test", f"s{kind}", "--type", kind,
                              "--output", path], capture_output=True, check=True).stdout.decode()
        keys[kind] = (path, keygen_record(out))
        assert os.stat(path).st_mode & 0o777 == 0o600
        again = subprocess.run([harness.TERN, "dkim", "keygen", "example.test", f"s{kind}", "--output", path],
                               capture_output=True)
        assert again.returncode != 0, "keygen must not overwrite a key"
    for kind, (path, record) in keys.items():
        extra = f'[[dkim]]\ndomain = "example.test"\nselector = "s{kind}"\nprivate_key = "{path}"\n'
        with Tern(extra=extra) as tern:   # 127.0.0.1 is trusted: its mail is signed
            data = message(f"signed by tern {kind}", sender="alice@example.test")
            assert send(tern, "alice@example.test", ["bob@example.test"], data) is None
            [signed] = tern.wait_for_maildir("bob", 1)
            assert signed.count(b"DKIM-Signature:") == 1, signed
            # Maildir adds Return-Path and Delivered-To above the signature: both verifiers
            # skip fields the signature does not name.
            verify = ("import sys, dkim; m = sys.stdin.buffer.read(); "
                      f"ok = dkim.verify(m, dnsfunc=lambda name, timeout=5: {record!r}.encode()); "
                      "sys.exit(0 if ok else 1)")
            assert subprocess.run([SYSTEM_PYTHON, "-c", verify], input=signed, timeout=60).returncode == 0, kind
            tampered = signed.replace(b"Hello.", b"Hello!")
            assert subprocess.run([SYSTEM_PYTHON, "-c", verify], input=tampered, timeout=60).returncode == 1, kind
            ok, output = opendkim_verifies(tern.folder, signed, f"s{kind}._domainkey.example.test", record)
            assert ok, (kind, output)
            ok, output = opendkim_verifies(tern.folder, tampered, f"s{kind}._domainkey.example.test", record)
            assert not ok, (kind, output)
    shutil.rmtree(folder, ignore_errors=True)


def test_unusable_dkim_key_is_a_configuration_problem():
    folder = tempfile.mkdtemp(prefix="tern-dkim-")
    small = os.path.join(folder, "small.pem")
    subprocess.run(["openssl", "genrsa", "-out", small, "1024"], check=True, capture_output=True)
    extra = f'[[dkim]]\ndomain = "example.test"\nselector = "s1"\nprivate_key = "{small}"\n'
    tern = Tern(extra=extra)
    try:
        problems = tern.config_problems()
        assert "dkim[0].private_key: cannot sign with" in problems and "1024 bits" in problems, problems
    finally:
        tern.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


# ---- content filters ------------------------------------------------------------------------

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class Spamd:
    """A real SpamAssassin spamd on loopback with its own configuration folder: local tests
    only (no network lookups), one child."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="tern-spamd-")
        os.chmod(self.folder, 0o755)
        self.site = os.path.join(self.folder, "site")
        os.makedirs(self.site)
        # The plugin loaders (*.pre) must be there, or spamd refuses to scan anything.
        for name in os.listdir("/etc/spamassassin"):
            if name.endswith(".pre"):
                shutil.copy(os.path.join("/etc/spamassassin", name), self.site)
        with open(os.path.join(self.site, "local.cf"), "w") as f:
            f.write("use_bayes 0\nbayes_auto_learn 0\nskip_rbl_checks 1\ndns_available no\n")
        self.port = harness.free_port()
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(
            ["/usr/sbin/spamd", f"--listen=127.0.0.1:{self.port}", "--allowed-ips=127.0.0.1", "--local",
             "--nouser-config", f"--siteconfigpath={self.site}", f"--pidfile={self.folder}/spamd.pid",
             "--syslog=stderr", "--max-children=1", "--min-spare=1", "--max-spare=1", "--username=nobody"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.folder, "spamd.log"), "wb"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                assert self.process.poll() is None, open(os.path.join(self.folder, "spamd.log")).read()
                time.sleep(0.2)
        raise AssertionError("spamd did not start in 60 s")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def test_spamd_score_drives_rules():
    with Spamd() as spamd:
        extra = f'''[checks]
spamd = "127.0.0.1:{spamd.port}"
reject_score = 5000

[[rules]]
name = "refuse obvious spam"
if = {{ score = ">= 500", header = {{ Subject = "*refuse*" }} }}
action = "reject"
reply = "550 5.7.1 Spam refused"

[[rules]]
name = "tag spam"
if = {{ spam = true }}
action = "tag"
subject_prefix = "[SPAM] "
'''
        with Tern(trusted="", extra=extra) as tern:
            gtube = lambda subject: message(subject).replace(b"Hello.", GTUBE.encode())   # noqa: E731
            refused = send(tern, "a@client.example", ["alice@example.test"], gtube("refuse me"))
            assert refused == ("data", 550, "5.7.1 Spam refused"), refused
            assert send(tern, "a@client.example", ["alice@example.test"], gtube("tag me")) is None
            assert send(tern, "a@client.example", ["alice@example.test"], message("ham")) is None
            delivered = tern.wait_for_maildir("alice", 2)
            [spam] = [m for m in delivered if b"tag me" in m]
            [ham] = [m for m in delivered if b"Subject: ham" in m]
            assert b"\nSubject: [SPAM] tag me\r\n" in spam and b"X-Spam-Status: Yes, score=" in spam, spam
            assert b"GTUBE" in spam.split(b"\r\n\r\n")[0], spam
            assert b"X-Spam-Status: No, score=" in ham and b"[SPAM]" not in ham, ham
            log = tern.read_log()
            assert "event=filter " in log and "spamd: spam" in log, log[-3000:]
        # spamd gone: filter_failure = "defer" (the default) keeps the mail with the client.
        with Tern(trusted="", extra=f'[checks]\nspamd = "127.0.0.1:{harness.free_port()}"\n') as tern:
            refused = send(tern, "a@client.example", ["alice@example.test"], message("no spamd"))
            assert refused and refused[:2] == ("data", 451), refused


def test_milter_adds_fields_and_refuses():
    """A real libmilter filter (pymilter): it adds a field and refuses one subject."""
    port = harness.free_port()
    peer_script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "../../Tests/MailPolicyTests/Fixtures/filters/pymilter_peer.py")
    peer = subprocess.Popen([SYSTEM_PYTHON, peer_script, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and peer.poll() is None, "pymilter did not start"
                time.sleep(0.1)
        with Tern(trusted="", extra=f'[checks]\nmilter = "inet:127.0.0.1:{port}"\n') as tern:
            refused = send(tern, "a@client.example", ["alice@example.test"], message("please reject me"),
                           source="127.0.0.30")
            assert refused == ("data", 554, "5.7.1 Rejected by pymilter"), refused
            assert send(tern, "a@client.example", ["alice@example.test", "bob@example.test"], message("milter ok"),
                        source="127.0.0.30") is None
            [delivered] = tern.wait_for_maildir("alice", 1)
            assert b"X-Pymilter: rcpts=2 client=127.0.0.30 subject=milter ok" in delivered, delivered
    finally:
        peer.kill()
        peer.wait(5)
