import DNSClient
import Foundation
import Testing

@testable import MailPolicy

/// A small list in the real format: both sections, wildcards, exceptions, IDN rules in UTF-8.
private let listText = """
    // This Source Code Form is subject to the terms of the Mozilla Public License.
    // ===BEGIN ICANN DOMAINS===
    com
    uk
    co.uk
    jp
    ac.jp
    kyoto.jp
    ide.kyoto.jp
    *.kobe.jp
    !city.kobe.jp
    *.ck
    !www.ck
    cn
    com.cn
    公司.cn
    中国
    us
    ak.us
    k12.ak.us
    *.mm

    // ===END ICANN DOMAINS===
    // ===BEGIN PRIVATE DOMAINS===
    // CentralNic : https://www.centralnic.com/
    uk.com
    github.io  with a comment after the rule
    *.sch.*
    // ===END PRIVATE DOMAINS===
    """

private let list = PublicSuffixList(text: listText)

@Suite struct PublicSuffixListTests {
    /// Cases from the list's own test file (publicsuffix.org tests.txt, `checkPublicSuffix`):
    /// the domain and its registrable domain, nil when it has none.
    static let psl: [(String, String?)] = [
        ("COM", nil), ("example.COM", "example.com"), ("WwW.example.COM", "example.com"),
        (".com", nil), (".example", nil), (".example.com", nil), (".example.example", nil),
        ("example", nil), ("example.example", "example.example"), ("b.example.example", "example.example"),
        ("a.b.example.example", "example.example"),
        ("com", nil), ("example.com", "example.com"), ("b.example.com", "example.com"),
        ("a.b.example.com", "example.com"), ("uk.com", nil), ("example.uk.com", "example.uk.com"),
        ("b.example.uk.com", "example.uk.com"), ("a.b.example.uk.com", "example.uk.com"),
        ("mm", nil), ("c.mm", nil), ("b.c.mm", "b.c.mm"), ("a.b.c.mm", "b.c.mm"),
        ("jp", nil), ("test.jp", "test.jp"), ("www.test.jp", "test.jp"), ("ac.jp", nil),
        ("test.ac.jp", "test.ac.jp"), ("www.test.ac.jp", "test.ac.jp"), ("kyoto.jp", nil),
        ("test.kyoto.jp", "test.kyoto.jp"), ("ide.kyoto.jp", nil), ("b.ide.kyoto.jp", "b.ide.kyoto.jp"),
        ("a.b.ide.kyoto.jp", "b.ide.kyoto.jp"), ("c.kobe.jp", nil), ("b.c.kobe.jp", "b.c.kobe.jp"),
        ("a.b.c.kobe.jp", "b.c.kobe.jp"), ("city.kobe.jp", "city.kobe.jp"), ("www.city.kobe.jp", "city.kobe.jp"),
        ("ck", nil), ("test.ck", nil), ("b.test.ck", "b.test.ck"), ("a.b.test.ck", "b.test.ck"),
        ("www.ck", "www.ck"), ("www.www.ck", "www.ck"),
        ("us", nil), ("test.us", "test.us"), ("www.test.us", "test.us"), ("ak.us", nil),
        ("test.ak.us", "test.ak.us"), ("www.test.ak.us", "test.ak.us"), ("k12.ak.us", nil),
        ("test.k12.ak.us", "test.k12.ak.us"), ("www.test.k12.ak.us", "test.k12.ak.us"),
        // IDN labels: looked up as A-labels, answered as A-labels.
        ("食狮.com.cn", "xn--85x722f.com.cn"), ("食狮.公司.cn", "xn--85x722f.xn--55qx5d.cn"),
        ("www.食狮.公司.cn", "xn--85x722f.xn--55qx5d.cn"), ("shishi.公司.cn", "shishi.xn--55qx5d.cn"),
        ("公司.cn", nil), ("食狮.中国", "xn--85x722f.xn--fiqs8s"), ("www.食狮.中国", "xn--85x722f.xn--fiqs8s"),
        ("shishi.中国", "shishi.xn--fiqs8s"), ("中国", nil),
        ("xn--85x722f.com.cn", "xn--85x722f.com.cn"), ("xn--85x722f.xn--55qx5d.cn", "xn--85x722f.xn--55qx5d.cn"),
        ("www.xn--85x722f.xn--55qx5d.cn", "xn--85x722f.xn--55qx5d.cn"),
        ("shishi.xn--55qx5d.cn", "shishi.xn--55qx5d.cn"),
        ("xn--55qx5d.cn", nil), ("xn--85x722f.xn--fiqs8s", "xn--85x722f.xn--fiqs8s"),
        ("www.xn--85x722f.xn--fiqs8s", "xn--85x722f.xn--fiqs8s"), ("shishi.xn--fiqs8s", "shishi.xn--fiqs8s"),
        ("xn--fiqs8s", nil),
    ]

