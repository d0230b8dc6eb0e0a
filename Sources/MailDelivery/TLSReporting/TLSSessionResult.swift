import DNSClient

/// Why a TLS session failed, in RFC 8460's words (§4.3).
public enum TLSRPTResultType: String, Sendable, Hashable, Codable, CaseIterable {
    // §4.3.1 negotiation failures
    case starttlsNotSupported = "starttls-not-supported"
    case certificateHostMismatch = "certificate-host-mismatch"
    case certificateExpired = "certificate-expired"
    case certificateNotTrusted = "certificate-not-trusted"
    case validationFailure = "validation-failure"
    // §4.3.2.1 DANE
    case tlsaInvalid = "tlsa-invalid"
    case dnssecInvalid = "dnssec-invalid"
    case daneRequired = "dane-required"
    // §4.3.2.2 MTA-STS
    case stsPolicyFetchError = "sts-policy-fetch-error"
    case stsPolicyInvalid = "sts-policy-invalid"
    case stsWebPKIInvalid = "sts-webpki-invalid"
}

/// The policy a session ran under, as a report names it (RFC 8460 §4.4 `policy`).
public struct TLSRPTPolicy: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Hashable, Codable {
        case sts
        case tlsa
        case noPolicyFound = "no-policy-found"
    }

    public var type: Kind
    /// The MTA-STS policy's lines, or the TLSA records in presentation form (`3 1 1 ab…`).
    public var strings: [String]
    /// The domain the policy belongs to.
    public var domain: String
    /// MTA-STS: the policy's `mx` patterns.
    public var mxHosts: [String]

    public init(type: Kind, strings: [String] = [], domain: String, mxHosts: [String] = []) {
        self.type = type
        self.strings = strings
        self.domain = domain
        self.mxHosts = mxHosts
    }

    public static func noPolicy(_ domain: String) -> TLSRPTPolicy { TLSRPTPolicy(type: .noPolicyFound, domain: domain) }

    /// An MTA-STS policy. Tern keeps policies parsed, so the lines are written again in the
    /// order of RFC 8461 §3.2; extension fields, which Tern ignores, are not among them.
    public static func sts(_ policy: MTASTSPolicy, domain: String) -> TLSRPTPolicy {
        let lines =
            ["version: STSv1", "mode: \(policy.mode.rawValue)"] + policy.mx.map { "mx: \($0)" } + [
                "max_age: \(policy.maxAge)"
            ]
        return TLSRPTPolicy(type: .sts, strings: lines, domain: domain, mxHosts: policy.mx)
    }

    /// DANE: the TLSA records of the exchanger (all of them, usable or not).
    public static func tlsa(_ records: [TLSARecord], domain: String) -> TLSRPTPolicy {
        TLSRPTPolicy(type: .tlsa, strings: records.map(Self.presentation), domain: domain)
    }

    static func presentation(_ record: TLSARecord) -> String {
        let hex = record.data.map { byte in
            let digits = String(byte, radix: 16, uppercase: true)
            return byte < 16 ? "0" + digits : digits
        }
        return "\(record.usage) \(record.selector) \(record.matchingType) \(hex.joined())"
    }
}

/// One attempted TLS session, or one refused before it began, as TLS-RPT counts it.
public struct TLSSessionResult: Sendable, Hashable {
    /// Who the report goes to: the recipient domain.
    public var domain: String
    public var policy: TLSRPTPolicy
    /// nil: the session succeeded.
    public var failure: TLSRPTResultType?
    public var sendingIP: String?
    public var mxHost: String?
    public var receivingIP: String?
    /// A short reason in Tern's words, for `failure-reason-code`.
    public var reason: String?

    public init(
        domain: String, policy: TLSRPTPolicy, failure: TLSRPTResultType? = nil, sendingIP: String? = nil,
        mxHost: String? = nil, receivingIP: String? = nil, reason: String? = nil
    ) {
        self.domain = domain
        self.policy = policy
        self.failure = failure
        self.sendingIP = sendingIP
        self.mxHost = mxHost
        self.receivingIP = receivingIP
        self.reason = reason
    }
}

/// Where TLS-RPT results go; `TLSReportStore`, or nothing when TLS-RPT is off.
public protocol TLSResultRecorder: Sendable {
    func record(_ result: TLSSessionResult)
}

