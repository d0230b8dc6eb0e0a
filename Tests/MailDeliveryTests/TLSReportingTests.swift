import DNSClient
import Foundation
import Logging
import Testing

@testable import MailDelivery

@Suite struct TLSRPTRecordTests {
    /// TXT answers → the destinations of the one TLSRPTv1 record, nil for none, or "error" when
    /// the domain's reporting policy is unusable (RFC 8460 §3).
    static let fixtures: [([String], [String]?)] = [
        (["v=TLSRPTv1; rua=mailto:reports@example.com"], ["mailto:reports@example.com"]),
        (["v=TLSRPTv1;rua=mailto:reports@example.com;"], ["mailto:reports@example.com"]),
        (
            ["v=TLSRPTv1; rua=mailto:a@example.com, https://reporting.example.com/v1/tlsrpt"],
            ["mailto:a@example.com", "https://reporting.example.com/v1/tlsrpt"]
        ),
        (
            ["v=TLSRPTv1; rua=mailto:a@example.com,mailto:b@example.net"],
            ["mailto:a@example.com", "mailto:b@example.net"]
        ),
        (["v=TLSRPTv1; rua=mailto:tls%2Brpt@example.com?subject=x"], ["mailto:tls+rpt@example.com"]),
        (["v=TLSRPTv1; rua=mailto:a@example.com; ext=value; other.ext_2=x"], ["mailto:a@example.com"]),
        (["v=TLSRPTv1; ext=1; rua=https://r.example/"], ["https://r.example/"]),
        (["v=TLSRPTv1; rua=ftp://r.example/, mailto:a@example.com"], ["mailto:a@example.com"]),
        (["v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@example.com"], ["mailto:a@example.com"]),
        ([], nil),
        (["v=spf1 -all"], nil),
        (["v=TLSRPTv2; rua=mailto:a@example.com"], nil),
        (["V=TLSRPTv1; rua=mailto:a@example.com"], nil),
        (["v=TLSRPTv10; rua=mailto:a@example.com"], nil),
        (["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1; rua=mailto:b@example.com"], ["error"]),
        (["v=TLSRPTv1"], ["error"]),
        (["v=TLSRPTv1;"], ["error"]),
        (["v=TLSRPTv1; rua="], ["error"]),
        (["v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com"], ["error"]),
        (["v=TLSRPTv1; rua=mailto:a@example.com;; x=y"], ["error"]),
        (["v=TLSRPTv1; rua=mailto:a@example.com; novalue"], ["error"]),
        (["v=TLSRPTv1; rua=mailto:a@example.com,,mailto:b@example.com"], ["error"]),
        (["v=TLSRPTv1; rua=mailto:a@example.com; _bad=x"], ["error"]),
    ]

    @Test(arguments: fixtures)
    func select(texts: [String], expected: [String]?) {
        let result: [String]?
        do throws(TLSPolicyError) {
            result = try TLSRPTRecord.select(from: texts)?.destinations.map(\.description)
        } catch {
            result = ["error"]
        }
        #expect(result == expected, "\(texts)")
    }
}

@Suite struct TLSResultMappingTests {
    static let verify = TLSRequirement(level: .verify, source: "mta-sts")
    static let dane = TLSRequirement(
        level: .dane([TLSARecord(usage: 3, selector: 1, matchingType: 1, data: [1])]), source: "dane")
    static let may = TLSRequirement(level: .opportunistic, source: "may")
    static var testing: TLSRequirement {
        var requirement = TLSRequirement(level: .opportunistic, source: "mta-sts-testing")
        requirement.mtaSTSTesting = true
        requirement.mxMatched = false
        return requirement
    }

