import DNSClient
import Foundation
import Testing

@testable import MailPolicy

/// An in-memory DNS zone for the SPF and DMARC tests. A name missing from the zone is NXDOMAIN,
/// a name without records of the asked type NODATA; `.timeout` makes every query for the name
/// fail temporarily and `.silent` makes it wait (until cancelled) without answering.
final class SenderAuthZone: Resolver, @unchecked Sendable {
    enum Record {
        case txt(String)
        /// A TXT record of several character-strings, joined without spaces (RFC 7208 §3.3).
        case txtParts([String])
        case a(String)
        case aaaa(String)
        case mx(UInt16, String)
        case ptr(String)
        case timeout
        case silent
    }

    let zone: [String: [Record]]
    private let lock = NSLock()
    private var asked: [String] = []

    init(_ zone: [String: [Record]]) {
        self.zone = Dictionary(zone.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: +)
    }

    /// Every question so far, as "name TYPE".
    var queries: [String] { lock.withLock { asked } }

    /// The name under in-addr.arpa or ip6.arpa that holds the PTR records of `address`.
    static func reverse(_ address: String) -> String {
        let name = IPv4Address(address)?.reverseName ?? IPv6Address(address)!.reverseName
        return name.labels.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ".")
    }

    func query(_ name: DNSName, type: DNSRecordType) async throws(DNSError) -> DNSAnswer<[DNSRecordData]> {
        // The raw labels: names built by macros may hold spaces and "%", which `description` escapes.
        let key = name.labels.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ".").lowercased()
        lock.withLock { asked.append("\(key) \(type)") }
        guard let records = zone[key] else { throw .nameNotFound }
        var found: [DNSRecordData] = []
        for record in records {
            switch (record, type) {
            case (.timeout, _):
                throw .temporary("timeout")
            case (.silent, _):
                try? await Task.sleep(for: .seconds(3600))
                throw .temporary("no answer")
            case (.txt(let text), .txt): found.append(.txt([Array(text.utf8)]))
            case (.txtParts(let parts), .txt): found.append(.txt(parts.map { Array($0.utf8) }))
            case (.a(let address), .a): found.append(.a(IPv4Address(address)!))
            case (.aaaa(let address), .aaaa): found.append(.aaaa(IPv6Address(address)!))
            case (.mx(let preference, let exchange), .mx):
                found.append(.mx(preference: preference, exchange: exchange == "." ? .root : try! DNSName(exchange)))
            case (.ptr(let target), .ptr): found.append(.ptr(try! DNSName(target)))
            default: continue
            }
        }
        guard !found.isEmpty else { throw .noData }
        return DNSAnswer(value: found, authenticated: false, ttl: 300, canonicalName: name.description)
    }
}

