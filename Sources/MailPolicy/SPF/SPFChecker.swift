import DNSClient
import Foundation

/// Sender Policy Framework (RFC 7208): whether the client may send mail for the domain of the
/// reverse path (the "MAIL FROM" identity) or of its HELO name.
///
/// `check_host()` (§4) is implemented whole: every mechanism and modifier, macros (§7), the
/// limits of §4.6.4 (10 DNS-querying terms, 2 void lookups, 10 MX names, 10 PTR names), and
/// an overall time bound after which the answer is `temperror`, so a silent DNS server never
/// stalls a session.
public struct SPFChecker: Sendable {
    public let resolver: any Resolver
    /// The longest a check may take before it answers `temperror` (§4.6.4: at least 20 s).
    public let timeLimit: Duration
    private let secondsSince1970: @Sendable () -> Int

    /// `timeLimit` defaults to the 20 s of RFC 7208 §4.6.4 (`SPFLimits.defaultTimeLimit`).
    public init(resolver: any Resolver, timeLimit: Duration = .seconds(20)) {
        self.init(resolver: resolver, timeLimit: timeLimit) { Int(Date().timeIntervalSince1970) }
    }

    /// With the clock for `%{t}` in explanations.
    init(resolver: any Resolver, timeLimit: Duration, secondsSince1970: @escaping @Sendable () -> Int) {
        self.resolver = resolver
        self.timeLimit = timeLimit
        self.secondsSince1970 = secondsSince1970
    }

    /// Checks the "MAIL FROM" identity (RFC 7208 §2.4): the domain of `sender`. For the null
    /// reverse path (`sender` nil or empty) the mailbox `postmaster@<helo>` is checked instead,
    /// and the verdict names the `helo` identity.
    ///
    /// - Parameters:
    ///   - client: the client's IP address as text; IPv4-mapped IPv6 counts as IPv4 (§5).
    ///   - sender: the reverse path without angle brackets.
    ///   - helo: the HELO/EHLO argument, `%{h}`.
    ///   - receiver: this host's name, `%{r}` in explanations.
    public func check(client: String, sender: String?, helo: String, receiver: String) async -> SPFVerdict {
        let reversePath = sender ?? ""
        guard let at = reversePath.lastIndex(of: "@") else {
            if reversePath.isEmpty {
                return await run(.helo, domain: helo, localPart: "postmaster", client, "", helo, receiver)
            }
            // No "@" at all: treat the whole path as the domain, as a local part alone has none.
            return await run(
                .mailfrom, domain: reversePath, localPart: "postmaster", client, reversePath, helo, receiver)
        }
        // §4.3: a sender without a local part is checked as postmaster@domain.
        let localPart = reversePath[..<at].isEmpty ? "postmaster" : String(reversePath[..<at])
        let domain = String(reversePath[reversePath.index(after: at)...])
        return await run(.mailfrom, domain: domain, localPart: localPart, client, reversePath, helo, receiver)
    }

    /// Checks the "HELO" identity on its own (RFC 7208 §2.3): `check_host(<ip>, <helo>,
    /// "postmaster@<helo>")`. A HELO name that is no domain (an address literal, one label)
    /// gives `none`.
    public func checkHELO(client: String, helo: String, receiver: String) async -> SPFVerdict {
        await run(.helo, domain: helo, localPart: "postmaster", client, "", helo, receiver)
    }

    private func run(
        _ identity: SPFIdentity, domain: String, localPart: String, _ client: String, _ sender: String,
        _ helo: String, _ receiver: String
    ) async -> SPFVerdict {
        var verdict = SPFVerdict(
            result: .none, identity: identity, domain: SPFEvaluation.checkedDomain(domain) ?? domain,
            client: client, sender: sender, helo: helo, receiver: receiver)
        guard let parsed = IPAddress(client) else {
            verdict.problem = "the client address \(client) is not an IP address"
            return verdict
        }
        let address = parsed.unmappedIPv4 ?? parsed
        verdict.client = address.description
        let values = SPFMacroValues(
            sender: "\(localPart)@\(domain)", localPart: localPart, senderDomain: domain, domain: domain,
            client: address, helo: helo, receiver: receiver.isEmpty ? "unknown" : receiver,
            secondsSince1970: secondsSince1970())
        let resolver = self.resolver
        let timeout = SPFOutcome(
            result: .temperror, problem: "no result within \(timeLimit) (RFC 7208 §4.6.4)")
        let outcome =
            await withTimeLimit(timeLimit) {
                await SPFEvaluation(resolver: resolver, values: values).run(domain)
            } ?? timeout
        verdict.result = outcome.result
        verdict.mechanism = outcome.mechanism
        verdict.explanation = outcome.explanation.map { Self.printable($0, limit: SPFLimits.explanationLength) }
        verdict.problem = outcome.problem.map { Self.printable($0, limit: SPFLimits.problemLength) }
        return verdict
    }

