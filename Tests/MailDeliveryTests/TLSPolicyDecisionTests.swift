import DNSClient
import Testing

@testable import MailDelivery

private let dane = [TLSARecord(usage: 3, selector: 1, matchingType: 1, data: [UInt8](repeating: 7, count: 32))]
private let unusable = [TLSARecord(usage: 1, selector: 1, matchingType: 1, data: [UInt8](repeating: 7, count: 32))]
private let enforce = MTASTSPolicy(mode: .enforce, mx: ["*.example.com"], maxAge: 86400)
private let testing = MTASTSPolicy(mode: .testing, mx: ["*.example.com"], maxAge: 86400)
private let withdrawn = MTASTSPolicy(mode: .none, mx: [], maxAge: 86400)

/// One row: the inputs, the host and its TLSA lookup, and what must come out — a level and
/// source for `.connect` (with `+testing`, `+unmatched`, `+requiretls` marks), or
/// `skip <status>` (`!` when permanent).
struct DecisionCase: Sendable, CustomStringConvertible {
    var configured: TLSSecurityLevel?
    var defaultLevel: TLSSecurityLevel = .may
    var demand: MessageTLSDemand = .policy
    var mtaSTS: MTASTSPolicy?
    var mxAuthenticated = false
    var host = "mx1.example.com"
    var tlsa: TLSALookup = .insecure
    var expected: String

    var description: String { expected }
}

private func render(_ decision: HostTLSDecision) -> String {
    switch decision {
    case .skip(_, let status, let permanent):
        return "skip \(status)\(permanent ? "!" : "")"
    case .connect(let requirement):
        var text = "\(requirement.cacheKey.split(separator: "+")[0]) \(requirement.source)"
        if requirement.mtaSTSTesting { text += " +testing" }
        if !requirement.mxMatched { text += " +unmatched" }
        if requirement.requireTLS { text += " +requiretls" }
        return text
    }
}

@Suite struct TLSPolicyDecisionTests {
    static let cases: [DecisionCase] = [
        // Nothing known: opportunistic, or nothing with starttls = false.
        DecisionCase(expected: "may may"),
        DecisionCase(defaultLevel: .none, expected: "none none"),
        // [tls_policy] wins over MTA-STS and DANE.
        DecisionCase(
            configured: TLSSecurityLevel.none, mtaSTS: enforce, tlsa: .records(dane), expected: "none policy:none"),
        DecisionCase(configured: .may, mtaSTS: enforce, host: "mx.elsewhere.test", expected: "may policy:may"),
        DecisionCase(configured: .encrypt, tlsa: .records(dane), expected: "encrypt policy:encrypt"),
        DecisionCase(configured: .verify, expected: "verify policy:verify"),
        DecisionCase(configured: .dane, tlsa: .records(dane), expected: "dane policy:dane"),
        DecisionCase(configured: .dane, tlsa: .records(unusable), expected: "skip 4.7.5"),
        DecisionCase(configured: .dane, tlsa: .none, expected: "skip 4.7.5"),
        DecisionCase(configured: .dane, tlsa: .insecure, expected: "skip 4.7.5"),
        DecisionCase(configured: .dane, tlsa: .failed("SERVFAIL"), expected: "skip 4.7.5"),
        // DANE: usable records authenticate; unusable ones still make TLS mandatory; a failed
        // lookup makes the host unusable; DANE comes before MTA-STS.
        DecisionCase(tlsa: .records(dane), expected: "dane dane"),
        DecisionCase(tlsa: .records(unusable), expected: "encrypt dane-unusable"),
        DecisionCase(tlsa: .failed("SERVFAIL"), expected: "skip 4.7.5"),
        DecisionCase(mtaSTS: enforce, host: "mx.elsewhere.test", tlsa: .records(dane), expected: "dane dane"),
        // MTA-STS.
        DecisionCase(mtaSTS: enforce, expected: "verify mta-sts"),
        DecisionCase(mtaSTS: enforce, tlsa: .none, expected: "verify mta-sts"),
        DecisionCase(mtaSTS: enforce, host: "mx.elsewhere.test", expected: "skip 4.7.0"),
        DecisionCase(mtaSTS: enforce, host: "a.b.example.com", expected: "skip 4.7.0"),
        DecisionCase(mtaSTS: testing, expected: "may mta-sts-testing +testing"),
        DecisionCase(mtaSTS: testing, host: "mx.elsewhere.test", expected: "may mta-sts-testing +testing +unmatched"),
        DecisionCase(mtaSTS: withdrawn, expected: "may may"),
        // TLS-Required: No — every policy failure ignored, STARTTLS kept unless TLS is off.
        DecisionCase(demand: .optional, mtaSTS: enforce, host: "x.test", expected: "may TLS-Required:No"),
        DecisionCase(configured: .dane, demand: .optional, tlsa: .failed("x"), expected: "may TLS-Required:No"),
        DecisionCase(configured: TLSSecurityLevel.none, demand: .optional, expected: "none TLS-Required:No"),
        DecisionCase(defaultLevel: .none, demand: .optional, expected: "none TLS-Required:No"),
        // REQUIRETLS: an authenticated exchanger (DNSSEC or MTA-STS) and certificate, or 5.7.30.
        DecisionCase(demand: .requireTLS, expected: "skip 5.7.30!"),
        DecisionCase(demand: .requireTLS, mxAuthenticated: true, expected: "verify may +requiretls"),
        DecisionCase(demand: .requireTLS, tlsa: .records(dane), expected: "dane dane +requiretls"),
        DecisionCase(demand: .requireTLS, mtaSTS: enforce, expected: "verify mta-sts +requiretls"),
        DecisionCase(demand: .requireTLS, mtaSTS: testing, expected: "verify mta-sts-testing +requiretls"),
        DecisionCase(demand: .requireTLS, mtaSTS: testing, host: "mx.elsewhere.test", expected: "skip 5.7.30!"),
        DecisionCase(demand: .requireTLS, mtaSTS: enforce, host: "mx.elsewhere.test", expected: "skip 4.7.0"),
        DecisionCase(configured: .encrypt, demand: .requireTLS, expected: "skip 5.7.30!"),
        DecisionCase(
            configured: .encrypt, demand: .requireTLS, mxAuthenticated: true,
            expected: "verify policy:encrypt +requiretls"),
        DecisionCase(
            configured: TLSSecurityLevel.none, demand: .requireTLS, mxAuthenticated: true, expected: "skip 5.7.30!"),
        DecisionCase(
            defaultLevel: .none, demand: .requireTLS, mxAuthenticated: true, tlsa: .none, expected: "skip 5.7.30!"),
        DecisionCase(demand: .requireTLS, tlsa: .failed("x"), expected: "skip 4.7.5"),
    ]