/// The zone behind the SPF table: one domain per situation. Clients are 192.0.2.10 and
/// 2001:db8::10 unless a case says otherwise.
let spfZone: [String: [SenderAuthZone.Record]] = {
    var zone: [String: [SenderAuthZone.Record]] = [
        // Results.
        "pass.test": [.txt("v=spf1 ip4:192.0.2.0/24 -all"), .txt("an unrelated TXT record")],
        "fail.test": [.txt("v=spf1 ip4:198.51.100.1 -all")],
        "softfail.test": [.txt("v=spf1 ~all")],
        "neutral.test": [.txt("v=spf1 ?all")],
        "default.test": [.txt("v=spf1 ip4:198.51.100.1")],
        "none.test": [.txt("v=spf2.0/pra +all"), .txt("google-site-verification=x")],
        "timeout.test": [.timeout],
        "silent.test": [.silent],
        // Record selection (§4.5).
        "two.test": [.txt("v=spf1 +all"), .txt("v=spf1 -all")],
        "twocase.test": [.txt("v=spf1 -all"), .txt("V=sPf1 +all")],
        "spf10.test": [.txt("v=spf10 +all"), .txt("v=spf1 -all")],
        "case.test": [.txt("V=SPF1 IP4:192.0.2.10 -ALL")],
        "parts.test": [.txtParts(["v=spf1 ip4:192.0.2.10", " -all"])],
        "nospace.test": [.txtParts(["v=spf1", "ip4:192.0.2.10"])],
        "empty.test": [.txt("v=spf1")],
        "spaces.test": [.txt("v=spf1  ip4:192.0.2.10   -all  ")],
        // Syntax errors anywhere, even after the term that would match (§4.6).
        "late-error.test": [.txt("v=spf1 ip4:192.0.2.10 -all moo")],
        "cidr33.test": [.txt("v=spf1 ip4:192.0.2.10/33 +all")],
        "cidr032.test": [.txt("v=spf1 ip4:192.0.2.10/032 +all")],
        "badmacro.test": [.txt("v=spf1 a:foo.%{x}.test +all")],
        "exponly.test": [.txt("v=spf1 a:%{c}.example.com +all")],
        "numeric.test": [.txt("v=spf1 a:192.0.2.10 +all")],
        "nonascii.test": [.txt("v=spf1 a:\u{E9}.example.com +all")],
        "tab.test": [.txt("v=spf1 ip4:192.0.2.10\t-all")],
        "redirect-colon.test": [.txt("v=spf1 redirect:pass.test")],
        "bad-modifier.test": [.txt("v=spf1 -all 1up=foo")],
        "bad-modifier-macro.test": [.txt("v=spf1 -all foo=%abc")],
        "unknown-modifier.test": [.txt("v=spf1 moo.cow-far_out=man:dog/cat ip4:192.0.2.10 -all")],
        "all-arg.test": [.txt("v=spf1 -all:foo")],
        "include-cidr.test": [.txt("v=spf1 include:pass.test/24 -all")],
        // a and mx, CIDR lengths, IPv6 (§5.3, §5.4, §5.6).
        "a.test": [.txt("v=spf1 a -all"), .a("192.0.2.10"), .aaaa("2001:db8::10")],
        "a-cidr.test": [.txt("v=spf1 a:host.a-cidr.test/24//64 -all")],
        "host.a-cidr.test": [.a("192.0.2.200"), .aaaa("2001:db8:1::1")],
        "a-v4-only.test": [.txt("v=spf1 a:host.a-cidr.test/24 -all")],
        "a-colon.test": [.txt("v=spf1 a:foo:bar/baz.a-colon.test -all")],
        "foo:bar/baz.a-colon.test": [.a("192.0.2.10")],
        "mx.test": [.txt("v=spf1 mx -all"), .mx(10, "mail1.mx.test"), .mx(20, "mail2.mx.test")],
        "mail1.mx.test": [.a("198.51.100.1")],
        "mail2.mx.test": [.a("192.0.2.10"), .aaaa("2001:db8::10")],
        "mx-cidr.test": [.txt("v=spf1 mx:mx.test/24 -all")],
        "mx-null.test": [.txt("v=spf1 mx -all"), .mx(0, ".")],
        "mx-implicit.test": [.txt("v=spf1 mx -all"), .a("192.0.2.10")],
        "v6.test": [.txt("v=spf1 ip6:2001:db8::/32 -all")],
        "v6-mapped.test": [.txt("v=spf1 ip6:::ffff:192.0.2.10 -all")],
        "ip4-zero.test": [.txt("v=spf1 ip4:203.0.113.1/0 -all")],
        "ip6-cidr129.test": [.txt("v=spf1 ip6:2001:db8::/129 -all")],
        // ptr (§5.5) and exists (§5.7).
        "ptr.test": [.txt("v=spf1 ptr -all")],
        "ptr-target.test": [.txt("v=spf1 ptr:ptr.test -all")],
        "host.ptr.test": [.a("192.0.2.10"), .aaaa("2001:db8::10")],
        "liar.ptr.test": [.a("198.51.100.1")],
        "ptr11.test": [.txt("v=spf1 ptr -all")],
        "ptr10.test": [.txt("v=spf1 ptr -all")],
        "exists.test": [.txt("v=spf1 exists:%{ir}.%{l1r-}.lp.%{d} -all")],
        "10.2.0.192.strong.lp.exists.test": [.a("127.0.0.2")],
        "exists-v6.test": [.txt("v=spf1 exists:there.exists-v6.test -all")],
        "there.exists-v6.test": [.a("127.0.0.2")],
        // include (§5.2).
        "include-pass.test": [.txt("v=spf1 include:pass.test -all")],
        "include-fail.test": [.txt("v=spf1 include:fail.test ~all")],
        "include-softfail.test": [.txt("v=spf1 include:softfail.test -all")],
        "include-neutral.test": [.txt("v=spf1 -include:neutral.test ?all")],
        "include-none.test": [.txt("v=spf1 include:none.test +all")],
        "include-nxdomain.test": [.txt("v=spf1 include:nxdomain.test +all")],
        "include-temp.test": [.txt("v=spf1 include:timeout.test +all")],
        "include-perm.test": [.txt("v=spf1 include:two.test +all")],
        "include-loop.test": [.txt("v=spf1 include:include-loop.test -all")],
        "include-chain.test": [.txt("v=spf1 include:include-pass.test -all")],
        // redirect (§6.1).
        "redirect.test": [.txt("v=spf1 redirect=pass.test")],
        "redirect-none.test": [.txt("v=spf1 redirect=none.test")],
        "redirect-nxdomain.test": [.txt("v=spf1 redirect=nxdomain.test")],
        "redirect-all.test": [.txt("v=spf1 ?all redirect=pass.test")],
        "redirect-after.test": [.txt("v=spf1 redirect=fail.test ip4:192.0.2.10")],
        "redirect-domain.test": [.txt("v=spf1 redirect=_spf.%{d}")],
        "_spf.redirect-domain.test": [.txt("v=spf1 a -all"), .a("192.0.2.10")],
        "redirect-twice.test": [.txt("v=spf1 redirect=pass.test redirect=fail.test")],
        "redirect-empty.test": [.txt("v=spf1 ?all redirect=")],
        "redirect-loop.test": [.txt("v=spf1 redirect=redirect-loop.test")],
        // exp (§6.2).
        "exp.test": [.txt("v=spf1 -all exp=why.exp.test")],
        "why.exp.test": [.txt("%{i} may not send for %{d}: see http://%{d}/spf?s=%{S}")],
        "exp-redirect.test": [.txt("v=spf1 exp=why.exp.test redirect=exp2.test")],
        "exp2.test": [.txt("v=spf1 -all exp=second.exp.test")],
        "second.exp.test": [.txt("The second record speaks.")],
        "exp-redirect-plain.test": [.txt("v=spf1 exp=why.exp.test redirect=fail.test")],
        "exp-include.test": [.txt("v=spf1 include:exp.test -all exp=own.exp.test")],
        "own.exp.test": [.txt("Our own words.")],
        "exp-multiple.test": [.txt("v=spf1 -all exp=multiple.exp.test")],
        "multiple.exp.test": [.txt("one"), .txt("two")],
        "exp-syntax.test": [.txt("v=spf1 -all exp=syntax.exp.test")],
        "syntax.exp.test": [.txt("The %{x}-files.")],
        "exp-nonascii.test": [.txt("v=spf1 -all exp=nonascii.exp.test")],
        "nonascii.exp.test": [.txt("\u{FEFF}Explanation")],
        "exp-timeout.test": [.txt("v=spf1 -all exp=timeout.test")],
        "exp-empty.test": [.txt("v=spf1 exp= -all")],
        "exp-twice.test": [.txt("v=spf1 -all exp=why.exp.test exp=own.exp.test")],
        "exp-letters.test": [.txt("v=spf1 -all exp=letters.exp.test")],
        "letters.exp.test": [.txt("%{c} at %{t} by %{r}, %{h} %{v} %{l} %{o} %%%_%-")],
        "exp-void.test": [.txt("v=spf1 a:nx1.test a:nx2.test -all exp=nx3.test")],
        "exp-softfail.test": [.txt("v=spf1 ~all exp=why.exp.test")],
        // Macros (§7).
        "macro-p.test": [.txt("v=spf1 exists:%{p}.allowed.test -all")],
        "host.ptr.test.allowed.test": [.a("127.0.0.2")],
        "macro-h.test": [.txt("v=spf1 a:%{h} -all")],
        "helo.macro-h.test": [.a("192.0.2.10")],
        "macro-upper.test": [.txt("v=spf1 exists:%{L}.upper.test -all")],
        "a%2bb.upper.test": [.a("127.0.0.2")],
        "macro-delimiters.test": [.txt("v=spf1 exists:%{l2r+-}.user.%{d} -all")],
        "bar.foo.user.macro-delimiters.test": [.a("127.0.0.2")],
        "macro-escapes.test": [.txt("v=spf1 a:%%20%_%-.macro-escapes.test -all")],
        "%20 %20.macro-escapes.test": [.a("192.0.2.10")],
        // 20 × "macro-long.test." + "x" is 321 characters; §7.3 cuts labels from the left to 246.
        "macro-long.test": [
            .txt("v=spf1 exists:" + Array(repeating: "%{o}", count: 20).joined(separator: ".") + ".x -all")
        ],
        "test." + String(repeating: "macro-long.test.", count: 15) + "x": [.a("127.0.0.2")],
        // HELO and null reverse paths (§2.3, §2.4).
        "mail.helo.test": [.txt("v=spf1 a -all"), .a("192.0.2.10")],
        "null.test": [.txt("v=spf1 -all exp=null.exp.test")],
        "null.exp.test": [.txt("%{s} %{l} %{o} %{h}")],
        "nolocal.test": [.txt("v=spf1 -all exp=nolocal.exp.test")],
        "nolocal.exp.test": [.txt("%{l}")],
        // Limits (§4.6.4).
        "ten.test": [
            .txt("v=spf1 " + (1...10).map { "a:l\($0).test" }.joined(separator: " ") + " ip4:192.0.2.10 -all")
        ],
        "eleven.test": [
            .txt("v=spf1 " + (1...11).map { "a:l\($0).test" }.joined(separator: " ") + " ip4:192.0.2.10 -all")
        ],
        "nine.test": [.txt("v=spf1 " + (1...9).map { "a:l\($0).test" }.joined(separator: " ") + " ?all")],
        "ten-include.test": [.txt("v=spf1 include:nine.test ip4:192.0.2.10 -all")],
        "ten-a.test": [.txt("v=spf1 " + (1...10).map { "a:l\($0).test" }.joined(separator: " ") + " ?all")],
        "eleven-include.test": [.txt("v=spf1 include:ten-a.test ip4:192.0.2.10 -all")],
        "ten-match-first.test": [
            .txt("v=spf1 ip4:192.0.2.10 " + (1...11).map { "a:l\($0).test" }.joined(separator: " "))
        ],
        "void2.test": [.txt("v=spf1 a:nx1.test mx:nx2.test ?all")],
        "void3.test": [.txt("v=spf1 a:nx1.test mx:nx2.test exists:nx3.test ?all")],
        "void-nodata.test": [.txt("v=spf1 a:none.test exists:none.test mx:fail.test ?all")],
        "mx10.test": [.txt("v=spf1 mx -all")] + (1...10).map { .mx(UInt16($0), "m\($0).mx10.test") },
        "mx11.test": [.txt("v=spf1 mx -all")] + (1...11).map { .mx(UInt16($0), "m\($0).mx10.test") },
        "m10.mx10.test": [.a("192.0.2.10")],
        "m1.mx10.test": [.a("198.51.100.1")],
        // The time limit.
        "slow.test": [.txt("v=spf1 a:silent.test -all")],
    ]
    for n in 1...11 { zone["l\(n).test"] = [.a("198.51.100.\(n)")] }
    for n in 2...9 { zone["m\(n).mx10.test"] = [.a("198.51.100.\(n)")] }
    zone["m11.mx10.test"] = [.a("192.0.2.10")]
    // 192.0.2.10 and 2001:db8::10 name themselves host.ptr.test (validated) and liar.ptr.test (not).
    zone[SenderAuthZone.reverse("192.0.2.10")] = [.ptr("liar.ptr.test"), .ptr("host.ptr.test")]
    zone[SenderAuthZone.reverse("2001:db8::10")] = [.ptr("host.ptr.test")]
    // 192.0.2.20 has 11 PTR names; only the 11th validates, and only the first 10 count.
    zone[SenderAuthZone.reverse("192.0.2.20")] = (1...11).map { .ptr("h\($0).ptr11.test") }
    zone["h11.ptr11.test"] = [.a("192.0.2.20")]
    // 192.0.2.21 has 10; the 10th validates.
    zone[SenderAuthZone.reverse("192.0.2.21")] = (1...10).map { .ptr("h\($0).ptr10.test") }
    zone["h10.ptr10.test"] = [.a("192.0.2.21")]
    // 192.0.2.99's reverse zone is broken: the ptr mechanism just does not match.
    zone[SenderAuthZone.reverse("192.0.2.99")] = [.timeout]
    return zone
}()