    /// (requirement, TLS established, STARTTLS missing, verdict) → RFC 8460 result type.
    static let fixtures: [(TLSRequirement, Bool, Bool, CertificateVerdict?, TLSRPTResultType?)] = [
        (verify, true, false, .verified(.pkix), nil),
        (verify, false, true, nil, .starttlsNotSupported),
        (verify, false, false, .untrusted("certificate has expired"), .certificateExpired),
        (verify, false, false, .untrusted("certificate is not yet valid"), .certificateExpired),
        (verify, false, false, .untrusted("certificate does not name the host"), .certificateHostMismatch),
        (verify, false, false, .untrusted("self-signed certificate"), .certificateNotTrusted),
        (verify, false, false, .untrusted("no chain to a trusted root"), .certificateNotTrusted),
        (verify, false, false, .untrusted("a certificate of the chain does not parse"), .validationFailure),
        (verify, false, false, nil, .validationFailure),
        (dane, true, false, .verified(.daneEE), nil),
        (dane, false, false, .untrusted("no TLSA record matches the certificate chain"), .tlsaInvalid),
        (dane, false, false, .untrusted("DANE-TA: certificate has expired"), .certificateExpired),
        (may, true, false, .untrusted("self-signed certificate"), nil),
        (may, true, false, .verified(.pkix), nil),
        (may, false, true, nil, .starttlsNotSupported),
        (may, false, false, nil, .validationFailure),
        (testing, true, false, .untrusted("self-signed certificate"), .certificateNotTrusted),
        (testing, true, false, .verified(.pkix), .validationFailure),
    ]

    @Test(arguments: fixtures)
    func failure(
        requirement: TLSRequirement, established: Bool, missing: Bool, verdict: CertificateVerdict?,
        expected: TLSRPTResultType?
    ) {
        #expect(
            TLSResultMapping.failure(
                requirement: requirement, tlsEstablished: established, startTLSMissing: missing, verdict: verdict)
                == expected)
    }

    static let sts = MTASTSPolicy(mode: .enforce, mx: ["mx.example.com"], maxAge: 86400)

    /// Hosts skipped before connecting: (status, TLSA lookup, MTA-STS policy) → result type.
    static let skips: [(String, TLSALookup, MTASTSPolicy?, TLSRPTResultType?)] = [
        ("4.7.0", .insecure, sts, .validationFailure),
        ("4.7.5", .failed("SERVFAIL"), nil, .dnssecInvalid),
        ("4.7.5", .records([TLSARecord(usage: 1, selector: 1, matchingType: 1, data: [0])]), nil, .tlsaInvalid),
        ("4.7.5", .none, nil, .daneRequired),
        ("5.7.30", .insecure, nil, nil),
    ]

    @Test(arguments: skips)
    func skipped(status: String, tlsa: TLSALookup, policy: MTASTSPolicy?, expected: TLSRPTResultType?) {
        let decision = TLSPolicyDecision(configured: nil, mtaSTS: policy, domain: "example.com")
        let result = TLSResultMapping.skipped(
            host: "mx.example.com", status: status, decision: decision, tlsa: tlsa, domain: "example.com")
        #expect(result?.failure == expected)
    }

    @Test func policies() {
        let decision = TLSPolicyDecision(configured: nil, mtaSTS: Self.sts, domain: "example.com")
        let sts = TLSResultMapping.policy(
            requirement: Self.verify, decision: decision, tlsa: .insecure, domain: "example.com")
        #expect(sts?.type == .sts)
        #expect(sts?.strings == ["version: STSv1", "mode: enforce", "mx: mx.example.com", "max_age: 86400"])
        #expect(sts?.mxHosts == ["mx.example.com"])
        let records = [TLSARecord(usage: 3, selector: 1, matchingType: 1, data: [0xAB, 0x01])]
        let tlsa = TLSResultMapping.policy(
            requirement: Self.dane, decision: decision, tlsa: .records(records), domain: "example.com")
        #expect(tlsa == TLSRPTPolicy(type: .tlsa, strings: ["3 1 1 AB01"], domain: "example.com"))
        let none = TLSResultMapping.policy(
            requirement: Self.may, decision: TLSPolicyDecision(configured: nil, domain: "example.com"), tlsa: .none,
            domain: "example.com")
        #expect(none?.type == .noPolicyFound)
        let optional = TLSResultMapping.policy(
            requirement: Self.may,
            decision: TLSPolicyDecision(configured: nil, demand: .optional, domain: "example.com"), tlsa: .none,
            domain: "example.com")
        #expect(optional == nil)
    }
}

@Suite struct TLSReportTests {
    static let logger = Logger(label: "test")

