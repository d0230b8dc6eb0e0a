import DNSClient

/// What TLS one connection to one exchanger must have, and why.
public struct TLSRequirement: Sendable, Hashable {
    public enum Level: Sendable, Hashable {
        /// No STARTTLS.
        case none
        /// STARTTLS when offered, any certificate; a failed handshake is retried in plaintext.
        case opportunistic
        /// STARTTLS required, any certificate.
        case encrypt
        /// STARTTLS required, a WebPKI certificate for the exchanger's name.
        case verify
        /// STARTTLS required, a certificate matching these (usable) TLSA records.
        case dane([TLSARecord])
    }

    public var level: Level
    /// Where the requirement comes from, for the log's `tls_policy`: `may`, `none`, `dane`,
    /// `mta-sts`, `mta-sts-testing`, `policy:verify`, `TLS-Required:No` ….
    public var source: String
    /// MTA-STS in testing mode applies: report what enforce would refuse (`mxMatched` says
    /// whether this exchanger is one the policy names).
    public var mtaSTSTesting = false
    public var mxMatched = true
    /// RFC 8689: the server must offer REQUIRETLS, and the message goes with the parameter.
    public var requireTLS = false

    public init(level: Level, source: String) {
        self.level = level
        self.source = source
    }

    /// TLS must be established, or the exchanger is skipped.
    public var isMandatory: Bool {
        switch level {
        case .none, .opportunistic: false
        case .encrypt, .verify, .dane: true
        }
    }

    /// A failed verification refuses the handshake.
    public var mustVerify: Bool {
        switch level {
        case .verify, .dane: true
        case .none, .opportunistic, .encrypt: false
        }
    }

    /// Cached connections are shared only between deliveries with the same requirement.
    var cacheKey: String {
        let level: String
        switch self.level {
        case .none: level = "none"
        case .opportunistic: level = "may"
        case .encrypt: level = "encrypt"
        case .verify: level = "verify"
        case .dane: level = "dane"
        }
        return requireTLS ? level + "+requiretls" : level
    }
}

/// The TLSA answer for one exchanger (`_25._tcp.<host>`), as DANE reads it (RFC 7672 §2.2).
public enum TLSALookup: Sendable, Hashable {
    /// Not looked up: DANE is off, or the MX or address answers were not DNSSEC-validated, so
    /// any TLSA answer would prove nothing.
    case insecure
    /// A validated answer that there is no TLSA record (NXDOMAIN, NODATA); or an answer
    /// without the AD bit, which counts as none.
    case none
    /// Validated TLSA records, all of them (usable or not).
    case records([TLSARecord])
    /// The lookup failed (SERVFAIL, timeout): the exchanger cannot be used now (§2.2).
    case failed(String)
}

/// Whether and how to connect to one exchanger.
public enum HostTLSDecision: Sendable, Hashable {
    case connect(TLSRequirement)
    /// Skip this exchanger; `status` is the RFC 3463 code the delivery gets if no other
    /// exchanger takes the message (`permanent`: bounce rather than defer).
    case skip(reason: String, status: String, permanent: Bool)
}

/// The outbound TLS policy of one delivery to one destination (SPEC §2.5): the administrator's
/// `[tls_policy]` for the domain first, then DANE (RFC 7672) where the TLSA records are
/// DNSSEC-validated, then MTA-STS (RFC 8461), then opportunistic STARTTLS; REQUIRETLS and
/// `TLS-Required: No` (RFC 8689) on top. Pure: the lookups are done by the caller.
public struct TLSPolicyDecision: Sendable {
    /// `[tls_policy]` for this destination, nil when it has none.
    public var configured: TLSSecurityLevel?
    /// `may`, or `none` with `[delivery] starttls = false`.
    public var defaultLevel: TLSSecurityLevel
    public var demand: MessageTLSDemand
    /// The domain's MTA-STS policy, when it has one and MTA-STS applies.
    public var mtaSTS: MTASTSPolicy?
    /// The MX answer was DNSSEC-validated (`Route.mxAuthenticated`).
    public var mxAuthenticated: Bool
    /// For reasons in the log.
    public var domain: String

    public init(
        configured: TLSSecurityLevel?, defaultLevel: TLSSecurityLevel = .may, demand: MessageTLSDemand = .policy,
        mtaSTS: MTASTSPolicy? = nil, mxAuthenticated: Bool = false, domain: String
    ) {
        self.configured = configured
        self.defaultLevel = defaultLevel
        self.demand = demand
        self.mtaSTS = mtaSTS
        self.mxAuthenticated = mxAuthenticated
        self.domain = domain
    }