/// One row of the SPF table.
struct SPFCase: Sendable, CustomTestStringConvertible {
    var sender: String
    var client = "192.0.2.10"
    var helo = "mail.client.test"
    var result: SPFResult
    /// Checked when given; "" means "no explanation".
    var explanation: String?

    var testDescription: String { "\(sender) from \(client) → \(result)" }
}

private func row(
    _ domain: String, _ result: SPFResult, client: String = "192.0.2.10", explanation: String? = nil
) -> SPFCase {
    SPFCase(
        sender: domain.contains("@") ? domain : "user@\(domain)", client: client, result: result,
        explanation: explanation)
}

@Suite struct SPFTests {
    static let cases: [SPFCase] = [
        // The seven results (§2.6).
        row("pass.test", .pass),
        row("fail.test", .fail, explanation: ""),
        row("softfail.test", .softfail),
        row("neutral.test", .neutral),
        row("default.test", .neutral),
        row("none.test", .none),
        row("nxdomain.test", .none),
        row("timeout.test", .temperror),
        row("two.test", .permerror),
        // §4.3: a malformed domain gives none.
        row("user@-.", .none),
        row("user@a..b.test", .none),
        row("user@[192.0.2.10]", .none),
        row("user@\(String(repeating: "a", count: 64)).test", .none),
        row("user@test", .none),
        // §4.5: record selection.
        row("twocase.test", .permerror),
        row("spf10.test", .fail),
        row("case.test", .pass),
        row("parts.test", .pass),
        row("nospace.test", .none),
        row("empty.test", .neutral),
        row("spaces.test", .pass),
        // §4.6: the whole record is checked first.
        row("late-error.test", .permerror),
        row("cidr33.test", .permerror),
        row("cidr032.test", .permerror),
        row("badmacro.test", .permerror),
        row("exponly.test", .permerror),
        row("numeric.test", .permerror),
        row("nonascii.test", .permerror),
        row("tab.test", .permerror),
        row("redirect-colon.test", .permerror),
        row("bad-modifier.test", .permerror),
        row("bad-modifier-macro.test", .permerror),
        row("unknown-modifier.test", .pass),
        row("all-arg.test", .permerror),
        row("include-cidr.test", .permerror),
        // a, mx, CIDR, IPv6.
        row("a.test", .pass),
        row("a.test", .pass, client: "2001:db8::10"),
        row("a.test", .fail, client: "192.0.2.11"),
        row("a-cidr.test", .pass),
        row("a-cidr.test", .pass, client: "2001:db8:1::ffff"),
        row("a-cidr.test", .fail, client: "2001:db8:2::1"),
        row("a-cidr.test", .fail, client: "198.51.100.1"),
        row("a-v4-only.test", .pass, client: "2001:db8:1::1"),
        row("a-v4-only.test", .fail, client: "2001:db8:1::2"),
        row("a-colon.test", .pass),
        row("mx.test", .pass),
        row("mx.test", .pass, client: "2001:db8::10"),
        row("mx.test", .fail, client: "192.0.2.11"),
        row("mx-cidr.test", .pass, client: "192.0.2.77"),
        row("mx-null.test", .fail),
        row("mx-implicit.test", .fail),
        row("v6.test", .pass, client: "2001:DB8::1"),
        row("v6.test", .fail, client: "2001:db9::1"),
        row("v6.test", .fail),
        row("ip4-zero.test", .pass),
        row("ip4-zero.test", .fail, client: "2001:db8::10"),
        row("ip6-cidr129.test", .permerror),
        // §5: an IPv4-mapped IPv6 client is an IPv4 client.
        row("pass.test", .pass, client: "::ffff:192.0.2.10"),
        row("v6-mapped.test", .fail, client: "::ffff:192.0.2.10"),
        // ptr and exists.
        row("ptr.test", .pass),
        row("ptr.test", .pass, client: "2001:db8::10"),
        row("ptr.test", .fail, client: "192.0.2.11"),
        row("ptr.test", .fail, client: "192.0.2.99"),
        row("ptr-target.test", .pass),
        row("ptr11.test", .fail, client: "192.0.2.20"),
        row("ptr10.test", .pass, client: "192.0.2.21"),
        row("strong-bad@exists.test", .pass),
        row("exists-v6.test", .pass, client: "2001:db8::99"),
        // include.
        row("include-pass.test", .pass),
        row("include-fail.test", .softfail),
        row("include-softfail.test", .fail),
        row("include-neutral.test", .neutral),
        row("include-none.test", .permerror),
        row("include-nxdomain.test", .permerror),
        row("include-temp.test", .temperror),
        row("include-perm.test", .permerror),
        row("include-loop.test", .permerror),
        row("include-chain.test", .pass),
        // redirect.
        row("redirect.test", .pass),
        row("redirect-none.test", .permerror),
        row("redirect-nxdomain.test", .permerror),
        row("redirect-all.test", .neutral),
        row("redirect-after.test", .pass),
        row("redirect-after.test", .fail, client: "192.0.2.11"),
        row("redirect-domain.test", .pass),
        row("redirect-twice.test", .permerror),
        row("redirect-empty.test", .permerror),
        row("redirect-loop.test", .permerror),
        // exp.
        row(
            "a+b@exp.test", .fail,
            explanation: "192.0.2.10 may not send for exp.test: see http://exp.test/spf?s=a%2Bb%40exp.test"),
        row("exp-redirect.test", .fail, explanation: "The second record speaks."),
        row("exp-redirect-plain.test", .fail, explanation: ""),
        row("exp-include.test", .fail, explanation: "Our own words."),
        row("exp-multiple.test", .fail, explanation: ""),
        row("exp-syntax.test", .fail, explanation: ""),
        row("exp-nonascii.test", .fail, explanation: ""),
        row("exp-timeout.test", .fail, explanation: ""),
        row("exp-empty.test", .permerror),
        row("exp-twice.test", .permerror),
        row(
            "someone@exp-letters.test", .fail,
            explanation:
                "192.0.2.10 at 1700000000 by mx.receiver.test, mail.client.test in-addr someone exp-letters.test % %20"),
        row(
            "someone@exp-letters.test", .fail, client: "2001:db8::10",
            explanation:
                "2001:db8::10 at 1700000000 by mx.receiver.test, mail.client.test ip6 someone exp-letters.test % %20"),
        row("exp-void.test", .fail, explanation: ""),
        row("exp-softfail.test", .softfail, explanation: ""),
        row("@nolocal.test", .fail, explanation: "postmaster"),
        // Macros.
        row("macro-p.test", .pass),
        row("macro-p.test", .fail, client: "192.0.2.11"),
        row("a+b@macro-upper.test", .pass),
        row("foo-bar+zip+quux@macro-delimiters.test", .pass),
        row("macro-escapes.test", .pass),
        row("macro-long.test", .pass),
        // Limits: 10 DNS-querying terms pass, 11 do not, includes counting theirs.
        row("ten.test", .pass),
        row("eleven.test", .permerror),
        row("ten-include.test", .pass),
        row("eleven-include.test", .permerror),
        row("ten-match-first.test", .pass),
        row("void2.test", .neutral),
        row("void3.test", .permerror),
        row("void-nodata.test", .permerror),
        row("mx10.test", .pass),
        row("mx11.test", .permerror),
    ]

