import DNSClient
import Foundation
import Logging

/// The MTA-STS policies of the domains Tern delivers to (RFC 8461 §3.3, §5.1): looked up by
/// their TXT record, fetched over HTTPS, and cached — in memory and in one small JSON file per
/// domain under `<data_dir>/mta-sts/`, so that a restart does not forget a policy that an
/// attacker could otherwise strip by blocking the next fetch.
///
/// - A TXT record whose id matches the cached, unexpired policy: the cached policy.
/// - A new id, or no unexpired policy: fetch. A fetch that fails keeps the cached policy until
///   it expires (§5.1); with none cached, the domain has no policy.
/// - No TXT record, or a DNS failure: the cached policy until it expires.
/// - Concurrent deliveries to one domain share one lookup.
public actor MTASTSPolicyStore {
    /// One cached policy.
    struct Entry: Codable, Sendable, Hashable {
        var id: String
        var policy: MTASTSPolicy
        var fetched: Date
        var expires: Date
    }

    public typealias Fetch = @Sendable (String) async throws(TLSPolicyError) -> String

    private let resolver: any DNSClient.Resolver
    private let fetch: Fetch
    private let directory: String?
    private let now: @Sendable () -> Date
    private let logger: Logger
    private var entries: [String: Entry] = [:]
    private var loaded: Set<String> = []
    private var lookups: [String: Task<MTASTSPolicy?, Never>] = [:]
    /// Domains whose record announces a policy that could not be had, none being cached: for
    /// TLS-RPT (RFC 8460 §4.3.2.2). Bounded: one entry per domain with a lookup under way or
    /// recently failed, dropped at the next good lookup, and the whole table when it overflows.
    private var failures: [String: (TLSRPTResultType, String)] = [:]

    public init(
        resolver: any DNSClient.Resolver, fetch: @escaping Fetch, directory: String?, logger: Logger,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.resolver = resolver
        self.fetch = fetch
        self.directory = directory
        self.logger = logger
        self.now = now
    }

    /// The policy in force for `domain` (lower case), nil when it has none.
    public func policy(for domain: String) async -> MTASTSPolicy? {
        guard Self.isCacheableName(domain) else { return nil }
        if let running = lookups[domain] { return await running.value }
        let task = Task { await self.lookUp(domain) }
        lookups[domain] = task
        let policy = await task.value
        lookups[domain] = nil
        return policy
    }

    /// Why the last lookup for `domain` found no policy although its TXT record announces one.
    public func lookupFailure(for domain: String) -> (type: TLSRPTResultType, reason: String)? {
        failures[domain].map { (type: $0.0, reason: $0.1) }
    }

    private func lookUp(_ domain: String) async -> MTASTSPolicy? {
        failures[domain] = nil
        let cached = cachedEntry(domain)
        let current = cached.flatMap { $0.expires > now() ? $0 : nil }
        let texts: [String]
        do throws(DNSError) {
            texts = try await resolver.txt("_mta-sts.\(domain)").value
        } catch .nameNotFound, .noData {
            return current?.policy
        } catch {
            logger.info(
                "MTA-STS TXT lookup failed",
                metadata: ["event": "mta_sts", "domain": "\(domain)", "reason": "\(error)"])
            return current?.policy
        }
        let record: MTASTSRecord?
        do throws(TLSPolicyError) {
            record = try MTASTSRecord.select(from: texts)
        } catch {
            logger.info(
                "MTA-STS TXT record unusable",
                metadata: ["event": "mta_sts", "domain": "\(domain)", "reason": "\(error)"])
            return current?.policy
        }
        guard let record else { return current?.policy }
        if let current, current.id == record.id { return current.policy }
        let policy: MTASTSPolicy
        var fetched = false
        do throws(TLSPolicyError) {
            let text = try await fetch(domain)
            fetched = true
            policy = try MTASTSPolicy.parse(text)
        } catch {
            if current == nil {
                if failures.count >= 10_000 { failures = [:] }
                let type: TLSRPTResultType =
                    fetched
                    ? .stsPolicyInvalid
                    : error.description.contains("CERTIFICATE_VERIFY_FAILED") ? .stsWebPKIInvalid : .stsPolicyFetchError
                failures[domain] = (type, error.description)
            }
            logger.info(
                "MTA-STS policy fetch failed",
                metadata: [
                    "event": "mta_sts", "domain": "\(domain)", "id": "\(record.id)", "reason": "\(error)",
                    "cached": "\(current != nil ? "kept" : "none")",
                ])
            return current?.policy
        }
        let fetchTime = now()
        let entry = Entry(
            id: record.id, policy: policy, fetched: fetchTime, expires: fetchTime + TimeInterval(policy.maxAge))
        entries[domain] = entry
        save(entry, for: domain)
        logger.info(
            "MTA-STS policy fetched",
            metadata: [
                "event": "mta_sts", "domain": "\(domain)", "id": "\(record.id)", "mode": "\(policy.mode.rawValue)",
                "max_age": "\(policy.maxAge)", "mx": "\(policy.mx.joined(separator: ","))",
            ])
        return policy
    }

    // MARK: Persistence

    private func cachedEntry(_ domain: String) -> Entry? {
        if !loaded.contains(domain) {
            loaded.insert(domain)
            if let path = path(for: domain), let data = FileManager.default.contents(atPath: path),
                let entry = try? JSONDecoder().decode(Entry.self, from: data)
            {
                entries[domain] = entry
            }
        }
        return entries[domain]
    }

    /// Written to a temporary file and renamed, so a crash leaves the old entry or the new one.
    private func save(_ entry: Entry, for domain: String) {
        guard let directory, let path = path(for: domain) else { return }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try encoder.encode(entry).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            logger.warning(
                "MTA-STS cache not written",
                metadata: ["event": "error", "domain": "\(domain)", "error": "\(error)"])
        }
    }

    private func path(for domain: String) -> String? {
        guard let directory, Self.isCacheableName(domain) else { return nil }
        return "\(directory)/\(domain).json"
    }

    /// A domain name that can be a file name: letters, digits, `-`, `_` and inner dots only.
    static func isCacheableName(_ domain: String) -> Bool {
        !domain.isEmpty && domain.utf8.count <= 253 && !domain.hasPrefix(".") && !domain.contains("..")
            && domain.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" || $0 == "."
            }
    }
}
