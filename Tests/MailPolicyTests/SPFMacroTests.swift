import Foundation
import Testing

@testable import MailPolicy

/// RFC 7208 §7.4's examples, exactly: the sender strong-bad@email.example.com, the client
/// 192.0.2.3 or 2001:db8::cb01, whose PTR name is mx.example.org.
private func example(client: String = "192.0.2.3") -> SPFMacroValues {
    SPFMacroValues(
        sender: "strong-bad@email.example.com", localPart: "strong-bad", senderDomain: "email.example.com",
        domain: "email.example.com", client: IPAddress(client)!, helo: "mail.client.example",
        receiver: "mx.receiver.example", secondsSince1970: 1_700_000_000, validatedName: "mx.example.org")
}

private func expand(_ text: String, _ values: SPFMacroValues = example(), as use: SPFMacroString.Use = .explanation)
    throws -> String
{
    try SPFMacroString(parsing: Substring(text), explanation: true).expand(values, for: use)
}

@Suite struct SPFMacroTests {
    @Test(arguments: [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ])
    func rfc7208Examples(macro: String, expansion: String) throws {
        #expect(try expand(macro) == expansion)
        #expect(try expand(macro, as: .domainName) == expansion)
    }

    @Test func rfc7208IPv6Example() throws {
        #expect(
            try expand("%{ir}.%{v}._spf.%{d2}", example(client: "2001:db8::cb01"))
                == "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com")
    }

    /// The letters §7.4 does not show.
    @Test func everyOtherLetter() throws {
        #expect(try expand("%{i}") == "192.0.2.3")
        #expect(try expand("%{i}", example(client: "2001:db8::cb01")) == "2.0.0.1.0.d.b.8" + ".0" * 20 + ".c.b.0.1")
        #expect(try expand("%{c}", example(client: "2001:DB8:0::CB01")) == "2001:db8::cb01")
        #expect(try expand("%{c}") == "192.0.2.3")
        #expect(try expand("%{p}") == "mx.example.org")
        #expect(try expand("%{p2}") == "example.org")
        #expect(try expand("%{h}") == "mail.client.example")
        #expect(try expand("%{r}") == "mx.receiver.example")
        #expect(try expand("%{t}") == "1700000000")
        #expect(try expand("%{v}", example(client: "2001:db8::cb01")) == "ip6")
        #expect(try expand("%{v}") == "in-addr")
    }

    @Test func escapesDelimitersAndURLEscaping() throws {
        #expect(try expand("%%%_%-") == "% %20")
        var values = example()
        values.localPart = "~jack&jill=up-a_b3.c"
        values.sender = "~jack&jill=up-a_b3.c@email.example.com"
        #expect(try expand("%{L}", values) == "~jack%26jill%3Dup-a_b3.c")
        #expect(try expand("%{S}", values) == "~jack%26jill%3Dup-a_b3.c%40email.example.com")
        #expect(try expand("%{Dr}") == "com.example.email")
        values.localPart = "foo-bar+zip+quux"
        #expect(try expand("%{l2r+-}", values) == "bar.foo")
        #expect(try expand("%{l+}", values) == "foo-bar.zip.quux")
        #expect(try expand("%{l=,/_+-.}", values) == "foo.bar.zip.quux")
        // More parts asked than there are: all of them.
        #expect(try expand("%{d99}") == "email.example.com")
        #expect(try expand("%{d99999999999999999999999}") == "email.example.com")
        values.localPart = "caf\u{E9}"
        #expect(try expand("%{L}", values) == "caf%C3%A9")
    }

    /// §7.3: names longer than 253 characters lose labels from the left.
    @Test func domainNamesAreTruncated() throws {
        var values = example()
        values.senderDomain = String(repeating: "abcdefghi.", count: 30) + "example"
        let name = try expand("%{o}.", values, as: .domainName)
        #expect(name.utf8.count <= 253)
        #expect(name.hasSuffix("abcdefghi.example"))
        #expect(name.hasPrefix("abcdefghi."))
        #expect(String(repeating: "abcdefghi.", count: 30).hasSuffix(String(name.dropLast("example".count))))
        // A single label too long to keep leaves nothing to look up.
        values.senderDomain = String(repeating: "x", count: 300)
        #expect(try expand("%{o}", values, as: .domainName) == "")
        // The trailing dot of a name is dropped, that of explanation text is not.
        #expect(try expand("%{d}.", as: .domainName) == "email.example.com")
        #expect(try expand("%{d}.") == "email.example.com.")
    }

    /// Expansion is bounded whatever the record: a hostile record cannot make huge strings.
    @Test func expansionIsBounded() throws {
        var values = example()
        values.sender = String(repeating: "s", count: 900) + "@example.com"
        let record = String(repeating: "%{s}", count: 2_000)
        #expect(try expand(record, values).utf8.count == SPFLimits.explanationLength)
        #expect(try expand(record + ".example.com", values, as: .domainName).utf8.count <= 253)
    }

    @Test(arguments: [
        "%{x}", "%(ir).sbl.example.com", "foo%.example.com", "foo%", "%{d0}", "%{d", "%{dr2}", "%{d;}",
        "%{}", "a\u{7F}b", "caf\u{E9}",
    ])
    func syntaxErrors(text: String) {
        #expect(throws: SPFSyntaxError.self) { try SPFMacroString(parsing: Substring(text), explanation: true) }
    }

    @Test func explanationOnlyLetters() {
        for letter in ["c", "r", "t", "C"] {
            #expect(throws: SPFSyntaxError.self) { try SPFMacroString(parsing: "%{\(letter)}.example.com") }
            #expect(throws: Never.self) { try SPFMacroString(parsing: "%{\(letter)}", explanation: true) }
        }
        // Spaces only in explanations.
        #expect(throws: SPFSyntaxError.self) { try SPFMacroString(parsing: "a b") }
    }

    // domain-spec = macro-string domain-end; domain-end = ( "." toplabel [ "." ] ) / macro-expand
    @Test(arguments: [
        ("example.com", true), ("example.com.", true), ("%{d}", true), ("foo.%{d}", true), ("%{d}%%", true),
        ("_spf.example.xn--zckzah", true), ("foo:bar/baz.example.com", true), ("a.123-4", true), (".com", true),
        ("museum", false), ("museum.", false), ("example.123", false), ("example.-com", false),
        ("example.com-", false), ("example.com:8080", false), ("example.com..", false), ("", false),
        ("%{d}com", false), ("foo.%{d}.", false),
    ])
    func domainSpecs(text: String, valid: Bool) {
        if valid {
            #expect((try? SPFMacroString.domainSpec(Substring(text))) != nil)
        } else {
            #expect(throws: SPFSyntaxError.self) { try SPFMacroString.domainSpec(Substring(text)) }
        }
    }
}