    static let checker = SPFChecker(
        resolver: SenderAuthZone(spfZone), timeLimit: .seconds(20), secondsSince1970: { 1_700_000_000 })

    @Test(arguments: cases)
    func checkHost(_ row: SPFCase) async {
        let verdict = await Self.checker.check(
            client: row.client, sender: row.sender, helo: row.helo, receiver: "mx.receiver.test")
        #expect(verdict.result == row.result, "\(verdict.problem ?? "")")
        if let explanation = row.explanation {
            #expect(verdict.explanation ?? "" == explanation)
        }
        #expect(verdict.identity == .mailfrom)
        if [.permerror, .temperror].contains(row.result) {
            #expect(verdict.problem != nil)
        }
    }

    @Test func verdictNamesTheDomainAndTheMechanism() async {
        let verdict = await Self.checker.check(
            client: "::ffff:192.0.2.10", sender: "Someone@Include-Pass.TEST", helo: "x.test", receiver: "mx")
        #expect(verdict.result == .pass)
        #expect(verdict.domain == "include-pass.test")
        #expect(verdict.mechanism == "include:pass.test")
        #expect(verdict.client == "192.0.2.10")
        #expect(verdict.sender == "Someone@Include-Pass.TEST")
        #expect(verdict.problem == nil)

        let neutral = await Self.checker.check(
            client: "192.0.2.10", sender: "a@default.test", helo: "x", receiver: "mx")
        #expect(neutral.mechanism == nil)
        let fail = await Self.checker.check(client: "192.0.2.10", sender: "a@fail.test", helo: "x", receiver: "mx")
        #expect(fail.mechanism == "-all")
    }