    @Test func officialCasesWithTheDebianList() throws {
        let path = PublicSuffixList.debianPath
        try #require(FileManager.default.fileExists(atPath: path), "install Debian's publicsuffix package")
        let system = try PublicSuffixList(contentsOfFile: path)
        #expect(system.count > 5_000)
        for (domain, registrable) in Self.psl {
            #expect(system.registrableDomain(domain) == registrable, "\(domain)")
        }
        // Rules that only the real list has.
        #expect(system.registrableDomain("www.example.github.io") == "example.github.io")
        #expect(system.registrableDomain("mail.example.co.uk") == "example.co.uk")
        #expect(system.publicSuffix(of: "www.example.co.uk") == "co.uk")
    }

    @Test func sameCasesWithASmallList() {
        for (domain, registrable) in Self.psl {
            #expect(list.registrableDomain(domain) == registrable, "\(domain)")
        }
        #expect(list.registrableDomain("x.example.github.io") == "example.github.io")
        // A trailing dot is the same name.
        #expect(list.registrableDomain("www.example.com.") == "example.com")
        // Malformed rules (a wildcard inside) are skipped, comments after a rule ignored.
        #expect(list.registrableDomain("a.sch.uk") == "sch.uk")
        #expect(list.count == 21)
    }

    @Test func suffixesAndOrganizationalDomains() {
        #expect(list.publicSuffix(of: "www.example.co.uk") == "co.uk")
        #expect(list.publicSuffix(of: "example.unlisted") == "unlisted")
        #expect(list.publicSuffix(of: "a..b") == nil)
        // RFC 7489 §3.2: the registrable domain, or for a public suffix the name itself.
        #expect(list.organizationalDomain(of: "mail.Example.CO.UK") == "example.co.uk")
        #expect(list.organizationalDomain(of: "co.uk") == "co.uk")
        #expect(list.organizationalDomain(of: "localhost") == "localhost")
        #expect(list.organizationalDomain(of: "") == nil)
        #expect(list.organizationalDomain(of: String(repeating: "a", count: 64) + ".com") == nil)
    }

    @Test(arguments: [
        ("bücher", "bcher-kva"), ("例え", "r8jz45g"), ("中国", "fiqs8s"), ("公司", "55qx5d"), ("食狮", "85x722f"),
        ("münchen", "mnchen-3ya"), ("ü", "tda"),
    ])
    func punycode(label: String, encoded: String) {
        #expect(Punycode.encode(label) == encoded)
    }

    @Test func asciiNames() {
        #expect(Punycode.asciiName("Bücher.Example") == "xn--bcher-kva.example")
        #expect(Punycode.asciiName("user.例え.jp") == "user.xn--r8jz45g.jp")
        #expect(Punycode.asciiName(String(repeating: "ü", count: 70) + ".de") == nil)
    }
}

