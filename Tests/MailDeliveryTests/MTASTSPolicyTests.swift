import Testing

@testable import MailDelivery

@Suite struct MTASTSRecordTests {
    /// TXT answers (one string per record) → the id of the one STSv1 record, nil for none, or
    /// "error" when the domain's policy is unusable (RFC 8461 §3.1).
    static let fixtures: [([String], String?)] = [
        (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
        (["v=STSv1;id=abc"], "abc"),
        (["v=STSv1; id=abc ;"], "abc"),
        (["v=STSv1;\tid=abc;  "], "abc"),
        (["v=spf1 -all", "v=STSv1; id=1"], "1"),
        (["v=STSv1; id=1; ext=value; other.ext_2=x"], "1"),
        (["v=STSv1; ext=value; id=1"], "1"),
        ([], nil),
        (["v=spf1 -all"], nil),
        (["V=STSv1; id=1"], nil),
        (["v=STSv10; id=1"], nil),
        (["v=STSv1; id=1", "v=STSv1; id=2"], "error"),
        (["v=STSv1"], "error"),
        (["v=STSv1;"], "error"),
        (["v=STSv1; id="], "error"),
        (["v=STSv1; id=0123456789012345678901234567890123"], "error"),
        (["v=STSv1; id=has-dash"], "error"),
        (["v=STSv1; id=1; id=2"], "error"),
        (["v=STSv1; id=1;; x=y"], "error"),
        (["v=STSv1; id=1; novalue"], "error"),
        (["v=STSv1; id=1; bad=val;ue"], "error"),
        (["v=STSv1; id=1; _bad=x"], "error"),
        (["v=STSv1 ; id=1"], "1"),
    ]

    @Test(arguments: fixtures)
    func select(_ texts: [String], _ expected: String?) {
        let result: String?
        do throws(TLSPolicyError) {
            result = try MTASTSRecord.select(from: texts)?.id
        } catch {
            result = "error"
        }
        #expect(result == expected, "\(texts)")
    }
}

@Suite struct MTASTSPolicyTests {
    /// Policy text → (mode, mx, max_age), or nil when it must be refused (RFC 8461 §3.2).
    static let fixtures: [(String, MTASTSPolicy?)] = [
        (
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
            MTASTSPolicy(
                mode: .enforce, mx: ["mail.example.com", "*.example.net", "backupmx.example.com"], maxAge: 604_800)
        ),
        // LF line ends, no final line end, spaces, upper-case MX names, a trailing dot.
        (
            "version: STSv1\nmode:testing\nmx:   MX1.Example.COM.  \nmax_age: 86400",
            MTASTSPolicy(mode: .testing, mx: ["mx1.example.com"], maxAge: 86400)
        ),
        // mode none needs no mx; extensions are ignored; the first of a repeated field counts.
        (
            "version: STSv1\nmode: none\nmax_age: 0\nfuture_field: anything goes\nmode: enforce\nmax_age: 5\n",
            MTASTSPolicy(mode: .none, mx: [], maxAge: 0)
        ),
        (
            "version: STSv1\n\nmode: enforce\nmx: a.example\nmax_age: 31557600\n",
            MTASTSPolicy(mode: .enforce, mx: ["a.example"], maxAge: 31_557_600)
        ),
        ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", nil),
        ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n", nil),
        ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", nil),
        ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1e5\n", nil),
        ("version: STSv1\nmode: enforce\nmx: a.example\n", nil),
        ("version: STSv1\nmode: enforce\nmax_age: 86400\n", nil),
        ("version: STSv1\nmode: testing\nmax_age: 86400\n", nil),
        ("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 86400\n", nil),
        ("mode: enforce\nmx: a.example\nmax_age: 86400\n", nil),
        ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 86400\n", nil),
        ("version: STSv1\nmx: a.example\nmax_age: 86400\n", nil),
        ("version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 86400\n", nil),
        ("version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 86400\n", nil),
        ("version: STSv1\nmode: enforce\nmx: -a.example\nmax_age: 86400\n", nil),
        ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 86400\nthis is not a field\n", nil),
        ("<html>Not Found</html>", nil),
        ("", nil),
    ]

    @Test(arguments: fixtures)
    func parse(_ text: String, _ expected: MTASTSPolicy?) {
        let result: MTASTSPolicy?
        do throws(TLSPolicyError) {
            result = try MTASTSPolicy.parse(text)
        } catch {
            result = nil
        }
        #expect(result == expected, "\(text.debugDescription)")
    }

    /// (pattern, host, matches): a wildcard stands for exactly one label (RFC 8461 §4.1).
    static let patterns: [(String, String, Bool)] = [
        ("mail.example.com", "mail.example.com", true),
        ("mail.example.com", "MAIL.Example.com.", true),
        ("mail.example.com", "mail2.example.com", false),
        ("mail.example.com", "x.mail.example.com", false),
        ("*.example.net", "mx1.example.net", true),
        ("*.example.net", "MX1.EXAMPLE.NET.", true),
        ("*.example.net", "example.net", false),
        ("*.example.net", "a.b.example.net", false),
        ("*.example.net", ".example.net", false),
        ("*.example.net", "mx1.example.net.evil.test", false),
        ("*.example.net", "mx1-example.net", false),
    ]

    @Test(arguments: patterns)
    func matches(_ pattern: String, _ host: String, _ expected: Bool) {
        #expect(MTASTSPolicy.pattern(pattern, matches: host) == expected, "\(pattern) ~ \(host)")
    }

    @Test func policyMatchesAnyOfItsPatterns() {
        let policy = MTASTSPolicy(mode: .enforce, mx: ["mail.example.com", "*.example.net"], maxAge: 60)
        #expect(policy.matches(mxHost: "mail.example.com"))
        #expect(policy.matches(mxHost: "b.example.net"))
        #expect(!policy.matches(mxHost: "mail.example.net.attacker.test"))
    }
}
