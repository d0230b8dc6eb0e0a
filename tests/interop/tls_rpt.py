#!/usr/bin/env python3
"""Interop tests of SMTP TLS Reporting (RFC 8460): Tern records the TLS outcome of its
deliveries, looks up `_smtp._tls.<domain>`, and at the end of a (here: seconds long) report
period sends the gzipped JSON report by mail to a scripted SMTP peer or by HTTPS POST to a
local Python server.

    python3 tests/interop/run.py -k tls_rpt      (run.py collects these tests)

The peers and certificates are those of outbound_tls.py; everything listens on 127.0.0.0/8.
"""

import base64
import email
import email.policy
import gzip
import http.server
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tern, free_port  # noqa: E402
from peers import DNS, FakeSMTPServer, HTTPSServer  # noqa: E402
from outbound_tls import PKI, PolicyServer, mta_sts_section, policy, sts_records, tls_delivery, wait_for_log  # noqa: E402
from run import submit  # noqa: E402


def tls_rpt_section(period="3s", **keys):
    lines = [f'period = "{period}"', 'organization = "Tern Interop"', 'contact = "tlsrpt-admin@example.test"']
    lines += [f"{key} = {value}" for key, value in keys.items()]
    return "\n[tls_rpt]\n" + "\n".join(lines) + "\n"


