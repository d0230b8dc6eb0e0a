"""Interop: server TLS and authenticated submission (SPEC §2.4, §2.5) against real clients.

openssl s_client, swaks and Python's smtplib talk to Tern's `smtp`, `submission` (STARTTLS,
then AUTH) and `submissions` (implicit TLS) listeners on loopback. Certificates are made with
openssl in each test's folder; users come from a Dovecot passwd-file written by `tern user
add`. Nobody is in trusted_networks, so relaying needs AUTH. Only the standard library.
"""

import hashlib
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tern, free_port, wait_for_port  # noqa: E402

PASSWORD = "correct horse battery"


def make_certificate(folder, name, common_name="mx.example.test"):
    """A self-signed EC certificate and key: (certificate path, key path)."""
    certificate = os.path.join(folder, f"{name}.pem")
    key = os.path.join(folder, f"{name}.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", certificate, "-days", "2", "-subj", f"/CN={common_name}",
         "-addext", f"subjectAltName=DNS:{common_name}"],
        check=True, capture_output=True)
    return certificate, key


class SubmissionTern(Tern):
    """Tern with [tls], [auth] and the three listeners; alice@example.test is a user."""

    def __init__(self, auth_extra="", trusted=""):
        folder_ports = (free_port(), free_port())
        self.submission_port, self.submissions_port = folder_ports
        listen = (f'submission = ["127.0.0.1:{self.submission_port}"]\n'
                  f'submissions = ["127.0.0.1:{self.submissions_port}"]')
        super().__init__(
            listen=listen, trusted=trusted,
            extra=f'''
[tls]
certificate = "server.pem"
private_key = "server.key"

[auth]
passwd_file = "users.passwd"
{auth_extra}
''')
        self.certificate, self.key = make_certificate(self.folder, "server")
        self.tern("user", "add", "alice@example.test", stdin=(PASSWORD + "\n").encode())

    def start(self):
        super().start()
        wait_for_port(self.submission_port)
        return self


def insecure_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def starttls(port):
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client.ehlo("client.test")
    client.starttls(context=insecure_context())
    client.ehlo("client.test")
    return client