/// Turns what a delivery learned into RFC 8460 result types. Pure, so every case is a table row.
public enum TLSResultMapping {
    /// What a certificate verdict's reason means (the reasons `CertificateVerifier` gives).
    public static func resultType(of verdict: CertificateVerdict, dane: Bool) -> TLSRPTResultType? {
        guard case .untrusted(let reason) = verdict else { return nil }
        if dane, reason.hasPrefix("no TLSA record matches") { return .tlsaInvalid }
        if reason.contains("expired") || reason.contains("not yet valid") { return .certificateExpired }
        if reason.contains("does not name the host") { return .certificateHostMismatch }
        if reason.contains("self-signed") || reason.contains("no chain to a trusted root") {
            return .certificateNotTrusted
        }
        return .validationFailure
    }

    /// What happened in one connection under `requirement`, once the server answered:
    /// `tlsEstablished` (the session runs under TLS), `startTLSMissing` (not offered or
    /// refused), and the certificate's verdict if the handshake got that far. Nil: the session
    /// succeeded as far as TLS-RPT is concerned.
    public static func failure(
        requirement: TLSRequirement, tlsEstablished: Bool, startTLSMissing: Bool, verdict: CertificateVerdict?
    ) -> TLSRPTResultType? {
        let dane: Bool
        if case .dane = requirement.level { dane = true } else { dane = false }
        if startTLSMissing || (!tlsEstablished && verdict == nil) {
            return startTLSMissing ? .starttlsNotSupported : .validationFailure
        }
        // A policy that verifies (MTA-STS enforce or testing, DANE, `verify`) fails on a bad
        // certificate; opportunistic TLS with any certificate is a success (RFC 7435).
        let verifies = requirement.mustVerify || requirement.mtaSTSTesting
        if verifies, let verdict, let type = resultType(of: verdict, dane: dane) { return type }
        if !tlsEstablished { return .validationFailure }
        if requirement.mtaSTSTesting, !requirement.mxMatched { return .validationFailure }
        return nil
    }

    /// The policy a requirement reports under: DANE's TLSA records, the domain's MTA-STS policy,
    /// or none. Nil: not reported (the sender's `TLS-Required: No`, or no TLS attempted).
    public static func policy(
        requirement: TLSRequirement, decision: TLSPolicyDecision, tlsa: TLSALookup, domain: String
    ) -> TLSRPTPolicy? {
        guard decision.demand != .optional, requirement.level != .none else { return nil }
        if case .records(let records) = tlsa,
            requirement.source.hasPrefix("dane") || requirement.source == "policy:dane"
        {
            return .tlsa(records, domain: domain)
        }
        if requirement.source.hasPrefix("mta-sts"), let policy = decision.mtaSTS {
            return .sts(policy, domain: domain)
        }
        return .noPolicy(domain)
    }

    /// A host skipped before connecting, for a reason TLS-RPT reports: outside the MTA-STS
    /// policy (4.7.0), or DANE that cannot be met (4.7.5). Nil for the rest (REQUIRETLS).
    public static func skipped(
        host: String, status: String, decision: TLSPolicyDecision, tlsa: TLSALookup, domain: String
    ) -> TLSSessionResult? {
        guard decision.demand != .optional else { return nil }
        switch (status, tlsa) {
        case ("4.7.0", _):
            guard let policy = decision.mtaSTS else { return nil }
            return TLSSessionResult(
                domain: domain, policy: .sts(policy, domain: domain), failure: .validationFailure, mxHost: host,
                reason: "mx-not-in-policy")
        case ("4.7.5", .failed):
            return TLSSessionResult(
                domain: domain, policy: .tlsa([], domain: domain), failure: .dnssecInvalid, mxHost: host)
        case ("4.7.5", .records(let records)):
            return TLSSessionResult(
                domain: domain, policy: .tlsa(records, domain: domain), failure: .tlsaInvalid, mxHost: host)
        case ("4.7.5", _):
            return TLSSessionResult(
                domain: domain, policy: .tlsa([], domain: domain), failure: .daneRequired, mxHost: host)
        default:
            return nil
        }
    }
}