    static func folder() -> String {
        let path = NSTemporaryDirectory() + "tern-tlsrpt-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A store whose clock is fixed on 2016-04-01 12:00 UTC.
    static func store(_ directory: String?) -> TLSReportStore {
        TLSReportStore(directory: directory, logger: logger, now: { Date(timeIntervalSince1970: 1_459_512_000) })
    }

    static let stsPolicy = TLSRPTPolicy.sts(
        MTASTSPolicy(mode: .testing, mx: ["*.mail.company-y.example"], maxAge: 86400), domain: "company-y.example")

    static let fixture = """
        {
          "organization-name": "Company-X",
          "date-range": {"start-datetime": "2016-04-01T00:00:00Z", "end-datetime": "2016-04-01T23:59:59Z"},
          "contact-info": "sts-reporting@company-x.example",
          "report-id": "20160401T000000Z.company-y.example@mx.company-x.example",
          "policies": [{
            "policy": {
              "policy-type": "sts",
              "policy-string": ["version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"],
              "policy-domain": "company-y.example",
              "mx-host": ["*.mail.company-y.example"]
            },
            "summary": {"total-successful-session-count": 2, "total-failure-session-count": 3},
            "failure-details": [{
              "result-type": "certificate-expired",
              "sending-mta-ip": "2001:db8:abcd:12::1",
              "receiving-mx-hostname": "mx1.mail.company-y.example",
              "receiving-ip": "203.0.113.56",
              "failed-session-count": 2
            }, {
              "result-type": "starttls-not-supported",
              "sending-mta-ip": "198.51.100.62",
              "receiving-mx-hostname": "mx2.mail.company-y.example",
              "receiving-ip": "203.0.113.58",
              "failed-session-count": 1,
              "failure-reason-code": "does not offer STARTTLS"
            }]
          }, {
            "policy": {"policy-type": "no-policy-found", "policy-domain": "company-y.example"},
            "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
            "failure-details": []
          }]
        }
        """

    static func fill(_ store: TLSReportStore) {
        let domain = "company-y.example"
        store.record(TLSSessionResult(domain: domain, policy: stsPolicy))
        store.record(TLSSessionResult(domain: domain, policy: stsPolicy))
        for _ in 0..<2 {
            store.record(
                TLSSessionResult(
                    domain: domain, policy: stsPolicy, failure: .certificateExpired, sendingIP: "2001:db8:abcd:12::1",
                    mxHost: "mx1.mail.company-y.example", receivingIP: "203.0.113.56"))
        }
        store.record(
            TLSSessionResult(
                domain: domain, policy: stsPolicy, failure: .starttlsNotSupported, sendingIP: "198.51.100.62",
                mxHost: "mx2.mail.company-y.example", receivingIP: "203.0.113.58", reason: "does not offer STARTTLS"))
        store.record(TLSSessionResult(domain: domain, policy: .noPolicy(domain)))
    }

    static func jsonObject(_ bytes: [UInt8]) -> NSDictionary? {
        (try? JSONSerialization.jsonObject(with: Data(bytes))) as? NSDictionary
    }

    @Test func reportMatchesTheRFCStructure() throws {
        let store = Self.store(nil)
        Self.fill(store)
        #expect(store.endedPeriods(at: Date(timeIntervalSince1970: 1_459_512_000)) == [])
        let start = 1_459_468_800  // 2016-04-01T00:00:00Z
        #expect(store.endedPeriods(at: Date(timeIntervalSince1970: 1_459_555_200)) == [start])
        let results = try #require(store.results(period: start)["company-y.example"])
        let report = TLSReport(
            domain: "company-y.example", results: results, periodStart: start, periodLength: 86400,
            organization: "Company-X", contact: "sts-reporting@company-x.example", submitter: "mx.company-x.example")
        let produced = try #require(Self.jsonObject(report.json()))
        let expected = try #require(Self.jsonObject(Array(Self.fixture.utf8)))
        #expect(produced == expected, "\(String(decoding: report.json(), as: UTF8.self))")
        #expect(
            report.fileName(submitter: "mx.company-x.example")
                == "mx.company-x.example!company-y.example!1459468800!1459555200.json.gz")
    }

    @Test func gzipRoundTrips() throws {
        let text = Array(String(repeating: "TLS-RPT ", count: 1000).utf8)
        let gzipped = Gzip.compress(text)
        #expect(gzipped.starts(with: [0x1F, 0x8B]))
        #expect(gzipped.count < text.count / 10)
        let folder = Self.folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/r.gz"
        _ = FileManager.default.createFile(atPath: path, contents: Data(gzipped))
        let gunzip = Process()
        gunzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gunzip.arguments = ["-d", path]
        try gunzip.run()
        gunzip.waitUntilExit()
        #expect(FileManager.default.contents(atPath: folder + "/r").map(Array.init) == text)
    }