    /// DANE is asked about this destination at all: not when `[tls_policy]` names another
    /// level, nor for a `TLS-Required: No` message.
    public var looksUpTLSA: Bool {
        demand != .optional && (configured == nil || configured == .dane)
    }

    /// The decision for the exchanger `host`, given its TLSA lookup.
    public func decide(host: String, tlsa: TLSALookup) -> HostTLSDecision {
        if demand == .optional {
            // RFC 8689 §4.2.2: the sender asked that TLS policy failures be ignored; STARTTLS
            // is still used when offered.
            let plain = configured == TLSSecurityLevel.none || (configured == nil && defaultLevel == .none)
            return .connect(TLSRequirement(level: plain ? .none : .opportunistic, source: "TLS-Required:No"))
        }
        var requirement: TLSRequirement
        if let configured {
            let source = "policy:\(configured.rawValue)"
            switch configured {
            case .none: requirement = TLSRequirement(level: .none, source: source)
            case .may: requirement = TLSRequirement(level: .opportunistic, source: source)
            case .encrypt: requirement = TLSRequirement(level: .encrypt, source: source)
            case .verify: requirement = TLSRequirement(level: .verify, source: source)
            case .dane:
                switch tlsa {
                case .records(let records) where !DANE.usable(records).isEmpty:
                    requirement = TLSRequirement(level: .dane(DANE.usable(records)), source: source)
                case .records:
                    return Self.deferral("\(host) has no usable TLSA record, and [tls_policy] requires DANE")
                case .failed(let reason):
                    return Self.deferral("TLSA lookup for \(host) failed: \(reason)")
                case .none:
                    return Self.deferral("\(host) has no DNSSEC-validated TLSA record, and [tls_policy] requires DANE")
                case .insecure:
                    return Self.deferral(
                        "the MX or address records of \(host) are not DNSSEC-validated, and [tls_policy] requires DANE")
                }
            }
        } else {
            switch tlsa {
            case .failed(let reason):
                // RFC 7672 §2.2: a failed validated lookup makes the exchanger unusable, lest an
                // attacker who can block the answer strip DANE.
                return Self.deferral("TLSA lookup for \(host) failed: \(reason)")
            case .records(let records):
                let usable = DANE.usable(records)
                // RFC 7672 §2.2: TLSA records, none usable: TLS is still mandatory.
                requirement =
                    usable.isEmpty
                    ? TLSRequirement(level: .encrypt, source: "dane-unusable")
                    : TLSRequirement(level: .dane(usable), source: "dane")
            case .none, .insecure:
                if let policy = mtaSTS, policy.mode != .none {
                    let matched = policy.matches(mxHost: host)
                    if policy.mode == .enforce {
                        guard matched else {
                            return .skip(
                                reason: "MX host \(host) is not allowed by the MTA-STS policy of \(domain)",
                                status: "4.7.0", permanent: false)
                        }
                        requirement = TLSRequirement(level: .verify, source: "mta-sts")
                    } else {
                        requirement = TLSRequirement(
                            level: defaultLevel == .none ? .none : .opportunistic, source: "mta-sts-testing")
                        requirement.mtaSTSTesting = true
                        requirement.mxMatched = matched
                    }
                } else {
                    requirement = TLSRequirement(
                        level: defaultLevel == .none ? .none : .opportunistic, source: defaultLevel.rawValue)
                }
            }
        }
        guard demand == .requireTLS else { return .connect(requirement) }
        // RFC 8689 §4.2.1: the exchanger must be authenticated — by DNSSEC or an MTA-STS policy
        // that names it — and so must its certificate, by DANE or WebPKI; TLS is never optional.
        let mtaSTSNamesHost = mtaSTS.map { $0.mode != .none && $0.matches(mxHost: host) } ?? false
        let authenticated: Bool
        switch requirement.level {
        case .dane:
            authenticated = true
        case .none:
            authenticated = false
        case .verify, .encrypt, .opportunistic:
            authenticated = mxAuthenticated || mtaSTSNamesHost
            requirement.level = .verify
        }
        guard authenticated else {
            let reason =
                requirement.level == .none
                ? "REQUIRETLS: TLS is off for \(host) (\(requirement.source))"
                : "REQUIRETLS: neither DNSSEC nor MTA-STS authenticates \(host) as an exchanger of \(domain)"
            return .skip(reason: reason, status: "5.7.30", permanent: true)
        }
        requirement.requireTLS = true
        requirement.mtaSTSTesting = false
        return .connect(requirement)
    }

    private static func deferral(_ reason: String) -> HostTLSDecision {
        .skip(reason: reason, status: "4.7.5", permanent: false)
    }
}