    /// Text from the DNS or the client made fit for a reply line or a header: printable ASCII,
    /// anything else as `?`, at most `limit` characters.
    static func printable(_ text: String, limit: Int) -> String {
        String(text.unicodeScalars.prefix(limit).map { (0x20...0x7E).contains($0.value) ? Character($0) : "?" })
    }
}

/// What `check_host()` found, before it becomes a verdict.
struct SPFOutcome: Sendable {
    var result: SPFResult
    var mechanism: String?
    var explanation: String?
    var problem: String?
}

/// Why `check_host()` stops early (RFC 7208 §2.6.6, §2.6.7).
enum SPFFailure: Error {
    /// temperror: a DNS failure that may pass, or the time limit.
    case temporary(String)
    /// permerror: the published records cannot be interpreted.
    case permanent(String)
}

/// One run of `check_host()` with its includes and redirects: the lookup counters of §4.6.4
/// are per check, so they live here. Used by one task only.
final class SPFEvaluation {
    private let resolver: any Resolver
    private let values: SPFMacroValues
    private let client: IPAddress
    private var dnsTerms = 0
    private var voidLookups = 0
    /// §5.5: the PTR names of the client and those that resolve back to it; asked once.
    private var reverseNames: (found: Bool, validated: [String])?

    init(resolver: any Resolver, values: SPFMacroValues) {
        self.resolver = resolver
        self.values = values
        self.client = values.client
    }

    func run(_ domain: String) async -> SPFOutcome {
        do {
            return try await checkHost(domain, explain: true)
        } catch {
            switch error {
            case .temporary(let problem): return SPFOutcome(result: .temperror, problem: problem)
            case .permanent(let problem): return SPFOutcome(result: .permerror, problem: problem)
            }
        }
    }