@Suite struct SPFRecordTests {
    @Test(arguments: [
        ("v=spf1", true), ("V=SpF1 -ALL", true), ("v=spf1 ", true), ("v=spf10", false), ("v=spf1-all", false),
        ("spf1", false), ("", false), ("v=spf", false), (" v=spf1", false),
    ])
    func selection(text: String, isSPF: Bool) {
        #expect(SPFRecord.isSPFRecord(text) == isSPF)
    }

    @Test func parsesEveryTerm() throws {
        let record = try SPFRecord(
            parsing:
                "v=spf1 +all -include:_spf.example.com ~a ?a:%{d}/24//64 mx/30 mx:mx.example.com//48 ptr "
                + "ptr:example.net ip4:192.0.2.0/24 ip6:2001:db8::/32 ip4:192.0.2.1 exists:%{i}.bl.example.org "
                + "redirect=_spf.example.com exp=explain._spf.%{d} other=%{c}")
        let mechanisms = record.directives.map(\.mechanism)
        #expect(mechanisms.count == 12)
        #expect(mechanisms[0] == .all)
        #expect(record.directives[1].qualifier == .fail)
        #expect(record.directives[2].qualifier == .softfail)
        #expect(record.directives[3].qualifier == .neutral)
        guard case .a(nil, 32, 128) = mechanisms[2] else { Issue.record("\(mechanisms[2])"); return }
        guard case .a(.some(_), 24, 64) = mechanisms[3] else { Issue.record("\(mechanisms[3])"); return }
        guard case .mx(nil, 30, 128) = mechanisms[4] else { Issue.record("\(mechanisms[4])"); return }
        guard case .mx(.some(_), 32, 48) = mechanisms[5] else { Issue.record("\(mechanisms[5])"); return }
        #expect(mechanisms[6] == .ptr(nil))
        #expect(mechanisms[8] == .ip4(IPAddress("192.0.2.0")!, prefix: 24))
        #expect(mechanisms[9] == .ip6(IPAddress("2001:db8::")!, prefix: 32))
        #expect(mechanisms[10] == .ip4(IPAddress("192.0.2.1")!, prefix: 32))
        #expect(record.redirect?.description == "_spf.example.com")
        #expect(record.explanation?.description == "explain._spf.%{d}")
        #expect(record.hasAll)
        #expect(record.directives[1].text == "-include:_spf.example.com")
    }