@Suite struct DMARCRecordTests {
    @Test func parsesEveryTag() throws {
        let record = try DMARCRecord(
            parsing:
                "v=DMARC1; p=Reject ;sp=quarantine; pct=25; adkim=s; aspf=S; "
                + "rua=mailto:a@example.com, mailto:b@example.com!10m; ruf=mailto:f@example.com!500; "
                + "fo=1:d; rf=afrf; ri=3600; future=tag;")
        #expect(record.policy == .reject)
        #expect(record.subdomainPolicy == .quarantine)
        #expect(record.percent == 25)
        #expect(record.dkimAlignment == .strict)
        #expect(record.spfAlignment == .strict)
        #expect(
            record.aggregateReportURIs == [
                .init(uri: "mailto:a@example.com"), .init(uri: "mailto:b@example.com", maximumSize: 10 << 20),
            ])
        #expect(record.failureReportURIs == [.init(uri: "mailto:f@example.com", maximumSize: 500)])
        #expect(record.failureReportingOptions == ["1", "d"])
        #expect(record.reportFormats == ["afrf"])
        #expect(record.reportInterval == 3600)
        #expect(!record.policyImplied)
    }

    @Test func defaults() throws {
        let record = try DMARCRecord(parsing: "v=DMARC1;p=none")
        #expect(record.policy == DMARCRecord.Policy.none)
        #expect(record.subdomainPolicy == nil)
        #expect(record.percent == 100)
        #expect(record.dkimAlignment == .relaxed)
        #expect(record.spfAlignment == .relaxed)
        #expect(record.aggregateReportURIs.isEmpty)
        #expect(record.failureReportingOptions == ["0"])
        #expect(record.reportInterval == 86_400)
    }

    /// (record, its policy, pct) — nil policy: the record gives no DMARC processing.
    @Test(arguments: [
        ("v=DMARC1; p=reject", DMARCRecord.Policy.reject, 100),
        ("V = DMARC1 ;\tP = quarantine ;", .quarantine, 100),
        ("v=DMARC1; rua=mailto:r@example.com; p=reject", .reject, 100),
        ("v=DMARC1; p=reject; pct=0", .reject, 0),
        ("v=DMARC1; p=reject; pct=150", .reject, 100),
        ("v=DMARC1; p=reject; pct=-5", .reject, 100),
        ("v=DMARC1; p=reject; pct=1000", .reject, 100),
        ("v=DMARC1; p=reject; adkim=x; aspf=", .reject, 100),
        ("v=DMARC1; p=reject; pct=10; pct=90", .reject, 10),
        // §6.6.3 step 6: no valid p (or an invalid sp), but a valid rua: p=none.
        ("v=DMARC1; rua=mailto:r@example.com", .none, 100),
        ("v=DMARC1; p=bogus; rua=mailto:r@example.com", .none, 100),
        ("v=DMARC1; p=reject; sp=bogus; rua=bad uri, mailto:r@example.com", .none, 100),
    ])
    func usable(text: String, policy: DMARCRecord.Policy, percent: Int) throws {
        let record = try DMARCRecord(parsing: text)
        #expect(record.policy == policy)
        #expect(record.percent == percent)
        // In this table, every p=none stands in for an invalid or missing policy.
        #expect(record.policyImplied == (policy == .none))
    }

    @Test(arguments: [
        ("v=DMARC1", DMARCRecordError.invalidPolicy("no p tag")),
        ("v=DMARC1;", .invalidPolicy("no p tag")),
        ("v=DMARC1; p=bogus", .invalidPolicy("invalid p tag \"bogus\"")),
        ("v=DMARC1; p=reject; sp=bogus", .invalidPolicy("invalid sp tag \"bogus\"")),
        ("v=DMARC1; p=none; p=reject", .invalidPolicy("invalid p tag \"reject\"")),
        ("v=DMARC1; p=reject; sp=bogus; rua=not a uri", .invalidPolicy("invalid sp tag \"bogus\"")),
        ("v=DMARC1; p=bogus; rua=:nothing", .invalidPolicy("invalid p tag \"bogus\"")),
        ("v=dmarc1; p=reject", .notDMARC),
        ("v=DMARC10; p=reject", .notDMARC),
        ("p=reject; v=DMARC1", .notDMARC),
        ("v=DMARC1 p=reject", .notDMARC),
        ("v=spf1 -all", .notDMARC),
        ("", .notDMARC),
    ])
    func unusable(text: String, error: DMARCRecordError) {
        #expect(throws: error) { try DMARCRecord(parsing: text) }
    }

    @Test func reportURIs() {
        #expect(
            DMARCRecord.reportURI("mailto:a@example.com!20k") == .init(uri: "mailto:a@example.com", maximumSize: 20_480)
        )
        #expect(
            DMARCRecord.reportURI("https://example.com/dmarc!1")
                == .init(uri: "https://example.com/dmarc", maximumSize: 1))
        #expect(DMARCRecord.reportURI("mailto:a@example.com!99999999999t")?.maximumSize == .max)
        #expect(DMARCRecord.reportURI("mailto:a!b@example.com") == .init(uri: "mailto:a!b@example.com"))
        #expect(DMARCRecord.reportURI("mailto:") == nil)
        #expect(DMARCRecord.reportURI("a@example.com") == nil)
        #expect(DMARCRecord.reportURI("1http:x") == nil)
        #expect(DMARCRecord.reportURI("mailto:a b@example.com") == nil)
    }
}

