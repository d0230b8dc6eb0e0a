"""Interop: anti-spam and sender authentication (SPEC §2.6, issue 5) with real peers.

Clients connect from chosen loopback addresses (127.0.0.0/8) so that DNS lists, SPF and
rate limits see different clients; a DNS server in the test (peers.DNS) serves the lists,
SPF, DKIM and DMARC records. dkimpy signs and verifies, opendkim-testmsg verifies, a real
SpamAssassin spamd scores. Nobody is in trusted_networks unless a test says so.
"""

import os
import smtplib
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