    @Test(arguments: [
        "v=spf1 ip4:1.2.3.4/33", "v=spf1 ip4:1.2.3.4/032", "v=spf1 ip4:1.2.3", "v=spf1 ip4:1.2.3.4:8080",
        "v=spf1 ip4:01.2.3.4", "v=spf1 ip4:1.2.3.4//32", "v=spf1 ip4", "v=spf1 ip4:::1", "v=spf1 ip6:1.2.3.4",
        "v=spf1 ip6::CAFE::BABE", "v=spf1 ip6:::1/129", "v=spf1 ip6:::1//33", "v=spf1 a:foo.%{x}",
        "v=spf1 a/33", "v=spf1 a//129", "v=spf1 a/24/64", "v=spf1 a:", "v=spf1 a:museum", "v=spf1 mx:abc.123",
        "v=spf1 ptr/0", "v=spf1 ptr:", "v=spf1 include", "v=spf1 include:", "v=spf1 exists",
        "v=spf1 exists:foo.com/24", "v=spf1 -all.", "v=spf1 all/8", "v=spf1 foo", "v=spf1 redirect:x.com",
        "v=spf1 =all", "v=spf1 1up=foo", "v=spf1 foo=%abc", "v=spf1 exp= -all", "v=spf1 exp=-all",
        "v=spf1 redirect=a.com redirect=b.com", "v=spf1 exp=a.com exp=b.com", "v=spf1 a:foo.com\u{0}",
        "v=spf1 a:ctrl.example.com\rptr", "v=spf1 \u{96}all", "v=spf1 a:%{c}.com", "v=spf1 -a=foo",
    ])
    func syntaxErrors(record: String) {
        #expect(throws: SPFSyntaxError.self) { try SPFRecord(parsing: record) }
    }

    @Test(arguments: [
        "v=spf1 moo.cow-far_out=man:dog/cat -all", "v=spf1 default=pass", "v=spf1 a=foo.com",
        "v=spf1 include=foo", "v=spf1 x=%{c}%{r}%{t}", "v=spf1 a:foo:bar/baz.example.com",
        "v=spf1 ip6:::ffff:1.2.3.4", "v=spf1 ip6:::1.1.1.1/0", "v=spf1 a:foo.example.xn--zckzah",
        "v=spf1 exists:%{l}%%%_%-.example.com", "v=spf1 all -all",
    ])
    func validRecords(record: String) {
        #expect(throws: Never.self) { try SPFRecord(parsing: record) }
    }