    @Test(arguments: cases)
    func decide(_ row: DecisionCase) {
        let decision = TLSPolicyDecision(
            configured: row.configured, defaultLevel: row.defaultLevel, demand: row.demand, mtaSTS: row.mtaSTS,
            mxAuthenticated: row.mxAuthenticated, domain: "example.com")
        #expect(render(decision.decide(host: row.host, tlsa: row.tlsa)) == row.expected)
    }

    @Test func tlsaIsAskedOnlyWhenDANECanMatter() {
        #expect(TLSPolicyDecision(configured: nil, domain: "d").looksUpTLSA)
        #expect(TLSPolicyDecision(configured: .dane, domain: "d").looksUpTLSA)
        #expect(!TLSPolicyDecision(configured: .verify, domain: "d").looksUpTLSA)
        #expect(!TLSPolicyDecision(configured: nil, demand: .optional, domain: "d").looksUpTLSA)
    }

    @Test func mandatoryAndVerifyingLevels() {
        let levels: [(TLSRequirement.Level, Bool, Bool)] = [
            (.none, false, false), (.opportunistic, false, false), (.encrypt, true, false), (.verify, true, true),
            (.dane(dane), true, true),
        ]
        for (level, mandatory, verifying) in levels {
            let requirement = TLSRequirement(level: level, source: "x")
            #expect(requirement.isMandatory == mandatory && requirement.mustVerify == verifying, "\(level)")
        }
    }

    @Test func configuredLevelsMatchDomainsAndDottedParents() {
        let settings = OutboundTLSSettings(policies: [
            "example.com": .verify, ".example.com": .encrypt, ".org": .may, "bank.example.org": .dane,
        ])
        #expect(settings.level(for: "example.com") == .verify)
        #expect(settings.level(for: "Example.COM.") == .verify)
        #expect(settings.level(for: "mail.example.com") == .encrypt)
        #expect(settings.level(for: "a.b.example.com") == .encrypt)
        #expect(settings.level(for: "bank.example.org") == .dane)
        #expect(settings.level(for: "other.example.org") == .may)
        #expect(settings.level(for: "example.net") == nil)
        #expect(settings.level(for: "notexample.com") == nil)
    }
}
