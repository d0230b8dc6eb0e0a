#!/usr/bin/env python3
"""Interop tests of outbound TLS: certificate verification, MTA-STS, DANE, [tls_policy] and
REQUIRETLS, with the real `tern` binary against scripted peers on loopback.

    python3 tests/interop/run.py -k tls      (run.py collects these tests)

The peers: a test CA and certificates made with openssl in a temporary folder; fake MX hosts
with STARTTLS (peers.FakeSMTPServer, Python's ssl); the test DNS server (peers.DNS), which
answers TXT and TLSA and sets the AD bit on the names a test says are DNSSEC-validated; and an
HTTPS server for MTA-STS policies (http.server over ssl), on a high port that
`[mta_sts] https_port` points Tern at. Everything listens on 127.0.0.0/8 only.
"""

import hashlib
import http.server
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tern, free_port  # noqa: E402
from peers import DNS, FakeSMTPServer, HTTPSServer  # noqa: E402
from run import delivery_report, outbound_delivery, submit  # noqa: E402


# ---- certificates ---------------------------------------------------------------------------

class PKI:
    """A throw-away CA, and certificates it issues, made with the openssl command."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="tern-pki-")
        self.ca = self.path("ca.pem")
        self.ca_key = self.path("ca.key")
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=Tern Interop Test CA",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.count = 0

    def path(self, name):
        return os.path.join(self.folder, name)

    def openssl(self, *args, stdin=None):
        result = subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout

    def issue(self, *names, with_ca=False):
        """(chain file, key file) for a certificate from the CA naming `names`; the chain holds
        the CA's certificate too with `with_ca` (DANE-TA needs the anchor in the chain)."""
        self.count += 1
        base = self.path(f"leaf{self.count}")
        with open(base + ".ext", "w") as f:
            f.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n"
                    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n")
        self.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", base + ".key", "-out", base + ".csr", "-subj", f"/CN={names[0]}")
        self.openssl("x509", "-req", "-in", base + ".csr", "-CA", self.ca, "-CAkey", self.ca_key,
                     "-CAcreateserial", "-out", base + ".pem", "-days", "2", "-extfile", base + ".ext")
        chain = base + ".chain.pem"
        with open(chain, "w") as out:
            out.write(open(base + ".pem").read() + (open(self.ca).read() if with_ca else ""))
        return chain, base + ".key"

    def self_signed(self, name):
        """(certificate file, key file) of a self-signed certificate for `name`."""
        self.count += 1
        base = self.path(f"self{self.count}")
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", base + ".key", "-out", base + ".pem", "-days", "2", "-subj", f"/CN={name}",
                     "-addext", f"subjectAltName=DNS:{name}")
        return base + ".pem", base + ".key"

    def spki_sha256(self, certificate):
        """The TLSA association data of a `3 1 1` record for the (first) certificate of a file."""
        key = self.openssl("x509", "-in", certificate, "-noout", "-pubkey")
        der = self.openssl("pkey", "-pubin", "-outform", "DER", stdin=key)
        return hashlib.sha256(der).hexdigest()

    def certificate_sha256(self, certificate):
        """The data of a `x 0 1` record: SHA-256 of the (first) certificate's DER."""
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(certificate).read())).hexdigest()

    def cleanup(self):
        shutil.rmtree(self.folder, ignore_errors=True)


# ---- the MTA-STS policy server --------------------------------------------------------------

class PolicyServer(HTTPSServer):
    """HTTPS on 127.0.0.1:`port` serving /.well-known/mta-sts.txt by the request's Host name from
    `answers` ({host: answer}); an answer is a policy text, or a tuple (status, content type,
    body), or "hang" (never answer). `requests` lists the hosts asked for."""

    def __init__(self, certificate, answers):
        self.answers, self.requests = answers, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                server.requests.append((host, self.path))
                answer = server.answers.get(host, (404, "text/plain", b"no policy here"))
                if answer == "hang":
                    time.sleep(8)
                    return
                if isinstance(answer, str):
                    answer = (200, "text/plain", answer.encode())
                status, content_type, body = answer
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if status in (301, 302):
                    self.send_header("Location", "https://elsewhere.test/.well-known/mta-sts.txt")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(certificate, Handler)


