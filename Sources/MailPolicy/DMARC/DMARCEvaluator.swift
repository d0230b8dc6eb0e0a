import DNSClient
import MailMessage

/// The DMARC result of a message (RFC 7489 §11.2, the `dmarc=` values of RFC 8601).
public enum DMARCResult: String, Sendable, Hashable {
    /// No policy was found, or the From domain's records are unusable: DMARC does not apply.
    case none
    /// An aligned identifier passed SPF or DKIM.
    case pass
    /// No aligned identifier passed: the policy applies.
    case fail
    /// The policy lookup failed in a way that may pass.
    case temperror
    /// The author domain cannot be evaluated (not a valid domain name).
    case permerror
}

/// The outcome of a DMARC evaluation and what the receiver should do about it.
public struct DMARCVerdict: Sendable, Hashable {
    public var result: DMARCResult
    /// What to do with the message (§6.6.4): `none` unless the result is `fail`; then the
    /// requested policy, one step down when `pct` sampling leaves the message out.
    public var disposition: DMARCRecord.Policy
    /// The published policy that applies to the From domain (`sp` for a subdomain of the
    /// Organizational Domain when given, else `p`); nil without a usable record.
    public var requestedPolicy: DMARCRecord.Policy?
    /// True when a failing message fell outside the `pct` sample (and got `nextDown`).
    public var sampledOut: Bool
    /// The RFC5322.From domain, normalized (lower case, A-labels).
    public var fromDomain: String
    /// The domain whose `_dmarc` record applied: the From domain or its Organizational Domain.
    public var policyDomain: String?
    /// The parsed record that applied.
    public var record: DMARCRecord?
    public var spfAligned: Bool
    public var dkimAligned: Bool
    /// Why there is no usable policy, or what failed.
    public var problem: String?

    public init(
        result: DMARCResult, disposition: DMARCRecord.Policy = .none, requestedPolicy: DMARCRecord.Policy? = nil,
        sampledOut: Bool = false, fromDomain: String, policyDomain: String? = nil, record: DMARCRecord? = nil,
        spfAligned: Bool = false, dkimAligned: Bool = false, problem: String? = nil
    ) {
        self.result = result
        self.disposition = disposition
        self.requestedPolicy = requestedPolicy
        self.sampledOut = sampledOut
        self.fromDomain = fromDomain
        self.policyDomain = policyDomain
        self.record = record
        self.spfAligned = spfAligned
        self.dkimAligned = dkimAligned
        self.problem = problem
    }
}

/// Why a message has no single author domain (RFC 7489 §6.6.1): the receiver rejects the
/// message or records DMARC `permerror`, its choice.
public enum DMARCAuthorError: Error, Sendable, Hashable, CustomStringConvertible {
    case noFromField
    case severalFromFields(Int)
    /// The From field names no mailbox or several (`mailboxes` of them).
    case mailboxCount(Int)
    /// The mailbox's domain is a domain literal or otherwise no domain name.
    case invalidDomain(String)

    public var description: String {
        switch self {
        case .noFromField: "the message has no From field"
        case .severalFromFields(let count): "the message has \(count) From fields"
        case .mailboxCount(let count): "the From field has \(count) mailboxes, not one"
        case .invalidDomain(let address): "the From address \(address) has no valid domain"
        }
    }
}

/// Domain-based Message Authentication, Reporting and Conformance (RFC 7489): policy
/// discovery (§6.6.3), identifier alignment (§3.1) and the policy to apply (§6.6.4).
public struct DMARCEvaluator: Sendable {
    public let resolver: any Resolver
    public let publicSuffixList: PublicSuffixList

    public init(resolver: any Resolver, publicSuffixList: PublicSuffixList) {
        self.resolver = resolver
        self.publicSuffixList = publicSuffixList
    }

