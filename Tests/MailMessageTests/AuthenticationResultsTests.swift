import Testing

@testable import MailMessage

@Suite struct AuthenticationResultsTests {
    typealias Property = AuthenticationResults.Property

    static let typical = AuthenticationResults(
        authservID: "mx.example.org",
        results: [
            .init(method: "spf", result: "pass", properties: [.smtp("mailfrom", "bounces@example.com")]),
            .init(
                method: "dkim", result: "pass", comment: "2048-bit key",
                properties: [.header("d", "example.com"), .header("s", "s2026"), .header("i", "@example.com")]),
            .init(method: "dmarc", result: "pass", properties: [.header("from", "example.com")]),
            .init(method: "iprev", result: "pass", properties: [.policy("iprev", "2001:db8::1")]),
            .init(method: "auth", result: "pass", properties: [.smtp("auth", "alice@example.org")]),
        ])

    @Test func typicalField() {
        #expect(
            Self.typical.field == """
                Authentication-Results: mx.example.org;\r
                \tspf=pass smtp.mailfrom=bounces@example.com;\r
                \tdkim=pass (2048-bit key) header.d=example.com header.s=s2026\r
                \theader.i=@example.com;\r
                \tdmarc=pass header.from=example.com;\r
                \tiprev=pass policy.iprev="2001:db8::1";\r
                \tauth=pass smtp.auth=alice@example.org\r

                """)
    }

    /// RFC 8601 §2.2: "none" when nothing was checked.
    @Test func noResults() {
        #expect(
            AuthenticationResults(authservID: "mx.example.org", results: []).field
                == "Authentication-Results: mx.example.org; none\r\n")
    }

    @Test func valuesThatAreNotTokensAreQuoted() {
        let results = AuthenticationResults(
            authservID: "my server/1",
            results: [
                .init(
                    method: "spf", result: "fail", reason: "domain of \"x\" does not designate \\ this",
                    properties: [
                        .smtp("mailfrom", "\"john smith\"@example.com"), .smtp("helo", "[192.0.2.1]"),
                        .header("from", "a;b"),
                    ])
            ])
        let field = results.field
        #expect(field.hasPrefix("Authentication-Results: \"my server/1\";\r\n"))
        #expect(field.contains(#"reason="domain of \"x\" does not designate \\ this""#))
        #expect(field.contains(#"smtp.mailfrom="\"john smith\"@example.com""#))
        #expect(field.contains(#"smtp.helo="[192.0.2.1]""#))
        #expect(field.contains(#"header.from="a;b""#))
        // CR and LF in a value cannot start a new field.
        let hostile = AuthenticationResults(
            authservID: "mx", results: [.init(method: "spf", result: "pass", reason: "a\r\nX-Evil: 1")]
        ).field
        #expect(Self.isOneField(hostile))
        #expect(hostile.contains(#"reason="a??X-Evil: 1""#))
    }

    @Test func longResultsAreFolded() {
        let results = AuthenticationResults(
            authservID: "mx.example.org",
            results: [
                .init(
                    method: "dkim", result: "pass", reason: "a long reason that takes a good part of the line",
                    properties: [
                        .header("d", "a-rather-long-subdomain.of-an-example-domain.example.com"),
                        .header("s", "selector-2026-11"), .header("b", "abcdefgh"),
                    ])
            ])
        let lines = results.field.split(separator: "\r\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.count > 2)
        for line in lines.dropFirst() {
            #expect(line.hasPrefix("\t"))
            #expect(line.utf8.count <= 78, "\(line)")
        }
        #expect(results.field.hasSuffix("header.b=abcdefgh\r\n"))
        #expect(Self.isOneField(results.field))
        #expect(Self.isOneField(Self.typical.field))
    }

    /// Lines end in CRLF, every line after the first is a continuation, no other CR or LF.
    static func isOneField(_ field: String) -> Bool {
        let lines = field.split(separator: "\r\n", omittingEmptySubsequences: false)
        return lines.last == "" && lines.dropLast().allSatisfy { !$0.utf8.contains(13) && !$0.utf8.contains(10) }
            && lines.dropFirst().dropLast().allSatisfy { $0.hasPrefix("\t") }
    }

    /// What the builder writes, the reader finds again.
    @Test(arguments: ["mx.example.org", "my server", "a\"quote", "MX.EXAMPLE.ORG"])
    func roundTrip(id: String) {
        for results in [[], Self.typical.results] {
            let field = AuthenticationResults(authservID: id, results: results).field
            let value = String(field.dropFirst("Authentication-Results:".count))
            #expect(AuthenticationResults.authservID(ofFieldValue: value) == id)
        }
    }

    @Test(arguments: [
        (" mx.example.org; spf=pass smtp.mailfrom=example.com", "mx.example.org"),
        ("mx.example.org;spf=pass", "mx.example.org"),
        ("mx.example.org 1; none", "mx.example.org"),
        ("mx.example.org", "mx.example.org"),
        ("MX.Example.ORG ; none", "MX.Example.ORG"),
        ("(forged by nobody) mx.example.org; none", "mx.example.org"),
        ("(nested (comment) \\) here) \"mx.example.org\"; none", "mx.example.org"),
        ("\r\n\t(comment)\r\n mx.example.org;\r\n\tspf=pass", "mx.example.org"),
        ("\"quoted \\\"id\\\"\"; none", "quoted \"id\""),
        ("\"folded\r\n id\"; none", "folded id"),
        ("mx.example.org garbage; spf=pass", "mx.example.org"),
        ("例え.jp; none", "例え.jp"),
    ])
    func readsTheAuthservID(value: String, id: String) {
        #expect(AuthenticationResults.authservID(ofFieldValue: value) == id)
    }

    @Test(arguments: [
        "", "   ", "; spf=pass", "(unterminated comment mx.example.org; none", "\"unterminated; none",
        "(only a comment)", "\"\"; none", "=pass",
    ])
    func noAuthservID(value: String) {
        #expect(AuthenticationResults.authservID(ofFieldValue: value) == nil)
    }
}