/// The DMARC records behind the evaluation tests.
private let dmarcZone = SenderAuthZone([
    "_dmarc.example.co.uk": [.txt("v=DMARC1; p=reject; sp=quarantine"), .txt("an unrelated TXT record")],
    "_dmarc.own.example.co.uk": [.txt("v=DMARC1; p=none")],
    "_dmarc.other.example.co.uk": [.txt("not DMARC")],
    "_dmarc.strict.com": [.txt("v=DMARC1; p=reject; adkim=s; aspf=s")],
    "_dmarc.pct.com": [.txt("v=DMARC1; p=reject; pct=20")],
    "_dmarc.pctq.com": [.txt("v=DMARC1; p=quarantine; pct=50")],
    "_dmarc.pct0.com": [.txt("v=DMARC1; p=reject; pct=0")],
    "_dmarc.multi.com": [.txt("v=DMARC1; p=reject"), .txt("v=DMARC1; p=none")],
    "_dmarc.a.multi2.com": [.txt("v=DMARC1; p=none"), .txt("v=DMARC1; p=none; pct=5")],
    "_dmarc.multi2.com": [.txt("v=DMARC1; p=reject")],
    "_dmarc.invalid.com": [.txt("v=DMARC1; p=nonsense")],
    "_dmarc.rua-only.com": [.txt("v=DMARC1; rua=mailto:dmarc@rua-only.com")],
    "_dmarc.temp.com": [.timeout],
    "_dmarc.temp2.com": [.timeout],
    "_dmarc.xn--bcher-kva.com": [.txt("v=DMARC1; p=reject")],
])

@Suite struct DMARCEvaluatorTests {
    let evaluator = DMARCEvaluator(resolver: dmarcZone, publicSuffixList: list)

    func evaluate(
        _ from: String, spf: (String, SPFResult)? = nil, dkim: [String] = [], sample: Int = 0
    ) async -> DMARCVerdict {
        await evaluator.evaluate(
            fromDomain: from, spf: spf.map { (domain: $0.0, result: $0.1) }, dkimPassingDomains: dkim, sample: sample)
    }

    @Test func policyAtTheFromDomain() async {
        let verdict = await evaluate("Example.CO.UK.")
        #expect(verdict.result == .fail)
        #expect(verdict.fromDomain == "example.co.uk")
        #expect(verdict.policyDomain == "example.co.uk")
        #expect(verdict.requestedPolicy == .reject)
        #expect(verdict.disposition == .reject)
        #expect(verdict.record?.subdomainPolicy == .quarantine)
    }

    /// §6.6.3: a subdomain without its own record gets the Organizational Domain's, with sp.
    @Test func discoveryViaTheOrganizationalDomain() async {
        let verdict = await evaluate("mail.example.co.uk")
        #expect(verdict.policyDomain == "example.co.uk")
        #expect(verdict.requestedPolicy == .quarantine)
        #expect(verdict.disposition == .quarantine)
        // A TXT record at _dmarc.<from> that is not DMARC does not count.
        #expect(await evaluate("other.example.co.uk").policyDomain == "example.co.uk")
        // A subdomain's own record wins (and its p, not the parent's sp).
        let own = await evaluate("own.example.co.uk")
        #expect(own.policyDomain == "own.example.co.uk")
        #expect(own.requestedPolicy == DMARCRecord.Policy.none)
        #expect(own.disposition == DMARCRecord.Policy.none)
        #expect(own.result == .fail)
        // Without sp, subdomains get p.
        #expect(await evaluate("a.b.multi2.com").requestedPolicy == .reject)
    }

    @Test func relaxedAlignment() async {
        let dkim = await evaluate("example.co.uk", dkim: ["other.test", "Mail.Example.co.uk"])
        #expect(dkim.result == .pass)
        #expect(dkim.dkimAligned && !dkim.spfAligned)
        #expect(dkim.disposition == DMARCRecord.Policy.none)
        let spf = await evaluate("news.example.co.uk", spf: ("bounces.example.co.uk", .pass))
        #expect(spf.result == .pass)
        #expect(spf.spfAligned && !spf.dkimAligned)
        // Sharing only the public suffix is not alignment.
        #expect(await evaluate("example.co.uk", dkim: ["evil.co.uk"]).result == .fail)
        // SPF must have passed.
        for result in [SPFResult.fail, .softfail, .neutral, .none, .temperror, .permerror] {
            #expect(await evaluate("example.co.uk", spf: ("example.co.uk", result)).result == .fail)
        }
    }