    /// The DMARC verdict for a message.
    ///
    /// - Parameters:
    ///   - fromDomain: the RFC5322.From domain, from `authorDomain(fromFieldValues:)`.
    ///   - spf: the domain SPF checked (MAIL FROM, or HELO for a null reverse path) and its
    ///     result; nil when SPF was not checked.
    ///   - dkimPassingDomains: the `d=` of every DKIM signature that verified.
    ///   - sample: a number in 0..<100, random in production: the message is within the `pct`
    ///     sample when it is below `pct` (§6.6.4).
    public func evaluate(
        fromDomain: String, spf: (domain: String, result: SPFResult)?, dkimPassingDomains: [String], sample: Int
    ) async -> DMARCVerdict {
        guard let from = Self.normalized(fromDomain) else {
            return DMARCVerdict(
                result: .permerror, fromDomain: fromDomain, problem: "\"\(fromDomain)\" is not a domain name")
        }
        var verdict = DMARCVerdict(result: .none, fromDomain: from)
        let organizational = publicSuffixList.organizationalDomain(of: from) ?? from
        let found: (domain: String, text: String)
        switch await discover(from: from, organizational: organizational) {
        case .success(let policy): found = policy
        case .failure(.temporary(let problem)):
            verdict.result = .temperror
            verdict.problem = problem
            return verdict
        case .failure(.noPolicy(let problem)):
            verdict.problem = problem
            return verdict
        }
        verdict.policyDomain = found.domain
        let record: DMARCRecord
        do {
            record = try DMARCRecord(parsing: found.text)
        } catch {
            // §6.6.3 step 6.2: no DMARC processing.
            verdict.problem = "_dmarc.\(found.domain): \(error)"
            return verdict
        }
        verdict.record = record
        // §6.3 sp: for subdomains of the Organizational Domain, whose record was found there.
        let requested = found.domain != from ? record.subdomainPolicy ?? record.policy : record.policy
        verdict.requestedPolicy = requested
        verdict.dkimAligned = dkimPassingDomains.contains { aligned($0, from, record.dkimAlignment) }
        if let spf, spf.result == .pass { verdict.spfAligned = aligned(spf.domain, from, record.spfAlignment) }
        // §4.2: a message passes when either aligned identifier passed.
        guard !verdict.dkimAligned && !verdict.spfAligned else {
            verdict.result = .pass
            return verdict
        }
        verdict.result = .fail
        // §6.6.4: outside the pct sample, the next policy down.
        if min(max(sample, 0), 99) < record.percent {
            verdict.disposition = requested
        } else {
            verdict.disposition = requested.nextDown
            verdict.sampledOut = true
        }
        return verdict
    }

    private enum DiscoveryError: Error {
        case temporary(String)
        case noPolicy(String)
    }

    /// §6.6.3: the DMARC records at `_dmarc.<From domain>`, else at `_dmarc.<Organizational
    /// Domain>`; exactly one must remain. A DNS failure that may pass is a temperror.
    private func discover(
        from: String, organizational: String
    ) async -> Result<(domain: String, text: String), DiscoveryError> {
        var domain = from
        var records: [String]
        do {
            records = try await dmarcRecords(at: from)
            if records.isEmpty && organizational != from {
                domain = organizational
                records = try await dmarcRecords(at: organizational)
            }
        } catch {
            return .failure(error)
        }
        guard records.count == 1 else {
            let problem =
                records.isEmpty
                ? "no DMARC record for \(from)"
                : "_dmarc.\(domain) has \(records.count) DMARC records (RFC 7489 §6.6.3)"
            return .failure(.noPolicy(problem))
        }
        return .success((domain, records[0]))
    }

    private func dmarcRecords(at domain: String) async throws(DiscoveryError) -> [String] {
        do {
            return try await resolver.txt("_dmarc." + domain).value.filter(DMARCRecord.isDMARCRecord)
        } catch {
            guard error.isTemporary else { return [] }
            throw .temporary("DNS lookup of _dmarc.\(domain) failed: \(error)")
        }
    }

    /// §3.1: strict alignment wants the same name, relaxed the same Organizational Domain.
    private func aligned(_ identifier: String, _ from: String, _ mode: DMARCRecord.Alignment) -> Bool {
        guard let identifier = Self.normalized(identifier) else { return false }
        switch mode {
        case .strict:
            return identifier == from
        case .relaxed:
            return publicSuffixList.organizationalDomain(of: identifier)
                == publicSuffixList.organizationalDomain(of: from)
        }
    }

    /// A domain name in lower-case A-label form without its final dot; nil for an empty label,
    /// a label over 63 octets, a name over 253, spaces or controls, or a domain literal.
    static func normalized(_ domain: String) -> String? {
        var name = Substring(domain)
        if name.hasSuffix(".") { name = name.dropLast() }
        guard !name.isEmpty, !name.hasPrefix("["), let ascii = Punycode.asciiName(String(name)),
            ascii.utf8.count <= 253, ascii.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) })
        else { return nil }
        let labels = ascii.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.allSatisfy({ (1...63).contains($0.utf8.count) }) else { return nil }
        return ascii
    }

    /// The RFC5322.From domain (§3.1, §6.6.1) from the values of the message's From fields:
    /// exactly one field with exactly one mailbox, whose domain is a domain name. Group syntax,
    /// display names, comments and quoted local parts are understood (RFC 5322 §3.4).
    public static func authorDomain(fromFieldValues: [String]) -> Result<String, DMARCAuthorError> {
        guard let value = fromFieldValues.first else { return .failure(.noFromField) }
        guard fromFieldValues.count == 1 else { return .failure(.severalFromFields(fromFieldValues.count)) }
        let mailboxes = AddressList.addresses(in: value)
        guard mailboxes.count == 1, let address = mailboxes.first else {
            return .failure(.mailboxCount(mailboxes.count))
        }
        guard let at = address.lastIndex(of: "@"),
            let domain = normalized(String(address[address.index(after: at)...]))
        else { return .failure(.invalidDomain(address)) }
        return .success(domain)
    }
}