    @Test func storeIsBounded() {
        var limits = TLSReportStore.Limits()
        limits.domainsPerPeriod = 3
        limits.detailRowsPerDomain = 4
        limits.policiesPerDomain = 2
        let store = TLSReportStore(
            directory: nil, limits: limits, logger: Self.logger, now: { Date(timeIntervalSince1970: 1_459_512_000) })
        for index in 0..<10 {
            store.record(TLSSessionResult(domain: "d\(index).example", policy: .noPolicy("d\(index).example")))
        }
        for index in 0..<100 {
            store.record(
                TLSSessionResult(
                    domain: "d0.example", policy: .noPolicy("d0.example"), failure: .starttlsNotSupported,
                    mxHost: "mx\(index).d0.example"))
            store.record(
                TLSSessionResult(
                    domain: "d0.example", policy: TLSRPTPolicy(type: .tlsa, strings: ["\(index)"], domain: "d0.example")
                ))
        }
        let results = store.results(period: 1_459_468_800)
        #expect(results.count == 3)
        let d0 = results["d0.example"]
        #expect(d0?.policies.count == 2)
        #expect(d0?.detailRows == 4)
        #expect(d0?.policies[0].failures == 100)
        #expect(d0?.policies[0].successes == 1)
    }

    @Test func storeSurvivesARestart() throws {
        let folder = Self.folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let first = Self.store(folder)
        Self.fill(first)
        first.flush()
        let second = Self.store(folder)
        #expect(second.results(period: 1_459_468_800) == first.results(period: 1_459_468_800))
        #expect(!second.results(period: 1_459_468_800).isEmpty)
        second.remove(period: 1_459_468_800)
        second.flush()
        #expect(Self.store(folder).results(period: 1_459_468_800).isEmpty)
        // A damaged file is set aside, not fatal.
        _ = FileManager.default.createFile(atPath: folder + "/results.json", contents: Data("{\"vers".utf8))
        #expect(Self.store(folder).results(period: 1_459_468_800).isEmpty)
        #expect(FileManager.default.fileExists(atPath: folder + "/results.json.bad"))
    }

    @Test func reportMessageNamesTheReport() throws {
        let store = Self.store(nil)
        Self.fill(store)
        let results = try #require(store.results(period: 1_459_468_800)["company-y.example"])
        let report = TLSReport(
            domain: "company-y.example", results: results, periodStart: 1_459_468_800, periodLength: 86400,
            organization: "X", contact: "a@x.example", submitter: "mx.x.example")
        let text = String(
            decoding: TLSReportMessage.render(
                report: report, gzipped: [1, 2, 3], from: "noreply@mx.x.example", to: "r@company-y.example",
                submitter: "mx.x.example", messageID: "id1@mx.x.example", date: Date()), as: UTF8.self)
        #expect(
            text.contains(
                "Subject: Report Domain: company-y.example Submitter: mx.x.example Report-ID: <\(report.reportID)>\r\n")
        )
        #expect(text.contains("TLS-Report-Domain: company-y.example\r\nTLS-Report-Submitter: mx.x.example\r\n"))
        #expect(text.contains("Content-Type: multipart/report; report-type=\"tlsrpt\";"))
        #expect(text.contains("Content-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64"))
        #expect(text.contains("TLS-Required: No\r\n"))
        #expect(text.contains("\r\nAQID\r\n"))
    }

    @Test(arguments: [
        ("https://r.example/v1/tlsrpt", "r.example", 443, "/v1/tlsrpt"),
        ("https://R.example:8443", "r.example", 8443, "/"),
        ("https://r.example?x=1", "r.example", 443, "/?x=1"),
    ])
    func uploadURLs(url: String, host: String, port: Int, path: String) throws {
        let parts = try #require(TLSReportUploader.parse(url, defaultPort: 443))
        #expect(parts.host == host && parts.port == port && parts.path == path)
    }

    @Test(arguments: ["http://r.example/", "https://user@r.example/", "https://r.example:0/", "https://[::1]/"])
    func unusableUploadURLs(url: String) {
        #expect(TLSReportUploader.parse(url, defaultPort: 443) == nil)
    }
}
