#!/usr/bin/env python3
"""Interop tests: the real `tern` binary against real clients and peers on loopback.

    python3 tests/interop/run.py [--tern PATH] [-k NAME]

Each `test_*` function is one test; they run in order and the script exits non-zero when any
fails. Peers: swaks, Python's smtplib, tern sendmail and the queue tools, dnsmasq, a tmpfs
that fills up, and kill -9 under concurrent load; outbound TLS (outbound_tls.py): a test CA,
STARTTLS peers, a DNS server with TLSA and the AD bit, an MTA-STS policy server; TLS
reporting (tls_rpt.py): report mailbox and HTTPS collector.
"""

import argparse
import os
import re
import shutil
import signal
import select
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import Tern, free_port, wait_for_port  # noqa: E402
from peers import DNS, FakeSMTPServer  # noqa: E402
import email  # noqa: E402
import email.policy  # noqa: E402

MESSAGE = b"From: sender@client.example\r\nTo: alice@example.test\r\nSubject: %s\r\n\r\nHello.\r\n"


def hosts_name(address):
    """The name /etc/hosts gives `address` (Tern, like the system resolver, asks it first)."""
    try:
        for line in open("/etc/hosts"):
            fields = line.split("#")[0].split()
            if len(fields) >= 2 and fields[0] == address:
                return fields[1].lower()
    except OSError:
        pass
    return "unknown"


def swaks(*args, timeout=60):
    return subprocess.run(["swaks", "--hide-all", *args], capture_output=True, timeout=timeout)


# ---- clients ------------------------------------------------------------------------------

def test_swaks_plain_and_pipelined():
    with Tern() as tern:
        for extra in ([], ["--pipeline"]):
            result = swaks("--server", f"127.0.0.1:{tern.port}", "--from", "s@client.example",
                           "--to", "alice@example.test", "--header", "Subject: swaks", *extra)
            assert result.returncode == 0, result.stdout + result.stderr
        messages = tern.wait_for_maildir("alice", 2)
        first = messages[0].decode()
        assert first.startswith("Return-Path: <s@client.example>\r\nDelivered-To: alice@example.test\r\n"), first[:200]
        name = re.escape(hosts_name("127.0.0.1"))
        assert re.search(r"Received: from \S+ \(" + name + r" \[127\.0\.0\.1\]\)\r\n\tby mx\.example\.test \(Tern\) "
                         r"with ESMTP id [0-9A-Z]+\r\n\tfor <alice@example\.test>;", first), first[:400]
        assert "Subject: swaks" in first