def served_fingerprint(port):
    """The SHA-256 of the certificate a new STARTTLS session is given."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client.ehlo("client.test")
    client.starttls(context=insecure_context())
    der = client.sock.getpeercert(binary_form=True)
    client.quit()
    return hashlib.sha256(der).hexdigest()


def file_fingerprint(path):
    der = ssl.PEM_cert_to_DER_cert(open(path).read())
    return hashlib.sha256(der).hexdigest()


def assert_login_refused(client, user, password, why):
    try:
        client.login(user, password)
    except smtplib.SMTPAuthenticationError as error:
        return error
    raise AssertionError(why)


def assert_no_password_in_log(tern, *passwords):
    log = tern.read_log()
    for password in passwords:
        assert password not in log, f"the log shows a password: {password!r}"


def test_starttls_with_openssl_s_client():
    with SubmissionTern() as tern:
        for port, auth in ((tern.port, False), (tern.submission_port, True)):
            result = subprocess.run(
                ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}", "-quiet",
                 "-verify_quiet"],
                input=b"EHLO client.test\r\nQUIT\r\n", capture_output=True, timeout=20)
            # s_client prints the last line of the plaintext EHLO reply, then the session.
            out = result.stdout.decode().split("250-mx.example.test", 1)[-1]
            assert "250-PIPELINING" in out, result.stdout
            assert "STARTTLS" not in out, f"STARTTLS offered again under TLS:\n{out}"
            assert ("AUTH PLAIN LOGIN" in out) == auth, f"port {port}:\n{out}"
            assert "221" in out, out
        # TLS 1.1 and older are refused (the client is allowed to offer them here).
        result = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{tern.port}", "-tls1_1",
             "-cipher", "DEFAULT@SECLEVEL=0"],
            input=b"", capture_output=True, timeout=20)
        assert result.returncode != 0, "a TLS 1.1 handshake succeeded"
        # The handshake's facts reach the log.
        assert re.search(r"event=tls .*cipher=TLS_\w+ .*tls_version=TLSv1\.[23]", tern.read_log()), tern.read_log()


def test_swaks_starttls_and_auth_on_submission_and_implicit_tls():
    with SubmissionTern() as tern:
        for port, tls in ((tern.submission_port, "-tls"), (tern.submissions_port, "--tlsc")):
            for mechanism in ("PLAIN", "LOGIN"):
                result = subprocess.run(
                    ["swaks", "--server", f"127.0.0.1:{port}", tls, "--auth", mechanism,
                     "--auth-user", "alice@example.test", "--auth-password", PASSWORD,
                     "--from", "alice@example.test", "--to", "bob@example.test",
                     "--header", f"Subject: {mechanism} on {port}"],
                    capture_output=True, timeout=30)
                out = result.stdout.decode()
                assert result.returncode == 0, out
                assert "235 2.7.0" in out and "queued as" in out, out
        messages = tern.wait_for_maildir("bob", 4)
        for message in messages:
            received = message.split(b"\r\n\r\n")[0].decode()
            assert "with ESMTPSA (using TLSv1.3 with cipher TLS_" in received, received
        assert_no_password_in_log(tern, PASSWORD)


def test_smtplib_implicit_tls_and_starttls_auth():
    with SubmissionTern() as tern:
        with smtplib.SMTP_SSL("127.0.0.1", tern.submissions_port, context=insecure_context(), timeout=10) as client:
            client.ehlo("client.test")
            assert "auth" in client.esmtp_features and "starttls" not in client.esmtp_features
            client.login("alice@example.test", PASSWORD)
            client.sendmail("alice@example.test", ["bob@example.test"], b"Subject: 465\r\n\r\nimplicit\r\n")
        client = starttls(tern.submission_port)
        client.login("ALICE@example.test", PASSWORD)  # user names ignore case
        # An authenticated user relays anywhere.
        client.sendmail("alice@example.test", ["someone@far.test"], b"Subject: relayed\r\n\r\nout\r\n")
        client.quit()
        message = tern.wait_for_maildir("bob", 1)[0].decode()
        assert any(r["address"] == "someone@far.test" for m in tern.queue() for r in m["recipients"])
        # RFC 6409 §8: a submission lacking Date and Message-ID gets them, once.
        header = message.split("\r\n\r\n")[0]
        assert re.search(r"^Message-ID: <\w+\.\d+@mx\.example\.test>\r?$", header, re.M | re.I), header
        assert len(re.findall(r"^Date: ", header, re.M)) == 1, header


def test_auth_is_absent_before_tls_and_on_the_smtp_port():
    with SubmissionTern() as tern:
        client = smtplib.SMTP("127.0.0.1", tern.submission_port, timeout=10)
        client.ehlo("client.test")
        assert "starttls" in client.esmtp_features and "auth" not in client.esmtp_features
        code, text = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABw")
        assert code == 503, (code, text)
        code, text = client.docmd("MAIL", "FROM:<alice@example.test>")
        assert code == 530 and b"5.7.0" in text and b"STARTTLS" in text, (code, text)
        client.quit()
        # Under TLS on submission: MAIL still needs AUTH.
        client = starttls(tern.submission_port)
        code, text = client.docmd("MAIL", "FROM:<alice@example.test>")
        assert code == 530 and b"5.7.0 Authentication required" in text, (code, text)
        client.quit()
        # The smtp port never offers AUTH, even under TLS, and takes local mail without it.
        client = starttls(tern.port)
        assert "auth" not in client.esmtp_features, client.esmtp_features
        code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABw")
        assert code == 503
        client.sendmail("someone@far.test", ["bob@example.test"], b"Subject: inbound\r\n\r\nhi\r\n")
        client.quit()
        message = tern.wait_for_maildir("bob", 1)[0].decode()
        assert "with ESMTPS (using TLSv1.3 with cipher" in message, message
        # Inbound mail is passed on as it came: nothing is added to it.
        assert "Message-ID:" not in message and "\r\nDate:" not in message, message


def test_relay_needs_auth_or_a_trusted_network():
    with SubmissionTern() as tern:
        client = smtplib.SMTP("127.0.0.1", tern.port, timeout=10)
        client.ehlo("client.test")
        client.docmd("MAIL", "FROM:<someone@far.test>")
        code, text = client.docmd("RCPT", "TO:<victim@elsewhere.test>")
        assert code == 550 and b"5.7.1" in text, (code, text)
        client.quit()
        client = starttls(tern.submission_port)
        client.login("alice@example.test", PASSWORD)
        client.docmd("MAIL", "FROM:<alice@example.test>")
        code, text = client.docmd("RCPT", "TO:<friend@elsewhere.test>")
        assert code == 250, (code, text)
        client.quit()
    # From a trusted network, no AUTH is needed on the smtp port.
    with SubmissionTern(trusted='"127.0.0.0/8"') as tern:
        client = smtplib.SMTP("127.0.0.1", tern.port, timeout=10)
        client.ehlo("client.test")
        client.docmd("MAIL", "FROM:<app@example.test>")
        code, text = client.docmd("RCPT", "TO:<friend@elsewhere.test>")
        assert code == 250, (code, text)
        client.quit()


def test_wrong_passwords_are_refused_then_shut_out():
    with SubmissionTern(auth_extra="max_failures_per_ip = 4\nmax_failures_per_session = 3") as tern:
        client = starttls(tern.submission_port)
        # smtplib's login() tries PLAIN and then LOGIN: two failures.
        error = assert_login_refused(client, "alice@example.test", "guess-one", "a wrong password was accepted")
        assert error.smtp_code == 535 and b"5.7.8" in error.smtp_error, error
        # The session's third failure ends it.
        code, text = client.docmd("AUTH", "PLAIN " + plain("alice@example.test", "guess-two"))
        assert code == 421 and b"4.7.0" in text, (code, text)
        # A new session: one more failure reaches the address's limit …
        client = starttls(tern.submission_port)
        code, _ = client.docmd("AUTH", "PLAIN " + plain("nobody@example.test", "guess-three"))
        assert code == 535
        # … and then even the right password is refused, without being checked.
        code, text = client.docmd("AUTH", "PLAIN " + plain("alice@example.test", PASSWORD))
        assert code == 421, (code, text)
        assert_no_password_in_log(tern, "guess-one", "guess-two", "guess-three", PASSWORD)
        log = tern.read_log()
        assert "nobody@example.test" not in log, "a failed login's user name was logged"
        assert "event=auth_blocked" in log


def plain(user, password):
    import base64
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_senders_must_belong_to_the_authenticated_user():
    extra = ('\n[auth.senders]\n"alice@example.test" = ["@alice.test"]\n'
             '\n[[domains]]\nname = "corp.test"\nmailboxes = ["bob"]\naliases = { boss = "alice@example.test" }\n')
    with SubmissionTern(auth_extra=extra) as tern:
        client = starttls(tern.submission_port)
        client.login("alice@example.test", PASSWORD)
        cases = [
            ("alice@example.test", 250), ("alice+lists@example.test", 250), ("boss@corp.test", 250),
            ("me@alice.test", 250), ("", 250), ("bob@example.test", 553), ("alice@far.test", 553),
            ("postmaster@example.test", 553),
        ]
        for sender, expected in cases:
            code, text = client.docmd("MAIL", f"FROM:<{sender}>")
            assert code == expected, (sender, code, text)
            if code == 553:
                assert b"5.7.1" in text, text
            client.rset()
        client.quit()


def test_starttls_command_injection_gets_no_reply():
    with SubmissionTern() as tern:
        raw = socket.create_connection(("127.0.0.1", tern.port), timeout=10)
        raw.recv(1024)
        raw.sendall(b"EHLO attacker.test\r\n")
        time.sleep(0.3)
        raw.recv(4096)
        # The classic attack: commands pipelined behind STARTTLS in the same packet.
        raw.sendall(b"STARTTLS\r\nMAIL FROM:<attacker@evil.test>\r\nRCPT TO:<bob@example.test>\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += raw.recv(1)
        assert reply.startswith(b"220 "), reply
        secure = insecure_context().wrap_socket(raw, server_hostname="mx.example.test")
        secure.settimeout(1.0)
        try:
            stray = secure.recv(4096)
        except socket.timeout:
            stray = b""
        assert stray == b"", f"the injected commands were answered: {stray!r}"
        secure.settimeout(10)
        # The session starts afresh: RCPT without MAIL is out of sequence.
        secure.sendall(b"EHLO client.test\r\nRCPT TO:<bob@example.test>\r\n")
        time.sleep(0.5)
        answer = secure.recv(4096)
        assert answer.startswith(b"250-mx.example.test") and b"503 5.5.1" in answer, answer
        secure.close()
        assert "event=starttls_injection" in tern.read_log()


def test_certificate_reload_on_sighup():
    with SubmissionTern() as tern:
        first = file_fingerprint(tern.certificate)
        assert served_fingerprint(tern.port) == first
        # A session open across the reload keeps working.
        open_session = starttls(tern.submission_port)
        new_cert, new_key = make_certificate(tern.folder, "next")
        os.replace(new_cert, tern.certificate)
        os.replace(new_key, tern.key)
        tern.signal(signal.SIGHUP)
        second = file_fingerprint(tern.certificate)
        deadline = time.monotonic() + 10
        while served_fingerprint(tern.port) != second:
            assert time.monotonic() < deadline, "the new certificate is not served after SIGHUP"
            time.sleep(0.2)
        with insecure_context().wrap_socket(
                socket.create_connection(("127.0.0.1", tern.submissions_port), timeout=10)) as implicit:
            assert hashlib.sha256(implicit.getpeercert(binary_form=True)).hexdigest() == second
        open_session.login("alice@example.test", PASSWORD)
        open_session.sendmail("alice@example.test", ["bob@example.test"], b"Subject: across\r\n\r\nreload\r\n")
        open_session.quit()
        tern.wait_for_maildir("bob", 1)
        # A broken certificate is refused and the working one stays.
        with open(tern.certificate, "w") as f:
            f.write("not a certificate\n")
        tern.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "certificate reload failed" not in tern.read_log():
            assert time.monotonic() < deadline, "no reload failure logged"
            time.sleep(0.2)
        assert served_fingerprint(tern.port) == second


def test_tern_user_add_and_passwd_take_effect_at_once():
    with SubmissionTern() as tern:
        tern.tern("user", "add", "dave@example.test", stdin=b"first password\n")
        entry = open(os.path.join(tern.folder, "users.passwd")).read()
        assert re.search(r"^dave@example\.test:\{SHA512-CRYPT\}\$6\$", entry, re.M), entry
        assert "first password" not in entry
        assert oct(os.stat(os.path.join(tern.folder, "users.passwd")).st_mode & 0o777) == "0o600"
        # Adding twice is refused; changing the password of a stranger too.
        assert tern.tern("user", "add", "dave@example.test", stdin=b"x\n", check=False).returncode != 0
        assert tern.tern("user", "passwd", "eve@example.test", stdin=b"x\n", check=False).returncode != 0
        client = starttls(tern.submission_port)
        client.login("dave@example.test", "first password")
        client.quit()
        tern.tern("user", "passwd", "--scheme", "BLF-CRYPT", "dave@example.test", stdin=b"second password\n")
        assert "{BLF-CRYPT}$2y$" in open(os.path.join(tern.folder, "users.passwd")).read()
        client = starttls(tern.submission_port)
        assert_login_refused(client, "dave@example.test", "first password", "the old password still works")
        client.login("dave@example.test", "second password")
        client.quit()
        # A user of the passwd file in a local domain has a mailbox.
        client = smtplib.SMTP("127.0.0.1", tern.port, timeout=10)
        client.sendmail("someone@far.test", ["dave@example.test"], b"Subject: for dave\r\n\r\nhi\r\n")
        client.quit()
        tern.wait_for_maildir("dave", 1)
        tern.tern("user", "delete", "dave@example.test")
        client = starttls(tern.submission_port)
        assert_login_refused(client, "dave@example.test", "second password", "a deleted user logged in")
        client.quit()
        assert_no_password_in_log(tern, "first password", "second password")


def test_requiretls_is_offered_and_taken_only_under_tls():
    with SubmissionTern() as tern:
        client = smtplib.SMTP("127.0.0.1", tern.port, timeout=10)
        client.ehlo("client.test")
        assert "requiretls" not in client.esmtp_features
        code, text = client.docmd("MAIL", "FROM:<someone@far.test> REQUIRETLS")
        assert code == 555, (code, text)
        client.quit()
        client = starttls(tern.submission_port)
        assert "requiretls" in client.esmtp_features, client.esmtp_features
        client.login("alice@example.test", PASSWORD)
        code, text = client.docmd("MAIL", "FROM:<alice@example.test> REQUIRETLS")
        assert code == 250, (code, text)
        assert client.docmd("RCPT", "TO:<friend@elsewhere.test>")[0] == 250
        code, text = client.data(b"Subject: sealed\r\n\r\nonly over TLS\r\n")
        assert code == 250, (code, text)
        client.quit()
        queue_id = text.decode().split()[-1]
        shown = tern.tern("queue", "show", queue_id).stdout.decode()
        assert "requiretls: yes" in shown and "authenticated: alice@example.test" in shown, shown