    /// §4.3: a domain to look a record up for: without its final dot, in lower case, as
    /// A-labels, of at least two labels of 1–63 octets and at most 253 octets in all, with
    /// no spaces or controls. Nil for anything else (an address literal, say): result "none".
    static func checkedDomain(_ text: String) -> String? {
        var name = Substring(text)
        if name.hasSuffix(".") { name = name.dropLast() }
        guard !name.hasPrefix("["), let ascii = Punycode.asciiName(String(name)), ascii.utf8.count <= 253,
            ascii.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) })
        else { return nil }
        let labels = ascii.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, labels.allSatisfy({ (1...63).contains($0.utf8.count) }) else { return nil }
        return ascii
    }

    // MARK: - check_host() (§4)

    private func checkHost(_ name: String, explain: Bool) async throws(SPFFailure) -> SPFOutcome {
        guard let domain = Self.checkedDomain(name) else {
            return SPFOutcome(result: .none, problem: "\"\(name)\" is not a domain name that can have a record")
        }
        // §4.4: TXT only; NXDOMAIN is "no record", other DNS failures are temperror.
        let texts = try await answers(of: "TXT \(domain)") { () async throws(DNSError) in
            try await self.resolver.txt(domain)
        }
        // §4.5: exactly one record starting with "v=spf1".
        let records = texts.filter(SPFRecord.isSPFRecord)
        guard let text = records.first else {
            return SPFOutcome(result: .none, problem: "\(domain) has no SPF record")
        }
        guard records.count == 1 else {
            throw .permanent("\(domain) has \(records.count) SPF records (RFC 7208 §4.5)")
        }
        let record: SPFRecord
        do {
            record = try SPFRecord(parsing: text)
        } catch {
            throw .permanent("invalid SPF record at \(domain): \(error)")
        }
        for directive in record.directives {
            try checkTime()
            if directive.mechanism.queriesDNS { try countDNSTerm() }
            guard try await matches(directive.mechanism, domain: domain) else { continue }
            var outcome = SPFOutcome(result: directive.qualifier.result, mechanism: directive.text)
            // §6.2: an explanation only for a fail of this record, never from an include.
            if outcome.result == .fail, explain, let exp = record.explanation {
                outcome.explanation = await explanation(exp, domain: domain)
            }
            return outcome
        }
        // §6.1: redirect applies when nothing matched, unless the record has "all".
        if let redirect = record.redirect, !record.hasAll {
            try countDNSTerm()
            let target = await targetName(redirect, domain: domain)
            let outcome = try await checkHost(target, explain: explain)
            guard outcome.result != .none else {
                throw .permanent("redirect=\(target) of \(domain) finds no SPF record (RFC 7208 §6.1)")
            }
            return outcome
        }
        // §4.7: no match and no redirect.
        return SPFOutcome(result: .neutral)
    }

    // MARK: - Mechanisms (§5)

    private func matches(_ mechanism: SPFRecord.Mechanism, domain: String) async throws(SPFFailure) -> Bool {
        switch mechanism {
        case .all:
            return true
        case .ip4(let network, let prefix), .ip6(let network, let prefix):
            return client.sharesPrefix(prefix, with: network)
        case .include(let spec):
            // §5.2: pass matches; fail, softfail, neutral do not; none is a permerror;
            // temperror and permerror are thrown through.
            let target = await targetName(spec, domain: domain)
            let outcome = try await checkHost(target, explain: false)
            switch outcome.result {
            case .pass: return true
            case .fail, .softfail, .neutral: return false
            case .none, .temperror, .permerror:
                throw .permanent("include:\(target) of \(domain) finds no SPF record (RFC 7208 §5.2)")
            }
        case .a(let spec, let v4, let v6):
            // §5.3: the A or AAAA records of the target, as fits the client's address family.
            let target = await targetName(spec, domain: domain)
            let found = try await addresses(of: target)
            try countVoid(found.isEmpty, "a:\(target)")
            let prefix = client.isIPv4 ? v4 : v6
            return found.contains { client.sharesPrefix(prefix, with: $0) }
        case .mx(let spec, let v4, let v6):
            // §5.4: the addresses of each MX name; no implicit MX; more than 10 is permerror.
            let target = await targetName(spec, domain: domain)
            let records = try await answers(of: "MX \(target)") { () async throws(DNSError) in
                try await self.resolver.mx(target)
            }
            try countVoid(records.isEmpty, "mx:\(target)")
            guard records.count <= SPFLimits.mxNames else {
                throw .permanent("mx:\(target) has \(records.count) MX records, more than 10 (RFC 7208 §4.6.4)")
            }
            let prefix = client.isIPv4 ? v4 : v6
            for record in records where record.exchange != "." {
                try checkTime()
                if try await addresses(of: record.exchange).contains(where: { client.sharesPrefix(prefix, with: $0) }) {
                    return true
                }
            }
            return false
        case .ptr(let spec):
            // §5.5: a validated name of the client that is the target or under it.
            let target = await targetName(spec, domain: domain).lowercased()
            let names = await validatedNames()
            try countVoid(!names.found, "ptr")
            return names.validated.contains { $0 == target || $0.hasSuffix("." + target) }
        case .exists(let spec):
            // §5.7: any A record, whatever the client's address family.
            let target = await targetName(spec, domain: domain)
            let found = try await answers(of: "A \(target)") { () async throws(DNSError) in
                try await self.resolver.a(target)
            }
            try countVoid(found.isEmpty, "exists:\(target)")
            return !found.isEmpty
        }
    }

    /// The client's address family's records for `name`.
    private func addresses(of name: String) async throws(SPFFailure) -> [IPAddress] {
        if client.isIPv4 {
            return try await answers(of: "A \(name)") { () async throws(DNSError) in
                try await self.resolver.a(name)
            }.map { IPAddress.v4($0.rawValue) }
        }
        return try await answers(of: "AAAA \(name)") { () async throws(DNSError) in
            try await self.resolver.aaaa(name)
        }.compactMap { IPAddress(bytes: $0.bytes) }
    }

    /// §5.5 steps: the PTR names of the client (the first 10, §4.6.4), each kept when one of
    /// its addresses is the client's. A failed PTR lookup means no names; a failed address
    /// lookup skips that name. `found` tells whether the PTR lookup had any answer at all.
    private func validatedNames() async -> (found: Bool, validated: [String]) {
        if let reverseNames { return reverseNames }
        var found = false
        var validated: [String] = []
        if let names = try? await resolver.ptr(client.description).value, !names.isEmpty {
            found = true
            for name in names.prefix(SPFLimits.ptrNames) {
                guard !Task.isCancelled else { break }
                if let addresses = try? await addresses(of: name), addresses.contains(client) {
                    var name = name.lowercased()
                    if name.hasSuffix(".") { name.removeLast() }
                    validated.append(name)
                }
            }
        }
        reverseNames = (found, validated)
        return (found, validated)
    }

    /// `%{p}` (§7.3): the validated name that is `domain`, else one under it, else any;
    /// "unknown" when there is none.
    private func validatedName(for domain: String) async -> String {
        let names = await validatedNames().validated
        let domain = domain.lowercased()
        if names.contains(domain) { return domain }
        return names.first { $0.hasSuffix("." + domain) } ?? names.first ?? "unknown"
    }

    // MARK: - Names, explanations, limits

    /// §4.8: the expanded domain-spec, or the current domain when there is none.
    private func targetName(_ spec: SPFMacroString?, domain: String) async -> String {
        guard let spec else { return domain }
        return spec.expand(await macroValues(for: spec, domain: domain), for: .domainName)
    }

    private func macroValues(for spec: SPFMacroString, domain: String) async -> SPFMacroValues {
        var values = self.values
        values.domain = domain
        if spec.usesValidatedName { values.validatedName = await validatedName(for: domain) }
        return values
    }

    /// §6.2: the single TXT record at the expanded `exp=` name, itself expanded; nil on any
    /// DNS problem, no or several records, or a syntax error (non-ASCII text included).
    /// These lookups count against no limit (test suite 4.6.4/1, 6/2).
    private func explanation(_ spec: SPFMacroString, domain: String) async -> String? {
        let target = await targetName(spec, domain: domain)
        guard let texts = try? await resolver.txt(target).value, texts.count == 1,
            let text = try? SPFMacroString(parsing: Substring(texts[0]), explanation: true)
        else { return nil }
        return text.expand(await macroValues(for: text, domain: domain), for: .explanation)
    }

    /// The records a lookup found: none for NXDOMAIN, NODATA or a name that cannot be asked
    /// (§5: "as if ... zero answer records"); temperror for a failure that may pass.
    private func answers<T>(
        of question: String, _ lookup: () async throws(DNSError) -> DNSAnswer<[T]>
    ) async throws(SPFFailure) -> [T] {
        try checkTime()
        do {
            return try await lookup().value
        } catch {
            guard error.isTemporary else { return [] }
            throw .temporary("DNS lookup of \(question) failed: \(error)")
        }
    }

    private func countDNSTerm() throws(SPFFailure) {
        dnsTerms += 1
        guard dnsTerms <= SPFLimits.dnsTerms else {
            throw .permanent("more than \(SPFLimits.dnsTerms) DNS-querying terms (RFC 7208 §4.6.4)")
        }
    }

    private func countVoid(_ isVoid: Bool, _ term: String) throws(SPFFailure) {
        guard isVoid else { return }
        voidLookups += 1
        guard voidLookups <= SPFLimits.voidLookups else {
            throw .permanent("more than \(SPFLimits.voidLookups) void lookups, the last for \(term) (RFC 7208 §4.6.4)")
        }
    }

    private func checkTime() throws(SPFFailure) {
        if Task.isCancelled { throw .temporary("the check was cancelled") }
    }
}