    @Test(arguments: [
        ("192.0.2.1", "192.0.2.0", 24, true), ("192.0.3.1", "192.0.2.0", 24, false),
        ("192.0.2.1", "0.0.0.0", 0, true), ("192.0.2.1", "192.0.2.1", 32, true), ("192.0.2.2", "192.0.2.1", 32, false),
        ("2001:db8::1", "2001:db8::", 32, true), ("2001:db9::1", "2001:db8::", 32, false),
        ("2001:db8::1", "::", 0, true), ("2001:db8::1", "2001:db8::1", 128, true),
        ("2001:db8::2", "2001:db8::1", 128, false), ("2001:db8::1:0:1", "2001:db8::", 80, true),
        ("2001:db8::1:0:1", "2001:db8::", 96, false), ("192.0.2.1", "::", 0, false),
    ])
    func prefixes(address: String, network: String, prefix: Int, inside: Bool) {
        #expect(IPAddress(address)!.sharesPrefix(prefix, with: IPAddress(network)!) == inside)
    }
}

@Suite struct ReceivedSPFFieldTests {
    @Test func rfc7208Example() {
        let verdict = SPFVerdict(
            result: .pass, identity: .mailfrom, domain: "example.com", mechanism: "ip4:192.0.2.0/24",
            client: "192.0.2.1", sender: "myname@example.com", helo: "foo.example.com", receiver: "mybox.example.org")
        #expect(
            verdict.receivedSPFField() == """
                Received-SPF: pass (mybox.example.org: domain of myname@example.com designates\r
                \t192.0.2.1 as permitted sender) client-ip=192.0.2.1;\r
                \tenvelope-from="myname@example.com"; helo=foo.example.com;\r
                \treceiver=mybox.example.org; identity=mailfrom; mechanism="ip4:192.0.2.0/24";\r

                """)
    }

    @Test func everyResultHasItsWordsAndLinesStayShort() {
        for result in SPFResult.allCases {
            let verdict = SPFVerdict(
                result: result, identity: .helo, domain: "mail.example.com",
                problem: result == .permerror ? "more than 10 DNS-querying terms (RFC 7208 §4.6.4)" : nil,
                client: "2001:db8::1", sender: "", helo: "mail.example.com", receiver: "mx.example.org")
            let field = verdict.receivedSPFField()
            #expect(field.hasPrefix("Received-SPF: \(result.rawValue) (mx.example.org: "))
            #expect(field.hasSuffix(";\r\n"))
            #expect(field.contains("client-ip=\"2001:db8::1\";"))
            #expect(field.contains("identity=helo;"))
            #expect(!field.contains("envelope-from"))
            for line in field.components(separatedBy: "\r\n").dropLast() {
                #expect(line.utf8.count <= 78, "\(line)")
                #expect(!line.utf8.contains(13) && !line.utf8.contains(10))
            }
            if result == .permerror { #expect(field.contains("problem=\"more than 10 DNS-querying terms")) }
        }
    }

    /// Client-supplied text cannot end the field, unbalance the comment or break a quoted value.
    @Test func hostileTextIsQuoted() {
        let verdict = SPFVerdict(
            result: .fail, identity: .mailfrom, domain: "example.com", client: "192.0.2.1",
            sender: "a\"b)\r\nX-Evil: 1@example.com", helo: "evil (helo)\\", receiver: "mx")
        let field = verdict.receivedSPFField()
        let lines = field.split(separator: "\r\n", omittingEmptySubsequences: false)
        #expect(lines.last == "")
        #expect(lines.dropLast().allSatisfy { !$0.utf8.contains(13) && !$0.utf8.contains(10) })
        #expect(lines.dropFirst().dropLast().allSatisfy { $0.hasPrefix("\t") })
        #expect(field.contains(#"envelope-from="a\"b)??X-Evil: 1@example.com";"#))
        #expect(field.contains(#"helo="evil (helo)\\";"#))
        #expect(field.contains(#"a"b\)??X-Evil:"#))
    }
}

extension String {
    fileprivate static func * (text: String, count: Int) -> String { String(repeating: text, count: count) }
}