def policy(mode, *mx, max_age=86400):
    return "version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n" % (mode, "".join(f"mx: {m}\r\n" for m in mx), max_age)


def sts_records(domain, mx_host, address, policy_id="20260101T000000"):
    """DNS records for a domain with an MTA-STS TXT record, its policy host and one MX."""
    return {domain: [("MX", 10, mx_host)], mx_host: [("A", address)],
            f"_mta-sts.{domain}": [("TXT", f"v=STSv1; id={policy_id};")],
            f"mta-sts.{domain}": [("A", "127.0.0.1")]}


# ---- helpers --------------------------------------------------------------------------------

def log_lines(tern, *needles):
    return [line for line in tern.read_log().splitlines() if all(n in line for n in needles)]


def wait_for_log(tern, *needles, timeout=20.0):
    """The first log line holding every needle, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = log_lines(tern, *needles)
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no log line with {needles} after {timeout}s:\n{tern.read_log()[-4000:]}")


def tls_delivery(port, pki, **keys):
    return outbound_delivery(port, tls_ca_file=f'"{pki.ca}"', **keys)


def mta_sts_section(server, timeout="2s"):
    return f'\n[mta_sts]\nhttps_port = {server.port}\nfetch_timeout = "{timeout}"\n'


# ---- tests ----------------------------------------------------------------------------------

def test_outbound_tls_certificate_verdict_is_logged():
    pki = PKI()
    port = free_port()
    records = {"good.test": [("MX", 10, "mx.good.test")], "mx.good.test": [("A", "127.0.0.2")],
               "self.test": [("MX", 10, "mx.self.test")], "mx.self.test": [("A", "127.0.0.3")],
               "wrong.test": [("MX", 10, "mx.wrong.test")], "mx.wrong.test": [("A", "127.0.0.4")]}
    try:
        with DNS(records) as dns, \
                FakeSMTPServer("127.0.0.2", port, tls=pki.issue("mx.good.test")) as good, \
                FakeSMTPServer("127.0.0.3", port, tls=pki.self_signed("mx.self.test")) as self_signed, \
                FakeSMTPServer("127.0.0.4", port, tls=pki.issue("somewhere.else.test")) as wrong:
            with Tern(dns_port=dns.port, delivery=tls_delivery(port, pki)) as tern:
                for domain in ("good.test", "self.test", "wrong.test"):
                    submit(tern, "alice@example.test", [f"bob@{domain}"], subject=domain)
                for server in (good, self_signed, wrong):
                    [transaction] = server.wait_for(1, accepted=True)
                    assert transaction.tls and transaction.tls.startswith("TLSv1"), transaction
                line = wait_for_log(tern, "event=delivered", "to=<bob@good.test>")
                assert "tls_cert=verified" in line and "tls_policy=may" in line and "tls=TLSv1" in line, line
                line = wait_for_log(tern, "event=delivered", "to=<bob@self.test>")
                assert 'tls_cert="untrusted (self-signed certificate)"' in line, line
                line = wait_for_log(tern, "event=delivered", "to=<bob@wrong.test>")
                assert 'tls_cert="untrusted (certificate does not name the host)"' in line, line
    finally:
        pki.cleanup()


def test_mta_sts_enforce_refuses_what_the_policy_forbids_and_delivers_what_it_allows():
    pki = PKI()
    port = free_port()
    records = {}
    records.update(sts_records("outside.test", "mx.outside.test", "127.0.0.2"))
    records.update(sts_records("badcert.test", "mx.badcert.test", "127.0.0.3"))
    records.update(sts_records("notls.test", "mx.notls.test", "127.0.0.4"))
    records.update(sts_records("allowed.test", "mx1.allowed.test", "127.0.0.5"))
    answers = {"mta-sts.outside.test": policy("enforce", "mx.elsewhere.test"),
               "mta-sts.badcert.test": policy("enforce", "mx.badcert.test"),
               "mta-sts.notls.test": policy("enforce", "mx.notls.test"),
               "mta-sts.allowed.test": policy("enforce", "*.allowed.test")}
    web = pki.issue(*answers)
    try:
        with DNS(records, ttl=1) as dns, PolicyServer(web, answers) as policies, \
                FakeSMTPServer("127.0.0.2", port, tls=pki.issue("mx.outside.test")) as outside, \
                FakeSMTPServer("127.0.0.3", port, tls=pki.self_signed("mx.badcert.test")) as badcert, \
                FakeSMTPServer("127.0.0.4", port) as notls, \
                FakeSMTPServer("127.0.0.5", port, tls=pki.issue("mx1.allowed.test")) as allowed:
            with Tern(dns_port=dns.port, delivery=tls_delivery(port, pki), extra=mta_sts_section(policies)) as tern:
                for domain in ("outside.test", "badcert.test", "notls.test", "allowed.test"):
                    submit(tern, "alice@example.test", [f"bob@{domain}"], subject=domain)
                [transaction] = allowed.wait_for(1, accepted=True)
                assert transaction.tls, transaction
                line = wait_for_log(tern, "event=delivered", "to=<bob@allowed.test>")
                assert "tls_policy=mta-sts" in line and "tls_cert=verified" in line, line
                line = wait_for_log(tern, "event=deferred", "to=<bob@outside.test>")
                assert "dsn=4.7.0" in line and "not allowed by the MTA-STS policy of outside.test" in line, line
                line = wait_for_log(tern, "event=deferred", "to=<bob@badcert.test>")
                assert "dsn=4.7.5" in line and "untrusted (self-signed certificate)" in line, line
                line = wait_for_log(tern, "event=deferred", "to=<bob@notls.test>")
                assert "dsn=4.7.4" in line and "does not offer STARTTLS" in line, line
                # Nothing went where the policy forbids, even after retries.
                time.sleep(2.5)
                assert outside.connections == 0 and outside.transactions == [], outside.transactions
                assert badcert.transactions == [] and notls.transactions == [], (badcert.transactions,
                                                                                  notls.transactions)
                # ... and on the retry, again.
                deadline = time.monotonic() + 15
                while len(log_lines(tern, "event=deferred", "to=<bob@outside.test>")) < 2:
                    assert time.monotonic() < deadline, "no retry of bob@outside.test"
                    time.sleep(0.2)
                assert outside.connections == 0
                queued = {m["recipients"][0]["address"] for m in tern.queue()}
                assert queued == {"bob@outside.test", "bob@badcert.test", "bob@notls.test"}, queued
                cache = os.path.join(tern.data_dir, "mta-sts", "allowed.test.json")
                assert os.path.exists(cache) and '"enforce"' in open(cache).read()

                # A new policy id whose fetch fails: the cached enforce policy stays in force,
                # so an MX outside it gets nothing.
                records["_mta-sts.allowed.test"] = [("TXT", "v=STSv1; id=second;")]
                answers["mta-sts.allowed.test"] = (500, "text/plain", b"broken")
                records["allowed.test"] = [("MX", 10, "mx.outside.test")]
                time.sleep(1.5)   # the DNS answers' TTL
                submit(tern, "alice@example.test", ["carol@allowed.test"], subject="cached")
                line = wait_for_log(tern, "event=deferred", "to=<carol@allowed.test>")
                assert "not allowed by the MTA-STS policy of allowed.test" in line, line
                assert wait_for_log(tern, "MTA-STS policy fetch failed", "domain=allowed.test", "cached=kept")
                assert outside.connections == 0
                assert ("mta-sts.allowed.test", "/.well-known/mta-sts.txt") in policies.requests
    finally:
        pki.cleanup()


def test_mta_sts_testing_mode_delivers_and_logs_what_enforce_would_refuse():
    pki = PKI()
    port = free_port()
    records = sts_records("trial.test", "mx.trial.test", "127.0.0.2")
    answers = {"mta-sts.trial.test": policy("testing", "mx.listed.test")}
    try:
        with DNS(records) as dns, PolicyServer(pki.issue(*answers), answers) as policies, \
                FakeSMTPServer("127.0.0.2", port, tls=pki.self_signed("mx.trial.test")) as server:
            with Tern(dns_port=dns.port, delivery=tls_delivery(port, pki), extra=mta_sts_section(policies)) as tern:
                submit(tern, "alice@example.test", ["bob@trial.test"])
                server.wait_for(1, accepted=True)
                line = wait_for_log(tern, "event=delivered", "to=<bob@trial.test>")
                assert "tls_policy=mta-sts-testing" in line, line
                assert ('tls_policy_failure="MTA-STS testing: MX host not in the policy, '
                        'certificate untrusted (self-signed certificate)"') in line, line
    finally:
        pki.cleanup()


def test_mta_sts_broken_policy_servers_cost_a_bounded_wait_and_no_policy():
    pki = PKI()
    port = free_port()
    domains = ["hang.test", "huge.test", "moved.test", "garbled.test", "bigage.test"]
    records = {}
    for domain in domains:
        records.update(sts_records(domain, "mx.plain.test", "127.0.0.2"))
    records["_mta-sts.twice.test"] = [("TXT", "v=STSv1; id=1;"), ("TXT", "v=STSv1; id=2;")]
    records["twice.test"] = [("MX", 10, "mx.plain.test")]
    records["mta-sts.twice.test"] = [("A", "127.0.0.1")]
    answers = {"mta-sts.hang.test": "hang",
               "mta-sts.huge.test": "version: STSv1\nmode: enforce\nmx: mx.x.test\nmax_age: 86400\n" + "#" * 70000,
               "mta-sts.moved.test": (301, "text/plain", b""),
               "mta-sts.garbled.test": "this is not a policy\n",
               "mta-sts.bigage.test": policy("enforce", "mx.x.test", max_age=99999999),
               "mta-sts.twice.test": policy("enforce", "mx.x.test")}
    try:
        with DNS(records) as dns, PolicyServer(pki.issue(*answers), answers) as policies, \
                FakeSMTPServer("127.0.0.2", port) as server:
            with Tern(dns_port=dns.port, delivery=tls_delivery(port, pki), extra=mta_sts_section(policies)) as tern:
                start = time.monotonic()
                for domain in domains + ["twice.test"]:
                    submit(tern, "alice@example.test", [f"bob@{domain}"], subject=domain)
                # Every policy is unusable, so each domain gets plain opportunistic delivery.
                server.wait_for(len(domains) + 1, accepted=True, timeout=30)
                assert time.monotonic() - start < 12, "a broken policy server stalled delivery"
                log = tern.read_log()
                for domain, reason in [("hang.test", "no complete answer within 2s"),
                                       ("huge.test", "policy larger than 64 KiB"),
                                       ("moved.test", "HTTP status 301 (redirects are not followed)"),
                                       ("garbled.test", "has no"), ("bigage.test", "max_age 99999999 exceeds")]:
                    assert wait_for_log(tern, "MTA-STS policy fetch failed", f"domain={domain}", reason), domain
                assert wait_for_log(tern, "MTA-STS TXT record unusable", "domain=twice.test")
                assert ("mta-sts.twice.test", "/.well-known/mta-sts.txt") not in policies.requests
                assert "tls_policy=may" in log
    finally:
        pki.cleanup()


def test_dane_ee_match_verifies_and_mismatch_defers():
    pki = PKI()
    port = free_port()
    ok_cert = pki.self_signed("mx.dane-ok.test")
    bad_cert = pki.self_signed("mx.dane-bad.test")
    ta_chain = pki.issue("mx.dane-ta.test", with_ca=True)
    records = {"dane-ok.test": [("MX", 10, "mx.dane-ok.test")], "mx.dane-ok.test": [("A", "127.0.0.2")],
               f"_{port}._tcp.mx.dane-ok.test": [("TLSA", 3, 1, 1, pki.spki_sha256(ok_cert[0])),
                                                  ("TLSA", 1, 1, 1, "00" * 32)],   # PKIX-EE: unusable
               "dane-bad.test": [("MX", 10, "mx.dane-bad.test")], "mx.dane-bad.test": [("A", "127.0.0.3")],
               f"_{port}._tcp.mx.dane-bad.test": [("TLSA", 3, 1, 1, "ab" * 32)],
               "dane-ta.test": [("MX", 10, "mx.dane-ta.test")], "mx.dane-ta.test": [("A", "127.0.0.4")],
               f"_{port}._tcp.mx.dane-ta.test": [("TLSA", 2, 0, 1, pki.certificate_sha256(pki.ca))],
               "dane-fail.test": [("MX", 10, "mx.dane-fail.test")], "mx.dane-fail.test": [("A", "127.0.0.5")],
               f"_{port}._tcp.mx.dane-fail.test": [("SERVFAIL",)]}
    try:
        with DNS(records, authenticated=True) as dns, \
                FakeSMTPServer("127.0.0.2", port, tls=ok_cert) as ok, \
                FakeSMTPServer("127.0.0.3", port, tls=bad_cert) as bad, \
                FakeSMTPServer("127.0.0.4", port, tls=ta_chain) as anchored, \
                FakeSMTPServer("127.0.0.5", port, tls=pki.issue("mx.dane-fail.test")) as failing:
            # No tls_ca_file: the TLSA records alone make these certificates good.
            with Tern(dns_port=dns.port, delivery=outbound_delivery(port)) as tern:
                for domain in ("dane-ok.test", "dane-bad.test", "dane-ta.test", "dane-fail.test"):
                    submit(tern, "alice@example.test", [f"bob@{domain}"], subject=domain)
                ok.wait_for(1, accepted=True)
                anchored.wait_for(1, accepted=True)
                line = wait_for_log(tern, "event=delivered", "to=<bob@dane-ok.test>")
                assert 'tls_cert="verified (DANE-EE)"' in line and "tls_policy=dane" in line, line
                line = wait_for_log(tern, "event=delivered", "to=<bob@dane-ta.test>")
                assert 'tls_cert="verified (DANE-TA)"' in line, line
                line = wait_for_log(tern, "event=deferred", "to=<bob@dane-bad.test>")
                assert "dsn=4.7.5" in line and "no TLSA record matches the certificate chain" in line, line
                line = wait_for_log(tern, "event=deferred", "to=<bob@dane-fail.test>")
                assert "dsn=4.7.5" in line and "TLSA lookup for mx.dane-fail.test failed" in line, line
                time.sleep(1.5)
                assert bad.transactions == [] and failing.connections == 0, (bad.transactions, failing.connections)
    finally:
        pki.cleanup()


def test_dane_answer_without_the_ad_bit_is_ignored():
    pki = PKI()
    port = free_port()
    records = {"insecure.test": [("MX", 10, "mx.insecure.test")], "mx.insecure.test": [("A", "127.0.0.2")],
               f"_{port}._tcp.mx.insecure.test": [("TLSA", 3, 1, 1, "ab" * 32)]}
    try:
        # The MX and address answers are validated, the TLSA answer is not: no DANE.
        with DNS(records, authenticated={"insecure.test", "mx.insecure.test"}) as dns, \
                FakeSMTPServer("127.0.0.2", port, tls=pki.self_signed("mx.insecure.test")) as server:
            with Tern(dns_port=dns.port, delivery=outbound_delivery(port)) as tern:
                submit(tern, "alice@example.test", ["bob@insecure.test"])
                server.wait_for(1, accepted=True)
                line = wait_for_log(tern, "event=delivered", "to=<bob@insecure.test>")
                assert "tls_policy=may" in line and "untrusted" in line, line
                assert (f"_{port}._tcp.mx.insecure.test", "TLSA") in dns.queries
    finally:
        pki.cleanup()


def test_tls_policy_overrides_mta_sts_and_dane_per_domain():
    pki = PKI()
    port = free_port()
    records = {"forced.test": [("MX", 10, "mx.forced.test")], "mx.forced.test": [("A", "127.0.0.2")],
               "plain.test": [("MX", 10, "mx.plain.test")], "mx.plain.test": [("A", "127.0.0.3")],
               "sub.encrypted.test": [("MX", 10, "mx.notls.test")], "mx.notls.test": [("A", "127.0.0.4")]}
    records.update(sts_records("relaxed.test", "mx.relaxed.test", "127.0.0.5"))
    answers = {"mta-sts.relaxed.test": policy("enforce", "mx.other.test")}
    try:
        with DNS(records) as dns, PolicyServer(pki.issue(*answers), answers) as policies, \
                FakeSMTPServer("127.0.0.2", port, tls=pki.self_signed("mx.forced.test")) as forced, \
                FakeSMTPServer("127.0.0.3", port, tls=pki.issue("mx.plain.test")) as plain, \
                FakeSMTPServer("127.0.0.4", port) as notls, \
                FakeSMTPServer("127.0.0.5", port, tls=pki.self_signed("mx.relaxed.test")) as relaxed:
            extra = mta_sts_section(policies) + '''
[tls_policy]
"forced.test" = "verify"
"Plain.test" = "none"
".encrypted.test" = "encrypt"
"relaxed.test" = "may"
'''
            with Tern(dns_port=dns.port, delivery=tls_delivery(port, pki), extra=extra) as tern:
                for domain in ("forced.test", "plain.test", "sub.encrypted.test", "relaxed.test"):
                    submit(tern, "alice@example.test", [f"bob@{domain}"], subject=domain)
                [transaction] = plain.wait_for(1, accepted=True)
                assert transaction.tls is None and plain.handshakes == 0, "TLS used despite policy none"
                relaxed.wait_for(1, accepted=True)
                line = wait_for_log(tern, "event=delivered", "to=<bob@relaxed.test>")
                assert "tls_policy=policy:may" in line, line
                assert policies.requests == [], "MTA-STS looked up although [tls_policy] overrides it"
                line = wait_for_log(tern, "event=deferred", "to=<bob@forced.test>")
                assert "dsn=4.7.5" in line and "policy:verify requires a verified certificate" in line, line
                line = wait_for_log(tern, "event=deferred", "to=<bob@sub.encrypted.test>")
                assert "does not offer STARTTLS, but TLS is required (policy:encrypt)" in line, line
                assert forced.transactions == [] and notls.transactions == []
            # check-config names a bad level and a bad domain with key and line.
            bad = Tern(extra='\n[tls_policy]\n"ok.test" = "verfy"\n"bad domain" = "may"\n[mta_sts]\nhttps_port = 0\n')
            try:
                text = bad.config_problems()
                assert re.search(r'line \d+: tls_policy\.ok\.test: "verfy": expected "none", "may"', text), text
                assert re.search(r"line \d+: tls_policy\.bad domain: .*not a domain name", text), text
                assert re.search(r"line \d+: mta_sts\.https_port: must be a port number", text), text
            finally:
                bad.cleanup()
    finally:
        pki.cleanup()


def test_requiretls_needs_an_authenticated_next_hop_that_offers_it():
    pki = PKI()
    port = free_port()
    secure = {"rt-ok.test", "mx.rt-ok.test", "rt-no.test", "mx.rt-no.test"}
    records = {"rt-ok.test": [("MX", 10, "mx.rt-ok.test")], "mx.rt-ok.test": [("A", "127.0.0.2")],
               "rt-no.test": [("MX", 10, "mx.rt-no.test")], "mx.rt-no.test": [("A", "127.0.0.3")],
               "rt-insecure.test": [("MX", 10, "mx.rt-insecure.test")], "mx.rt-insecure.test": [("A", "127.0.0.4")]}
    try:
        with DNS(records, authenticated=secure) as dns, \
                FakeSMTPServer("127.0.0.2", port, tls=pki.issue("mx.rt-ok.test"), requiretls=True) as ok, \
                FakeSMTPServer("127.0.0.3", port, tls=pki.issue("mx.rt-no.test")) as lacking, \
                FakeSMTPServer("127.0.0.4", port, tls=pki.issue("mx.rt-insecure.test"), requiretls=True) as insecure:
            with Tern(dns_port=dns.port, delivery=tls_delivery(port, pki)) as tern:
                # Over plaintext SMTP, Tern neither offers nor takes REQUIRETLS (RFC 8689 §2).
                with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as client:
                    client.ehlo("client.example")
                    assert not client.has_extn("requiretls")
                    code, text = client.docmd("MAIL FROM:<alice@example.test> REQUIRETLS")
                    assert code == 555 and b"REQUIRETLS needs TLS" in text, (code, text)
                for recipient in ("carol@rt-ok.test", "dave@rt-no.test", "erin@rt-insecure.test"):
                    tern.tern("sendmail", "--require-tls", "-f", "alice@example.test", recipient,
                              stdin=f"Subject: secret for {recipient}\n\nthe secret body\n".encode())
                [transaction] = ok.wait_for(1, accepted=True)
                assert "REQUIRETLS" in transaction.mail_parameters and transaction.tls, transaction.mail
                line = wait_for_log(tern, "event=delivered", "to=<carol@rt-ok.test>")
                assert "tls_cert=verified" in line, line
                bounces = tern.wait_for_maildir("alice", 2)
                statuses = {}
                for bounce in bounces:
                    _, blocks = delivery_report(bounce)
                    statuses[blocks[0]["Final-Recipient"]] = blocks[0]["Status"]
                    assert b"the secret body" not in bounce, "a REQUIRETLS bounce returned the content"
                assert statuses == {"rfc822; dave@rt-no.test": "5.7.30",
                                    "rfc822; erin@rt-insecure.test": "5.7.30"}, statuses
                assert lacking.transactions == [] and insecure.connections == 0
                line = wait_for_log(tern, "event=bounced", "to=<dave@rt-no.test>")
                assert "does not offer REQUIRETLS" in line, line
                line = wait_for_log(tern, "event=bounced", "to=<erin@rt-insecure.test>")
                assert "neither DNSSEC nor MTA-STS authenticates mx.rt-insecure.test" in line, line
    finally:
        pki.cleanup()


def test_tls_required_no_header_ignores_the_policy_failure():
    pki = PKI()
    port = free_port()
    records = sts_records("strict.test", "mx.strict.test", "127.0.0.2")
    answers = {"mta-sts.strict.test": policy("enforce", "mx.strict.test")}
    try:
        with DNS(records) as dns, PolicyServer(pki.issue(*answers), answers) as policies, \
                FakeSMTPServer("127.0.0.2", port, tls=pki.self_signed("mx.strict.test")) as server:
            with Tern(dns_port=dns.port, delivery=tls_delivery(port, pki), extra=mta_sts_section(policies)) as tern:
                submit(tern, "alice@example.test", ["bob@strict.test"], subject="policy applies")
                line = wait_for_log(tern, "event=deferred", "to=<bob@strict.test>")
                assert "untrusted (self-signed certificate)" in line, line
                client = smtplib.SMTP("127.0.0.1", tern.port, timeout=10)
                client.sendmail("alice@example.test", ["carol@strict.test"],
                                b"Subject: not secret\r\nTLS-Required: No\r\n\r\nanyone may read this\r\n")
                client.quit()
                [transaction] = server.wait_for(1, accepted=True)
                assert transaction.recipients == ["carol@strict.test"] and transaction.tls, transaction
                line = wait_for_log(tern, "event=delivered", "to=<carol@strict.test>")
                assert "tls_policy=TLS-Required:No" in line, line
    finally:
        pki.cleanup()