    @Test func problemsSayWhy() async {
        func problem(_ sender: String) async -> String {
            await Self.checker.check(client: "192.0.2.10", sender: sender, helo: "x", receiver: "mx").problem ?? ""
        }
        #expect(await problem("a@eleven.test").contains("more than 10 DNS-querying terms"))
        #expect(await problem("a@void3.test").contains("void lookups"))
        #expect(await problem("a@mx11.test").contains("11 MX records"))
        #expect(await problem("a@two.test").contains("2 SPF records"))
        #expect(await problem("a@cidr33.test").contains("CIDR"))
        #expect(await problem("a@include-none.test").contains("include:none.test"))
        #expect(await problem("a@redirect-none.test").contains("redirect=none.test"))
        #expect(await problem("a@timeout.test").contains("timeout.test"))
    }

    /// §2.4: a null reverse path checks postmaster@<HELO>.
    @Test func nullReversePathChecksTheHELOName() async {
        for sender in [nil, ""] as [String?] {
            let verdict = await Self.checker.check(
                client: "192.0.2.10", sender: sender, helo: "mail.helo.test", receiver: "mx")
            #expect(verdict.result == .pass)
            #expect(verdict.identity == .helo)
            #expect(verdict.domain == "mail.helo.test")
            #expect(verdict.sender == "")
        }
        let explained = await Self.checker.check(client: "192.0.2.10", sender: nil, helo: "null.test", receiver: "mx")
        #expect(explained.result == .fail)
        #expect(explained.explanation == "postmaster@null.test postmaster null.test null.test")
    }