    @Test func strictAlignment() async {
        #expect(await evaluate("strict.com", dkim: ["mail.strict.com"]).result == .fail)
        #expect(await evaluate("strict.com", spf: ("mail.strict.com", .pass)).result == .fail)
        #expect(await evaluate("strict.com", dkim: ["STRICT.com."]).result == .pass)
        #expect(await evaluate("strict.com", spf: ("strict.com", .pass)).result == .pass)
        let both = await evaluate("strict.com", spf: ("strict.com", .pass), dkim: ["strict.com"])
        #expect(both.spfAligned && both.dkimAligned)
    }

    /// §6.6.4: outside the pct sample, the next policy down.
    @Test(arguments: [
        ("pct.com", 0, DMARCRecord.Policy.reject, false), ("pct.com", 19, .reject, false),
        ("pct.com", 20, .quarantine, true), ("pct.com", 99, .quarantine, true),
        ("pctq.com", 49, .quarantine, false), ("pctq.com", 50, .none, true),
        ("pct0.com", 0, .quarantine, true), ("strict.com", 99, .reject, false),
    ])
    func percentSampling(domain: String, sample: Int, disposition: DMARCRecord.Policy, sampledOut: Bool) async {
        let verdict = await evaluate(domain, sample: sample)
        #expect(verdict.result == .fail)
        #expect(verdict.disposition == disposition)
        #expect(verdict.sampledOut == sampledOut)
        // A passing message is never sampled.
        let pass = await evaluate(domain, dkim: [domain], sample: sample)
        #expect(pass.disposition == DMARCRecord.Policy.none && !pass.sampledOut)
    }

    @Test func noPolicy() async {
        for from in ["nothing.com", "multi.com", "x.multi.com", "invalid.com", "a.multi2.com"] {
            let verdict = await evaluate(from)
            #expect(verdict.result == DMARCResult.none, "\(from)")
            #expect(verdict.disposition == DMARCRecord.Policy.none)
            #expect(verdict.problem != nil)
        }
        #expect(await evaluate("multi.com").problem?.contains("2 DMARC records") == true)
        // §6.6.3 step 6.1: p=none in place of an invalid p when rua is valid.
        let rua = await evaluate("rua-only.com")
        #expect(rua.result == .fail)
        #expect(rua.record?.policyImplied == true)
        #expect(rua.disposition == DMARCRecord.Policy.none)
    }

    @Test func temporaryErrors() async {
        #expect(await evaluate("temp.com").result == .temperror)
        // The Organizational Domain's lookup fails too.
        let org = await evaluate("x.temp2.com")
        #expect(org.result == .temperror)
        #expect(org.problem?.contains("_dmarc.temp2.com") == true)
    }

    @Test func internationalizedFromDomain() async {
        let verdict = await evaluate("bücher.com")
        #expect(verdict.fromDomain == "xn--bcher-kva.com")
        #expect(verdict.requestedPolicy == .reject)
    }

    @Test func invalidFromDomain() async {
        for from in ["", ".", "a..b", "[192.0.2.1]", "a b.com"] {
            #expect(await evaluate(from).result == .permerror, "\(from)")
        }
    }
}

@Suite struct AuthorDomainTests {
    @Test(arguments: [
        (["Alice <alice@Example.COM>"], "example.com"),
        (["alice@example.com (Alice)"], "example.com"),
        (["\"Smith, John\" <john@example.com>"], "example.com"),
        (["\"a@b\"@example.com"], "example.com"),
        (["Alice\r\n <alice@example.com.>"], "example.com"),
        (["(comment <x@y.test>) a@example.com"], "example.com"),
        (["user@bücher.de"], "xn--bcher-kva.de"),
    ])
    func oneMailbox(values: [String], domain: String) {
        #expect(DMARCEvaluator.authorDomain(fromFieldValues: values) == .success(domain))
    }

    @Test(arguments: [
        ([], DMARCAuthorError.noFromField),
        (["a@example.com", "b@example.com"], .severalFromFields(2)),
        (["a@example.com, b@example.org"], .mailboxCount(2)),
        (["undisclosed-recipients:;"], .mailboxCount(0)),
        (["user"], .mailboxCount(0)),
        ([""], .mailboxCount(0)),
        (["user@[192.0.2.1]"], .invalidDomain("user@[192.0.2.1]")),
        (["user@"], .invalidDomain("user@")),
    ])
    func noSingleAuthorDomain(values: [String], error: DMARCAuthorError) {
        #expect(DMARCEvaluator.authorDomain(fromFieldValues: values) == .failure(error))
    }
}