def report_of(message_bytes):
    """(message, report JSON) of a TLS report message (RFC 8460 §5.3)."""
    message = email.message_from_bytes(message_bytes, policy=email.policy.default)
    assert message.get_content_type() == "multipart/report", message["Content-Type"]
    assert message.get_param("report-type") == "tlsrpt", message["Content-Type"]
    parts = [p for p in message.iter_parts() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert len(parts) == 1, [p.get_content_type() for p in message.iter_parts()]
    assert parts[0].get_filename().endswith(".json.gz"), parts[0].get_filename()
    data = base64.b64decode(parts[0].get_payload())
    return message, json.loads(gzip.decompress(data))


def policies_by_type(report):
    return {p["policy"]["policy-type"]: p for p in report["policies"]}


class ReportCollector(HTTPSServer):
    """HTTPS on 127.0.0.1:`port` taking POSTs; `posts` lists (path, headers, body)."""

    def __init__(self, certificate, status=200):
        self.posts = []
        self.status = status
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                collector.posts.append((self.path, dict(self.headers), body))
                self.send_response(collector.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(certificate, Handler)

    def wait_for(self, count, timeout=30.0):
        deadline = time.monotonic() + timeout
        while len(self.posts) < count:
            assert time.monotonic() < deadline, f"{len(self.posts)} reports posted, expected {count}"
            time.sleep(0.1)
        return self.posts


def test_tls_rpt_mailto_reports_count_mta_sts_dane_and_plain_sessions():
    pki = PKI()
    port = free_port()
    rua = "v=TLSRPTv1; rua=mailto:tls-reports@reports.test"
    records = sts_records("sts-rpt.test", "mx.sts-rpt.test", "127.0.0.2")
    records.update({
        "_smtp._tls.sts-rpt.test": [("TXT", rua)],
        "ok-rpt.test": [("MX", 10, "mx.ok-rpt.test")], "mx.ok-rpt.test": [("A", "127.0.0.3")],
        "_smtp._tls.ok-rpt.test": [("TXT", "v=spf1 -all"), ("TXT", rua)],
        "dane-rpt.test": [("MX", 10, "mx.dane-rpt.test")], "mx.dane-rpt.test": [("A", "127.0.0.4")],
        f"_{port}._tcp.mx.dane-rpt.test": [("TLSA", 3, 1, 1, "ab" * 32)],
        "_smtp._tls.dane-rpt.test": [("TXT", rua)],
        "reports.test": [("MX", 10, "mx.reports.test")], "mx.reports.test": [("A", "127.0.0.9")],
        # The report's own delivery must not be reported on: were it recorded, this would be
        # asked for and a report about the reports would follow.
        "_smtp._tls.reports.test": [("TXT", rua)],
    })
    answers = {"mta-sts.sts-rpt.test": policy("enforce", "mx.sts-rpt.test")}
    secure = {"dane-rpt.test", "mx.dane-rpt.test", f"_{port}._tcp.mx.dane-rpt.test"}
    try:
        with DNS(records, authenticated=secure) as dns, PolicyServer(pki.issue(*answers), answers) as policies, \
                FakeSMTPServer("127.0.0.2", port, tls=pki.self_signed("mx.sts-rpt.test")) as sts, \
                FakeSMTPServer("127.0.0.3", port, tls=pki.issue("mx.ok-rpt.test")) as ok, \
                FakeSMTPServer("127.0.0.4", port, tls=pki.self_signed("mx.dane-rpt.test")) as dane, \
                FakeSMTPServer("127.0.0.9", port) as reports:
            extra = mta_sts_section(policies) + tls_rpt_section()
            with Tern(dns_port=dns.port, delivery=tls_delivery(port, pki), extra=extra) as tern:
                for domain in ("sts-rpt.test", "ok-rpt.test", "dane-rpt.test"):
                    submit(tern, "alice@example.test", [f"bob@{domain}"], subject=domain)
                ok.wait_for(1, accepted=True)
                wait_for_log(tern, "event=deferred", "to=<bob@sts-rpt.test>")
                wait_for_log(tern, "event=deferred", "to=<bob@dane-rpt.test>")
                found = {}
                deadline = time.monotonic() + 40
                while set(found) != {"sts-rpt.test", "ok-rpt.test", "dane-rpt.test"}:
                    assert time.monotonic() < deadline, f"reports so far: {sorted(found)}\n{tern.read_log()[-3000:]}"
                    for transaction in reports.messages:
                        message, report = report_of(transaction.data)
                        found.setdefault(message["TLS-Report-Domain"], (transaction, message, report))
                    time.sleep(0.2)

                transaction, message, report = found["sts-rpt.test"]
                assert transaction.sender == "" and transaction.recipients == ["tls-reports@reports.test"]
                assert message["TLS-Report-Submitter"] == "mx.example.test", message["TLS-Report-Submitter"]
                assert re.fullmatch(r"Report Domain: sts-rpt\.test Submitter: mx\.example\.test "
                                    r"Report-ID: <[^>]+>", message["Subject"]), message["Subject"]
                assert message["Subject"].endswith(f"<{report['report-id']}>"), (message["Subject"], report)
                assert report["organization-name"] == "Tern Interop"
                assert report["contact-info"] == "tlsrpt-admin@example.test"
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", report["date-range"]["start-datetime"])
                sts_policy = policies_by_type(report)["sts"]
                assert sts_policy["policy"]["policy-domain"] == "sts-rpt.test"
                assert sts_policy["policy"]["mx-host"] == ["mx.sts-rpt.test"]
                assert "mode: enforce" in sts_policy["policy"]["policy-string"]
                assert sts_policy["summary"]["total-successful-session-count"] == 0
                failed = sts_policy["summary"]["total-failure-session-count"]
                assert failed >= 1, sts_policy
                [detail] = sts_policy["failure-details"]
                assert detail["result-type"] == "certificate-not-trusted", detail
                assert detail["receiving-mx-hostname"] == "mx.sts-rpt.test"
                assert detail["receiving-ip"] == "127.0.0.2" and detail["sending-mta-ip"].startswith("127.")
                assert detail["failed-session-count"] == failed

                _, _, report = found["ok-rpt.test"]
                plain = policies_by_type(report)["no-policy-found"]
                assert plain["summary"] == {"total-successful-session-count": 1,
                                            "total-failure-session-count": 0}, plain

                _, _, report = found["dane-rpt.test"]
                tlsa = policies_by_type(report)["tlsa"]
                assert tlsa["policy"]["policy-string"] == ["3 1 1 " + "AB" * 32], tlsa
                assert tlsa["summary"]["total-failure-session-count"] >= 1
                assert {d["result-type"] for d in tlsa["failure-details"]} == {"tlsa-invalid"}, tlsa

                # The reports went without TLS policy, and nothing was recorded about them.
                assert wait_for_log(tern, "TLS report queued", "domain=sts-rpt.test", "rua=mailto:tls-reports@")
                time.sleep(4)
                assert ("_smtp._tls.reports.test", "TXT") not in dns.queries, "a report was reported on"
                assert sts.transactions == [] and dane.transactions == []
                assert os.path.exists(os.path.join(tern.data_dir, "tls-rpt", "results.json"))
    finally:
        pki.cleanup()


def test_tls_rpt_https_report_is_posted_gzipped():
    pki = PKI()
    port = free_port()
    records = {
        "plain-rpt.test": [("MX", 10, "mx.plain-rpt.test")], "mx.plain-rpt.test": [("A", "127.0.0.2")],
        "_smtp._tls.plain-rpt.test": [("TXT", "v=TLSRPTv1; rua=https://collector.rpt.test/v1/tlsrpt")],
        "collector.rpt.test": [("A", "127.0.0.1")],
    }
    try:
        with DNS(records) as dns, ReportCollector(pki.issue("collector.rpt.test")) as collector, \
                FakeSMTPServer("127.0.0.2", port) as plain:
            extra = tls_rpt_section(https_port=collector.port)
            with Tern(dns_port=dns.port, delivery=tls_delivery(port, pki), extra=extra) as tern:
                submit(tern, "alice@example.test", ["bob@plain-rpt.test"])
                plain.wait_for(1, accepted=True)
                [(path, headers, body)] = collector.wait_for(1)[:1]
                assert path == "/v1/tlsrpt", path
                headers = {k.lower(): v for k, v in headers.items()}
                assert headers["content-type"] == "application/tlsrpt+gzip", headers
                report = json.loads(gzip.decompress(body))
                assert report["organization-name"] == "Tern Interop"
                [entry] = report["policies"]
                assert entry["policy"] == {"policy-type": "no-policy-found", "policy-domain": "plain-rpt.test"}, entry
                assert entry["summary"] == {"total-successful-session-count": 0,
                                            "total-failure-session-count": 1}, entry
                [detail] = entry["failure-details"]
                assert detail["result-type"] == "starttls-not-supported", detail
                assert detail["receiving-ip"] == "127.0.0.2" and detail["receiving-mx-hostname"] == "mx.plain-rpt.test"
                assert wait_for_log(tern, "TLS report posted", "domain=plain-rpt.test")
                # A reported period is gone: nothing more is sent about it.
                time.sleep(4)
                assert len(collector.posts) == 1, len(collector.posts)
    finally:
        pki.cleanup()


def test_tls_rpt_failed_upload_is_logged_once_and_bad_keys_are_named():
    pki = PKI()
    port = free_port()
    records = {
        "plain-rpt.test": [("MX", 10, "mx.plain-rpt.test")], "mx.plain-rpt.test": [("A", "127.0.0.2")],
        "_smtp._tls.plain-rpt.test": [("TXT", "v=TLSRPTv1; rua=https://collector.rpt.test/")],
        "collector.rpt.test": [("A", "127.0.0.1")],
    }
    try:
        with DNS(records) as dns, ReportCollector(pki.issue("collector.rpt.test"), status=302) as collector, \
                FakeSMTPServer("127.0.0.2", port, tls=pki.issue("mx.plain-rpt.test")) as server:
            extra = tls_rpt_section(https_port=collector.port)
            with Tern(dns_port=dns.port, delivery=tls_delivery(port, pki), extra=extra) as tern:
                submit(tern, "alice@example.test", ["bob@plain-rpt.test"])
                server.wait_for(1, accepted=True)
                line = wait_for_log(tern, "TLS report upload failed", "domain=plain-rpt.test")
                assert "HTTP status 302 (redirects are not followed)" in line, line
                time.sleep(4)
                assert len(collector.posts) == 1, "a failed upload was retried"
        bad = Tern(extra='\n[tls_rpt]\nperiod = "soon"\ncontact = "not an address"\nhttps_port = 70000\ncolour = 1\n')
        try:
            text = bad.config_problems()
            assert re.search(r"line \d+: tls_rpt\.period: ", text), text
            assert re.search(r'line \d+: tls_rpt\.contact: "not an address"', text), text
            assert re.search(r"line \d+: tls_rpt\.https_port: must be a port number", text), text
            assert re.search(r"tls_rpt\.colour", text), text
        finally:
            bad.cleanup()
    finally:
        pki.cleanup()