    /// §2.3: the HELO identity on its own.
    @Test func heloIdentity() async {
        let pass = await Self.checker.checkHELO(client: "192.0.2.10", helo: "mail.helo.test", receiver: "mx")
        #expect(pass.result == .pass)
        #expect(pass.identity == .helo)
        let fail = await Self.checker.checkHELO(client: "192.0.2.11", helo: "mail.helo.test", receiver: "mx")
        #expect(fail.result == .fail)
        // An address literal or a single label is no domain: none, without a lookup.
        for helo in ["[192.0.2.10]", "localhost", "JUMPIN' JUPITER", ""] {
            #expect(await Self.checker.checkHELO(client: "192.0.2.10", helo: helo, receiver: "mx").result == .none)
        }
        // %{h} in a record.
        let macro = await Self.checker.check(
            client: "192.0.2.10", sender: "a@macro-h.test", helo: "helo.macro-h.test", receiver: "mx")
        #expect(macro.result == .pass)
    }

    @Test func invalidClientAddress() async {
        let verdict = await Self.checker.check(client: "not-an-ip", sender: "a@pass.test", helo: "x", receiver: "mx")
        #expect(verdict.result == .none)
        #expect(verdict.problem?.contains("not an IP address") == true)
    }

    /// §4.6.4 note: a silent DNS must not stall the check; past the limit it is temperror.
    @Test(.timeLimit(.minutes(1)))
    func timeLimit() async {
        let checker = SPFChecker(resolver: SenderAuthZone(spfZone), timeLimit: .milliseconds(200))
        let start = ContinuousClock.now
        let verdict = await checker.check(client: "192.0.2.10", sender: "a@slow.test", helo: "x", receiver: "mx")
        #expect(verdict.result == .temperror)
        #expect(verdict.problem?.contains("no result within") == true)
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    /// A caller that gives up (a client that disconnects) is answered at once.
    @Test(.timeLimit(.minutes(1)))
    func cancellation() async {
        let checker = SPFChecker(resolver: SenderAuthZone(spfZone), timeLimit: .seconds(600))
        let task = Task {
            await checker.check(client: "192.0.2.10", sender: "a@silent.test", helo: "x", receiver: "mx")
        }
        try? await Task.sleep(for: .milliseconds(50))
        task.cancel()
        #expect(await task.value.result == .temperror)
    }

    /// The limits hold the number of questions down, loops included.
    @Test func lookupsAreBounded() async {
        let zone = SenderAuthZone(spfZone)
        let checker = SPFChecker(resolver: zone, timeLimit: .seconds(20), secondsSince1970: { 0 })
        _ = await checker.check(client: "192.0.2.10", sender: "a@include-loop.test", helo: "x", receiver: "mx")
        #expect(zone.queries.count == 11)
        let mx = SenderAuthZone(spfZone)
        _ = await SPFChecker(resolver: mx).check(client: "192.0.2.10", sender: "a@mx11.test", helo: "x", receiver: "mx")
        // The record and the MX set; the 11 names are never asked for.
        #expect(mx.queries == ["mx11.test TXT", "mx11.test MX"])
    }
}