def test_smtplib_recipients_one_by_one_and_smtputf8():
    with Tern() as tern:
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as client:
            client.ehlo("client.example")
            assert client.has_extn("pipelining") and client.has_extn("chunking") and client.has_extn("smtputf8")
            assert client.has_extn("size") and client.esmtp_features["size"] == "26214400"
            refused = client.sendmail("a@client.example", ["alice@example.test", "nobody@example.test",
                                                           "Bob+Tag@EXAMPLE.test"], MESSAGE % b"one-by-one")
            assert list(refused) == ["nobody@example.test"] and refused["nobody@example.test"][0] == 550, refused
            client.sendmail("jörg@client.example", ["alice@example.test"],
                            "Subject: utf8\r\nFrom: jörg@client.example\r\n\r\nGrüße\r\n".encode(),
                            mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        tern.wait_for_maildir("alice", 2)
        bob = tern.wait_for_maildir("bob", 1)[0].decode()
        assert "Delivered-To: bob+tag@example.test\r\n" in bob, bob[:300]


def test_untrusted_client_cannot_relay():
    with Tern() as tern:
        client = smtplib.SMTP(timeout=10, source_address=("127.0.0.9", 0))
        client.connect("127.0.0.1", tern.port)
        client.ehlo("stranger.example")
        client.mail("spam@stranger.example")
        # docmd sends the bytes as written: smtplib's own quoting would rewrite some tricks.
        for victim in ["<victim@elsewhere.test>", "<victim%elsewhere.test@example.test>",
                       '<"victim@elsewhere.test"@example.test>', "<@example.test:victim@elsewhere.test>",
                       "<elsewhere.test!victim@example.test>", "<victim@[127.0.0.1]>",
                       "victim@elsewhere.test", "<VICTIM@Elsewhere.TEST>"]:
            code, text = client.docmd("RCPT TO:" + victim)
            assert code == 550 and text.startswith(b"5.7.1"), (victim, code, text)
        code, _ = client.rcpt("alice@example.test")
        assert code == 250
        client.quit()


def test_sendmail_local_submission():
    with Tern() as tern:
        message = b"To: Alice <alice@example.test>\nBcc: bob@example.test\nSubject: local\n\nline\n.\nafter dot\n"
        tern.tern("sendmail", "-t", "-i", "-f", "cron@example.test", stdin=message)
        alice = tern.wait_for_maildir("alice", 1)[0].decode()
        bob = tern.wait_for_maildir("bob", 1)[0].decode()
        for text in (alice, bob):
            assert "Bcc:" not in text, text
            assert "\r\nafter dot\r\n" in text and "\nline\r\n.\r\n" in text
            assert re.search(r"\r\nDate: .+\r\nMessage-ID: <.+@mx\.example\.test>\r\n", text), text
            assert "Return-Path: <cron@example.test>" in text
            assert "with local id" in text
        # Without -i a lone dot ends the message; an unknown local user fails with EX_NOUSER.
        tern.tern("sendmail", "alice@example.test", stdin=b"Subject: dot\n\nbefore\n.\nafter\n")
        # Maildir names do not sort by time: find the message by its subject.
        dotted = next(m.decode() for m in tern.wait_for_maildir("alice", 2) if b"Subject: dot" in m)
        assert "before" in dotted and "after" not in dotted
        result = tern.tern("sendmail", "nobody@example.test", stdin=b"Subject: x\n\nx\n", check=False)
        assert result.returncode == 67, (result.returncode, result.stderr)
        # max_message_size holds for local submission too (26214400 by default).
        result = tern.tern("sendmail", "-i", "alice@example.test", stdin=b"Subject: big\n\n" + b"x" * 26214400,
                           check=False)
        assert result.returncode == 65 and b"max_message_size" in result.stderr, (result.returncode, result.stderr)


def test_embedded_default():
    folder = tempfile.mkdtemp(prefix="tern-default-")
    process = subprocess.Popen([os.path.abspath(harness.TERN), "serve"], cwd=folder,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(2525)
        result = swaks("--server", "127.0.0.1:2525", "--to", "postmaster@localhost")
        assert result.returncode == 0, result.stdout + result.stderr
        path = os.path.join(folder, "tern-data/mail/localhost/postmaster/new")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (os.path.isdir(path) and os.listdir(path)):
            time.sleep(0.05)
        assert os.path.isdir(path) and len(os.listdir(path)) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        shutil.rmtree(folder, ignore_errors=True)


# ---- queue tools --------------------------------------------------------------------------

def test_queue_tools_live_and_offline():
    tern = Tern()
    try:
        run_queue_tools(tern)
    except BaseException:
        print("---- tern log ----\n" + tern.read_log()[-6000:])
        raise
    finally:
        tern.cleanup()


def run_queue_tools(tern):
    tern.keep = True
    with tern:
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as client:
            client.sendmail("a@client.example", ["far@elsewhere.test", "alice@example.test"], MESSAGE % b"remote")
        deadline = time.monotonic() + 10
        while True:
            listing = tern.queue()
            remote = [r for m in listing for r in m["recipients"] if r["address"] == "far@elsewhere.test"]
            if remote and remote[0]["status"] == "deferred":
                break
            assert time.monotonic() < deadline, listing
            time.sleep(0.05)
        message = listing[0]
        assert set(message) >= {"id", "sender", "size", "arrival", "recipients"}
        assert message["sender"] == "a@client.example" and message["size"] > 0
        assert set(remote[0]) >= {"address", "status", "attempts", "next_attempt", "last_error"}
        assert remote[0]["attempts"] >= 1 and remote[0]["next_attempt"], remote
        # Nothing answers on the configured DNS port: a temporary failure (RFC 3463 4.4.3).
        assert remote[0]["last_error"].startswith("4.4.3 DNS lookup for elsewhere.test failed"), remote
        statuses = {r["address"]: r["status"] for r in message["recipients"]}
        assert statuses == {"far@elsewhere.test": "deferred", "alice@example.test": "delivered"}, statuses

        text = tern.tern("queue", "list").stdout.decode()
        assert message["id"] in text and "far@elsewhere.test deferred" in text, text
        shown = tern.tern("queue", "show", message["id"]).stdout.decode()
        assert "sender: <a@client.example>" in shown and "Subject: remote" in shown, shown
        tern.tern("queue", "hold", message["id"])
        assert tern.queue()[0]["held"] is True
        tern.tern("queue", "release", message["id"])
        tern.tern("queue", "flush")
        missing = tern.tern("queue", "show", "0000000000000000", check=False)
        assert missing.returncode != 0 and b"no such message" in missing.stderr

    # The server is stopped: the tools open the queue themselves and see the same message.
    offline = tern.tern("queue", "list", "--json").stdout
    assert message["id"].encode() in offline
    tern.tern("queue", "delete", message["id"])
    assert tern.queue() == []


def test_check_config():
    folder = tempfile.mkdtemp(prefix="tern-config-")
    try:
        good = os.path.join(folder, "good.toml")
        with open(good, "w") as f:
            f.write('hostname = "mx.example.test"\ndata_dir = "data"\n[listen]\nsmtp = ["127.0.0.1:25"]\n')
        assert subprocess.run([harness.TERN, "check-config", "--config", good]).returncode == 0
        bad = os.path.join(folder, "bad.toml")
        with open(bad, "w") as f:
            f.write('hostname = "mx.example.test"\n[limits]\nmax_recipients = "many"\nmax_mesage_size = 1\n')
        result = subprocess.run([harness.TERN, "check-config", "--config", bad], capture_output=True)
        output = result.stdout.decode() + result.stderr.decode()
        assert result.returncode != 0
        assert "line 3" in output and "limits.max_recipients" in output, output
        assert "line 4" in output and "limits.max_mesage_size" in output, output
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- DNS ----------------------------------------------------------------------------------

def test_reverse_dns_through_dnsmasq():
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    port = free_port(socket.SOCK_DGRAM)
    process = subprocess.Popen([dnsmasq, "--no-daemon", "--no-resolv", "--no-hosts", f"--port={port}",
                                "--listen-address=127.0.0.1", "--bind-interfaces",
                                "--ptr-record=9.0.0.127.in-addr.arpa,client.example.test",
                                "--address=/client.example.test/127.0.0.9",
                                "--ptr-record=10.0.0.127.in-addr.arpa,liar.example.test",
                                "--address=/liar.example.test/192.0.2.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        with Tern(dns_port=port) as tern:
            for source in ("127.0.0.9", "127.0.0.10"):
                client = smtplib.SMTP(timeout=10, source_address=(source, 0))
                client.connect("127.0.0.1", tern.port)
                client.sendmail("a@client.example", ["alice@example.test"], MESSAGE % source.encode())
                client.quit()
            messages = [m.decode() for m in tern.wait_for_maildir("alice", 2)]
            by_source = {("127.0.0.9" if "127.0.0.9]" in m else "127.0.0.10"): m for m in messages}
            assert "(client.example.test [127.0.0.9])" in by_source["127.0.0.9"], by_source["127.0.0.9"][:300]
            # A PTR name that does not point back is not trusted (FCrDNS): "unknown".
            assert "(unknown [127.0.0.10])" in by_source["127.0.0.10"], by_source["127.0.0.10"][:300]
    finally:
        process.terminate()
        process.wait()


def test_silent_dns_server_does_not_stall_sessions():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        with Tern(dns_port=silent.getsockname()[1]) as tern:
            # 127.0.0.11 is in no hosts file, so its name must come from the silent server.
            start = time.monotonic()
            with smtplib.SMTP(timeout=20, source_address=("127.0.0.11", 0)) as client:
                client.connect("127.0.0.1", tern.port)
                greeting_time = time.monotonic() - start
                client.sendmail("a@client.example", ["alice@example.test"], MESSAGE % b"silent dns")
            elapsed = time.monotonic() - start
            assert greeting_time < 1.0, f"greeting took {greeting_time:.1f}s"
            assert elapsed < 5.0, f"a session took {elapsed:.1f}s with a silent DNS server"
            assert b"(unknown [127.0.0.11])" in tern.wait_for_maildir("alice", 1)[0]
    finally:
        silent.close()


# ---- durability ---------------------------------------------------------------------------

def send_one(port, subject, recipients=("alice@example.test",), timeout=10):
    """Sends one message; returns the queue ID from the 250, or None if refused."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
        client.ehlo("load.example")
        code, _ = client.mail("load@client.example")
        if code != 250:
            return None
        for recipient in recipients:
            client.rcpt(recipient)
        code, text = client.data(MESSAGE % subject.encode())
        if code != 250:
            return None
        match = re.search(rb"queued as ([0-9A-Z]+)", text)
        return match.group(1).decode() if match else None


def test_kill_9_under_load_loses_nothing_acknowledged():
    tern = Tern()
    tern.start()
    acknowledged = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker):
        sequence = 0
        while not stop.is_set():
            subject = f"crash-{worker}-{sequence}-{uuid.uuid4().hex[:8]}"
            sequence += 1
            try:
                if send_one(tern.port, subject, timeout=5):
                    with lock:
                        acknowledged.append(subject)
            except (OSError, smtplib.SMTPException):
                pass

    try:
        threads = [threading.Thread(target=load, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        time.sleep(3)
        tern.kill()            # SIGKILL in the middle of everything
        stop.set()
        for thread in threads:
            thread.join(15)
        with lock:
            acked = list(acknowledged)
        assert len(acked) > 50, f"only {len(acked)} messages acknowledged before the kill"
        tern.start()
        deadline = time.monotonic() + 60
        while True:
            delivered = b"".join(tern.maildir("alice"))
            missing = [s for s in acked if s.encode() not in delivered]
            if not missing:
                break
            assert time.monotonic() < deadline, f"{len(missing)} of {len(acked)} acknowledged messages lost: {missing[:5]}"
            time.sleep(0.2)
        print(f"    {len(acked)} messages acknowledged before kill -9, all delivered after restart")
        tern.stop()
    except BaseException:
        print("---- tern log ----\n" + tern.read_log()[-6000:])
        raise
    finally:
        tern.cleanup()


def test_full_disk_refuses_with_452_and_keeps_what_it_acknowledged():
    mount = tempfile.mkdtemp(prefix="tern-tmpfs-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", mount], capture_output=True).returncode != 0:
        print("    skipped: cannot mount a tmpfs here (needs root)")
        return
    try:
        filler = os.path.join(mount, "filler")
        tern = Tern(data_dir=os.path.join(mount, "data"), limits="max_message_size = 2000000")
        with tern:
            with open(filler, "wb") as f:
                f.write(b"\0" * (16 * 1024 * 1024))
            body = b"x" * 998 + b"\r\n"
            big = b"Subject: %s\r\n\r\n" + body * 400
            accepted, refused_reply = [], None
            for n in range(200):
                subject = f"disk-{n}"
                with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as client:
                    client.ehlo("x")
                    code, text = client.mail("a@client.example", ["SIZE=%d" % len(big)])
                    if code != 250:
                        refused_reply = (code, text)
                        break
                    client.rcpt("alice@example.test")
                    code, text = client.data(big % subject.encode())
                    if code != 250:
                        refused_reply = (code, text)
                        break
                    accepted.append(subject)
            assert refused_reply and refused_reply[0] == 452 and refused_reply[1].startswith(b"4.3.1"), refused_reply
            assert accepted, "nothing was accepted before the disk filled"
            os.unlink(filler)
            tern.tern("queue", "flush")
            deadline = time.monotonic() + 30
            while True:
                delivered = b"".join(tern.maildir("alice"))
                missing = [s for s in accepted if s.encode() + b"\r\n" not in delivered]
                if not missing:
                    break
                assert time.monotonic() < deadline, f"lost after a full disk: {missing}"
                time.sleep(0.2)
            assert send_one(tern.port, "after-space-returned"), "not accepting again after space returned"
            print(f"    {len(accepted)} accepted, then {refused_reply[0]} {refused_reply[1].decode()}")
    finally:
        subprocess.run(["umount", "-l", mount])
        shutil.rmtree(mount, ignore_errors=True)


def test_graceful_shutdown_answers_421():
    tern = Tern()
    tern.start()
    try:
        client = socket.create_connection(("127.0.0.1", tern.port), timeout=10)
        reader = client.makefile("rb")
        assert reader.readline().startswith(b"220")
        client.sendall(b"EHLO c\r\nMAIL FROM:<a@client.example>\r\n")
        while not reader.readline().startswith(b"250 DSN"):
            pass
        assert reader.readline().startswith(b"250 2.1.0")
        tern.signal(signal.SIGTERM)
        line = reader.readline()
        assert line.startswith(b"421 4.3.2"), line
        assert tern.process.wait(15) == 0
        client.close()
    finally:
        tern.cleanup()


def test_timeouts_and_connection_limits():
    with Tern(limits='command_timeout = "1s"\nmax_connections_per_ip = 2') as tern:
        # Silent after the greeting: 421 4.4.2 once command_timeout has passed.
        idle = socket.create_connection(("127.0.0.1", tern.port), timeout=10)
        reader = idle.makefile("rb")
        assert reader.readline().startswith(b"220")
        start = time.monotonic()
        line = reader.readline()
        assert line.startswith(b"421 4.4.2"), line
        assert 0.8 < time.monotonic() - start < 3, time.monotonic() - start
        assert reader.readline() == b"", "connection not closed after the timeout"
        idle.close()

        # A client trickling a command byte by byte gets no more time than a silent one.
        slow = socket.create_connection(("127.0.0.1", tern.port), timeout=10)
        reader = slow.makefile("rb")
        assert reader.readline().startswith(b"220")
        start = time.monotonic()
        try:
            for byte in b"NOOP NOOP NOOP NOOP":
                slow.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        line = reader.readline()
        assert line.startswith(b"421 4.4.2") and time.monotonic() - start < 3, (line, time.monotonic() - start)
        slow.close()

        # max_connections_per_ip = 2: the third gets 421 4.7.0 at once.
        first = socket.create_connection(("127.0.0.1", tern.port), timeout=10)
        second = socket.create_connection(("127.0.0.1", tern.port), timeout=10)
        for held in (first, second):
            assert held.makefile("rb").readline().startswith(b"220")
        third = socket.create_connection(("127.0.0.1", tern.port), timeout=10)
        line = third.makefile("rb").readline()
        assert line.startswith(b"421 4.7.0"), line
        # Another client address is not limited by them.
        other = socket.socket()
        other.bind(("127.0.0.9", 0))
        other.connect(("127.0.0.1", tern.port))
        assert other.makefile("rb").readline().startswith(b"220")
        for s in (first, second, third, other):
            s.close()


def test_min_data_rate_ends_slow_drip_content():
    limits = 'min_data_rate = 2000\nmin_data_rate_grace = "1s"'
    with Tern(limits=limits) as tern:

        def open_data(client_name):
            sock = socket.create_connection(("127.0.0.1", tern.port), timeout=15)
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"220")
            sock.sendall(b"HELO %s\r\n" % client_name)
            assert reader.readline().startswith(b"250")
            sock.sendall(b"MAIL FROM:<a@client.example>\r\n")
            assert reader.readline().startswith(b"250")
            sock.sendall(b"RCPT TO:<alice@example.test>\r\n")
            assert reader.readline().startswith(b"250")
            sock.sendall(b"DATA\r\n")
            assert reader.readline().startswith(b"354")
            return sock, reader

        # 40 octets every 0.2 s is 200 octets/s, a tenth of the minimum: 421 once the grace
        # period is over, although the client never falls silent long enough for data_timeout.
        sock, reader = open_data(b"slow")
        start = time.monotonic()
        received = b""
        while b"\n" not in received and time.monotonic() - start < 10:
            try:
                sock.sendall(b"x" * 38 + b"\r\n")
            except OSError:
                pass
            if select.select([sock], [], [], 0.2)[0]:
                chunk = sock.recv(512)
                if not chunk:
                    break
                received += chunk
        elapsed = time.monotonic() - start
        assert received.startswith(b"421 4.4.2") and b"data rate too low" in received, received
        assert 0.9 < elapsed < 4, elapsed
        sock.close()

        # A client at full speed is not bothered, even after the grace period.
        sock, reader = open_data(b"fast")
        for _ in range(15):
            sock.sendall(b"y" * 998 + b"\r\n" * 1)
            sock.sendall(b"z" * 998 + b"\r\n")
            time.sleep(0.1)
        sock.sendall(b".\r\n")
        line = reader.readline()
        assert line.startswith(b"250 2.0.0"), line
        sock.close()


# ---- outbound delivery ----------------------------------------------------------------------

def outbound_delivery(port, **keys):
    """The [delivery] lines for a Tern that reaches its fake exchangers on `port`."""
    settings = {"remote_port": port, "retry": '["1s"]', "connect_timeout": '"2s"', "command_timeout": '"2s"',
                "delay_warning": '""'}
    settings.update(keys)
    return "\n".join(f"{key} = {value}" for key, value in settings.items())


def submit(tern, sender, recipients, subject="outbound", body="Hello over there.\r\n"):
    client = smtplib.SMTP("127.0.0.1", tern.port, timeout=10)
    message = f"From: <{sender}>\r\nTo: <{recipients[0]}>\r\nSubject: {subject}\r\n\r\n{body}"
    client.sendmail(sender, recipients, message.encode())
    client.quit()


def wait_for_empty_queue(tern, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not tern.queue():
            return
        time.sleep(0.2)
    raise AssertionError(f"queue not empty after {timeout}s: {tern.queue()}")


def delivery_report(message_bytes):
    """(report, [recipient blocks]) of an RFC 3464 message, parsed by Python's email package."""
    message = email.message_from_bytes(message_bytes, policy=email.policy.default)
    assert message.get_content_type() == "multipart/report", message.get_content_type()
    assert message.get_param("report-type") == "delivery-status"
    parts = list(message.iter_parts())
    status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert status, [p.get_content_type() for p in parts]
    blocks = status[0].get_payload()   # email: a list of header blocks, per message then per recipient
    return message, blocks[1:]


def test_outbound_primary_refusing_busy_or_hanging_falls_back_to_secondary():
    port = free_port()
    records = {
        "refusing.test": [("MX", 10, "mx1.refusing.test"), ("MX", 20, "backup.example.org")],
        "mx1.refusing.test": [("A", "127.0.0.2")],                   # nothing listens there
        "busy.test": [("MX", 10, "mx1.busy.test"), ("MX", 20, "backup.example.org")],
        "mx1.busy.test": [("A", "127.0.0.3")],
        "hanging.test": [("MX", 10, "mx1.hanging.test"), ("MX", 20, "backup.example.org")],
        "mx1.hanging.test": [("A", "127.0.0.4")],
        "backup.example.org": [("A", "127.0.0.5")],
        "implicit.test": [("A", "127.0.0.5")],                       # no MX: the domain itself
    }
    with DNS(records) as dns, \
            FakeSMTPServer("127.0.0.3", port, "greet_421") as busy, \
            FakeSMTPServer("127.0.0.4", port, "hang") as hanging, \
            FakeSMTPServer("127.0.0.5", port, name="backup.example.org") as backup:
        with Tern(dns_port=dns.port, delivery=outbound_delivery(port)) as tern:
            for domain in ("refusing.test", "busy.test", "hanging.test", "implicit.test"):
                submit(tern, "alice@example.test", [f"bob@{domain}"], subject=domain)
            received = backup.wait_for(4, timeout=30)
            assert sorted(t.recipients[0] for t in received) == \
                ["bob@busy.test", "bob@hanging.test", "bob@implicit.test", "bob@refusing.test"], received
            for transaction in received:
                assert transaction.sender == "alice@example.test"
                assert b"Hello over there." in transaction.data
                assert transaction.pipelined, "PIPELINING offered but not used"
            assert busy.connections >= 1 and hanging.connections >= 1
            wait_for_empty_queue(tern)
            log = tern.read_log()
            assert "status=sent" in log and "relay=backup.example.org[127.0.0.5]" in log, log[-3000:]
            assert tern.maildir("alice") == [], "a bounce was sent although every message was delivered"


def test_outbound_null_mx_bounces_at_once():
    port = free_port()
    with DNS({"null.test": [("MX", 0, ".")]}) as dns:
        with Tern(dns_port=dns.port, delivery=outbound_delivery(port)) as tern:
            submit(tern, "alice@example.test", ["bob@null.test"])
            [bounce] = tern.wait_for_maildir("alice", 1)
            message, blocks = delivery_report(bounce)
            assert message["From"].addresses[0].username == "MAILER-DAEMON"
            assert blocks[0]["Action"] == "failed" and blocks[0]["Status"] == "5.1.10", blocks[0]
            assert "Return-Path: <>" in bounce.decode(), bounce[:300]
            wait_for_empty_queue(tern)


def test_outbound_retry_after_4xx_then_success_and_queue_list():
    port = free_port()
    records = {"later.test": [("MX", 10, "mx.later.test")], "mx.later.test": [("A", "127.0.0.2")]}
    with DNS(records) as dns, FakeSMTPServer("127.0.0.2", port, fail_first=1) as server:
        with Tern(dns_port=dns.port, delivery=outbound_delivery(port, retry='["3s"]')) as tern:
            submit(tern, "alice@example.test", ["carol@later.test"])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                queued = tern.queue()
                if queued and queued[0]["recipients"][0]["status"] == "deferred":
                    break
                time.sleep(0.1)
            recipient = queued[0]["recipients"][0]
            assert recipient["status"] == "deferred" and recipient["attempts"] == 1, queued
            assert recipient["next_attempt"], recipient
            assert "451 4.3.0 try again later" in recipient["last_error"], recipient
            text = tern.tern("queue", "list").stdout.decode()
            assert "451 4.3.0" in text and "next=" in text, text
            received = server.wait_for(2, timeout=15)
            assert not received[0].accepted and received[1].accepted
            wait_for_empty_queue(tern)
            assert tern.maildir("alice") == []


def test_outbound_one_recipient_refused_other_delivered_bounce_parses():
    port = free_port()
    records = {"mixed.test": [("MX", 10, "mx.mixed.test")], "mx.mixed.test": [("A", "127.0.0.2")]}
    refusal = "550 5.1.1 <nobody@mixed.test>: Recipient address rejected: User unknown"
    with DNS(records) as dns, \
            FakeSMTPServer("127.0.0.2", port, reject_rcpt={"nobody@mixed.test": refusal}) as server:
        with Tern(dns_port=dns.port, delivery=outbound_delivery(port)) as tern:
            submit(tern, "alice@example.test", ["someone@mixed.test", "nobody@mixed.test"], subject="mixed")
            [transaction] = server.wait_for(1)
            assert transaction.recipients == ["someone@mixed.test"], transaction
            [bounce] = tern.wait_for_maildir("alice", 1)
            message, blocks = delivery_report(bounce)
            assert message["To"].addresses[0].addr_spec == "alice@example.test"
            assert len(blocks) == 1, blocks
            block = blocks[0]
            assert block["Final-Recipient"] == "rfc822; nobody@mixed.test", block
            assert block["Action"] == "failed" and block["Status"] == "5.1.1", block
            assert "User unknown" in block["Diagnostic-Code"] and block["Diagnostic-Code"].startswith("smtp;"), block
            assert block["Remote-MTA"] == "dns; mx.mixed.test", block
            returned = [p for p in message.iter_parts() if p.get_content_type() == "message/rfc822"]
            assert returned and returned[0].get_payload()[0]["Subject"] == "mixed"
            wait_for_empty_queue(tern)


def test_outbound_no_bounce_loop():
    port = free_port()
    records = {"mixed.test": [("MX", 10, "mx.mixed.test")], "mx.mixed.test": [("A", "127.0.0.2")]}
    with DNS(records) as dns, \
            FakeSMTPServer("127.0.0.2", port, reject_rcpt={"nobody@mixed.test": "550 5.1.1 no such user"}):
        with Tern(dns_port=dns.port, delivery=outbound_delivery(port)) as tern:
            # A bounce (null sender) that cannot be delivered: postmaster hears of it, once.
            submit(tern, "", ["nobody@mixed.test"])
            [notice] = tern.wait_for_maildir("postmaster", 1)
            _, blocks = delivery_report(notice)
            assert blocks[0]["Final-Recipient"] == "rfc822; nobody@mixed.test"
            wait_for_empty_queue(tern)
            time.sleep(1.5)
            assert len(tern.maildir("postmaster")) == 1
            assert tern.maildir("alice") == []


def test_outbound_delay_warning_then_expiry_bounce():
    port = free_port()
    records = {"down.test": [("MX", 10, "mx.down.test")], "mx.down.test": [("A", "127.0.0.2")]}
    with DNS(records) as dns:
        delivery = outbound_delivery(port, delay_warning='"1s"', max_queue_time='"5s"')
        with Tern(dns_port=dns.port, delivery=delivery) as tern:
            submit(tern, "alice@example.test", ["dave@down.test"])
            notices = tern.wait_for_maildir("alice", 2, timeout=20)
            kinds = [delivery_report(n)[1][0]["Action"] for n in notices]
            assert sorted(kinds) == ["delayed", "failed"], kinds
            failed = [delivery_report(n)[1][0] for n in notices if b"Action: failed" in n][0]
            assert failed["Status"] == "4.4.7", failed
            assert "connection refused" in failed["Diagnostic-Code"].lower(), failed
            wait_for_empty_queue(tern)
            time.sleep(1.5)
            assert len(tern.maildir("alice")) == 2, "more than one delay warning"


def test_outbound_restart_in_the_middle_of_retries():
    port = free_port()
    records = {"later.test": [("MX", 10, "mx.later.test")], "mx.later.test": [("A", "127.0.0.2")]}
    with DNS(records) as dns, FakeSMTPServer("127.0.0.2", port, fail_first=1000) as server:
        tern = Tern(dns_port=dns.port, delivery=outbound_delivery(port, retry='["2s"]'))
        tern.keep = True
        with tern:
            submit(tern, "alice@example.test", ["erin@later.test"])
            server.wait_for(1)
        queued = tern.queue()
        assert queued[0]["recipients"][0]["status"] == "deferred", queued
        server.fail_left = 0
        try:
            with Tern(dns_port=dns.port, data_dir=tern.data_dir,
                      delivery=outbound_delivery(port, retry='["2s"]')) as again:
                received = server.wait_for(2, timeout=15)
                assert received[-1].accepted and received[-1].recipients == ["erin@later.test"]
                wait_for_empty_queue(again)
        finally:
            tern.cleanup()


def test_outbound_reuses_connections_and_passes_dsn_parameters_on():
    port = free_port()
    records = {"reuse.test": [("MX", 10, "mx.reuse.test")], "mx.reuse.test": [("A", "127.0.0.2")]}
    with DNS(records) as dns, FakeSMTPServer("127.0.0.2", port) as server:
        with Tern(dns_port=dns.port, delivery=outbound_delivery(port)) as tern:
            client = smtplib.SMTP("127.0.0.1", tern.port, timeout=10)
            client.ehlo()
            client.sendmail("alice@example.test", ["frank@reuse.test"], b"Subject: one\r\n\r\nfirst\r\n",
                            mail_options=["RET=HDRS", "ENVID=env+2Bone"],
                            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Frank@reuse.test"])
            server.wait_for(1)
            client.sendmail("alice@example.test", ["grace@reuse.test"], b"Subject: two\r\n\r\nsecond\r\n")
            first, second = server.wait_for(2)
            client.quit()
            # The second message went over the connection the first one left open.
            assert server.connections == 1 and second.reused, (server.connections, second)
            assert first.mail_parameters.get("RET") == "HDRS", first.mail
            assert first.mail_parameters.get("ENVID") == "env+2Bone", first.mail
            parameters = first.rcpt_parameters["frank@reuse.test"]
            assert parameters.get("NOTIFY") == "SUCCESS,FAILURE", parameters
            assert parameters.get("ORCPT") == "rfc822;Frank@reuse.test", parameters
            assert "SIZE" in first.mail_parameters
            wait_for_empty_queue(tern)
            # The next hop took NOTIFY=SUCCESS over: the success report is its business.
            time.sleep(0.5)
            assert tern.maildir("alice") == []


def test_outbound_success_report_after_a_server_without_dsn():
    port = free_port()
    records = {"plain.test": [("MX", 10, "mx.plain.test")], "mx.plain.test": [("A", "127.0.0.2")]}
    with DNS(records) as dns, FakeSMTPServer("127.0.0.2", port, without=("DSN",)) as server:
        with Tern(dns_port=dns.port, delivery=outbound_delivery(port)) as tern:
            client = smtplib.SMTP("127.0.0.1", tern.port, timeout=10)
            client.sendmail("alice@example.test", ["kate@plain.test", "bob@example.test"],
                            b"Subject: tell me\r\n\r\nbody\r\n", mail_options=["ENVID=q1"],
                            rcpt_options=["NOTIFY=SUCCESS"])
            client.quit()
            [transaction] = server.wait_for(1)
            assert "NOTIFY" not in transaction.rcpt_parameters.get("kate@plain.test", {}), transaction
            assert len(tern.wait_for_maildir("bob", 1)) == 1
            [report] = tern.wait_for_maildir("alice", 1)
            message, blocks = delivery_report(report)
            assert message["Subject"] == "Successful Mail Delivery Report", message["Subject"]
            actions = {block["Final-Recipient"]: block for block in blocks}
            relayed = actions["rfc822; kate@plain.test"]
            assert relayed["Action"] == "relayed" and relayed["Status"].startswith("2."), relayed
            assert relayed["Remote-MTA"] == "dns; mx.plain.test", relayed
            delivered = actions["rfc822; bob@example.test"]
            assert delivered["Action"] == "delivered", delivered
            assert message.get_payload()[1].get_payload()[0]["Original-Envelope-Id"] == "q1"
            wait_for_empty_queue(tern)


def test_outbound_helo_only_server_gets_plain_smtp():
    port = free_port()
    records = {"old.test": [("MX", 10, "mx.old.test")], "mx.old.test": [("A", "127.0.0.2")]}
    with DNS(records) as dns, FakeSMTPServer("127.0.0.2", port, helo_only=True) as server:
        with Tern(dns_port=dns.port, delivery=outbound_delivery(port)) as tern:
            submit(tern, "alice@example.test", ["ivan@old.test", "judy@old.test"])
            [transaction] = server.wait_for(1)
            assert transaction.helo.upper().startswith("HELO "), transaction.helo
            assert transaction.mail == "MAIL FROM:<alice@example.test>", transaction.mail
            assert not transaction.pipelined and transaction.recipients == ["ivan@old.test", "judy@old.test"]
            wait_for_empty_queue(tern)


def test_outbound_8bit_content_to_a_server_without_8bitmime_bounces():
    port = free_port()
    records = {"old.test": [("MX", 10, "mx.old.test")], "mx.old.test": [("A", "127.0.0.2")]}
    with DNS(records) as dns, FakeSMTPServer("127.0.0.2", port, without=("8BITMIME",)) as server:
        with Tern(dns_port=dns.port, delivery=outbound_delivery(port)) as tern:
            client = smtplib.SMTP("127.0.0.1", tern.port, timeout=10)
            client.sendmail("alice@example.test", ["henry@old.test"],
                            "Subject: caf\u00e9\r\n\r\ncaf\u00e9 cr\u00e8me\r\n".encode(),
                            mail_options=["BODY=8BITMIME"])
            # Declared 8BITMIME but plain ASCII: sent as it is.
            client.sendmail("alice@example.test", ["henry@old.test"], b"Subject: plain\r\n\r\nascii\r\n",
                            mail_options=["BODY=8BITMIME"])
            client.quit()
            [plain] = server.wait_for(1)
            assert b"ascii" in plain.data and "BODY" not in plain.mail_parameters
            [bounce] = tern.wait_for_maildir("alice", 1)
            _, blocks = delivery_report(bounce)
            assert blocks[0]["Status"] == "5.6.3" and blocks[0]["Action"] == "failed", blocks[0]
            wait_for_empty_queue(tern)


# ---- runner -------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tern", default=harness.TERN)
    parser.add_argument("-k", default="")
    args = parser.parse_args()
    harness.TERN = os.path.abspath(args.tern)
    # The tests against real Postfix and Dovecot, and those of outbound TLS, live in their own
    # files; they import helpers from this one, so they are loaded here, once everything above
    # is defined.
    import dovecot
    import antispam
    import outbound_tls
    import postfix
    import submission
    import tls_rpt
    found = dict(globals())
    for module in (postfix, dovecot, submission, outbound_tls, tls_rpt, antispam):
        found.update({name: f for name, f in vars(module).items() if name.startswith("test_")})
    tests = [(name, f) for name, f in found.items() if name.startswith("test_") and args.k in name]
    failures = []
    for name, test in tests:
        start = time.monotonic()
        try:
            test()
            print(f"ok   {name} ({time.monotonic() - start:.1f}s)", flush=True)
        except Exception:
            failures.append(name)
            print(f"FAIL {name} ({time.monotonic() - start:.1f}s)\n{traceback.format_exc()}", flush=True)
    print(f"{len(tests) - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
